"""SIGTERM and SIGINT while a copy trains: noted when they arrive, acted on where the loop can stop cleanly.

The loop checkpoints at its next step boundary, then raises StopRequested; a PBT member waiting at a boundary
raises it at once (its checkpoint there is written). A signal handler does no more than note the signal: saving
from inside one could interrupt a half-done update or a checkpoint being written.
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was written before this was raised."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum = signum
        self.step = step


class StopSignals:
    """The stop signal that arrived while they were caught, if any."""

    def __init__(self) -> None:
        self.received: int | None = None

    @contextmanager
    def caught(self) -> Iterator[None]:
        """Note SIGTERM and SIGINT instead of dying of them; the previous handlers come back afterwards."""
        def note(signum: int, _frame: Any) -> None:
            self.received = signum

        previous = {signum: signal.signal(signum, note) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
