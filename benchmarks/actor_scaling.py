"""How a run's throughput scales with its actors when the environment, not the CPU, sets the pace.

Two cores cannot show actors scaling by CPU. Here every env step waits 10 ms on no CPU (`WaitingCartPole-v1`,
rlkube/rl/envs.py), so an actor steps its envs at 100 steps/s at most (its vector env steps them one after another),
and N actors at N x 100: the ideal line. Each run trains `rlkube train --num-workers N --actors T` on it, for
each transport T and each N, with two learners:

* `none`: dqn_cartpole with learning_starts past the run's end, so the learner only stores what the actors send:
  the actors' own ceiling, and the transport's;
* `impala`: impala_cartpole's learner, which updates on every rollout (its actors never wait for weights).

The rate is steady-state: steps over wall time between the run's progress lines (every 10 s) after the first
fifth of the run and its last, so that interpreter, TensorFlow and Ray start-up are left out.

    python benchmarks/actor_scaling.py [--actors 1,2,4,8,16] [--transports processes,ray] [--seconds 30]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `rlkube train`'s progress line on a pipe (rlkube.rundir.progress_record.progress_line): "step 3000/12000 ...".
PROGRESS_LINE = re.compile(r"\bstep (\d+)/\d+ ")
STEPS_PER_ACTOR_SECOND = 100  # WaitingCartPole-v1 waits 10 ms a step: rlkube.rl.envs.STEP_WAIT_SECONDS
LEARNERS = {
    # The learner stores transitions and never samples them: it does nothing else.
    "none": ["--hparams", "dqn_cartpole", "--hparam-override", "learning_starts=1000000000"],
    "impala": ["--hparams", "impala_cartpole"],
}


def steady_sps(points: list[tuple[float, int]]) -> float:
    """Steps per second between the progress line after the first fifth of the run and the last one."""
    last_time, last_step = points[-1]
    first_time, first_step = next(point for point in points if point[1] >= last_step / 5)
    return (last_step - first_step) / (last_time - first_time)


def train(learner: str, transport: str, actors: int, seconds: float, workdir: Path) -> dict[str, float]:
    """One run; its progress lines (every 10 s on a pipe) timed as they arrive."""
    ideal = actors * STEPS_PER_ACTOR_SECOND
    steps = int(ideal * seconds)
    command = [sys.executable, "-m", "rlkube", "train", *LEARNERS[learner], "--env", "WaitingCartPole-v1",
               "--train-steps", str(steps), "--num-workers", str(actors), "--actors", transport,
               "--eval-episodes", "0", "--test-episodes", "0",
               "--output-dir", str(workdir / f"{learner}-{transport}-{actors}")]
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as run:
        points = [(time.perf_counter(), int(match.group(1)))  # timed as each line arrives
                  for line in run.stderr if (match := PROGRESS_LINE.search(line))]
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {run.returncode}")
    sps = steady_sps(points)
    return {"sps": round(sps), "ideal": ideal, "of_linear": round(sps / ideal, 3),
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", default="1,2,4,8,16", help="comma-separated actor counts")
    parser.add_argument("--transports", default="processes,ray", help="comma-separated: processes, ray")
    parser.add_argument("--learners", default="none,impala", help="comma-separated: " + ", ".join(LEARNERS))
    parser.add_argument("--seconds", type=float, default=30.0, help="ideal training seconds a run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for learner in args.learners.split(","):
            for transport in args.transports.split(","):
                for actors in (int(n) for n in args.actors.split(",")):
                    result = train(learner, transport, actors, args.seconds, Path(tmp))
                    print(json.dumps({"learner": learner, "transport": transport, "actors": actors, **result}),
                          flush=True)


if __name__ == "__main__":
    main()
