"""TensorBoard on this machine: over a local run directory, or over a bucket synced incrementally.

From a bucket, event files are synced into a cache laid out <EXP>/copy-<i> (so copies overlay in
TensorBoard), only new bytes are fetched, and syncing goes on every few seconds while TensorBoard runs.
"""

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rlkube.errors import UserError
from rlkube.launch.run_dirs import experiment_cache, sync_from_bucket
from rlkube.launch.store import Record
from rlkube.rundir import layout
from rlkube.storage import filesystems

REFRESH_SECONDS = 10.0
# Besides the event files, what TensorBoard's tabs read of each copy.
SYNCED = (layout.HPARAMS_FILE, layout.METRICS_FILE)


def _is_log(path: str) -> bool:
    return layout.is_event_file(path.rsplit("/", 1)[-1]) or path in SYNCED


def serve(logdir: Path | dict[str, Path], port: int, emit: Callable[[str], None], name: str,
          refresh: Callable[[], None] | None = None) -> None:
    """Run TensorBoard on `logdir` (127.0.0.1) until interrupted, calling `refresh` every few seconds. Several
    named logdirs (a sweep's trials) are served together, each run prefixed by its name."""
    port = port or free_port()
    where = ["--logdir", str(logdir)] if isinstance(logdir, Path) else \
        ["--logdir_spec", ",".join(f"{label}:{path}" for label, path in logdir.items())]
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", *where,
                                "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # SIGTERM too must reach `finally`, or TensorBoard would outlive this command; and SIGINT even where the shell
    # that started this command ignores it (a background job's does), so that Ctrl-C and kill -INT always stop it.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
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
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        process.terminate()
        process.wait()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _sync_logs(record: Record) -> None:
    sync_from_bucket(record, include=_is_log)


def from_bucket(record: Record, port: int, emit: Callable[[str], None]) -> None:
    _sync_logs(record)
    emit(f"syncing {record.output_dir} into {experiment_cache(record.name)}")
    serve(experiment_cache(record.name), port, emit, record.name, lambda: _sync_logs(record))


def over_experiments(records: list[Record], port: int, emit: Callable[[str], None], name: str) -> None:
    """One TensorBoard over several experiments (a sweep's trials), so its HParams dashboard compares them all:
    each run directory where it is, or synced from its bucket."""
    remote = [record for record in records if filesystems.is_remote(record.output_dir)]

    def refresh() -> None:
        for record in remote:
            _sync_logs(record)

    refresh()
    logdirs = {record.name: experiment_cache(record.name) if record in remote else Path(record.output_dir)
               for record in records}
    serve(logdirs, port, emit, name, refresh if remote else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll `url` until it answers; a UserError if `alive()` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise UserError(f"the server behind {url} exited before it answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise UserError(f"{url} did not answer within {timeout:.0f} s")
