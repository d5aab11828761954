"""TensorBoard scalars and metrics.jsonl, kept consistent with checkpoints.

Event files are written with TensorBoard's own writer (no TensorFlow needed). Each checkpoint
records the byte length of every log file; a resume truncates the logs back to those lengths and
deletes files born after the checkpoint, so curves continue with no duplicated steps.
"""

import json
import math
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from rlkube.rundir.layout import EVENTS_GLOB, METRICS_FILE


def finite_scalars(values: dict[str, float]) -> dict[str, float]:
    """The scalars that are logged, to TensorBoard and to a tracker alike: the finite ones, as floats."""
    return {tag: float(value) for tag, value in values.items() if math.isfinite(value)}


class RunLog:
    def __init__(self, directory: Path, lengths: dict[str, int] | None = None) -> None:
        """Open the logs of a copy; `lengths` (from a checkpoint) rolls them back first."""
        self.directory = directory
        if lengths is not None:
            self._roll_back(lengths)
        self.events = EventFileWriter(str(directory), flush_secs=30)

    def _roll_back(self, lengths: dict[str, int]) -> None:
        for path in [*self.directory.glob(EVENTS_GLOB), self.directory / METRICS_FILE]:
            if not path.exists():
                continue
            if path.name not in lengths:
                path.unlink()
            elif path.stat().st_size > lengths[path.name]:
                with open(path, "r+b") as handle:
                    handle.truncate(lengths[path.name])

    def lengths(self) -> dict[str, int]:
        """Flush everything and return each log file's length, for the checkpoint."""
        self.events.flush()
        paths = [*self.directory.glob(EVENTS_GLOB), self.directory / METRICS_FILE]
        return {path.name: path.stat().st_size for path in paths if path.exists()}

    def scalars(self, step: int, values: dict[str, float]) -> None:
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)
                                 for tag, value in finite_scalars(values).items()])
        self.events.add_event(Event(step=step, summary=summary))

    def hparams(self, values: dict[str, Any]) -> None:
        plain = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}
        self.events.add_event(Event(summary=hparams_summary.hparams_pb(plain)))

    def metrics(self, record: dict[str, Any]) -> None:
        with open(self.directory / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.events.close()
