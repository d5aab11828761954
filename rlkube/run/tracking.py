"""`--track mlflow|wandb`: a copy's hparams, scalars, provenance and files, sent to an experiment tracker too.

The tracker sees what TensorBoard sees: `TrackedRunLog` forwards every scalar the runner writes to the event files,
so there is one vocabulary (charts/episodic_return, losses/td_loss, eval/mean_return, ...) in both. A copy's
tracker run is named after the experiment and the copy; copies of one experiment share a group (--track-group,
by default the experiment's name; a sweep passes its own name, so its trials group together).

Resume continues the same tracker run: its id is kept in the copy's directory (layout.TRACKING_FILE), with the last
step the tracker was sent. Scalars go out every few seconds and at every checkpoint, and a resumed copy sends only
steps after both the restored checkpoint's and that last one: resume is exact, so the steps it trains again give
the values the tracker already holds, and no step reaches it twice.

MLflow and W&B are optional extras, imported only when a run asks for them; nothing here imports them at the top.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.run.options import CLUSTER_ENV, EXPERIMENT_ENV, GIT_COMMIT_ENV, IMAGE_ENV, TrainOptions
from rlkube.rundir import layout
from rlkube.rundir.run_log import RunLog, finite_scalars

DEFAULT_PROJECT = "rlkube"

# How a tracker run ended: finished, stopped by a signal (resumable), or failed.
Outcome = Literal["finished", "stopped", "failed"]


@dataclass(frozen=True)
class TrackingSettings:
    """Which tracker, and where a copy's run goes in it."""

    kind: str  # "mlflow" or "wandb"
    project: str = DEFAULT_PROJECT  # MLflow's experiment, W&B's project
    group: str = ""  # empty: the experiment's name
    uri: str = ""  # MLflow's tracking URI or W&B's server; empty: the library's own default (its env variables)

    @classmethod
    def from_options(cls, options: TrainOptions) -> "TrackingSettings | None":
        """The --track* flags; None without --track. A UserError for --track-* without --track, or for a tracker
        whose extra is not installed (checked before TensorFlow loads)."""
        options.check_tracking_flags()
        if options.track is None:
            return None
        if importlib.util.find_spec(options.track) is None:
            raise UserError(f"--track {options.track} needs {options.track}, which is not installed: "
                            f"pip install 'rlkube[{options.track}]'")
        return cls(options.track, options.track_project or DEFAULT_PROJECT, options.track_group, options.track_uri)


class Tracker(ABC):
    """One copy's run in an experiment tracker."""

    run_id: str
    where: str  # for the user: the run's id and where to see it

    @abstractmethod
    def log_hparams(self, values: dict[str, Any]) -> None: ...

    @abstractmethod
    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Buffer one step's scalars until `flush`."""

    @abstractmethod
    def flush(self) -> None:
        """Send the buffered scalars."""

    @abstractmethod
    def log_artifact(self, path: Path, root: Path) -> None:
        """Upload a file, kept under its path relative to `root` (the copy's directory)."""

    @abstractmethod
    def finish(self, outcome: Outcome) -> None: ...


class MLflowTracker(Tracker):
    """An MLflow run: hparams as params, provenance as tags, scalars as metrics in batches."""

    # MLflow's limits for one log_batch request.
    MAX_METRICS, MAX_PARAMS = 1000, 100

    def __init__(self, settings: TrackingSettings, name: str, provenance: dict[str, str], resume_id: str | None):
        from mlflow.entities import Metric, Param  # noqa: PLC0415  (the optional extra)
        from mlflow.exceptions import MlflowException  # noqa: PLC0415
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        self._metric, self._param = Metric, Param
        self.client = MlflowClient(settings.uri or None)
        try:
            if resume_id:
                self.client.update_run(resume_id, status="RUNNING")
                run = self.client.get_run(resume_id)
            else:
                tags = {**{f"rlkube.{key}": value for key, value in provenance.items()},
                        "rlkube.group": settings.group}
                if "git_commit" in provenance:
                    tags["mlflow.source.git.commit"] = provenance["git_commit"]  # MLflow's UI shows this one
                run = self.client.create_run(self._experiment_id(settings.project), run_name=name, tags=tags)
        except MlflowException as error:
            raise UserError(f"--track mlflow at {self.client.tracking_uri}: {str(error).splitlines()[0]}") from None
        self.run_id = run.info.run_id
        self.where = f"mlflow run {self.run_id} at {self.client.tracking_uri}"
        self.pending: list[Any] = []
        self.last_timestamp = 0

    def _experiment_id(self, project: str) -> str:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        experiment = self.client.get_experiment_by_name(project)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(project)
        except MlflowException:  # another copy created it meanwhile
            experiment = self.client.get_experiment_by_name(project)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_hparams(self, values: dict[str, Any]) -> None:
        params = [self._param(key, str(value)) for key, value in values.items()]
        for first in range(0, len(params), self.MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[first:first + self.MAX_PARAMS])

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            # Each value its own millisecond: MLflow keeps one of two equal (key, timestamp, step, value) rows,
            # and two episodes ending at one step with the same return are two rows in TensorBoard.
            self.last_timestamp = max(self.last_timestamp + 1, int(time.time() * 1000))
            self.pending.append(self._metric(key, value, self.last_timestamp, step))

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:self.MAX_METRICS], self.pending[self.MAX_METRICS:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, root: Path) -> None:
        folder = path.parent.relative_to(root).as_posix()
        self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def finish(self, outcome: Outcome) -> None:
        self.flush()
        status = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}[outcome]
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints the run's URL; stdout is for results
            self.client.set_terminated(self.run_id, status)


class WandbTracker(Tracker):
    """A W&B run: hparams in its config (provenance under config.rlkube), scalars against `global_step`."""

    # Every scalar is plotted against this, the env step, as TensorBoard's are: W&B's own step must only grow,
    # while a copy logs several times at one env step.
    STEP_KEY = "global_step"

    def __init__(self, settings: TrackingSettings, name: str, provenance: dict[str, str], resume_id: str | None):
        import wandb  # noqa: PLC0415  (the optional extra)

        # console="off": rlkube's own lines stay as they are (the live bar, pod logs), not wrapped by W&B.
        options = {"console": "off", "quiet": True, **({"base_url": settings.uri} if settings.uri else {})}
        try:
            self.run = wandb.init(project=settings.project, group=settings.group, name=name, id=resume_id,
                                  resume="allow" if resume_id else None, config={"rlkube": provenance},
                                  settings=wandb.Settings(**options))
        except wandb.Error as error:
            raise UserError(f"--track wandb: {str(error).splitlines()[0]}") from None
        self.run.define_metric(self.STEP_KEY)
        self.run.define_metric("*", step_metric=self.STEP_KEY)
        self.run_id = self.run.id
        self.pending: list[dict[str, float]] = []
        self.where = f"wandb run {self.run_id} ({self.run.url or f'offline, in {Path(self.run.dir).parent}'})"

    def log_hparams(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.pending.append({**values, self.STEP_KEY: step})

    def flush(self) -> None:
        for row in self.pending:
            self.run.log(row)
        self.pending = []

    def log_artifact(self, path: Path, root: Path) -> None:
        # A copy in the run's own directory: W&B would symlink a file from elsewhere, warning each time.
        kept = Path(self.run.dir) / path.relative_to(root)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
        self.run.save(str(kept), base_path=self.run.dir, policy="now")

    def finish(self, outcome: Outcome) -> None:
        if outcome == "stopped":
            self.run.mark_preempting()  # W&B shows it as preempted, to be resumed
        self.run.finish(exit_code=0 if outcome == "finished" else 1)


class TrackedRunLog(RunLog):
    """The copy's TensorBoard logs, with every scalar and the hparams sent to the tracker too; a step is sent
    once, so scalars of steps up to `sent_until` (the tracker has them) are not sent again."""

    # Scalars wait at most this long (or until a checkpoint), so that the tracker's plots stay current.
    FLUSH_INTERVAL_S = 10.0

    def __init__(self, directory: Path, lengths: dict[str, int] | None, tracker: Tracker, record: dict[str, Any],
                 sent_until: int) -> None:
        super().__init__(directory, lengths)
        self.tracker = tracker
        self.record = record  # what TRACKING_FILE holds: the tracker, its run id and sent_until
        self.sent_until = self.buffered_until = sent_until
        self.last_flush = time.monotonic()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        super().scalars(step, values)
        if step > self.sent_until:
            self.tracker.log_scalars(step, finite_scalars(values))
            self.buffered_until = step
        if time.monotonic() - self.last_flush > self.FLUSH_INTERVAL_S:
            self.flush_tracker()

    def hparams(self, values: dict[str, Any]) -> None:
        super().hparams(values)
        self.tracker.log_hparams(values)

    def flush_tracker(self) -> None:
        """Send the buffered scalars, then record the last step sent: a crash between the two can repeat the
        steps of one flush on resume, never lose one."""
        self.tracker.flush()
        self.last_flush = time.monotonic()
        if self.buffered_until > self.record["sent_until"]:
            self.record["sent_until"] = self.buffered_until
            layout.write_atomically(self.directory / layout.TRACKING_FILE, json.dumps(self.record) + "\n")

    def lengths(self) -> dict[str, int]:
        self.flush_tracker()  # before a checkpoint: the tracker then holds every step the checkpoint covers
        return super().lengths()

    def close(self) -> None:
        self.flush_tracker()
        super().close()


def open_tracked_log(settings: TrackingSettings, copy_dir: Path, lengths: dict[str, int] | None,
                     restored_step: int | None, seed: int, remote_dir: str | None) -> TrackedRunLog:
    """The copy's logs (rolled back to `lengths`) and its tracker run: on a resume from a checkpoint, the run its
    directory names if the tracker, URI and project are the same; else a new run, whose id the directory keeps."""
    experiment = experiment_name(copy_dir, remote_dir)
    key = {"tracker": settings.kind, "uri": settings.uri, "project": settings.project}
    record_path = copy_dir / layout.TRACKING_FILE
    saved = _read_record(record_path)
    resuming = restored_step is not None and saved is not None and {k: saved.get(k) for k in key} == key
    settings = TrackingSettings(settings.kind, settings.project, settings.group or experiment, settings.uri)
    kind = MLflowTracker if settings.kind == "mlflow" else WandbTracker
    tracker = kind(settings, f"{experiment}-{copy_dir.name}", provenance(copy_dir, seed, remote_dir),
                   saved["run_id"] if resuming else None)
    record = saved if resuming else {**key, "run_id": tracker.run_id, "sent_until": -1}
    layout.write_atomically(record_path, json.dumps(record) + "\n")
    restored = -1 if restored_step is None else restored_step
    return TrackedRunLog(copy_dir, lengths, tracker, record, max(restored, record["sent_until"]))


def _read_record(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
        valid = isinstance(record, dict) and isinstance(record.get("run_id"), str) and \
            isinstance(record.get("sent_until"), int)
        return record if valid else None
    return None


def experiment_name(copy_dir: Path, remote_dir: str | None) -> str:
    """The experiment a copy belongs to: the pod's, else its run directory's name (which `rlkube submit` names
    after the experiment)."""
    if name := os.environ.get(EXPERIMENT_ENV):
        return name
    return PurePosixPath(remote_dir).parent.name if remote_dir else copy_dir.parent.name


def provenance(copy_dir: Path, seed: int, remote_dir: str | None) -> dict[str, str]:
    """Where a copy's numbers come from: experiment, copy, seed, run directory, rlkube's version, and the git
    commit, cluster and image where they are known."""
    commit, dirty = _git_state()
    known = {
        "experiment": experiment_name(copy_dir, remote_dir), "copy": copy_dir.name, "seed": str(seed),
        "output_dir": remote_dir or str(copy_dir), "version": __version__,
        "git_commit": commit, "git_dirty": None if dirty is None else str(dirty).lower(),
        "cluster": os.environ.get(CLUSTER_ENV), "image": os.environ.get(IMAGE_ENV),
    }
    return {key: value for key, value in known.items() if value}


def _git_state() -> tuple[str | None, bool | None]:
    """The commit of the code that runs: the pod's env says it; a source checkout (pip install -e) asks git."""
    if commit := os.environ.get(GIT_COMMIT_ENV):
        return commit, None
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None, None  # an installed wheel: any repository around it is not this code's
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                check=True, timeout=5).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                                 capture_output=True, text=True, check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None  # no git
    return commit, bool(changes.strip())

