"""Named hparams sets trained against their documented targets: best evaluation, first step at target, wall, SPS.

Each set carries a `target_return` and a step budget (`train_steps`) from published results. This
trains each set with one `rlkube train` over the given seeds (one process per seed, as many at a time
as there are cores) and prints one JSON line per set and seed. Full trainings that do not belong in CI
run here, on a machine that can afford them, e.g. Pong on a GPU node (or on a cluster, through
`rlkube submit`, the same command):

    python benchmarks/hparams_targets.py --hparams ppo_pong,dqn_pong --device gpu
    python benchmarks/hparams_targets.py --hparams ddpg_mountaincar_continuous --seeds 0,1
    python benchmarks/hparams_targets.py --hparams td3_halfcheetah --train-steps 200000   # part of the budget
    python benchmarks/hparams_targets.py --hparams sac_halfcheetah --seeds 0,1 --workdir ~/halfcheetah  # resumable
    python benchmarks/hparams_targets.py --hparams dqn_cartpole,c51_cartpole --seeds 0,1,2,3,4 --report docs/results

With --train-steps, the runs stop early and say so (`budget_fraction`): their numbers show learning
under way, not the set's final result. --workdir DIR keeps the runs in DIR/<set> rather than a temporary
directory, so that a benchmark longer than a sitting (HalfCheetah's 1M steps on a CPU) survives being stopped:
the same command again resumes each run from its last checkpoint (rlkube train checkpoints on SIGTERM and
SIGINT), and a larger --train-steps continues finished runs.

--milestone R also reports when each run's evaluation first reached R, in steps and wall time (Pong's 18, short of
its set's target of 20, say).

--report DIR also writes DIR/results.md (a markdown table over seeds: final and best evaluation, seeds
reaching the target, wall time, SPS; dated, with the machine and the command) and DIR/<set>.png (the mean
evaluation curve, a ±1 std band over seeds, the target line).
"""

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlkube.errors import UserError
from rlkube.launch.targets.local_worker import wait_passing_on_stop_signals
from rlkube.rl.hparams import get_hparams
from rlkube.run.options import CopyPlan, copies_json
from rlkube.rundir.across_copies import mean_plus_minus


def train(name: str, seeds: list[int], train_steps: int | None, device: str, num_workers: int,
          workdir: Path, milestone: float | None = None) -> list[dict[str, Any]]:
    """One `rlkube train` of the set with a copy per seed; each copy's numbers."""
    hp = get_hparams(name, "")
    steps = train_steps or hp.train_steps
    out = workdir / name
    copies_file = workdir / f"{name}-copies.json"
    copies_file.write_text(copies_json([CopyPlan(index, seed) for index, seed in enumerate(seeds)]))
    _run_letting_it_checkpoint([sys.executable, "-m", "rlkube", "train", "--hparams", name, "--copies-file",
                                str(copies_file), "--train-steps", str(steps), "--device", device, "--num-workers",
                                str(num_workers), "--test-episodes", "0", "--output-dir", str(out)])
    return [copy_record(name, seed, steps, out / f"copy-{index}", milestone) for index, seed in enumerate(seeds)]


class Stopped(Exception):
    """A stop signal ended the training; each run checkpointed first."""


def _run_letting_it_checkpoint(command: list[str]) -> None:
    """Runs `command`, its stop signals passed on (subprocess.run would kill it a quarter of a second after
    Ctrl-C, mid-checkpoint: a replay buffer takes seconds to write)."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    returncode = wait_passing_on_stop_signals(child)
    if returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # how `rlkube train` ends when stopped
        raise Stopped
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command)


def copy_record(name: str, seed: int, steps: int, copy_dir: Path, milestone: float | None = None) -> dict[str, Any]:
    hp = get_hparams(name, "")
    summary = json.loads((copy_dir / "summary.json").read_text())
    evals = [json.loads(line) for line in (copy_dir / "metrics.jsonl").read_text().splitlines()]
    target = hp.target_return
    reached = next((e["step"] for e in evals if target is not None and e["mean_return"] >= target), None)
    at_milestone = next((e for e in evals if milestone is not None and e["mean_return"] >= milestone), None)
    milestone_record = {} if milestone is None else {
        "milestone": milestone, "first_step_reaching_milestone": at_milestone and at_milestone["step"],
        "wall_s_to_milestone": at_milestone and round(at_milestone["wall_seconds"], 1)}
    return {"hparams": name, "seed": seed, "steps": steps, "budget_fraction": round(steps / hp.train_steps, 3),
            "target_return": target, "first_step_reaching_target": reached,
            # the run's own best policy (of equal evaluations, the later), the one it saved and tested
            "best_eval": round(summary["best_eval_mean_return"], 2), "best_eval_step": summary["best_eval_step"],
            "final_eval": summary["eval_mean_return"], "wall_s": summary["wall_seconds"], "sps": summary["sps"],
            "evals": [(e["step"], round(e["mean_return"], 2)) for e in evals], **milestone_record}


def _steps(count: int) -> str:
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count % divisor == 0:
            return f"{count // divisor}{suffix}"
    return str(count)


def report_table(records: list[dict[str, Any]], measurements: list[dict[str, str]]) -> str:
    """The markdown table over seeds, a row per set in training order; `run` is its index in `measurements`."""
    milestones = any("milestone" in record for record in records)
    rows = ["| set | budget | target | final eval | best eval | seeds ≥ target | wall time | SPS | run |"
            + (" first ≥ milestone: steps (wall) per seed |" if milestones else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if milestones else "")]
    for name in dict.fromkeys(record["hparams"] for record in records):
        runs = [record for record in records if record["hparams"] == name]
        target = runs[0]["target_return"]
        budget = _steps(runs[0]["steps"]) + ("" if runs[0]["budget_fraction"] == 1 else
                                             f" ({runs[0]['budget_fraction']:.0%} of the set's)")
        reaching = "-" if target is None else f"{sum(r['best_eval'] >= target for r in runs)}/{len(runs)}"
        wall = statistics.fmean(r["wall_s"] for r in runs)
        finals, bests = [r["final_eval"] for r in runs], [r["best_eval"] for r in runs]
        rows.append(f"| `{name}` | {budget} | {'-' if target is None else f'{target:g}'} "
                    f"| {mean_plus_minus(finals)} | {mean_plus_minus(bests)} "
                    f"| {reaching} | {wall / 60:.1f} min | {statistics.fmean(r['sps'] for r in runs):.0f} "
                    f"| {measurements.index(runs[0]['measured']) + 1} |"
                    + (f" {_milestone_cell(runs)} |" if milestones else ""))
    return "\n".join(rows) + "\n"


def plot_set(runs: list[dict[str, Any]], path: Path) -> None:
    """The mean evaluation curve over seeds with a ±1 std band, each seed thin, and the target line."""
    import matplotlib  # noqa: PLC0415  (only --report needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for run in runs:
        steps, returns = zip(*run["evals"], strict=True)
        axes.plot(steps, returns, linewidth=0.7, alpha=0.4)
    shared = sorted(set.intersection(*({step for step, _ in run["evals"]} for run in runs)))
    table = np.array([[dict(run["evals"])[step] for step in shared] for run in runs])
    mean, std = table.mean(axis=0), table.std(axis=0)
    axes.plot(shared, mean, color="black", linewidth=2, label=f"mean of {len(runs)} seeds")
    axes.fill_between(shared, mean - std, mean + std, color="black", alpha=0.15, label="±1 std")
    if runs[0]["target_return"] is not None:
        axes.axhline(runs[0]["target_return"], color="tab:red", linestyle="--", label="target")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("mean evaluation return")
    axes.set_title(runs[0]["hparams"])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _milestone_cell(runs: list[dict[str, Any]]) -> str:
    """Each seed's first step (and wall time) with an evaluation at or above the milestone, `-` where none."""
    if "milestone" not in runs[0]:
        return "-"
    cells = [f"{_steps_rounded(r['first_step_reaching_milestone'])} ({r['wall_s_to_milestone'] / 3600:.1f} h)"
             if r["first_step_reaching_milestone"] is not None else "not yet" for r in runs]
    return f"≥ {runs[0]['milestone']:g}: " + ", ".join(cells)


def _steps_rounded(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1_000_000 else f"{count / 1e3:.0f}k"


def measurements_of(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The distinct measurements behind the records (date, machine, device, command), in order."""
    return list({json.dumps(r["measured"], sort_keys=True): r["measured"] for r in records}.values())


def merged_records(directory: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's records so far with the sets trained now replacing theirs, so reports accumulate set by set."""
    previous = directory / "results.jsonl"
    kept = [] if not previous.exists() else [json.loads(line) for line in previous.read_text().splitlines()]
    retrained = {record["hparams"] for record in records}
    return [record for record in kept if record["hparams"] not in retrained] + records


def write_report(records: list[dict[str, Any]], directory: Path) -> None:
    """DIR/results.md, a plot per set and DIR/results.jsonl, from these records and the sets DIR already reports."""
    directory.mkdir(parents=True, exist_ok=True)
    records = merged_records(directory, records)
    names = list(dict.fromkeys(record["hparams"] for record in records))
    for name in names:
        plot_set([record for record in records if record["hparams"] == name], directory / f"{name}.png")
    measurements = measurements_of(records)
    sources = "\n".join(f"{number}. {m['date']} on {m['machine']}, device {m['device']}: `{m['command']}`"
                         for number, m in enumerate(measurements, start=1))
    plots = " · ".join(f"[{name}]({name}.png)" for name in names)
    (directory / "results.md").write_text(
        "Best and final: 10-episode evaluations, mean ± std over seeds; seeds ≥ target: best evaluation ≥ target; "
        "run: the measurement below that made the row.\n\n"
        f"{report_table(records, measurements)}\n{sources}\n\nCurves: {plots}\n")
    (directory / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", required=True, help="comma-separated hparams set names")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train-steps", type=int, help="stop before the set's budget (a partial run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--milestone", type=float, help="also report when evaluations first reached this return")
    parser.add_argument("--report", type=Path, metavar="DIR", help="also write results.md and a plot per set here")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="keep the runs here (default: a temporary directory); run again to resume them")
    args = parser.parse_args()
    names = [name for name in args.hparams.split(",") if name]
    try:
        for name in names:
            get_hparams(name, "")
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except (UserError, ValueError) as error:
        sys.exit(f"error: {error}")
    measured = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "device": args.device,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
                "command": shlex.join(["python", *sys.argv])}
    with contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory() as runs:
        workdir = Path(runs)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                records = train(name, seeds, args.train_steps, args.device, args.num_workers, workdir,
                                args.milestone)
            except Stopped:
                resume = f"; the same command resumes them from {workdir}" if args.workdir else ""
                sys.exit(f"stopped while training {name}: its runs checkpointed{resume}")
            for record in records:
                record["measured"] = measured
                print(json.dumps(record), flush=True)
            # After each set, so that hours of training survive a later set's failure; its rows alone, so that
            # a report another run has written meanwhile keeps that run's sets.
            if args.report:
                write_report(records, args.report)
    if args.report:
        print(f"report: {args.report / 'results.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
