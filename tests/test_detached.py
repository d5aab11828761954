"""The scaffolding of the sweep's driver and the PBT controller: a process detached in a session of its own, known
by its module and name (never by a pid alone), whose log can be followed and which SIGTERM stops."""

import contextlib
import os
import signal
import time
from pathlib import Path

from rlkube.launch.detached import DetachedLoop


def test_a_detached_loop_runs_in_its_own_session_logs_and_stops_on_sigterm(tmp_path: Path) -> None:
    # A stand-in loop that runs until it is stopped and says so in its log: Python's own HTTP server on a free port.
    loop = DetachedLoop("server", "http.server", "0", tmp_path / "loop" / "server.log")
    pid = loop.launch()
    try:
        deadline = time.monotonic() + 60
        while "Serving HTTP" not in (loop.log.read_text() if loop.log.exists() else ""):
            assert time.monotonic() < deadline, "the loop never logged"
            time.sleep(0.1)
        assert loop.is_running(pid)
        assert os.getsid(pid) == pid  # its own session: the shell's Ctrl-C and exit do not reach it
        assert not DetachedLoop("server", "http.server", "1", loop.log).is_running(pid)  # another loop's name
        assert not loop.is_running(os.getpid())  # a pid that runs something else
        assert not loop.is_running(None)
        assert loop.stop(pid, wait_seconds=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    followed: list[str] = []
    loop.follow(pid, followed.append)  # returns at once: the loop has ended, and its lines up to then are emitted
    assert any("Serving HTTP" in line for line in followed)
