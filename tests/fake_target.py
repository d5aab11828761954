"""A fake target for the orchestration tests: copies that "train" in virtual time, without TensorFlow or processes.

Registered like any other target (`@register_target`, kind "fake"), so a profile with `target: fake` selects it,
and the CLI, the store, the sweep driver and the PBT controller talk to it through the Target interface alone.

A copy is at step `elapsed seconds x STEPS_PER_SECOND` (capped at its train_steps) since its experiment started;
whenever anyone asks (describe, evaluations, logs, results) its run directory is brought up to then, with the files
the real runner writes and the readers use, named by rlkube.rundir.layout: metrics.jsonl (one evaluation every
eval_every steps), progress.json, train.log (progress and evaluation lines) and, at the end, summary.json and
exit-code. Cancelling freezes each running copy where it is. Returns are a smooth function of the copy's lr and
seed (`mean_return`): best at lr = 1e-3, rising over training, so that a sweep has something to find.

How a test uses it:

    from tests.fake_target import fake_profile, fake_env     # importing registers the target in this process

    def test_something(tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)                           # ./rlkube.yaml with the `fake` profile
        monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
        fake_profile(tmp_path)
        # in process: target_for(get_profile("fake")), or click's CliRunner on rlkube.cli.main.cli;
        # in subprocesses (rlkube ..., and the detached drivers they start): env=fake_env()
        # wait_for_end(store.get(name)) waits out copies that run for train_steps / STEPS_PER_SECOND seconds

Not simulated: PBT's boundaries (members do not wait for the controller's decisions) and checkpoints.
"""

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.targets.base import CopyStatus, Target, age_seconds, register_target
from rlkube.run.options import copies_json, copy_hparams
from rlkube.rundir import layout
from rlkube.rundir.progress_record import ProgressRecord, evaluation_line, progress_line
from rlkube.storage import filesystems

REPO = Path(__file__).resolve().parents[1]
# Importing sitecustomize.py from here registers the target in every Python process started with fake_env().
SITE = Path(__file__).resolve().parent / "fake_target_site"
# Virtual training speed; subprocesses read it from the environment, so a test may slow copies down (pruning).
STEPS_PER_SECOND = float(os.environ.get("RLKUBE_FAKE_STEPS_PER_SECOND", "20000"))
BEST_LR = 1e-3
CANCELLED_EXIT_CODE = 143  # what a real copy stopped by SIGTERM exits with


def fake_profile(directory: Path, name: str = "fake") -> None:
    """Add a profile `name` with `target: fake`, writing into directory/runs, to directory/rlkube.yaml (the project
    profiles a command run in `directory` reads)."""
    config = directory / "rlkube.yaml"
    profiles = yaml.safe_load(config.read_text()) if config.exists() else {}
    profiles[name] = {"target": "fake", "output": str(directory / "runs")}
    config.write_text(yaml.safe_dump(profiles))


def fake_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses that must know the fake target (rlkube, and what it starts detached)."""
    path = os.pathsep.join(filter(None, [str(SITE), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def wait_for_end(record: store.Record, timeout: float = 60.0) -> list[CopyStatus]:
    """Every copy's status once none is running (copies take train_steps / STEPS_PER_SECOND seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        copies = FakeTarget().describe(record)
        if all(copy.phase != "Running" for copy in copies):
            return copies
        assert time.monotonic() < deadline, f"{record.name} still running after {timeout} s"
        time.sleep(FakeTarget.status_poll_seconds)


def mean_return(lr: float, seed: int, step: int, total_steps: int) -> float:
    """A copy's evaluation: up to 500 at lr = 1e-3, less the further log10(lr) is from it; rising over training;
    a little noise of the seed's (the same in every process)."""
    ceiling = 500.0 * math.exp(-((math.log10(max(lr, 1e-12)) - math.log10(BEST_LR)) ** 2))
    noise = random.Random(f"{seed}/{step}").uniform(-2.0, 2.0)
    return round(ceiling * (1.0 - math.exp(-4.0 * step / total_steps)) + noise, 2)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a copy does: the steps it trains for, how often it evaluates, and its returns."""

    seed: int
    lr: float
    total_steps: int
    eval_every: int

    def evaluation(self, step: int) -> dict[str, float]:
        return {"step": step, "wall_seconds": round(step / STEPS_PER_SECOND, 3),
                "mean_return": mean_return(self.lr, self.seed, step, self.total_steps), "std_return": 1.0}


def _plans(spec: ExperimentSpec) -> list[_Plan]:
    experiment = spec.train.resolved_hparams()
    plans = []
    for copy in spec.copies:
        hp = copy_hparams(experiment, copy)
        plans.append(_Plan(copy.seed, hp.lr, hp.train_steps, hp.eval_every))
    return plans


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer at a time per copy (the CLI and a detached driver may both ask), so files only ever grow."""
    with open(directory / ".fake-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@register_target
class FakeTarget(Target):
    kind: ClassVar[str] = "fake"
    renders_manifests: ClassVar[bool] = False
    runs_images: ClassVar[bool] = False
    writes_to_cluster_volume: ClassVar[bool] = False
    status_poll_seconds: ClassVar[float] = 0.05

    def _start(self, spec: ExperimentSpec, replacing: bool) -> tuple[ExperimentSpec, dict[str, Any]]:  # noqa: ARG002
        if filesystems.is_remote(spec.output_dir):
            raise UserError(f"the fake target writes to paths only, not {spec.output_dir}")
        spec = dataclasses.replace(spec, output_dir=str(Path(spec.output_dir).expanduser().absolute()))
        for index in range(len(spec.copies)):
            directory = layout.copy_dir(Path(spec.output_dir), index)
            directory.mkdir(parents=True, exist_ok=True)
            for stale in (layout.METRICS_FILE, layout.PROGRESS_FILE, layout.SUMMARY_FILE, layout.EXIT_FILE,
                          layout.TRAIN_LOG):
                (directory / stale).unlink(missing_ok=True)
        (Path(spec.output_dir) / layout.COPIES_FILE).write_text(copies_json(spec.copies))
        return spec, {"started": time.time(), "cancelled": False}

    def _dryrun(self, spec: ExperimentSpec, replacing: bool) -> str:  # noqa: ARG002
        return f"dry run: would start {len(spec.copies)} fake copies of {spec.train.hparams} in {spec.output_dir}"

    def _advance(self, record: store.Record) -> list[tuple[int, ProgressRecord | None, int | None]]:
        """Bring every copy's run directory up to now; each copy's (step, progress, exit code)."""
        elapsed = time.time() - record.backend["started"]
        states = []
        for index, plan in enumerate(_plans(record.spec)):
            directory = layout.copy_dir(Path(record.output_dir), index)
            with _locked(directory):
                exit_file = directory / layout.EXIT_FILE
                if not exit_file.exists():
                    _write_up_to(directory, plan, min(plan.total_steps, int(elapsed * STEPS_PER_SECOND)))
                code = int(exit_file.read_text()) if exit_file.exists() else None
                states.append((index, ProgressRecord.read(directory), code))
        return states

    def describe(self, record: store.Record) -> list[CopyStatus]:
        copies = []
        for index, progress, code in self._advance(record):
            phase = "Running" if code is None else "Succeeded" if code == 0 else "Cancelled"
            copies.append(CopyStatus(index, phase, 0, "fake", age_seconds(record.created),
                                     progress.step if progress else None,
                                     progress.recent_return if progress else None))
        return copies

    def evaluations(self, record: store.Record) -> dict[int, list[dict[str, float]]]:
        self._advance(record)
        return super().evaluations(record)

    def local_run_dir(self, record: store.Record, include: Callable[[str], bool]) -> Path:
        self._advance(record)
        return super().local_run_dir(record, include)

    def logs(self, record: store.Record, emit: Callable[[str], None], copy: int | None = None, follow: bool = True,
             tail: int | None = None, since_seconds: int | None = None) -> None:  # noqa: ARG002
        indices = [copy] if copy is not None else list(range(record.copies))

        def log(index: int) -> list[str]:
            return (layout.copy_dir(Path(record.output_dir), index) / layout.TRAIN_LOG).read_text().splitlines()

        self._advance(record)
        shown = {index: 0 if tail is None else max(0, len(log(index)) - tail) for index in indices}
        while True:
            running = {index for index, _, code in self._advance(record) if code is None}
            for index in indices:
                lines = log(index)
                for line in lines[shown[index]:]:
                    emit(f"{layout.copy_name(index)} | {line}")
                shown[index] = len(lines)
            if not follow or not running.intersection(indices):
                return
            time.sleep(self.status_poll_seconds)

    def _stop(self, record: store.Record) -> list[str]:
        """Each running copy stops where it is, as a real one checkpoints and exits on SIGTERM."""
        stopped = []
        for index, _, code in self._advance(record):
            if code is None:
                (layout.copy_dir(Path(record.output_dir), index) / layout.EXIT_FILE).write_text(
                    f"{CANCELLED_EXIT_CODE}\n")
                stopped.append(f"fake {layout.copy_name(index)}")
        return stopped

    def _serve_tensorboard(self, record: store.Record, port: int,  # noqa: ARG002
                           emit: Callable[[str], None]) -> None:  # noqa: ARG002
        raise UserError(f"{record.name} ran on the fake target, which writes no TensorBoard events")


def _write_up_to(directory: Path, plan: _Plan, step: int) -> None:
    """A copy's files as the runner leaves them at `step`: never behind what they already say."""
    progress = ProgressRecord.read(directory)
    if progress is not None and progress.step >= step:
        return
    evaluations = [plan.evaluation(at) for at in range(plan.eval_every, step + 1, plan.eval_every)]
    recent = evaluations[-1]["mean_return"] if evaluations else None
    layout.write_atomically(directory / layout.METRICS_FILE, "".join(json.dumps(e) + "\n" for e in evaluations))
    lines = [line for e in evaluations for line in (
        progress_line(e["step"], plan.total_steps, STEPS_PER_SECOND, e["mean_return"]),
        evaluation_line("eval", e["step"], e["mean_return"], e["std_return"]))]
    layout.write_atomically(directory / layout.TRAIN_LOG, "".join(line + "\n" for line in lines))
    ProgressRecord(step, plan.total_steps, STEPS_PER_SECOND, recent, step / STEPS_PER_SECOND,
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).write(directory)
    if step == plan.total_steps:
        last = evaluations[-1] if evaluations else {}
        best = max(evaluations, key=lambda e: e["mean_return"], default={})
        summary = {"seed": plan.seed, "total_steps": step,
                   "eval_mean_return": last.get("mean_return"), "eval_std_return": last.get("std_return"),
                   "best_eval_mean_return": best.get("mean_return"), "best_eval_std_return": best.get("std_return"),
                   "best_eval_step": best.get("step"), "test_mean_return": None, "test_std_return": None,
                   "test_policy": "last"}
        layout.write_atomically(directory / layout.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        layout.write_atomically(directory / layout.EXIT_FILE, "0\n")
