"""The sweep driver's own cost, beyond the training it starts: CPU per trial, its share of one core, and per call.

Runs a whole sweep with rlkube's Driver in this process (the code `python -m rlkube.launch.sweep.driver`
runs, without the detaching), on short trials so that the driver's work is a visible part of the whole,
and times the driver's calls without changing them: asking Optuna, building and submitting each trial,
each poll (describe the copies, read their evaluations), reporting and the pruning decision, cancelling
a pruned trial (on a thread of its own), telling Optuna. CPU is this process's own (time.process_time; for a cancel,
its thread's): the trials are other processes and are not counted. Start-up (interpreter and imports) is
measured once in a fresh process.

The goals (from the sweep issue): under 1 s of driver CPU per trial, and under 5 % of one core.

    python benchmarks/sweep_overhead.py                                  # local: 50 trials, 8 at a time
    python benchmarks/sweep_overhead.py --cluster kind --trials 20       # any Kubernetes profile
"""

import argparse
import contextlib
import dataclasses
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
from optuna.trial import TrialState

from rlkube.errors import UserError
from rlkube.launch.sweep import driver as driver_module
from rlkube.launch.sweep import study as studies
from rlkube.launch.sweep.config import DEFAULT_OBJECTIVE, SweepConfig, check_sweep_flags
from rlkube.launch.sweep.driver import REASON, Driver, counted, default_storage
from rlkube.launch.sweep.space import check_space, space_to_yaml
from rlkube.run.options import TrainOptions

CPU_PER_TRIAL_GOAL_S = 1.0
CORE_SHARE_GOAL = 0.05
# Four kinds of dimension, as a user's space would have; small enough that every point trains in a short run.
SPACE = {"lr": {"log_uniform": [1e-5, 1e-2]}, "n_epochs": {"int": [1, 20]}, "gae_lambda": {"uniform": [0.8, 1.0]},
         "clip_range": {"choice": [0.1, 0.2, 0.3, 0.4]}}


@dataclass
class Calls:
    count: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


class CallTimer:
    """CPU and wall time of chosen callables. A timed call made inside another (the local target's cancel describes
    the copies it stops) counts as part of the outer one, so no second is counted twice."""

    def __init__(self) -> None:
        self.calls: dict[str, Calls] = {}
        self._local = threading.local()  # the driver cancels trials on other threads: nesting is per thread

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        calls = self.calls.setdefault(label, Calls())

        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):
                return function(*args, **kwargs)
            self._local.inside = True
            # On the driver's thread, the process's CPU: a call may wait on a helper thread (fsspec runs its
            # bucket reads on an event loop of its own). On a cancelling thread, only that thread's.
            clock = time.process_time if threading.current_thread() is threading.main_thread() else time.thread_time
            cpu, wall = clock(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                calls.count += 1
                calls.cpu_s += clock() - cpu
                calls.wall_s += time.perf_counter() - wall
                self._local.inside = False

        return timed


# What the driver does, by label: (owner, attribute). Owners are found on the driver once it is built.
def _timed_calls(driver: Driver) -> dict[str, tuple[Any, str]]:
    return {"ask (Optuna proposes params)": (driver.study, "ask"),
            "provenance (git)": (driver_module, "current_provenance"),
            "build spec": (driver_module, "build_spec"),
            "submit": (driver.target, "submit"),
            "poll: describe copies": (driver.target, "describe"),
            "poll: read evaluations": (driver.target, "evaluations"),
            "report intermediate values": (optuna.trial.Trial, "report"),
            "prune decision": (optuna.trial.Trial, "should_prune"),
            "cancel (pruned or failed)": (driver.target, "cancel"),
            "tell (trial ends)": (driver.study, "tell"),
            "trial attributes": (optuna.trial.Trial, "set_user_attr"),
            "study reads (get_trials)": (driver.study, "get_trials")}


@contextlib.contextmanager
def _timing(driver: Driver, timer: CallTimer) -> Iterator[None]:
    with contextlib.ExitStack() as patches:
        for label, (owner, attribute) in _timed_calls(driver).items():
            patches.enter_context(mock.patch.object(owner, attribute, timer.wrap(label, getattr(owner, attribute))))
        yield


def sweep_config(cluster: str, hparams: str, train_steps: int, eval_every: int, eval_episodes: int, trials: int,
                 parallel: int, seeds: int, sampler: str, pruner: str, poll_seconds: float, seed: int,
                 space: dict[str, Any] | None = None) -> SweepConfig:
    """A sweep as `rlkube sweep start` would record it (its flags and space checked the same way)."""
    options = TrainOptions(hparams, f"eval_every={eval_every}", train_steps=train_steps, eval_episodes=eval_episodes,
                           test_episodes=0, seed=seed)
    name = f"bench-{sampler}-{os.getpid()}"
    check_sweep_flags(name, sampler, pruner, DEFAULT_OBJECTIVE, trials, parallel, seeds)
    checked = check_space(space or SPACE, options.resolved_hparams(), "the benchmark's space")
    return SweepConfig(name, cluster, options, space_to_yaml(checked), trials, parallel, seeds, sampler, pruner,
                       poll_seconds=poll_seconds)


def run_sweep(config: SweepConfig, workdir: Path, timer: CallTimer | None = None) -> tuple[optuna.Study, float, float]:
    """The sweep run to its end by a Driver in this process, its study in `workdir` and (on the local target) its
    runs too; the driver's log goes to stderr. Returns the study, the sweep's wall seconds and the driver's CPU
    seconds. Ctrl-C stops it as `rlkube sweep cancel` would (the live trials are cancelled), then the benchmark."""
    os.environ["RLKUBE_DATA_DIR"] = str(workdir / "data")  # the benchmark's experiments stay out of the user's list
    study = studies.create(config, default_storage(config.name))

    def emit(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    cpu, wall = time.process_time(), time.perf_counter()
    driver = Driver(study, config, "benchmark", emit)
    if not driver.target.writes_to_cluster_volume:  # the local profile writes to ./runs; keep the checkout clean
        driver.profile = dataclasses.replace(driver.profile, output=str(workdir / "runs"))
    previous = {signum: signal.signal(signum, lambda _signum, _frame: driver.stop())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _timing(driver, timer) if timer else contextlib.nullcontext():
            driver.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if driver.stopping:
        sys.exit("stopped: the sweep's live trials were cancelled")
    return driver.study, time.perf_counter() - wall, time.process_time() - cpu


def startup_cpu_seconds() -> float:
    """A driver process's start (interpreter, rlkube, Optuna), in a fresh process: paid once per sweep."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", f"import {driver_module.MODULE}"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def table(rows: list[tuple[str, ...]]) -> str:
    """Aligned columns: the first to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths, strict=True))) for row in rows)


def _report(config: SweepConfig, study: optuna.Study, wall_s: float, run_cpu_s: float, startup_s: float,
            timer: CallTimer) -> None:
    trials = counted(study.get_trials(deepcopy=False))
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    print(f"sweep overhead on {config.cluster}: {config.trials} trials of {config.train.hparams} "
          f"(--train-steps {config.train.train_steps}, {config.seeds} seed each), {config.parallel} at a time, "
          f"--poll {config.poll_seconds:g}, sampler {config.sampler}, pruner {config.pruner}")
    print(f"trials: {len(trials)} ({', '.join(f'{n} {s.name.lower()}' for s, n in states.items() if n)}); "
          f"sweep wall {wall_s:.1f} s")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        print(f"first failure: trial {failed[0].number}: {failed[0].user_attrs.get(REASON, '?')}")
    total_s = startup_s + run_cpu_s
    per_trial_s = total_s / max(1, len(trials))
    share = total_s / wall_s
    print(f"driver CPU: {total_s:.2f} s ({startup_s:.2f} s start-up, {run_cpu_s:.2f} s driving), "
          f"{per_trial_s:.3f} s per trial (goal < {CPU_PER_TRIAL_GOAL_S:g} s: "
          f"{'met' if per_trial_s < CPU_PER_TRIAL_GOAL_S else 'MISSED'})")
    print(f"driver share of one core over the sweep: {100 * share:.2f} % (goal < {100 * CORE_SHARE_GOAL:g} %: "
          f"{'met' if share < CORE_SHARE_GOAL else 'MISSED'})")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[1]:.1f} over the last 5 minutes")
    print()
    rows = [("operation", "calls", "CPU ms/call", "wall ms/call", "CPU s in all")]
    timed_cpu = 0.0
    for label, calls in sorted(timer.calls.items(), key=lambda item: -item[1].cpu_s):
        timed_cpu += calls.cpu_s
        per = max(1, calls.count)
        rows.append((label, str(calls.count), f"{1000 * calls.cpu_s / per:.2f}", f"{1000 * calls.wall_s / per:.2f}",
                     f"{calls.cpu_s:.2f}"))
    rows.append(("the rest (loop, log lines, set-up)", "-", "-", "-", f"{run_cpu_s - timed_cpu:.2f}"))
    print(table(rows))
    if per_trial_s >= CPU_PER_TRIAL_GOAL_S or share >= CORE_SHARE_GOAL:
        label, calls = max(timer.calls.items(), key=lambda item: item[1].cpu_s)
        print(f"\nwhy the goal is missed: the largest cost is {label}, {calls.cpu_s:.2f} s of {total_s:.2f} s "
              f"({calls.count} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", default="local", help="cluster profile the trials run on")
    parser.add_argument("--hparams", default="ppo_cartpole")
    parser.add_argument("--train-steps", type=int, default=4096, help="short, yet long enough to span several polls")
    parser.add_argument("--eval-every", type=int, default=512, help="each evaluation is a report the pruner decides on")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between the driver's reads")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--pruner", default="median")
    args = parser.parse_args()
    try:
        config = sweep_config(args.cluster, args.hparams, args.train_steps, args.eval_every, 1, args.trials,
                              args.parallel, args.seeds, args.sampler, args.pruner, args.poll, seed=0)
        startup_s = startup_cpu_seconds()
        timer = CallTimer()
        with tempfile.TemporaryDirectory(prefix="rlkube-sweep-overhead-") as workdir:
            study, wall_s, run_cpu_s = run_sweep(config, Path(workdir), timer)
            _report(config, study, wall_s, run_cpu_s, startup_s, timer)
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
