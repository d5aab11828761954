"""Progress for people and for programs: a live bar on a terminal, plain periodic lines elsewhere (pod logs), and
the copy's progress record (rlkube.rundir.progress_record), which the local target's status reads."""

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rlkube.rundir.progress_record import ProgressRecord, progress_line, return_text

BAR_WIDTH = 24
LINE_INTERVAL_S = 10.0
BAR_INTERVAL_S = 0.25
RECORD_INTERVAL_S = 10.0


class Progress:
    def __init__(self, total: int, prefix: str = "", stream: TextIO | None = None, live: bool | None = None,
                 copy_dir: Path | None = None) -> None:
        """`copy_dir`: where to keep the progress record, if anywhere."""
        self.total = total
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.copy_dir = copy_dir
        self.last_shown = 0.0
        self.last_step = 0
        self.last_time = time.perf_counter()
        self.sps = 0.0
        self.last_recorded = 0.0
        # (step, recent return, wall seconds) of the newest update not in the record yet; kept raw because
        # update runs every environment step and the record is written only every RECORD_INTERVAL_S.
        self.unrecorded: tuple[int, float | None, float | None] | None = None

    def update(self, step: int, recent_return: float | None, wall_seconds: float | None = None) -> None:
        """Show `step` when the display is due, and keep the record (every RECORD_INTERVAL_S and at the end).

        `wall_seconds`: the run's training time so far, for the record.
        """
        now = time.perf_counter()
        interval = BAR_INTERVAL_S if self.live else LINE_INTERVAL_S
        if now - self.last_shown >= interval or step >= self.total:
            self._show(now, step, recent_return)
        if self.copy_dir is not None:
            self.unrecorded = step, recent_return, wall_seconds
            if now - self.last_recorded >= RECORD_INTERVAL_S or step >= self.total:
                self._record(now)

    def _show(self, now: float, step: int, recent_return: float | None) -> None:
        if now > self.last_time and step > self.last_step:
            self.sps = (step - self.last_step) / (now - self.last_time)
        self.last_step, self.last_time, self.last_shown = step, now, now
        if self.live:
            filled = int(BAR_WIDTH * step / max(self.total, 1))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r{self.prefix}[{bar}] {step}/{self.total}  {self.sps:7.0f} SPS  "
                              f"{return_text(recent_return)}")
        else:
            self.stream.write(f"{self.prefix}{progress_line(step, self.total, self.sps, recent_return)}\n")
        self.stream.flush()

    def _record(self, now: float) -> None:
        if self.copy_dir is None or self.unrecorded is None:
            return
        step, recent_return, wall_seconds = self.unrecorded
        ProgressRecord(step, self.total, round(self.sps, 1), recent_return, wall_seconds,
                       datetime.now(UTC).isoformat(timespec="seconds")).write(self.copy_dir)
        self.unrecorded, self.last_recorded = None, now

    def message(self, text: str) -> None:
        """A line of its own (an evaluation result, say) that does not garble the bar."""
        self.stream.write(("\n" if self.live else "") + f"{self.prefix}{text}\n")
        self.last_shown = 0.0
        self.stream.flush()

    def close(self) -> None:
        """End the bar, and record the newest step (a run stopped by a signal ends between records)."""
        self._record(time.perf_counter())
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
