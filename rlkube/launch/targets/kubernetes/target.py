"""KubernetesTarget: the Target interface over submit.py, status.py, logs.py and tensorboard.py.

The client is imported only when a method talks to a cluster, so picking this target (for `render`, or to
list profiles) costs nothing.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from rlkube.launch import store
from rlkube.launch.clusters import ClusterProfile
from rlkube.launch.render import Object, render
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.targets.base import CopyStatus, Target, register_target

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


# A sweep's or PBT's driver reads every live experiment each round. One client per context, made again after this
# long (so a changed kubeconfig or credential is picked up), saves a kubeconfig load and a TLS handshake per read.
CLIENT_REUSE_SECONDS = 60.0


@register_target
class KubernetesTarget(Target):
    kind: ClassVar[str] = "kubernetes"
    renders_manifests: ClassVar[bool] = True
    runs_images: ClassVar[bool] = True
    writes_to_cluster_volume: ClassVar[bool] = True
    status_poll_seconds: ClassVar[float] = 0.5

    def __init__(self, profile: ClusterProfile | None = None,
                 after_create: Callable[[Object], None] | None = None) -> None:
        """`profile`: where submissions go (a recorded experiment's own record says where it is).
        `after_create` is called after each object is created (tests use it to change the cluster midway)."""
        super().__init__(profile)
        self.context = profile.context if profile else None
        self._after_create = after_create
        self._clients: dict[str | None, tuple[float, ApiClient]] = {}
        self._clients_lock = threading.Lock()  # a sweep's driver cancels trials on other threads

    def _client(self, context: str | None) -> "ApiClient":
        from rlkube.launch.targets.kubernetes.api import connect  # noqa: PLC0415

        with self._clients_lock:
            cached = self._clients.get(context)
            if cached is None or time.monotonic() - cached[0] > CLIENT_REUSE_SECONDS:
                cached = self._clients[context] = (time.monotonic(), connect(context))
            return cached[1]

    @contextlib.contextmanager
    def _submitting(self, spec: ExperimentSpec) -> Iterator["ApiClient"]:
        """The profile's cluster, with its failures as one line."""
        from rlkube.launch.targets.kubernetes.api import api_errors  # noqa: PLC0415

        if self.profile is None:
            raise TypeError("a KubernetesTarget made from a record reads experiments; submitting needs a profile")
        api = self._client(self.profile.context)
        with api_errors(f"submitting {spec.name} to {self.profile.name}", api.configuration.host):
            yield api

    @contextlib.contextmanager
    def _reading(self, record: store.Record, action: str) -> Iterator["ApiClient"]:
        """The cluster a record's experiment runs on, with its failures as one line."""
        from rlkube.launch.targets.kubernetes.api import api_errors  # noqa: PLC0415

        api = self._client(record.context)
        with api_errors(f"{action} {record.name}", api.configuration.host):
            yield api

    def whoami(self, context: str | None) -> str:
        """The user the cluster knows this kubeconfig's credentials by, which it records as the creator of what rlkube
        makes there."""
        from rlkube.launch.targets.kubernetes.api import api_errors, whoami  # noqa: PLC0415

        api = self._client(context)
        with api_errors("asking the API server who this kubeconfig's user is", api.configuration.host):
            return whoami(api)

    def _found(self, spec: ExperimentSpec) -> str:
        from rlkube.launch.targets.kubernetes.submit import experiment_objects  # noqa: PLC0415

        with self._submitting(spec) as api:
            existing = experiment_objects(api, spec.name, spec.namespace)
        shown = ", ".join(f"{kind}/{name}" for kind, name in existing[:3])
        return f"in namespace {spec.namespace} ({shown})" if existing else ""

    def _start(self, spec: ExperimentSpec, replacing: bool) -> tuple[ExperimentSpec, dict[str, Any]]:
        """All or nothing: every object validated by a server-side dry-run, then created in order."""
        from rlkube.launch.targets.kubernetes.submit import (  # noqa: PLC0415
            create_all,
            delete_experiment,
            object_name,
            validate,
        )

        objects = render(spec, self.profile)
        with self._submitting(spec) as api:
            if replacing:  # only then can objects of this name exist: the name check just listed them
                delete_experiment(api, spec.name, spec.namespace)
            validate(api, objects, replacing=False)
            create_all(api, objects, self._after_create)
        return spec, {"objects": [object_name(obj) for obj in objects], "cancelled": False}

    def _dryrun(self, spec: ExperimentSpec, replacing: bool) -> str:
        from rlkube.launch.targets.kubernetes.submit import object_name, validate  # noqa: PLC0415

        objects = render(spec, self.profile)
        with self._submitting(spec) as api:
            # Replacing: the old objects are still there, and a real submission deletes them first.
            validate(api, objects, replacing=replacing)
        return (f"dry run: the API server accepted {', '.join(object_name(obj) for obj in objects)}; "
                f"nothing was created")

    def describe(self, record: store.Record) -> list[CopyStatus]:
        from rlkube.launch.targets.kubernetes.status import describe  # noqa: PLC0415

        with self._reading(record, "reading") as api:
            return describe(api, record)

    def evaluations(self, record: store.Record) -> dict[int, list[dict[str, float]]]:
        """From a bucket, as every target reads them; from the cluster's volume, out of reach, the evaluation lines
        of every pod of each copy (the same values as its metrics.jsonl, rounded to 0.01)."""
        from rlkube.storage import filesystems  # noqa: PLC0415

        if filesystems.is_remote(record.output_dir):
            return super().evaluations(record)
        from rlkube.launch.targets.kubernetes.status import logged_evaluations  # noqa: PLC0415

        with self._reading(record, "reading the evaluations of") as api:
            return logged_evaluations(api, record)

    def logs(self, record: store.Record, emit: Callable[[str], None], copy: int | None = None, follow: bool = True,
             tail: int | None = None, since_seconds: int | None = None) -> None:
        from rlkube.launch.targets.kubernetes.api import connect  # noqa: PLC0415
        from rlkube.launch.targets.kubernetes.logs import stream  # noqa: PLC0415

        # Each copy's thread reports its own failures, naming the copy.
        stream(connect(record.context), record, emit, copy, follow, tail, since_seconds)

    def _stop(self, record: store.Record) -> list[str]:
        """Delete every object and pod of the experiment; each pod's trainer checkpoints on SIGTERM."""
        from rlkube.launch.targets.kubernetes.submit import delete_experiment  # noqa: PLC0415

        with self._reading(record, "cancelling") as api:
            return delete_experiment(api, record.name, record.namespace)

    def _serve_tensorboard(self, record: store.Record, port: int, emit: Callable[[str], None]) -> None:
        """The namespace's TensorBoard, through a port-forward: a run on a cluster's volume is only reachable from
        inside the cluster."""
        from rlkube.launch.targets.kubernetes.api import connect  # noqa: PLC0415
        from rlkube.launch.targets.kubernetes.tensorboard import serve  # noqa: PLC0415

        serve(connect(record.context), record, port, emit)
