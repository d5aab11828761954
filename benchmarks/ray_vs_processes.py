"""`--actors ray` against `--actors processes` on one machine: the same hparams set with N actors each way.

Each round trains every set once per transport, alternating, without evaluation, and reports per run:
- `sps`: the run's own SPS (total steps / the training loop's wall time, actors' and Ray's start included),
- `steady_sps`: the median of its logged charts/SPS, which leaves start-up out,
- `wall_s`: the whole command, interpreter and TensorFlow start included.
Before the runs it times Ray's own start-up here: import, a local Ray, N actors answering, and shutdown.

    python benchmarks/ray_vs_processes.py --hparams dqn_cartpole,impala_cartpole --train-steps 10000 --workers 2
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TRANSPORTS = ("processes", "ray")


def ray_startup_seconds(workers: int) -> dict[str, float]:
    """Ray's costs before the first rollout and after the last, in a fresh interpreter (imports included)."""
    code = f"""
import json, time
started = time.perf_counter()
import ray
from rlkube.run.ray_actors import ACTOR_CPUS, connect
imported = time.perf_counter()
connect({workers})
connected = time.perf_counter()

@ray.remote(num_cpus=ACTOR_CPUS)
class Ping:
    def ping(self):
        return 1

actors = [Ping.remote() for _ in range({workers})]
ray.get([actor.ping.remote() for actor in actors])
answered = time.perf_counter()
ray.shutdown()
print(json.dumps({{"import_s": imported - started, "start_local_ray_s": connected - imported,
                  "actors_ready_s": answered - connected, "shutdown_s": time.perf_counter() - answered}}))
"""
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {key: round(value, 2) for key, value in json.loads(result.stdout.splitlines()[-1]).items()}


def train(hparams: str, steps: int, workers: int, transport: str, workdir: Path) -> dict[str, float]:
    out = workdir / f"{hparams}-{transport}"
    command = [sys.executable, "-m", "rlkube", "train", "--hparams", hparams, "--train-steps", str(steps),
               "--num-workers", str(workers), "--actors", transport, "--eval-episodes", "0", "--test-episodes", "0",
               "--output-dir", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    accumulator = EventAccumulator(str(out / "copy-0"), size_guidance={"scalars": 0})
    accumulator.Reload()
    logged = [event.value for event in accumulator.Scalars("charts/SPS")]
    sps = json.loads((out / "copy-0" / "summary.json").read_text())["sps"]
    return {"sps": round(sps), "steady_sps": round(statistics.median(logged)), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default="dqn_cartpole,impala_cartpole", help="comma-separated sets")
    parser.add_argument("--train-steps", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps({"ray_startup": ray_startup_seconds(args.workers), "workers": args.workers}), flush=True)
    for round_index in range(args.rounds):
        for hparams in args.hparams.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                runs = {transport: train(hparams, args.train_steps, args.workers, transport, Path(tmp))
                        for transport in TRANSPORTS}
            print(json.dumps({"hparams": hparams, "round": round_index, "train_steps": args.train_steps, **runs}),
                  flush=True)


if __name__ == "__main__":
    main()
