"""An experiment's run directory as this machine reads it: its own path, or its bucket synced into a cache.

Results and TensorBoard read through here. Whether a path is reachable from here at all is the target's to say
(Target.local_run_dir): a path on a cluster's volume is not.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlkube.launch.store import Record
from rlkube.rundir import layout
from rlkube.storage import filesystems, sync

# What results read of each copy.
RESULT_FILES = (layout.SUMMARY_FILE, layout.METRICS_FILE)


def is_result_file(path: str) -> bool:
    return path in RESULT_FILES


def experiment_cache(name: str) -> Path:
    """Where bucket-backed experiments are synced for results and TensorBoard: <cache>/experiments/<EXP>/copy-<i>."""
    return filesystems.cache_root() / "experiments" / name


def sync_from_bucket(record: Record, include: Callable[[str], bool]) -> Path:
    """The files of every copy that `include` selects, synced from the experiment's bucket (only new bytes) into
    its cache, which is returned."""
    cache = experiment_cache(record.name)
    for index in range(record.copies):
        sync.sync_down(layout.copy_url(record.output_dir, index), layout.copy_dir(cache, index), include=include)
    return cache


def read_results(run_dir: Path, copies: int) -> list[dict[str, Any]]:
    """Per copy: its summary (if it finished) and its evaluations."""
    results = []
    for index in range(copies):
        directory = layout.copy_dir(run_dir, index)
        summary_path, metrics_path = directory / layout.SUMMARY_FILE, directory / layout.METRICS_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        evaluations = [json.loads(line) for line in metrics_path.read_text().splitlines()] \
            if metrics_path.exists() else []
        results.append({"copy": index, "summary": summary, "evaluations": evaluations})
    return results
