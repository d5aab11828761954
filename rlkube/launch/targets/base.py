"""The Target interface every place that runs experiments implements, and what targets report in one shape.

Modelled on TorchX's Scheduler: submit, dryrun, describe, logs, cancel (and tensorboard). The rules every target
shares live here once, as template methods around each target's hooks: a taken name is refused unless replaced,
and submissions and cancellations are recorded in the experiment store.

Targets are registered by their `kind` (`@register_target`), which profiles and records name; `target_for` looks
one up. Importing this package registers the built-in targets (its __init__), as rlkube.rl.agents does for agents.
"""

import dataclasses
import getpass
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import ClusterProfile
from rlkube.launch.run_dirs import is_result_file, read_results, sync_from_bucket
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.tensorboard import from_bucket
from rlkube.rl.registry import Registry
from rlkube.storage import filesystems


@dataclass(frozen=True)
class CopyStatus:
    copy: int
    phase: str  # Pending, Running, Succeeded, Failed, Cancelled
    restarts: int = 0
    node: str = ""
    age_seconds: float | None = None
    last_step: int | None = None
    last_return: float | None = None
    last_failure: str = ""  # why the copy's newest failed attempt ended: OOMKilled, Error, Evicted, ...


class Target(ABC):
    """Where an experiment's copies run. Public methods are the interface; `_` methods are each target's hooks."""

    kind: ClassVar[str]  # what profiles and records call this target
    # What sets targets apart, each asked where it matters (never by the target's kind):
    # Its copies are Kubernetes objects in a namespace: `rlkube render` prints them, a profile's provider, context
    # and namespace apply, and the namespace's TensorBoard can serve them (--in-cluster).
    renders_manifests: ClassVar[bool]
    # Its copies run a container image (which `submit --build` makes), not this checkout in this Python environment.
    runs_images: ClassVar[bool]
    # An output that is a path (not a bucket) is on the cluster's volume, out of reach from here; otherwise it is on
    # this machine.
    writes_to_cluster_volume: ClassVar[bool]
    # How often a waiting watcher (the PBT controller at a boundary) asks describe(): each ask reads a few local
    # files, or is a request to an API server.
    status_poll_seconds: ClassVar[float]
    context: str | None = None  # the kube context a record keeps, for a target that has one

    def __init__(self, profile: ClusterProfile | None = None) -> None:
        """`profile`: where submissions go; None for a target that only reads recorded experiments (a record says
        where its experiment is)."""
        self.profile = profile

    def submit(self, spec: ExperimentSpec, replace: bool = False) -> ExperimentSpec:
        """Start every copy and record the experiment; returns the spec as recorded.

        A taken name (recorded in the store, or found on the target) is refused in one line unless `replace`, which
        first cancels the recorded experiment through its own target. The store takes the name before any copy
        starts, so that of two simultaneous submissions of one name only one starts copies. The experiment gets its
        id (store.experiment_id), which owns its copies' run directories.
        """
        found = self._refuse_taken_name(spec, replace)
        previous = store.get(spec.name) if store.exists(spec.name) else None
        if previous is not None:
            target_for(previous).cancel(previous)
            previous = store.get(spec.name)  # as cancelled
        spec = dataclasses.replace(spec, experiment_id=store.experiment_id(spec.name))
        creator = self.whoami(self.context)
        store.take_name(spec, self.kind, self.context, replace, creator)
        try:
            spec, backend = self._start(spec, replacing=found)
        except BaseException:
            if previous is None:
                store.delete(spec.name)
            else:
                store.save(previous.spec, previous.target, previous.context, previous.backend, previous.creator)
            raise
        store.save(spec, self.kind, self.context, backend, creator=creator)
        return spec

    def whoami(self, context: str | None) -> str:  # noqa: ARG002  (a hook: a cluster has users of its own)
        """Who submits through this target from here (in the kube context `context`, for a target that has them):
        the user this machine runs rlkube as."""
        try:
            return getpass.getuser()
        except (OSError, KeyError):  # a container's uid without a name
            return str(os.getuid())

    def dryrun(self, spec: ExperimentSpec, replace: bool = False) -> str:
        """What `submit` would do, as one line; starts nothing and changes nothing."""
        return self._dryrun(spec, replacing=self._refuse_taken_name(spec, replace))

    @abstractmethod
    def describe(self, record: store.Record) -> list[CopyStatus]:
        """Every copy's state now."""

    @abstractmethod
    def logs(self, record: store.Record, emit: Callable[[str], None], copy: int | None = None, follow: bool = True,
             tail: int | None = None, since_seconds: int | None = None) -> None:
        """Every copy's log (or one copy's), each line prefixed `copy-<i> | `; with follow, until the copies end."""

    def evaluations(self, record: store.Record) -> dict[int, list[dict[str, float]]]:
        """Each copy's evaluations so far ({"step", "mean_return", "std_return"}, as its metrics.jsonl holds them),
        read from where the copies write them: the run directory, or its bucket synced here."""
        copies = read_results(self.local_run_dir(record, include=is_result_file), record.copies)
        return {copy["copy"]: copy["evaluations"] for copy in copies}

    def local_run_dir(self, record: store.Record, include: Callable[[str], bool]) -> Path:
        """The experiment's run directory on this machine, syncing the files of each copy that `include` selects from
        its bucket first, if it has one."""
        if filesystems.is_remote(record.output_dir):
            return sync_from_bucket(record, include)
        if self.writes_to_cluster_volume:
            raise UserError(f"{record.name} writes to {record.output_dir} on the cluster's volume, which is not "
                            f"reachable from here; use a profile with a gs:// or s3:// output, or rlkube tensorboard "
                            f"{record.name}")
        return Path(record.output_dir)

    def cancel(self, record: store.Record) -> list[str]:
        """Stop every copy (each checkpoints first) and record it; returns what was removed, for the user."""
        removed = self._stop(record)
        store.update_backend(record.name, {**record.backend, "cancelled": True})
        return removed

    def tensorboard(self, record: store.Record, port: int, emit: Callable[[str], None],
                    in_cluster: bool = False) -> None:
        """Serve TensorBoard on 127.0.0.1:port (0: a free one) until interrupted.

        Runs in a bucket are synced here: that needs neither the cluster nor the pods, and works where the in-cluster
        TensorBoard cannot read the bucket (s3://, or a pod without the bucket's identity). Other runs are served
        where the target can read them: the run directory here, or a cluster's volume through the namespace's
        TensorBoard, port-forwarded. `in_cluster` asks for the namespace's TensorBoard whatever the output."""
        if in_cluster and not self.renders_manifests:
            raise UserError(f"--in-cluster needs an experiment on a cluster, and {record.name} ran on "
                            f"{record.cluster}")
        if filesystems.is_remote(record.output_dir) and not in_cluster:
            from_bucket(record, port, emit)
        else:
            self._serve_tensorboard(record, port, emit)

    def _refuse_taken_name(self, spec: ExperimentSpec, replace: bool) -> bool:
        """Whether the target holds objects of the spec's name (only ever true with `replace`)."""
        found = self._found(spec)
        if (found or store.exists(spec.name)) and not replace:
            raise UserError(f"experiment '{spec.name}' exists {found or 'already'}; "
                            f"choose another --name, or --replace it")
        return bool(found)

    def _found(self, spec: ExperimentSpec) -> str:  # noqa: ARG002  (a hook: targets that keep objects look)
        """Where the target holds an experiment of the spec's name, recorded here or not, as the words after
        "exists" (e.g. "in namespace rl (Job/a)"); "" if nowhere. Local copies exist only through the store."""
        return ""

    @abstractmethod
    def _start(self, spec: ExperimentSpec, replacing: bool) -> tuple[ExperimentSpec, dict[str, Any]]:
        """Start every copy, removing first what `_found` found (`replacing`: it found something, which the
        store's cancel may already have removed); returns the spec as started and what the target needs to find
        its copies again (the record's backend)."""

    @abstractmethod
    def _dryrun(self, spec: ExperimentSpec, replacing: bool) -> str:
        """What `_start` would do, as one line."""

    @abstractmethod
    def _stop(self, record: store.Record) -> list[str]:
        """Stop every copy; returns what was removed."""

    @abstractmethod
    def _serve_tensorboard(self, record: store.Record, port: int, emit: Callable[[str], None]) -> None:
        """TensorBoard over the run directory where the copies wrote it."""


target_registry: Registry[type[Target]] = Registry("target")
TargetType = TypeVar("TargetType", bound=type[Target])


def register_target(target: TargetType) -> TargetType:
    """Makes a Target choosable by its `kind`: a profile's `target:`, and the records of what it submitted."""
    target_registry.register(target.kind)(target)
    return target


def target_for(where: ClusterProfile | store.Record) -> Target:
    """The target a profile submits to, or that a recorded experiment ran on. Reading a record needs no profile."""
    profile = where if isinstance(where, ClusterProfile) else None
    try:
        target = target_registry[where.target]
    except UserError as error:
        raise UserError(f"{'cluster' if profile else 'experiment'} '{where.name}': {error}") from None
    return target(profile)


def overall_phase(copies: list[CopyStatus]) -> str:
    phases = {c.phase for c in copies}
    for phase in ("Running", "Pending"):
        if phase in phases:
            return phase
    if "Cancelled" in phases:
        return "Cancelled"
    return "Failed" if "Failed" in phases else "Succeeded" if phases else "Unknown"


def age_seconds(iso_time: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(iso_time)).total_seconds()
