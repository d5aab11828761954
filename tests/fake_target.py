"""A fake target for the orchestration tests: copies that "train" in virtual time, without TensorFlow or processes.

Registered like any other target (`@register_target`, kind "fake"), so a profile with `target: fake` selects it,
and the CLI, the store, the sweep driver and the PBT controller talk to it through the Target interface alone.

A copy is a tiny state: its step, its "skill" (the fake's weights) and its lr. It advances at STEPS_PER_SECOND
(read at submission and kept in the record, so that every process agrees) from its experiment's start, and whenever
anyone asks (describe, evaluations, logs, results) its run directory is brought up to now, with the files the real
runner writes and the readers use, named by rlkube.rundir.layout: hparams.yaml, metrics.jsonl, progress.json,
train.log and, at the end, summary.json and exit-code. Skill grows by fit(lr) per step of the budget, fit(lr) being
1 at lr = 1e-3 and less the further log10(lr) is from it; an evaluation returns up to 500 as skill grows
(`mean_return`), so a sweep has something to find.

PBT members (spec.train.pbt_interval) honour the runner's protocol: at each boundary a member evaluates, saves a
checkpoint (rlkube.rundir.checkpoint, its state being its step, skill and lr) and waits for the controller's decision
(rlkube.storage.pbt_decisions); it goes on from when the decision was written, with the decision's lr and, when
exploited, the skill of the checkpoint the controller copied in place of its own (the donor's). Its evaluations stay
its own (their noise is its seed's), and summary.json holds a digest of its final state, which a replay compares.

How a test uses it:

    from tests.fake_target import fake_profile, fake_env     # importing registers the target in this process

    def test_something(tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)                           # ./rlkube.yaml with the `fake` profile
        monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
        fake_profile(tmp_path)
        # in process: target_for(get_profile("fake")), or click's CliRunner on rlkube.cli.main.cli;
        # in subprocesses (rlkube ..., and the detached drivers they start): env=fake_env()
        # wait_for_end(store.get(name)) waits out copies that run for train_steps / STEPS_PER_SECOND seconds;
        # kill_copy(store.get(name), 0) ends a copy as SIGKILL ends a real one

Not simulated: failures of the copies' own making (a copy fails only when a test kills it), a resubmitted copy
resuming from its checkpoint (a submission starts every copy afresh), TensorBoard (its event writer imports
TensorFlow), the runner's side of an exploit (its own random streams, its logs rolled back: the runner's tests check
those), buckets, and any hparam but lr in the returns.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.targets.base import CopyStatus, Target, age_seconds, register_target
from rlkube.rl.hparams import to_dict
from rlkube.run.options import copies_json, copy_hparams
from rlkube.rundir import checkpoint, layout
from rlkube.rundir.hparams_record import hparams_record_text
from rlkube.rundir.progress_record import ProgressRecord, evaluation_line, progress_line
from rlkube.storage import filesystems
from rlkube.storage.pbt_decisions import read_decision

REPO = Path(__file__).resolve().parents[1]
# Importing sitecustomize.py from here registers the target in every Python process started with fake_env().
SITE = Path(__file__).resolve().parent / "fake_target_site"
# Virtual training speed at submission; subprocesses read it from the environment, so a test may slow copies down
# (to prune them, or to kill a driver while they run).
STEPS_PER_SECOND = float(os.environ.get("RLKUBE_FAKE_STEPS_PER_SECOND", "20000"))
BEST_LR = 1e-3
CANCELLED_EXIT_CODE = 143  # what a real copy stopped by SIGTERM exits with
KILLED_EXIT_CODE = 137  # what a real copy killed by SIGKILL (the kernel's OOM killer) exits with
STATE_FILE = ".fake-state.json"  # hidden, as the runner's temporary files are: no reader of a run directory sees it


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


def kill_copy(record: store.Record, index: int) -> None:
    """End a copy where it is now, as SIGKILL ends a real one: no checkpoint, no summary, a non-zero exit code."""
    FakeTarget().describe(record)
    directory = layout.copy_dir(Path(record.output_dir), index)
    with _locked(directory):
        layout.write_atomically(directory / layout.EXIT_FILE, f"{KILLED_EXIT_CODE}\n")


def fit(lr: float) -> float:
    """How much of a step's learning an lr achieves: 1 at lr = 1e-3, less the further log10(lr) is from it."""
    return math.exp(-((math.log10(max(lr, 1e-12)) - math.log10(BEST_LR)) ** 2))


def mean_return(skill: float, seed: int, step: int) -> float:
    """An evaluation: up to 500 as skill grows (skill 1 is a whole budget at lr = 1e-3), with a little noise of the
    seed's (the same in every process)."""
    noise = random.Random(f"{seed}/{step}").uniform(-2.0, 2.0)
    return round(500.0 * (1.0 - math.exp(-4.0 * skill)) + noise, 2)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a copy does: its seed and hparams, how often it evaluates, and where a PBT member waits."""

    seed: int
    hparams: dict[str, Any]
    pbt_interval: int | None

    @property
    def total_steps(self) -> int:
        return self.hparams["train_steps"]

    def next_stop(self, step: int) -> int:
        """The next step after `step` where the copy evaluates: a multiple of eval_every (PBT's interval is one too),
        or the end."""
        every = self.hparams["eval_every"]
        return min((step // every + 1) * every, self.total_steps)

    def is_boundary(self, step: int) -> bool:
        return bool(self.pbt_interval) and 0 < step < self.total_steps and step % self.pbt_interval == 0


def _plans(spec: ExperimentSpec) -> list[_Plan]:
    experiment = spec.train.resolved_hparams()
    return [_Plan(copy.seed, to_dict(copy_hparams(experiment, copy)), spec.train.pbt_interval)
            for copy in spec.copies]


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
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        (Path(spec.output_dir) / layout.COPIES_FILE).write_text(copies_json(spec.copies))
        return spec, {"started": time.time(), "steps_per_second": STEPS_PER_SECOND, "cancelled": False}

    def _dryrun(self, spec: ExperimentSpec, replacing: bool) -> str:  # noqa: ARG002
        return f"dry run: would start {len(spec.copies)} fake copies of {spec.train.hparams} in {spec.output_dir}"

    def _advance(self, record: store.Record) -> list[tuple[int, ProgressRecord | None, int | None]]:
        """Bring every copy's run directory up to now; each copy's (step, progress, exit code)."""
        now = time.time()
        states = []
        for index, plan in enumerate(_plans(record.spec)):
            directory = layout.copy_dir(Path(record.output_dir), index)
            with _locked(directory):
                exit_file = directory / layout.EXIT_FILE
                if not exit_file.exists():
                    _Copy(directory, plan, record.backend).advance_to(now)
                code = int(exit_file.read_text()) if exit_file.exists() else None
                states.append((index, ProgressRecord.read(directory), code))
        return states

    def describe(self, record: store.Record) -> list[CopyStatus]:
        copies = []
        for index, progress, code in self._advance(record):
            phase = "Running" if code is None else "Succeeded" if code == 0 else \
                "Cancelled" if code == CANCELLED_EXIT_CODE else "Failed"
            copies.append(CopyStatus(index, phase, 0, "fake", age_seconds(record.created),
                                     progress.step if progress else None,
                                     progress.recent_return if progress else None,
                                     f"exit code {code}" if phase == "Failed" else ""))
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
            path = layout.copy_dir(Path(record.output_dir), index) / layout.TRAIN_LOG
            return path.read_text().splitlines() if path.exists() else []

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
        raise UserError(f"{record.name} ran on the fake target, which serves no TensorBoard")


class _Copy:
    """One copy's run directory, brought forward in virtual time from the state it keeps there."""

    def __init__(self, directory: Path, plan: _Plan, backend: dict[str, Any]) -> None:
        self.directory = directory
        self.plan = plan
        self.speed = backend["steps_per_second"]
        path = directory / STATE_FILE
        self.starting = not path.exists()
        # `clock`: the time at which the copy was at `step`; `decided`: the newest boundary it has had a decision at;
        # `recent`: its newest evaluation's return.
        self.state = json.loads(path.read_text()) if path.exists() else {
            "step": 0, "skill": 0.0, "lr": plan.hparams["lr"], "clock": backend["started"], "decided": 0,
            "recent": None}
        self.evaluations: list[dict[str, float]] = []

    def advance_to(self, now: float) -> None:
        """Train, evaluate and checkpoint up to `now`. The state moves from one evaluation to the next, so that it
        ends the same however often anyone asked on the way (a replay compares it); progress.json also counts the
        steps since the last evaluation."""
        state, plan = self.state, self.plan
        since = 0
        while state["step"] < plan.total_steps:
            if plan.is_boundary(state["step"]) and state["decided"] < state["step"] and not self._follow_decision():
                break  # waiting for the controller
            stop = plan.next_stop(state["step"])
            reached = state["clock"] + (stop - state["step"]) / self.speed
            if reached > now:
                since = max(0, int((now - state["clock"]) * self.speed))
                break
            state["skill"] += fit(state["lr"]) * (stop - state["step"]) / plan.total_steps
            state["step"], state["clock"] = stop, reached
            self._evaluate()
            if plan.is_boundary(stop):
                checkpoint.save(layout.checkpoints_dir(self.directory), stop,
                                {key: state[key] for key in ("step", "skill", "lr")})
        self._write(since)

    def _evaluate(self) -> None:
        step = self.state["step"]
        self.state["recent"] = mean_return(self.state["skill"], self.plan.seed, step)
        self.evaluations.append({"step": step, "wall_seconds": round(step / self.speed, 3),
                                 "mean_return": self.state["recent"], "std_return": 1.0})

    def _follow_decision(self) -> bool:
        """At a boundary: take the controller's decision if it is there (its lr; when exploited, the skill of the
        checkpoint the controller put in place of this copy's own) and go on from when it was written."""
        step = self.state["step"]
        decision = read_decision(self.directory, step)
        if decision is None:
            return False
        self.state["lr"] = decision["hparams"].get("lr", self.state["lr"])
        if decision["exploit"] is not None:
            taken = checkpoint.load(layout.checkpoints_dir(self.directory) / layout.checkpoint_name(step))
            self.state["skill"] = taken["skill"]
        written = (self.directory / layout.pbt_decision_name(step)).stat().st_mtime
        self.state["clock"] = max(self.state["clock"], written)
        self.state["decided"] = step
        return True

    def _write(self, since: int) -> None:
        """The files the runner writes, as far as the copy has come: never behind what they already say."""
        state, plan = self.state, self.plan
        if self.starting:
            layout.write_atomically(self.directory / layout.HPARAMS_FILE,
                                    hparams_record_text(plan.hparams, plan.seed))
        with open(self.directory / layout.METRICS_FILE, "a") as metrics, \
                open(self.directory / layout.TRAIN_LOG, "a") as train_log:
            for evaluation in self.evaluations:
                metrics.write(json.dumps(evaluation) + "\n")
                train_log.write(progress_line(evaluation["step"], plan.total_steps, self.speed,
                                              evaluation["mean_return"]) + "\n")
                train_log.write(evaluation_line("eval", evaluation["step"], evaluation["mean_return"],
                                                evaluation["std_return"]) + "\n")
        step = state["step"] + since
        ProgressRecord(step, plan.total_steps, self.speed, state["recent"], step / self.speed,
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).write(self.directory)
        layout.write_atomically(self.directory / STATE_FILE, json.dumps(state))
        if state["step"] == plan.total_steps:
            self._finish()

    def _finish(self) -> None:
        evaluations = [json.loads(line) for line in (self.directory / layout.METRICS_FILE).read_text().splitlines()]
        last, best = evaluations[-1], max(evaluations, key=lambda e: e["mean_return"])
        summary = {"seed": self.plan.seed, "total_steps": self.state["step"],
                   "eval_mean_return": last["mean_return"], "eval_std_return": last["std_return"],
                   "best_eval_mean_return": best["mean_return"], "best_eval_std_return": best["std_return"],
                   "best_eval_step": best["step"], "test_mean_return": None, "test_std_return": None,
                   "test_policy": "last"}
        if self.plan.pbt_interval:  # what a replay compares, as the runner's digest of the agent's whole state
            weights = json.dumps({key: self.state[key] for key in ("step", "skill", "lr")})
            summary["state_sha256"] = hashlib.sha256(weights.encode()).hexdigest()
        layout.write_atomically(self.directory / layout.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        layout.write_atomically(self.directory / layout.EXIT_FILE, "0\n")
