"""An experiment's results across copies: final numbers as mean ± std, and learning curves with a band.

Works for any experiment in the store whose run directory is reachable from here: a local path, or a
bucket (gs://, s3://), synced into the local cache first. A run on a cluster's PVC is not reachable.
"""

from pathlib import Path
from typing import Any

import numpy as np

from rlkube.errors import UserError
from rlkube.launch.run_dirs import is_result_file, read_results
from rlkube.launch.store import Record
from rlkube.launch.targets.base import target_for
from rlkube.rundir import layout


def collect(record: Record) -> list[dict[str, Any]]:
    """Per copy: its summary (if it finished) and its evaluations."""
    return read_results(target_for(record).local_run_dir(record, include=is_result_file), record.copies)


def final_returns(copies: list[dict[str, Any]], key: str) -> list[float]:
    return [c["summary"][key] for c in copies if c["summary"] and c["summary"].get(key) is not None]


def plot(record: Record, copies: list[dict[str, Any]], path: Path) -> None:
    """Learning curves: each copy thin, the mean across copies bold, a ±1 std band around it."""
    import matplotlib  # noqa: PLC0415  (only --plot needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    curves = {}
    for copy in copies:
        if copy["evaluations"]:
            steps = [e["step"] for e in copy["evaluations"]]
            returns = [e["mean_return"] for e in copy["evaluations"]]
            curves[copy["copy"]] = dict(zip(steps, returns, strict=True))
            axes.plot(steps, returns, linewidth=0.8, alpha=0.45, label=layout.copy_name(copy["copy"]))
    if not curves:
        raise UserError(f"{record.name} has no evaluations yet; try again once a copy has evaluated")
    shared = sorted(set.intersection(*(set(c) for c in curves.values())))
    if shared:
        table = np.array([[curve[step] for step in shared] for curve in curves.values()])
        mean, std = table.mean(axis=0), table.std(axis=0)
        axes.plot(shared, mean, color="black", linewidth=2, label=f"mean of {len(curves)}")
        axes.fill_between(shared, mean - std, mean + std, color="black", alpha=0.15, label="±1 std")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("mean evaluation return")
    axes.set_title(f"{record.name}: {record.spec.train.hparams}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
