"""`--num-workers`: environment steps per second with 0 (in-process), 1 and 2 actor processes, side by side.

Each configuration trains the same hparams set for the same number of steps without evaluation,
alternating configurations round by round so they all see the same machine conditions, and reports
the median SPS of each (total steps / the training loop's wall time, actor start-up included).

    python benchmarks/workers_speedup.py --hparams ppo_pong --train-steps 20000 --rounds 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train_sps(hparams: str, steps: int, workers: int, overrides: str, workdir: Path, round_index: int) -> float:
    out = workdir / f"w{workers}-r{round_index}"
    command = [sys.executable, "-m", "rlkube", "train", "--hparams", hparams, "--train-steps", str(steps),
               "--num-workers", str(workers), "--eval-episodes", "0", "--test-episodes", "0",
               "--output-dir", str(out)]
    if overrides:
        command += ["--hparam-override", overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "copy-0" / "summary.json").read_text())["sps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default="ppo_pong")
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hparam-override", default="")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    samples: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for workers in counts:
                sps = train_sps(args.hparams, args.train_steps, workers, args.hparam_override, Path(tmp), round_index)
                samples[workers].append(sps)
                print(json.dumps({"hparams": args.hparams, "workers": workers, "round": round_index, "sps": sps}),
                      flush=True)
    medians = {n: statistics.median(values) for n, values in samples.items()}
    summary = {"hparams": args.hparams, "train_steps": args.train_steps, "median_sps": medians}
    if 1 in medians and 2 in medians:
        summary["speedup_2_vs_1"] = round(medians[2] / medians[1], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
