"""A loop that runs detached from the user's shell: the sweep's driver and the PBT controller.

Each is `python -m MODULE NAME` in a session of its own (the shell's Ctrl-C and exit do not reach it), appending
to a log in its directory. It is running while its pid runs that module for that name, so a pid the system has
since given to another process does not count. SIGTERM stops it: each loop then cancels what it started.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rlkube.launch.logtail import follow_log


@dataclass(frozen=True)
class DetachedLoop:
    role: str  # what the user is told it is: "driver", "controller"
    module: str  # what it runs as (python -m), and how its process is recognised
    name: str  # the sweep's or the PBT run's: its only argument
    log: Path

    def launch(self) -> int:
        """Start it, logging to its log (created with its directory); returns its pid."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", self.module, self.name], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return process.pid

    def is_running(self, pid: int | None) -> bool:
        if not pid:
            return False
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return self.module.encode() in command and self.name.encode() in command

    def follow(self, pid: int | None, emit: Callable[[str], None]) -> None:
        """Emit its log's lines as they are written, until it has ended."""
        follow_log(self.log, lambda: self.is_running(pid), emit)

    def stop(self, pid: int, wait_seconds: float) -> bool:
        """SIGTERM, then wait for it to end (it cancels what it started first); whether it ended in time."""
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_seconds
        while self.is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.is_running(pid)


# The loop's side.

def log_line(line: str) -> None:
    """One line of the loop's log, stamped with the UTC time and written at once."""
    print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S} {line}", flush=True)


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM (what `cancel` sends) and SIGINT call `stop`: the loop then cancels what it started and returns."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop())
