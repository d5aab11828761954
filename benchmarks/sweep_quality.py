"""Samplers side by side: the best trial value each finds after a quarter, half, three quarters and all of its trials.

Runs sweeps of each sampler (tpe, gp, random by default) on the same hparams set, space, trial budget and
seeds, one sweep after another, with no pruner so that only the samplers differ. Each sampler runs
--repeats sweeps, seeded --seed, --seed+1, ... (the seed of the sampler and of the trials alike), the
samplers alternating so that all see the same machine conditions; the table shows means over repeats.
"After n trials" means the first n trials the sampler proposed, whatever order they finished in. The
sweeps run through rlkube's Driver in this process, as benchmarks/sweep_overhead.py does. gp is Optuna's
GPSampler, built on PyTorch, which rlkube does not install: without it the row says so.

TPE starts with random trials (a third of a small sweep), drawn as the random sampler draws them: with the
same seed, both rows share their first trials. One seed per trial: read a gap smaller than a seed's spread
as no difference.

    python benchmarks/sweep_quality.py                                   # ppo_cartpole, 12 trials, 3 repeats
    python benchmarks/sweep_quality.py --samplers tpe,random --trials 20 --repeats 1
"""

import argparse
import importlib.util
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sweep_overhead import run_sweep, sweep_config, table

from rlkube.errors import UserError
from rlkube.launch.sweep.config import DEFAULT_OBJECTIVE
from rlkube.launch.sweep.driver import SLOT, counted
from rlkube.launch.sweep.methods import SAMPLERS

# ppo_cartpole's sensitive hparams, with poor regions in each (a tiny lr, one epoch, no GAE smoothing).
SPACE = {"lr": {"log_uniform": [1e-5, 1e-2]}, "n_epochs": {"int": [1, 20]}, "gae_lambda": {"uniform": [0.8, 1.0]},
         "clip_range": {"uniform": [0.1, 0.4]}}


@dataclass
class SweepResult:
    best_after: list[float | None]  # at each mark
    mean: float | None  # over the complete trials
    failed: int
    wall_s: float
    best: FrozenTrial | None


def best_after(trials: list[FrozenTrial], marks: list[int]) -> list[float | None]:
    """The best complete value among the first n slots (the order the sampler proposed them in), for each n."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return [max((t.value for t in complete if t.user_attrs[SLOT] < n), default=None) for n in marks]


def one_sweep(args: argparse.Namespace, sampler: str, seed: int, marks: list[int]) -> SweepResult:
    config = sweep_config("local", args.hparams, args.train_steps, args.eval_every, args.eval_episodes, args.trials,
                          args.parallel, 1, sampler, "none", 1.0, seed, SPACE)
    print(f"sweep with {sampler}, seed {seed}: {args.trials} trials of {args.hparams} "
          f"(--train-steps {args.train_steps})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="rlkube-sweep-quality-") as workdir:
        study, wall_s, _cpu_s = run_sweep(config, Path(workdir))
        trials = counted(study.get_trials(deepcopy=False))  # read before the journal goes with workdir
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return SweepResult(best_after(trials, marks), statistics.fmean(t.value for t in complete) if complete else None,
                       sum(t.state == TrialState.FAIL for t in trials), wall_s,
                       max(complete, key=lambda t: t.value) if complete else None)


def mean_text(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.fmean(known):.1f}" if known else "-"


def short_params(params: dict[str, Any]) -> str:
    return ",".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in sorted(params.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default="ppo_cartpole")
    parser.add_argument("--samplers", default="tpe,gp,random", help="comma-separated, each run as its own sweeps")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="sweeps per sampler, seeded --seed, --seed+1, ...")
    parser.add_argument("--parallel", type=int, default=2, help="trials at once (one per core here)")
    # A tenth of ppo_cartpole's 100k: at half of it, a few random points already score the maximum (500), and
    # every row reads 500 from its third trial on.
    parser.add_argument("--train-steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    marks = sorted({max(1, round(args.trials * quarter / 4)) for quarter in (1, 2, 3, 4)})
    samplers = args.samplers.split(",")
    if unknown := [s for s in samplers if s not in SAMPLERS]:
        sys.exit(f"error: unknown sampler {', '.join(unknown)}; use some of {', '.join(SAMPLERS)}")
    runnable = [s for s in samplers if s != "gp" or importlib.util.find_spec("torch") is not None]
    results: dict[str, list[SweepResult]] = {s: [] for s in runnable}
    try:
        for seed in range(args.seed, args.seed + args.repeats):
            for sampler in runnable:
                results[sampler].append(one_sweep(args, sampler, seed, marks))
    except UserError as error:
        sys.exit(f"error: {error}")
    rows = [("sampler", *(f"best after {n}" for n in marks), "mean of all", "failed", "sweep wall s")]
    for sampler in samplers:
        if sampler not in results:
            rows.append((sampler, *("needs PyTorch" for _ in marks), "-", "-", "-"))
            continue
        sweeps = results[sampler]
        rows.append((sampler, *(mean_text([s.best_after[i] for s in sweeps]) for i in range(len(marks))),
                     mean_text([s.mean for s in sweeps]), str(sum(s.failed for s in sweeps)),
                     f"{statistics.fmean(s.wall_s for s in sweeps):.0f}"))
    print(f"samplers on {args.hparams}: {args.trials} trials per sweep, 1 seed per trial, --train-steps "
          f"{args.train_steps}, objective {DEFAULT_OBJECTIVE} over {args.eval_episodes}-episode evaluations, "
          f"pruner none, {args.parallel} at a time; means over {args.repeats} sweeps (seeds {args.seed}.."
          f"{args.seed + args.repeats - 1}) per sampler")
    print(table(rows))
    for sampler, sweeps in results.items():
        finished = [s.best for s in sweeps if s.best is not None]
        if finished:
            best = max(finished, key=lambda t: t.value)
            print(f"{sampler}'s best: {best.value:.1f}, {short_params(best.params)}")
        print(f"{sampler}, each sweep's best after {marks[-1]}: "
              f"{', '.join(mean_text([s.best_after[-1]]) for s in sweeps)}")


if __name__ == "__main__":
    main()
