"""DDPG, TD3 and SAC on Pendulum-v1 with rl-baselines3-zoo settings: wall time for 20k steps, SPS, best evaluation.

Runs `rlkube train --hparams <algo>_pendulum` for each algorithm and seed, one run at a time so runs
never share cores, and prints one JSON line per run and a summary per algorithm. Wall time is the
training loop's, evaluations (10 episodes every 2000 steps) and XLA compilation included. With --sb3,
Stable-Baselines3 trains on the same settings and evaluation schedule right after each rlkube run
(benchmarks/sb3_reference.py, in its own venv made by benchmarks/setup_sb3_venv.sh), so both see the
same machine conditions. Each line carries the 1-minute load average: on a shared machine, read
timings together with it.

    python benchmarks/continuous_pendulum.py --algos sac,td3,ddpg --seeds 0 --sb3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = -200.0
EVAL_EVERY = 2_000
ALGOS = ("sac", "td3", "ddpg")
SB3_PYTHON = Path(os.environ.get("RLKUBE_SB3_VENV", Path.home() / ".cache/rlkube/sb3-venv-2.9")) / "bin/python"
HERE = Path(__file__).resolve().parent


def run_rlkube(algo: str, seed: int, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{algo}-seed{seed}"
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlkube", "train", "--hparams", f"{algo}_pendulum", "--seed", str(seed),
                    "--output-dir", str(out), "--test-episodes", "0", "--hparam-override", f"eval_every={EVAL_EVERY}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process_wall = time.perf_counter() - started
    summary = json.loads((out / "copy-0" / "summary.json").read_text())
    evals = [json.loads(line) for line in (out / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    reached = next((e for e in evals if e["mean_return"] >= TARGET), None)
    return {"framework": "rlkube", "algo": algo, "seed": seed, "wall_s": summary["wall_seconds"],
            "process_wall_s": round(process_wall, 2), "sps": summary["sps"],
            "best_eval": round(max(e["mean_return"] for e in evals), 2),
            "final_eval": round(summary["eval_mean_return"], 2),
            "first_step_reaching_target": reached["step"] if reached else None, "load_before": load}


def run_sb3(algo: str, seed: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    result = subprocess.run([str(SB3_PYTHON), str(HERE / "sb3_reference.py"), "--algo", algo, "--seeds", str(seed),
                             "--eval-every", str(EVAL_EVERY), "--eval-episodes", "10"],
                            check=True, capture_output=True, text=True)
    record = json.loads(result.stdout.splitlines()[0])
    return {"framework": "sb3", "algo": algo, "seed": seed, "wall_s": record["wall_s"], "sps": record["sps"],
            "best_eval": max(mean for _, mean, _ in record["evals"]), "final_eval": record["final_eval_mean"],
            "first_step_reaching_target": record["first_step_reaching_target"], "load_before": load}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    reached = [r for r in records if r["first_step_reaching_target"] is not None]
    return {"framework": records[0]["framework"], "algo": records[0]["algo"], "seeds": len(records),
            "seeds_reaching_target": len(reached),
            "mean_wall_s": round(statistics.fmean(r["wall_s"] for r in records), 2),
            "mean_sps": round(statistics.fmean(r["sps"] for r in records), 1),
            "mean_best_eval": round(statistics.fmean(r["best_eval"] for r in records), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(ALGOS), help=f"comma-separated, from {', '.join(ALGOS)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 side by side")
    args = parser.parse_args()
    algos = [a for a in args.algos.split(",") if a]
    if unknown := set(algos) - set(ALGOS):
        sys.exit(f"unknown algos {sorted(unknown)}; choose from {', '.join(ALGOS)}")
    if args.sb3 and not SB3_PYTHON.exists():
        sys.exit(f"no SB3 venv at {SB3_PYTHON}; run: bash benchmarks/setup_sb3_venv.sh")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for algo in algos:
            for seed in (int(s) for s in args.seeds.split(",")):
                runs = [run_rlkube(algo, seed, Path(workdir))] + ([run_sb3(algo, seed)] if args.sb3 else [])
                for record in runs:
                    results.setdefault((record["framework"], algo), []).append(record)
                    print(json.dumps(record), flush=True)
    for records in results.values():
        print(json.dumps(summarise(records)), flush=True)


if __name__ == "__main__":
    main()
