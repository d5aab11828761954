"""What every target (local processes, a Kubernetes cluster) reports, in one shape."""

import re
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rlkube.core.errors import UserError

# The runner's own progress lines: "step 1200/50000 ... return 35.00" and "eval at step 5000: return 181.20 ± ...".
STEP_PATTERN = re.compile(r"step (\d+)(?:/\d+)?\b.*?return\s+(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class CopyStatus:
    copy: int
    phase: str  # Pending, Running, Succeeded, Failed, Cancelled
    restarts: int = 0
    node: str = ""
    age_seconds: float | None = None
    last_step: int | None = None
    last_return: float | None = None
    last_failure: str = ""  # why the copy's newest failed attempt ended: OOMKilled, Error, Evicted, ...


def last_progress(log_text: str) -> tuple[int | None, float | None]:
    """The last step and return a copy reported in its log."""
    for line in reversed(log_text.splitlines()):
        if match := STEP_PATTERN.search(line):
            return int(match.group(1)), float(match.group(2))
    return None, None


def overall_phase(copies: list[CopyStatus]) -> str:
    phases = {c.phase for c in copies}
    for phase in ("Running", "Pending"):
        if phase in phases:
            return phase
    if "Cancelled" in phases:
        return "Cancelled"
    return "Failed" if "Failed" in phases else "Succeeded" if phases else "Unknown"


def age_seconds(iso_time: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(iso_time)).total_seconds()


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
