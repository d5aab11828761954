"""TensorBoard on this machine: over a local run directory, or over a bucket synced incrementally.

From a bucket, event files are synced into a cache laid out <EXP>/copy-<i> (so copies overlay in
TensorBoard), only new bytes are fetched, and syncing goes on every few seconds while TensorBoard runs.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlkube import storage
from rlkube.launch.results import experiment_cache
from rlkube.launch.store import Record
from rlkube.launch.targets.base import free_port, wait_for_http

REFRESH_SECONDS = 10.0
SYNCED = ("hparams.yaml", "metrics.jsonl")


def _is_log(path: str) -> bool:
    return "events.out.tfevents." in path.rsplit("/", 1)[-1] or path.endswith(SYNCED)


def serve(logdir: Path, port: int, emit: Callable[[str], None], name: str,
          refresh: Callable[[], None] | None = None) -> None:
    """Run TensorBoard on `logdir` (127.0.0.1) until interrupted, calling `refresh` every few seconds."""
    port = port or free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                                "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # SIGTERM too must reach `finally`, or TensorBoard would outlive this command.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", 120, lambda: process.poll() is None)
        emit(f"TensorBoard for {name}: http://127.0.0.1:{port}/   (Ctrl-C to stop)")
        while process.poll() is None:
            time.sleep(REFRESH_SECONDS if refresh else 1.0)
            if refresh:
                refresh()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        process.terminate()
        process.wait()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def from_bucket(record: Record, port: int, emit: Callable[[str], None]) -> None:
    cache = experiment_cache(record.name)

    def refresh() -> None:
        for index in range(record.copies):
            storage.sync_down(f"{record.output_dir}/copy-{index}", cache / f"copy-{index}", include=_is_log)

    refresh()
    emit(f"syncing {record.output_dir} into {cache}")
    serve(cache, port, emit, record.name, refresh)
