"""Named hparams sets trained against their documented targets: best evaluation, first step at target, wall, SPS.

Each set carries a `target_return` and a step budget (`train_steps`) from published results. This
trains each set with `rlkube train`, one run at a time so that runs never share cores, and prints one
JSON line per run and set. Full trainings that do not belong in CI run here, on a machine that can
afford them, e.g. Pong on a GPU node (or on a cluster, through `rlkube submit`, the same command):

    python benchmarks/hparams_targets.py --hparams ppo_pong,dqn_pong --device gpu
    python benchmarks/hparams_targets.py --hparams ddpg_mountaincar_continuous --seeds 0,1
    python benchmarks/hparams_targets.py --hparams td3_halfcheetah --train-steps 200000   # part of the budget

With --train-steps, the run stops early and says so (`budget_fraction`): its numbers show learning
under way, not the set's final result.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlkube.errors import UserError
from rlkube.rl.hparams import get_hparams


def train(name: str, seed: int, train_steps: int | None, device: str, num_workers: int,
          workdir: Path) -> dict[str, Any]:
    hp = get_hparams(name, "")
    steps = train_steps or hp.train_steps
    out = workdir / f"{name}-seed{seed}"
    subprocess.run([sys.executable, "-m", "rlkube", "train", "--hparams", name, "--seed", str(seed),
                    "--train-steps", str(steps), "--device", device, "--num-workers", str(num_workers),
                    "--test-episodes", "0", "--output-dir", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((out / "copy-0" / "summary.json").read_text())
    evals = [json.loads(line) for line in (out / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    target = hp.target_return
    reached = next((e["step"] for e in evals if target is not None and e["mean_return"] >= target), None)
    best = max(evals, key=lambda e: e["mean_return"])  # every run ends with an evaluation
    return {"hparams": name, "seed": seed, "steps": steps, "budget_fraction": round(steps / hp.train_steps, 3),
            "target_return": target, "first_step_reaching_target": reached,
            "best_eval": round(best["mean_return"], 2), "best_eval_step": best["step"],
            "final_eval": summary["eval_mean_return"], "wall_s": summary["wall_seconds"], "sps": summary["sps"],
            "evals": [(e["step"], round(e["mean_return"], 2)) for e in evals]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", required=True, help="comma-separated hparams set names")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train-steps", type=int, help="stop before the set's budget (a partial run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    names = [name for name in args.hparams.split(",") if name]
    try:
        for name in names:
            get_hparams(name, "")
    except UserError as error:
        sys.exit(f"error: {error}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for seed in (int(s) for s in args.seeds.split(",")):
                record = train(name, seed, args.train_steps, args.device, args.num_workers, Path(tmp))
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
