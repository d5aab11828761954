"""How a run's throughput scales with its actors when the environment, not the CPU, sets the pace (issue 29).

Two cores cannot show actors scaling by CPU. Here every env runs in real time, a step every 10 ms on no CPU
(`WaitingCartPole-v1`, rlkube.rl.envs.StepWait), so an actor with E envs steps at most E x 100 env steps/s, and N
actors N x E x 100: the ideal line. For each transport and each N, `rlkube train --num-workers N` runs
impala_cartpole's actors on it with two learners:

* `none`: IMPALA's learner less its gradient step (benchmarks/impala_without_updates.py). It takes every rollout in
  and publishes weights as IMPALA's does, so the run goes as fast as its actors and their transport can: their ceiling.
* `impala`: IMPALA's learner, a gradient step per rollout.

A run's SPS is its steady rate: steps over time in the intervals between its charts/SPS logs past a fifth of the
run (an interval's time is its steps over its SPS), so that interpreter, TensorFlow and Ray start-up are left out. (Not
the median of the logged SPS: rollouts that arrive in bursts make short fast intervals and long slow ones, and the
median of those is not the rate.)

After the table, each transport's notes: up to how many actors each learner stayed at >= 80% of the line (the
issue's goal), the actors' ceiling (the most SPS without updates), and where IMPALA's learner saturates: the first N
where its SPS falls below 80% of the no-update learner's with as many actors, from where the learner, not the actors,
sets the pace; its limit is the most IMPALA reached. On two cores the actors' own CPU can run out first:
benchmarks/learner_alone.py times the learner with the cores to itself.

Local Ray needs RAY_ADDRESS unset. SPS is printed as measured; nothing here asserts a speed. The default table
takes ~13 minutes on 2 cores.

    python benchmarks/actor_scaling.py [--actors 1,2,4,8,16] [--transports processes,ray] [--seconds 15]
"""

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

BENCHMARKS = Path(__file__).resolve().parent
STEP_SECONDS = 0.01  # WaitingCartPole-v1's beat: rlkube.rl.envs.STEP_WAIT_SECONDS (importing it would load gymnasium)
LEARNERS = {
    "none": [sys.executable, str(BENCHMARKS / "impala_without_updates.py")],
    "impala": [sys.executable, "-m", "rlkube"],
}
# What `rlkube train` is told for each transport; a transport on a cluster adds its own entry.
TRANSPORTS = {"processes": ["--actors", "processes"], "ray": ["--actors", "ray"]}
SATURATED_BELOW = 0.8  # of the no-update learner's SPS: the learner holds the run back
LINEAR_AT_LEAST = 0.8  # of the ideal line: the goal, up to the learner's limit
STEADY_AFTER = 0.2  # of the run's steps: start-up lies before


@dataclasses.dataclass(frozen=True)
class Run:
    transport: str
    learner: str
    actors: int
    sps: float


def ideal_sps(actors: int, envs_per_actor: int, step_seconds: float = STEP_SECONDS) -> float:
    """The linear line: every actor's envs stepping side by side, one step per beat each."""
    return actors * envs_per_actor / step_seconds


def steady_sps(logged: list[tuple[int, float]]) -> float:
    """Steps over time in the intervals that the logged (step, charts/SPS) pairs close, from the first that starts past
    STEADY_AFTER of the last step: each interval's time is its steps over its SPS."""
    last_step = logged[-1][0]
    intervals = [(step - previous, sps) for (previous, _), (step, sps) in itertools.pairwise(logged)
                 if previous >= STEADY_AFTER * last_step]
    if not intervals:
        raise ValueError(f"too few SPS logs to time a steady state ({len(logged)}): give the runs more --seconds")
    return sum(steps for steps, _ in intervals) / sum(steps / sps for steps, sps in intervals)


def saturation(none: dict[int, float], impala: dict[int, float]) -> int | None:
    """The fewest actors at which IMPALA's learner reaches under SATURATED_BELOW of the no-update learner's SPS."""
    return next((actors for actors in sorted(impala) if impala[actors] < SATURATED_BELOW * none[actors]), None)


def linear_up_to(sps: dict[int, float], envs_per_actor: int) -> int | None:
    """The most actors up to which every count measured reached LINEAR_AT_LEAST of the ideal line."""
    counts = sorted(sps)
    short = [actors for actors in counts if sps[actors] < LINEAR_AT_LEAST * ideal_sps(actors, envs_per_actor)]
    within = [actors for actors in counts if not short or actors < short[0]]
    return within[-1] if within else None


def table(runs: list[Run], envs_per_actor: int) -> str:
    """Markdown: each transport's SPS by actors and learner against the ideal line; then, per transport, how far each
    learner stayed near linear, the actors' ceiling and where IMPALA's learner saturates."""
    lines = ["| transport | actors | ideal SPS | no update: SPS | % of linear | IMPALA: SPS | % of linear |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for transport in dict.fromkeys(run.transport for run in runs):
        sps = {(run.learner, run.actors): run.sps for run in runs if run.transport == transport}
        for actors in sorted({actors for _, actors in sps}):
            ideal = ideal_sps(actors, envs_per_actor)
            cells = [f"{sps[learner, actors]:,.0f} | {sps[learner, actors] / ideal:.0%}"
                     if (learner, actors) in sps else "- | -" for learner in ("none", "impala")]
            lines.append(f"| {transport} | {actors} | {ideal:,.0f} | {' | '.join(cells)} |")
        by_learner = {learner: {actors: value for (name, actors), value in sps.items() if name == learner}
                      for learner in LEARNERS}
        notes.append(f"- {transport}: {_notes(by_learner['none'], by_learner['impala'], envs_per_actor)}")
    return "\n".join([*lines, "", *notes])


def _notes(none: dict[int, float], impala: dict[int, float], envs_per_actor: int) -> str:
    said = []
    for name, sps in (("IMPALA's learner", impala), ("no update", none)):
        if sps:
            up_to = linear_up_to(sps, envs_per_actor)
            reach = f"up to {up_to} actors" if up_to else "at no actor count"
            said.append(f"{name} >= {LINEAR_AT_LEAST:.0%} of linear {reach}")
    if none:
        said.append(f"the actors' ceiling ~{max(none.values()):,.0f} SPS (the most without updates)")
    if none and impala and none.keys() >= impala.keys():
        saturated_at = saturation(none, impala)
        said.append(f"IMPALA's learner saturates at {saturated_at} actors (under {SATURATED_BELOW:.0%} of the "
                    f"no-update SPS), its limit ~{max(impala.values()):,.0f} SPS" if saturated_at else
                    f"IMPALA's learner kept up to {max(impala)} actors ({max(impala.values()):,.0f} SPS at most): its "
                    f"limit lies further")
    return "; ".join(said)


def train(learner: str, transport: str, actors: int, envs_per_actor: int, seconds: float, workdir: Path) -> Run:
    """One run of `seconds` at the ideal rate (longer where it falls short), and its steady SPS."""
    out = workdir / f"{learner}-{transport}-{actors}"
    steps = int(ideal_sps(actors, envs_per_actor) * seconds)
    command = [*LEARNERS[learner], "train", "--hparams", "impala_cartpole", "--env", "WaitingCartPole-v1",
               "--hparam-override", f"num_envs={envs_per_actor}", "--train-steps", str(steps),
               "--num-workers", str(actors), *TRANSPORTS[transport], "--eval-episodes", "0", "--test-episodes", "0",
               "--output-dir", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr[-2000:]}")
    accumulator = EventAccumulator(str(out / "copy-0"), size_guidance={"scalars": 0})
    accumulator.Reload()
    run = Run(transport, learner, actors,
              steady_sps([(event.step, event.value) for event in accumulator.Scalars("charts/SPS")]))
    print(json.dumps({**dataclasses.asdict(run), "sps": round(run.sps), "ideal": ideal_sps(actors, envs_per_actor),
                      "wall_s": round(time.perf_counter() - started, 1)}), flush=True)
    return run


def _names(parser: argparse.ArgumentParser, text: str, known: dict[str, list[str]], option: str) -> list[str]:
    names = text.split(",")
    if unknown := [name for name in names if name not in known]:
        parser.error(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", default="1,2,4,8,16", help="comma-separated actor counts")
    parser.add_argument("--transports", default="processes,ray", help="comma-separated: " + ", ".join(TRANSPORTS))
    parser.add_argument("--learners", default="none,impala", help="comma-separated: " + ", ".join(LEARNERS))
    parser.add_argument("--envs-per-actor", type=int, default=8, help="each actor's envs (impala_cartpole's: 8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="a run's training time at the ideal rate")
    args = parser.parse_args()
    transports = _names(parser, args.transports, TRANSPORTS, "--transports")
    learners = _names(parser, args.learners, LEARNERS, "--learners")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in transports:
            for actors in (int(count) for count in args.actors.split(",")):
                runs += [train(learner, transport, actors, args.envs_per_actor, args.seconds, Path(tmp))
                         for learner in learners]
    print(table(runs, args.envs_per_actor))


if __name__ == "__main__":
    main()
