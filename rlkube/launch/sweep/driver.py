"""The sweep driver: asks Optuna for params, runs each trial as an experiment of K seeds on the sweep's target,
reports the copies' evaluations as they land, and tells Optuna how each trial ended.

It runs detached (`rlkube sweep start` starts `python -m rlkube.launch.sweep.driver NAME`), logging to the
sweep's directory, so the user's shell is free and `kill -9` of it loses nothing: every fact it acts on is in
the study (trial params, the experiment it runs as, reported values) or in the experiment store, and a new
driver adopts the live trials by name instead of starting them again.

Trials are counted by slot: a fresh trial takes the next slot (its rank among fresh trials, which every driver
of a shared study agrees on, since Optuna numbers trials atomically), a retry takes its failed trial's slot, and
a fresh trial past --trials is told FAIL as surplus at once. So N slots run however many drivers share a study.
"""

import contextlib
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.detached import DetachedLoop, log_line, stop_on_signals
from rlkube.launch.spec import build_spec, current_provenance
from rlkube.launch.sweep import study as studies
from rlkube.launch.sweep.config import (
    SweepConfig,
    copy_value,
    intermediate_values,
    per_seed_values,
)
from rlkube.launch.sweep.methods import PRUNERS
from rlkube.launch.sweep.space import check_space, overrides_of
from rlkube.launch.targets.base import CopyStatus, target_for
from rlkube.rundir.across_copies import mean_and_std

MODULE = "rlkube.launch.sweep.driver"  # what the driver runs as (python -m), and how its process is recognised
DRIVER_LOG = "driver.log"
JOURNAL_FILE = "study.journal"
# Trial user attributes: what a driver (this one, a later one, another machine's) needs to know of a trial.
SLOT, ATTEMPT, RETRY_OF, DRIVER, EXPERIMENT = "slot", "attempt", "retry_of", "driver", "experiment"
STEPS, VALUES, STD, REASON, SURPLUS = "steps", "values", "std", "reason", "surplus"


def sweep_dir(name: str) -> Path:
    return store.data_dir() / "sweeps" / name


def default_storage(name: str) -> str:
    """The journal file beside the sweep's driver log."""
    return str(sweep_dir(name) / JOURNAL_FILE)


def is_fresh(trial: FrozenTrial) -> bool:
    """A trial the sampler proposed, as opposed to a retry (enqueued with its slot already set)."""
    return RETRY_OF not in trial.user_attrs


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that take a slot: every trial but the surplus ones."""
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


def owned_running(study: optuna.Study, driver_id: str) -> list[tuple[FrozenTrial, optuna.trial.Trial]]:
    """The study's running trials that this driver owns (or that no driver recorded yet), each reopened to be told."""
    return [(frozen, optuna.trial.Trial(study, frozen._trial_id))
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if frozen.user_attrs.get(DRIVER, driver_id) == driver_id]


@dataclass
class LiveTrial:
    trial: optuna.trial.Trial
    record: store.Record
    reported: set[int] = field(default_factory=set)
    steps: int = 0


@dataclass
class EndingTrial:
    """A trial whose end is decided, waiting for its experiment's cancel (its copies checkpoint and exit)."""

    live: LiveTrial
    state: TrialState
    reason: str
    cancelled: Future


class Driver:
    def __init__(self, study: optuna.Study, config: SweepConfig, driver_id: str,
                 emit: Callable[[str], None]) -> None:
        self.config = config
        self.driver_id = driver_id
        self.emit = emit
        self.profile = get_profile(config.cluster)
        self.target = target_for(self.profile)
        hp = config.train.resolved_hparams()
        self.space = check_space(config.space, hp, "the sweep's space")
        self.distributions = {name: studies.distribution(dim) for name, dim in self.space.items()}
        self.study = studies.drive(study, config, self.space, hp.train_steps, hp.eval_every)
        self.train_steps = hp.train_steps
        self.live: dict[int, LiveTrial] = {}
        # A cancel waits for the copies to checkpoint and exit (up to the local target's grace period); it runs
        # beside the loop, so the other trials are polled meanwhile. An ending trial still holds its place in
        # --parallel until its copies are gone.
        self.ending: dict[int, EndingTrial] = {}
        self.canceller = ThreadPoolExecutor(max_workers=config.parallel, thread_name_prefix="cancel")
        self.stopping = False

    def run(self) -> None:
        """Until every slot has ended (or a stop is asked for: then every live trial is cancelled)."""
        self._adopt()
        while not self.stopping:
            self._finish_ended()
            for number in list(self.live):
                self._poll(number)
            while not self.stopping and len(self.live) + len(self.ending) < self.config.parallel:
                trial = self._next_trial()
                if trial is None:
                    break
                self._start(trial)
            if not self.live and not self.ending and not self._more_to_ask():
                break
            self._sleep(self.config.poll_seconds)
        if self.stopping:
            for number in list(self.live):
                self._end(number, TrialState.FAIL, "cancelled by rlkube sweep cancel")
        self.canceller.shutdown(wait=True)
        self._finish_ended()
        self._summarise()

    def stop(self) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))

    # Which trials run

    def _more_to_ask(self) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        fresh = [t for t in counted(trials) if is_fresh(t)]
        return len(fresh) < self.config.trials or any(t.state == TrialState.WAITING for t in trials)

    def _next_trial(self) -> optuna.trial.Trial | None:
        if not self._more_to_ask():
            return None
        trial = self.study.ask(self.distributions)
        if SLOT not in trial.user_attrs:
            earlier = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number and is_fresh(t)]
            trial.set_user_attr(SLOT, len(earlier))
            trial.set_user_attr(ATTEMPT, 0)
            if len(earlier) >= self.config.trials:  # another driver of this study took the last slot first
                trial.set_user_attr(SURPLUS, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return None
        trial.set_user_attr(DRIVER, self.driver_id)
        trial.set_user_attr(EXPERIMENT, self.config.trial_name(trial.number))
        return trial

    def _adopt(self) -> None:
        """Take back this driver's live trials (after `kill -9` of the driver, say): by name, not by restarting."""
        for frozen, trial in owned_running(self.study, self.driver_id):
            if SLOT not in frozen.user_attrs:  # the driver died between asking and recording the slot
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            name = frozen.user_attrs.get(EXPERIMENT) or self.config.trial_name(frozen.number)
            trial.set_user_attr(EXPERIMENT, name)
            if store.exists(name):
                self.live[frozen.number] = LiveTrial(trial, store.get(name), set(frozen.intermediate_values))
                self.emit(f"trial {frozen.number}: adopted {name}, still running")
            else:
                self._start(trial)

    # One trial's life

    def _start(self, trial: optuna.trial.Trial) -> None:
        number = trial.number
        name = self.config.trial_name(number)
        overrides = overrides_of(trial.params)
        provenance = current_provenance(f"rlkube sweep {self.config.name} (trial {number})", datetime.now(UTC))
        try:
            spec = build_spec(self.profile, self.config.train, self.config.trial_copies(overrides), name=name,
                              provenance=provenance, sweep=self.config.name)
            self.target.submit(spec, replace=True)
        except UserError as error:
            self.emit(f"trial {number}: not submitted: {error}")
            self._tell_failed(trial, f"not submitted: {error}")
            return
        self.live[number] = LiveTrial(trial, store.get(name))
        seeds = f"{self.config.seeds} {'seed' if self.config.seeds == 1 else 'seeds'}"
        self.emit(f"trial {number}: started {name} ({seeds}): {overrides}")

    def _poll(self, number: int) -> None:
        live = self.live[number]
        try:
            copies = self.target.describe(live.record)
            evaluations = self.target.evaluations(live.record)
        except UserError as error:  # a cluster or bucket that did not answer this time: try again next round
            self.emit(f"trial {number}: cannot read {live.record.name} now: {error}")
            return
        self._record_steps(live, copies)
        values = (per_seed_values if PRUNERS[self.config.pruner].per_seed else intermediate_values)(
            evaluations, self.config.seeds)
        new = [step for step in values if step not in live.reported]
        for step in new:
            live.trial.report(values[step], step)
            live.reported.add(step)
        phases = {c.phase for c in copies}
        if phases == {"Succeeded"}:
            self._complete(number, evaluations)
        elif "Failed" in phases:
            failed = next(c for c in copies if c.phase == "Failed")
            self._end(number, TrialState.FAIL, f"copy-{failed.copy} failed: {failed.last_failure or 'exit non-zero'}")
        elif "Cancelled" in phases or "Unknown" in phases:
            self._end(number, TrialState.FAIL, f"its experiment {live.record.name} was cancelled or removed")
        elif new and max(new) < self.train_steps and live.trial.should_prune():  # at the end, nothing to save
            self._end(number, TrialState.PRUNED, f"pruned at step {max(new)}")

    def _record_steps(self, live: LiveTrial, copies: list[CopyStatus]) -> None:
        # A trial is as far as its slowest seed: its value at a step needs every seed's evaluation there, and a
        # pruned trial whose faster seed finished still stopped the others early.
        steps = min((c.last_step or 0 for c in copies), default=0)
        if steps > live.steps:
            live.steps = steps
            live.trial.set_user_attr(STEPS, steps)

    def _complete(self, number: int, evaluations: dict[int, list[dict[str, float]]]) -> None:
        live = self.live.pop(number)
        per_copy = [copy_value(evaluations.get(k, []), self.config.objective) for k in range(self.config.seeds)]
        if None in per_copy:
            self.live[number] = live
            self._end(number, TrialState.FAIL, "a copy finished without evaluating (raise --train-steps)")
            return
        value, std = mean_and_std(per_copy)
        live.trial.set_user_attr(VALUES, per_copy)
        live.trial.set_user_attr(STD, std)
        self.study.tell(live.trial, value)
        self.emit(f"trial {number}: complete, {value:.2f} ± {std:.2f} over {len(per_copy)} seeds")

    def _end(self, number: int, state: TrialState, reason: str) -> None:
        """Start cancelling the trial's experiment (its copies checkpoint); _finish_ended tells Optuna."""
        live = self.live.pop(number)
        self.ending[number] = EndingTrial(live, state, reason, self.canceller.submit(self.target.cancel, live.record))

    def _finish_ended(self) -> None:
        """For each ended trial whose experiment is cancelled: record how far it got and why, and tell Optuna."""
        for number, ending in list(self.ending.items()):
            if not ending.cancelled.done():
                continue
            del self.ending[number]
            live = ending.live
            with contextlib.suppress(UserError):
                ending.cancelled.result()
                self._record_steps(live, self.target.describe(live.record))
            live.trial.set_user_attr(REASON, ending.reason)
            self.emit(f"trial {number}: {ending.state.name.lower()}, {ending.reason} (steps reached {live.steps})")
            if ending.state == TrialState.FAIL:
                self._tell_failed(live.trial, ending.reason)
            else:
                self.study.tell(live.trial, state=ending.state)

    def _tell_failed(self, trial: optuna.trial.Trial, reason: str) -> None:
        """FAIL, then the same params again while retries last (not for a cancelled sweep)."""
        trial.set_user_attr(REASON, reason)
        attrs = trial.user_attrs
        self.study.tell(trial, state=TrialState.FAIL)
        attempt = attrs.get(ATTEMPT, 0)
        if not self.stopping and attempt < self.config.retries:
            self.study.enqueue_trial(trial.params, user_attrs={SLOT: attrs[SLOT], ATTEMPT: attempt + 1,
                                                               RETRY_OF: trial.number})
            self.emit(f"trial {trial.number}: retrying its params (attempt {attempt + 2} of {self.config.retries + 1})")

    def _summarise(self) -> None:
        trials = counted(self.study.get_trials(deepcopy=False))
        states = {state: sum(t.state == state for t in trials) for state in TrialState}
        done = ", ".join(f"{count} {state.name.lower()}" for state, count in states.items() if count)
        self.emit(f"sweep {self.config.name} {'cancelled' if self.stopping else 'done'}: {done or 'no trials'}")
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = max(complete, key=lambda t: t.value)
            self.emit(f"best: trial {best.number}, {best.value:.2f} ± {best.user_attrs.get(STD, 0.0):.2f}: "
                      f"{overrides_of(best.params)}")


def cancel_orphans(study: optuna.Study, driver_id: str) -> list[str]:
    """With no driver alive, cancel its live trials' experiments and mark them FAIL; returns their names."""
    cancelled = []
    for frozen, trial in owned_running(study, driver_id):
        name = frozen.user_attrs.get(EXPERIMENT)
        if name and store.exists(name):
            record = store.get(name)
            target_for(record).cancel(record)
            cancelled.append(name)
        trial.set_user_attr(REASON, "cancelled by rlkube sweep cancel")
        study.tell(trial, state=TrialState.FAIL)
    return cancelled


def driver_process(name: str) -> DetachedLoop:
    return DetachedLoop("driver", MODULE, name, sweep_dir(name) / DRIVER_LOG)


def driver_alive(sweep: store.SweepRecord) -> bool:
    """Whether the sweep's recorded driver process is running."""
    return driver_process(sweep.name).is_running(sweep.driver_pid)


def launch(sweep: store.SweepRecord) -> store.SweepRecord:
    """Start the driver detached, logging to the sweep's directory; returns the record with its pid."""
    pid = driver_process(sweep.name).launch()
    started = store.SweepRecord(sweep.name, sweep.storage, sweep.driver_id, pid, sweep.created)
    store.save_sweep(started)
    return started


def main(name: str) -> int:
    try:
        sweep = store.get_sweep(name)
        study, config = studies.load(name, sweep.storage)
        driver = Driver(study, config, sweep.driver_id, log_line)
    except UserError as error:
        log_line(f"error: {error}")
        return 2
    stop_on_signals(driver.stop)
    log_line(f"driver of sweep {name} (pid {os.getpid()}): {config.trials} trials x {config.seeds} seeds, "
             f"{config.parallel} at a time, sampler {config.sampler}, pruner {config.pruner}, on {config.cluster}")
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
