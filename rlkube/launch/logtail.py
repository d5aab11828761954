"""Reading a log file while its writer still writes it: a local copy's train.log, a detached driver's log."""

import contextlib
import time
from collections.abc import Callable
from pathlib import Path


def new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written to `path` after byte `offset`, and the offset after them (a line still being
    written waits for its newline)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines(), offset + len(complete)


def follow_log(path: Path, alive: Callable[[], bool], emit: Callable[[str], None]) -> None:
    """Emit a log's lines as they are written, until `alive()` turns false (the lines up to then included)."""
    offset = 0
    while True:
        still_alive = alive()
        with contextlib.suppress(OSError):
            lines, offset = new_lines(path, offset)
            for line in lines:
                emit(line)
        if not still_alive:
            return
        time.sleep(0.5)
