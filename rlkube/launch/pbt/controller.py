"""The PBT controller: ranks the members at every boundary, exploits and explores, and tells each member.

The members are the copies of one experiment named after the run, on any target (one Indexed Job on Kubernetes),
started with `--pbt-interval`. At every boundary a member evaluates, checkpoints and waits; once every member has
checkpointed there, the controller ranks them, copies each exploited member the donor's checkpoint
(rlkube.launch.pbt.exploit) and writes every member its decision (rlkube.storage.pbt_decisions), in the members'
directories: a local path or their bucket. A member preempted mid-interval resumes exactly, as any copy does, with
the decisions it has had. Members stay alive across generations, so a generation costs a ranking and a few file
copies, not a restart of every member (TensorFlow, the agent, its compiled steps).

It runs detached (`rlkube pbt start` starts `python -m rlkube.launch.pbt.controller NAME`). Everything it has
decided is in pbt.jsonl, a generation's lines ending with the generation's own line; so a new controller (after
`kill -9` of the old one) drops a generation's unfinished lines, redoes its decisions (they depend only on the
seed and the members' evaluations), and adopts the members' experiment.
"""

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.detached import DetachedLoop, log_line, stop_on_signals
from rlkube.launch.pbt.config import (
    PBTConfig,
    check_mutations,
    decide,
    hparam_limits,
    initial_params,
    member_seed,
    scores,
    stream_seed,
)
from rlkube.launch.pbt.exploit import copy_location, copy_member_state, final_state_digest, has_checkpoint_at
from rlkube.launch.spec import build_spec, current_provenance
from rlkube.launch.sweep.space import overrides_of
from rlkube.launch.targets.base import target_for
from rlkube.run.options import CopyPlan, TrainOptions
from rlkube.storage.ownership import PBT_CONTROLLER, check_co_writer
from rlkube.storage.pbt_decisions import write_decision

MODULE = "rlkube.launch.pbt.controller"  # what the controller runs as (python -m), and how it is recognised
CONFIG_FILE, LINEAGE_FILE, LOG_FILE, PID_FILE = "pbt.json", "pbt.jsonl", "controller.log", "controller.pid"


def pbt_dir(name: str) -> Path:
    return store.data_dir() / "pbt" / name


def load_config(name: str) -> PBTConfig:
    path = pbt_dir(name) / CONFIG_FILE
    if not path.exists():
        known = sorted(p.name for p in (store.data_dir() / "pbt").glob("*") if (p / CONFIG_FILE).exists())
        raise UserError(f"no PBT run named '{name}'" + (f"; known: {', '.join(known)}" if known else
                                                         "; start one with rlkube pbt start"))
    return PBTConfig.from_dict(json.loads(path.read_text()))


def read_lineage(name: str) -> list[dict[str, Any]]:
    """pbt.jsonl up to its last complete generation (a generation's own line, with "scores", ends it)."""
    path = pbt_dir(name) / LINEAGE_FILE
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    ends = [i for i, line in enumerate(lines) if "scores" in line]
    return lines[: ends[-1] + 1] if ends else []


def generations(lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lineage if "scores" in line]


def exploits(lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lineage if "donor" in line]


def current_params(config: PBTConfig, lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every member's hparams now: after the last finished generation, or the initial draw."""
    done = generations(lineage)
    if done:
        return done[-1]["params"]
    hp = config.train.resolved_hparams()
    return initial_params(config, check_mutations(config.mutations, hp, "the run's mutations"))


def ancestry(config: PBTConfig, lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best-scoring member's history, oldest first: each stretch of steps with the member it was then (an
    exploit makes the donor the ancestor before it) and the hparams it trained with; the last stretch has the score."""
    done = generations(lineage)
    if not done:
        raise UserError(f"PBT {config.name} has finished no generation yet; rlkube pbt status {config.name}")
    final = done[-1]["scores"]
    member = max(range(config.population), key=lambda m: (final[m], -m))
    received = {(e["generation"], e["member"]): e["donor"] for e in exploits(lineage)}
    start = current_params(config, [])
    segments: list[dict[str, Any]] = []
    for generation in reversed(range(len(done))):
        params = done[generation - 1]["params"][member] if generation else start[member]
        begin = done[generation - 1]["step"] if generation else 0
        if segments and segments[-1]["member"] == member and segments[-1]["params"] == params:
            segments[-1]["from"] = begin
        else:
            segments.append({"from": begin, "to": done[generation]["step"], "member": member, "params": params})
        member = received.get((generation - 1, member), member)
    segments.reverse()
    segments[-1]["score"] = max(final)
    return segments


def plot_schedule(segments: list[dict[str, Any]], path: Path, title: str) -> None:
    """One panel per mutated hparam: its value over steps along the ancestry, the members marked where they change."""
    import matplotlib  # noqa: PLC0415  (the sweep extra brings it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = sorted(segments[0]["params"])
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 2.2 * len(names) + 0.8), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        values = [s["params"][name] for s in segments]
        numeric = all(isinstance(v, int | float) for v in values)
        levels = sorted({str(v) for v in values})
        ys = values if numeric else [levels.index(str(v)) for v in values]
        steps = [s["from"] for s in segments] + [segments[-1]["to"]]
        axis.step(steps, [*ys, ys[-1]], where="post")
        if not numeric:
            axis.set_yticks(range(len(levels)), levels)
        elif name == "lr" or (min(values) > 0 and max(values) / min(values) > 20):
            axis.set_yscale("log")
        for segment, y in zip(segments, ys, strict=True):
            axis.annotate(f"m{segment['member']}", (segment["from"], y), fontsize=7, xytext=(2, 3),
                          textcoords="offset points")
        axis.set_ylabel(name)
    axes[-1, 0].set_xlabel("environment steps")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror}); choose another --output-file") from None
    finally:
        plt.close(figure)


def compare(original: str, replay: str) -> list[str]:
    """How a replay differs from the run it replays: its pbt.jsonl, and each member's final state (the digest its
    runner writes in summary.json). Empty when they are identical."""
    differences = []
    if read_lineage(original) != read_lineage(replay):
        differences.append("pbt.jsonl differs")
    config = load_config(original)
    digests = {}
    for name in (original, replay):
        output_dir = store.get(name).output_dir
        digests[name] = [final_state_digest(output_dir, member) for member in range(config.population)]
    differing = [m for m, (a, b) in enumerate(zip(digests[original], digests[replay], strict=True)) if a != b]
    if differing:
        differences.append(f"members {differing} end with other states")
    return differences


def controller_process(name: str) -> DetachedLoop:
    return DetachedLoop("controller", MODULE, name, pbt_dir(name) / LOG_FILE)


def controller_alive(name: str) -> int | None:
    """The pid of the run's controller, if one is running."""
    path = pbt_dir(name) / PID_FILE
    pid = int(path.read_text()) if path.exists() else None
    return pid if controller_process(name).is_running(pid) else None


def launch(name: str) -> int:
    """Start the controller detached, logging to the run's directory; returns its pid."""
    pid = controller_process(name).launch()
    (pbt_dir(name) / PID_FILE).write_text(str(pid))
    return pid


class Controller:
    def __init__(self, config: PBTConfig, emit: Callable[[str], None]) -> None:
        self.config = config
        self.emit = emit
        self.profile = get_profile(config.cluster)
        self.target = target_for(self.profile)
        hp = config.train.resolved_hparams()
        self.space = check_mutations(config.mutations, hp, "the run's mutations")
        self.limits = hparam_limits(hp, self.space)
        self.boundaries = config.boundaries(hp.train_steps)
        self.train_steps = hp.train_steps
        self.lineage_path = pbt_dir(config.name) / LINEAGE_FILE
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> bool:
        """Every generation that is left; True once the population has trained to the end."""
        lineage = read_lineage(self.config.name)
        # A generation's lines after its last complete one were written by a controller that died mid-exploit.
        self.lineage_path.write_text("".join(json.dumps(line) + "\n" for line in lineage))
        params = current_params(self.config, lineage)
        record = self._members()
        for generation in range(len(generations(lineage)), len(self.boundaries)):
            step = self.boundaries[generation]
            last = generation == len(self.boundaries) - 1
            self.emit(f"generation {generation}: training to step {step}")
            record = self._wait_for_boundary(record, step, last)
            if record is None:
                return False
            params = self._exploit_and_explore(generation, step, record, params, last)
        self.emit(f"PBT {self.config.name} done: {self.config.population} members trained to {self.train_steps}")
        return True

    def _members(self) -> store.Record:
        """The members' experiment: adopted when it is this run's (a controller restarted), else submitted."""
        name = self.config.name
        if store.exists(name):
            record = store.get(name)
            if record.spec.train == self._train_options() and record.spec.copies == self._initial_copies() and \
                    not record.backend.get("cancelled"):
                self.emit(f"adopted the members' experiment {name}")
                return record
        return self._submit()

    def _train_options(self) -> TrainOptions:
        return dataclasses.replace(self.config.train, pbt_interval=self.config.interval)

    def _initial_copies(self) -> list[CopyPlan]:
        """The members as the experiment starts them: their seeds and first hparams (later ones come in decisions)."""
        params = current_params(self.config, [])
        return [CopyPlan(member, member_seed(self.config, member), overrides_of(params[member]))
                for member in range(self.config.population)]

    def _submit(self) -> store.Record:
        provenance = current_provenance(f"rlkube pbt {self.config.name}", datetime.now(UTC))
        spec = build_spec(self.profile, self._train_options(), self._initial_copies(), name=self.config.name,
                          provenance=provenance)
        self.target.submit(spec, replace=True)
        self.emit(f"started {self.config.population} members as experiment {self.config.name}")
        return store.get(self.config.name)

    def _wait_for_boundary(self, record: store.Record, step: int, last: bool) -> store.Record | None:
        """Until every member has checkpointed at `step` (the end: has finished); None if the run stops. Failed
        members are started again (each resumes from its checkpoint, with the decisions it has had)."""
        attempts = 0
        while True:
            if self.stopping:
                self.target.cancel(record)
                self.emit("cancelled; every member checkpointed")
                return None
            copies = self.target.describe(record)
            phases = {c.phase for c in copies}
            if last and phases == {"Succeeded"}:
                return record
            if not last and all(has_checkpoint_at(record.output_dir, c.copy, step) for c in copies):
                return record
            if "Cancelled" in phases:
                self.emit(f"the members' experiment {record.name} was cancelled; stopping")
                return None
            if "Failed" in phases and not phases & {"Running", "Pending"}:
                failed = sorted(c.copy for c in copies if c.phase == "Failed")
                if attempts >= self.config.retries:
                    self.emit(f"members {failed} failed {attempts + 1} times; stopping (see rlkube logs {record.name})")
                    return None
                attempts += 1
                self.emit(f"members {failed} failed; starting the members again (each resumes from its "
                          f"checkpoint), attempt {attempts + 1}")
                record = self._submit()
            self._sleep(self.target.status_poll_seconds)  # every member waits while it does

    def _exploit_and_explore(self, generation: int, step: int, record: store.Record, params: list[dict[str, Any]],
                             last: bool) -> list[dict[str, Any]]:
        """Rank, exploit and explore at a boundary, then tell every member (at the end, where nothing is decided,
        the generation's line only records the scores). The generation's own line goes last."""
        started = time.perf_counter()
        # The controller writes into the members' directories as their named co-writer, and into no one else's.
        for member in range(self.config.population):
            check_co_writer(copy_location(record.output_dir, member), record.spec.experiment_id or None, PBT_CONTROLLER)
        member_scores = scores(self.target.evaluations(record), self.config, step)
        decided = [] if last else decide(self.config, self.space, self.limits, generation, step, member_scores, params)
        params = [dict(p) for p in params]
        exploits_by_member = {exploit.member: exploit for exploit in decided}
        for exploit in decided:
            seed = stream_seed(self.config, exploit.member, generation)
            copy_member_state(record.output_dir, exploit, seed)
            params[exploit.member] = exploit.new
            self.emit(f"generation {generation}: member {exploit.member} ({exploit.score:.1f}) <- member "
                      f"{exploit.donor} ({exploit.donor_score:.1f}): {overrides_of(exploit.new)}")
        if not last:
            for member in range(self.config.population):
                exploit = exploits_by_member.get(member)
                write_decision(copy_location(record.output_dir, member), {
                    "generation": generation, "step": step, "hparams": params[member],
                    "exploit": {"donor": exploit.donor} if exploit else None})
        lines = [*(e.to_dict() for e in decided),
                 {"generation": generation, "step": step, "scores": member_scores, "params": params}]
        with open(self.lineage_path, "a") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        if not last:
            self.emit(f"generation {generation}: ranked, exploited and told every member in "
                      f"{time.perf_counter() - started:.2f} s")
        return params

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))


def main(name: str) -> int:
    try:
        controller = Controller(load_config(name), log_line)
    except UserError as error:
        log_line(f"error: {error}")
        return 2
    stop_on_signals(controller.stop)
    config = controller.config
    log_line(f"controller of PBT {name} (pid {os.getpid()}): {config.population} members, "
             f"{len(controller.boundaries)} generations of {config.interval} steps, on {config.cluster}")
    try:
        return 0 if controller.run() else 1
    except UserError as error:
        log_line(f"error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
