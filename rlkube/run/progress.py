"""Progress for people and for pod logs: a live bar on a terminal, plain periodic lines elsewhere."""

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
LINE_INTERVAL_S = 10.0
BAR_INTERVAL_S = 0.25


class Progress:
    def __init__(self, total: int, prefix: str = "", stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.total = total
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.last_shown = 0.0
        self.last_step = 0
        self.last_time = time.perf_counter()
        self.sps = 0.0

    def update(self, step: int, recent_return: float | None) -> None:
        now = time.perf_counter()
        interval = BAR_INTERVAL_S if self.live else LINE_INTERVAL_S
        if now - self.last_shown < interval and step < self.total:
            return
        if now > self.last_time and step > self.last_step:
            self.sps = (step - self.last_step) / (now - self.last_time)
        self.last_step, self.last_time, self.last_shown = step, now, now
        ret = f"return {recent_return:8.2f}" if recent_return is not None else "return      n/a"
        if self.live:
            filled = int(BAR_WIDTH * step / max(self.total, 1))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r{self.prefix}[{bar}] {step}/{self.total}  {self.sps:7.0f} SPS  {ret}")
        else:
            self.stream.write(f"{self.prefix}step {step}/{self.total}  {self.sps:.0f} SPS  {ret}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (an evaluation result, say) that does not garble the bar."""
        self.stream.write(("\n" if self.live else "") + f"{self.prefix}{text}\n")
        self.last_shown = 0.0
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
