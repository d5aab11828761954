"""PBT against the same population run fixed, on CartPole, from a poor learning-rate range.

For each seed S, draws a population's learning rates from --lr-range (the same draw for both arms, from S), then
runs it twice on the local target, one arm after the other:
  fixed  every member keeps its lr: one experiment of the same copies (each its own seed S+i);
  pbt    `rlkube pbt start` with the same members, --interval steps per generation, mutating lr.
Each member evaluates every eval_every steps. Printed per arm, as mean ± std over seeds:
  steps to 475   the first evaluation at which any member scores >= 475, in each member's env steps (total env
                 steps: times the population); "-" when none did;
  best final     the best member's last evaluation; mean final: the population's mean last evaluation;
  wall           seconds for the whole arm.
And the controller's own cost per generation (ranking, the checkpoint copies, the decisions; from its log), and
the overhead of PBT over the fixed arm's wall time (waiting for the slowest member at each boundary included).
Each seed's numbers are also printed as a JSON line as it ends.

    python benchmarks/pbt_cartpole.py                                  # 8 members, 50k steps, 3 seeds
    python benchmarks/pbt_cartpole.py --seeds 1 --train-steps 30000
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.pbt.config import PBTConfig, check_mutations, initial_params
from rlkube.launch.spec import build_spec
from rlkube.launch.sweep.space import overrides_of
from rlkube.launch.targets.base import target_for
from rlkube.rl.hparams import get_hparams
from rlkube.run.options import CopyPlan, TrainOptions
from rlkube.rundir import layout
from rlkube.rundir.across_copies import mean_plus_minus

TARGET = 475.0


def evaluations(run_dir: Path, population: int) -> list[list[tuple[int, float]]]:
    out = []
    for member in range(population):
        lines = (layout.copy_dir(run_dir, member) / layout.METRICS_FILE).read_text().splitlines()
        out.append([(json.loads(line)["step"], json.loads(line)["mean_return"]) for line in lines])
    return out


def summarise(evals: list[list[tuple[int, float]]]) -> dict[str, float | None]:
    reached = [step for member in evals for step, value in member if value >= TARGET]
    finals = [member[-1][1] for member in evals]
    return {"steps_to_target": min(reached) if reached else None, "best_final": max(finals),
            "mean_final": statistics.fmean(finals)}


def rlkube(*args: str, cwd: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlkube", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "RLKUBE_DATA_DIR": str(data)}, check=False)


def one_seed(args: argparse.Namespace, seed: int, workdir: Path) -> dict[str, dict]:
    low, high = args.lr_range.split(":")
    overrides = f"eval_every={args.eval_every},checkpoint_every={args.interval}"
    common = ["--hparams", args.hparams, "--train-steps", str(args.train_steps), "--hparam-override", overrides,
              "--eval-episodes", "5", "--test-episodes", "0", "--seed", str(seed)]
    mutations = {"lr": {"log_uniform": [float(low), float(high)]}}
    config = PBTConfig("bench", "local", TrainOptions(args.hparams, overrides, seed=seed), mutations,
                       args.population, args.interval)
    params = initial_params(config, check_mutations(mutations, get_hparams(args.hparams), "benchmark"))
    os.environ["RLKUBE_DATA_DIR"] = str(workdir / "data")
    os.chdir(workdir)  # the local profile writes runs/<name> here
    profile = get_profile("local")
    train = TrainOptions(args.hparams, overrides, train_steps=args.train_steps, eval_episodes=5, test_episodes=0,
                         seed=seed)
    members = [CopyPlan(m, seed + m, overrides_of(params[m])) for m in range(args.population)]
    results = {}
    started = time.perf_counter()
    record = store.get(target_for(profile).submit(build_spec(profile, train, members, name="fixed")).name)
    target = target_for(record)
    while any(c.phase in ("Running", "Pending") for c in target.describe(record)):
        time.sleep(1)
    if {c.phase for c in target.describe(record)} != {"Succeeded"}:
        raise SystemExit(f"the fixed population failed: see {workdir}/runs/fixed")
    results["fixed"] = {**summarise(evaluations(workdir / "runs" / "fixed", args.population)),
                        "wall": time.perf_counter() - started}
    started = time.perf_counter()
    pbt = rlkube("pbt", "start", *common, "--population", str(args.population), "--interval", str(args.interval),
                 "--mutate", f"lr=log_uniform:{low}:{high}", "--name", "bench", "--follow", cwd=workdir,
                 data=workdir / "data")
    if pbt.returncode != 0 or "PBT bench done" not in pbt.stdout:
        raise SystemExit(f"PBT failed: {pbt.stdout[-2000:]}{pbt.stderr[-2000:]}")
    decided = [float(m) for m in re.findall(r"told every member in ([\d.]+) s", pbt.stdout)]
    results["pbt"] = {**summarise(evaluations(workdir / "runs" / "bench", args.population)),
                      "wall": time.perf_counter() - started, "controller_s": statistics.fmean(decided)}
    lr_now = [json.loads(line) for line in (workdir / "data/pbt/bench/pbt.jsonl").read_text().splitlines()][-1]
    print(f"seed {seed}: initial lr {sorted(round(p['lr'], 6) for p in params)}; after PBT "
          f"{sorted(round(p['lr'], 6) for p in lr_now['params'])}", file=sys.stderr, flush=True)
    return results


def shown(values: list[float | None], digits: int = 0) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = mean_plus_minus(known, digits)
    return text + (f" ({len(known)}/{len(values)} seeds)" if len(known) < len(values) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default="dqn_cartpole")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--interval", type=int, default=5000)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--train-steps", type=int, default=50_000)
    parser.add_argument("--lr-range", default="1e-5:1e-4", help="LOW:HIGH of the initial log-uniform draw")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    args = parser.parse_args()
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="rlkube-pbt-bench-") as workdir:
            runs.append(one_seed(args, seed, Path(workdir)))
            os.chdir(Path(workdir).parent)
        print(json.dumps({"seed": seed, **runs[-1]}), flush=True)
    print(f"{args.hparams}: {args.population} members, {args.train_steps} steps each, lr from {args.lr_range}, "
          f"generations of {args.interval} steps; mean ± std over {args.seeds} seeds")
    print(f"{'arm':<6} {'steps to 475':>22} {'best final':>16} {'mean final':>16} {'wall s':>14}")
    for arm in ("fixed", "pbt"):
        rows = [run[arm] for run in runs]
        print(f"{arm:<6} {shown([r['steps_to_target'] for r in rows]):>22} "
              f"{shown([r['best_final'] for r in rows], 1):>16} {shown([r['mean_final'] for r in rows], 1):>16} "
              f"{shown([r['wall'] for r in rows]):>14}")
    controller = statistics.fmean(run["pbt"]["controller_s"] for run in runs)
    overhead = statistics.fmean((run["pbt"]["wall"] - run["fixed"]["wall"]) / run["pbt"]["wall"] for run in runs)
    print(f"controller per generation: {controller:.2f} s; PBT's wall time over the fixed arm's: {overhead:+.1%}")


if __name__ == "__main__":
    main()
