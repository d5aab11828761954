"""DQN on CartPole-v1 with rl-baselines3-zoo settings: wall time to a mean eval return >= 475, and SPS.

Runs `rlkube train --hparams dqn_cartpole` for each seed, one after another so runs never share
cores, and prints one JSON line per seed and a summary. With --sb3 it also runs Stable-Baselines3
on the same settings and evaluation schedule (benchmarks/sb3_reference.py, in its own venv made
by benchmarks/setup_sb3_venv.sh), alternating seeds so both see the same machine conditions.

    python benchmarks/dqn_cartpole.py --seeds 0,1,2,3,4 --sb3
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

from rlkube.rundir.across_copies import mean_and_std

TARGET = 475.0
EVAL_EVERY = 2500
SB3_PYTHON = Path(os.environ.get("RLKUBE_SB3_VENV", Path.home() / ".cache/rlkube/sb3-venv-2.9")) / "bin/python"
HERE = Path(__file__).resolve().parent


def run_rlkube(seed: int, workdir: Path, hparams: str = "dqn_cartpole", eval_every: int = EVAL_EVERY,
               overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    out = workdir / f"rlkube-seed{seed}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlkube", "train", "--hparams", hparams, "--seed", str(seed),
                    "--output-dir", str(out), "--test-episodes", "0",
                    "--hparam-override", ",".join((f"eval_every={eval_every}", *overrides))],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process_wall = time.perf_counter() - started
    summary = json.loads((out / "copy-0" / "summary.json").read_text())
    evals = [json.loads(line) for line in (out / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    reached = next((e for e in evals if e["mean_return"] >= TARGET), None)
    return {"framework": "rlkube", "seed": seed, "wall_s": summary["wall_seconds"],
            "process_wall_s": round(process_wall, 2), "sps": summary["sps"],
            "final_eval_mean": summary["eval_mean_return"],
            "first_step_reaching_target": reached["step"] if reached else None,
            "wall_s_to_target": reached["wall_seconds"] if reached else None}


def run_sb3(seed: int, algo: str = "dqn", eval_every: int = EVAL_EVERY) -> dict[str, Any]:
    result = subprocess.run([str(SB3_PYTHON), str(HERE / "sb3_reference.py"), "--algo", algo, "--seeds", str(seed),
                             "--eval-every", str(eval_every), "--eval-episodes", "10"],
                            check=True, capture_output=True, text=True)
    record = json.loads(result.stdout.splitlines()[0])
    return {"framework": "sb3", **{k: record.get(k) for k in ("seed", "wall_s", "sps", "final_eval_mean",
                                                                "first_step_reaching_target", "wall_s_to_target")}}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: how many reach 475 and when, where the final policy ends (its stability), wall and SPS."""
    reached = [r for r in records if r["first_step_reaching_target"] is not None]
    finals = [r["final_eval_mean"] for r in records]
    return {"framework": records[0]["framework"], "seeds": len(records), "seeds_reaching_475": len(reached),
            "steps_to_475": [r["first_step_reaching_target"] for r in records],
            "final_evals": [round(final, 1) for final in finals],
            "final_eval_mean_std": [round(value, 1) for value in mean_and_std(finals)],
            "mean_wall_s": round(statistics.fmean(r["wall_s"] for r in records), 2),
            "mean_sps": round(statistics.fmean(r["sps"] for r in records), 1),
            "mean_wall_s_to_475": round(statistics.fmean(r["wall_s_to_target"] for r in reached), 2)
            if reached else None}


def main(hparams: str = "dqn_cartpole", algo: str = "dqn", eval_every: int = EVAL_EVERY,
         description: str = __doc__) -> None:
    """Run `hparams` with rlkube (and, with --sb3, `algo` with SB3) on each seed, both evaluating every `eval_every`."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 side by side")
    parser.add_argument("--hparam-override", action="append", default=[], metavar="NAME=VALUE",
                        help="rlkube's side only: try a change against the same SB3 runs (repeatable)")
    args = parser.parse_args()
    if args.sb3 and not SB3_PYTHON.exists():
        sys.exit(f"no SB3 venv at {SB3_PYTHON}; run: bash benchmarks/setup_sb3_venv.sh")
    results: dict[str, list[dict[str, Any]]] = {"rlkube": [], "sb3": []}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in (int(s) for s in args.seeds.split(",")):
            results["rlkube"].append(run_rlkube(seed, Path(workdir), hparams, eval_every,
                                                  tuple(args.hparam_override)))
            print(json.dumps(results["rlkube"][-1]), flush=True)
            if args.sb3:
                results["sb3"].append(run_sb3(seed, algo, eval_every))
                print(json.dumps(results["sb3"][-1]), flush=True)
    for records in results.values():
        if records:
            print(json.dumps(summarise(records)), flush=True)


if __name__ == "__main__":
    main()
