"""How far a copy has got, in two forms: progress.json in its directory, and the lines its log carries.

Programs that can read the copy's directory (the local target's status) read the record; a pod's directory is
out of reach, so Kubernetes status reads the newest progress or evaluation line in the pod's log instead. The
lines are formatted and parsed here, so the two can never drift apart.
"""

import contextlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from rlkube.rundir.layout import PROGRESS_FILE, write_atomically

# A progress line ("step 1200/50000  850 SPS  return    35.00") or an evaluation line ("eval at step 5000:
# return 181.20 ± 18.46"), prefixed or not.
_LINE = re.compile(r"step (\d+)(?:/\d+)?\b.*?return\s+(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class ProgressRecord:
    step: int
    total_steps: int
    steps_per_second: float
    recent_return: float | None  # the newest training episode's, if one ended
    wall_seconds: float | None  # training time, summed over the run's resumes
    updated_at: str  # ISO 8601, UTC

    def write(self, copy_dir: Path) -> None:
        """Replace the copy's record atomically: a reader sees the previous record or this one."""
        write_atomically(copy_dir / PROGRESS_FILE, json.dumps(asdict(self)) + "\n")

    @classmethod
    def read(cls, copy_dir: Path) -> "ProgressRecord | None":
        """The copy's record; None before its first one (or for a record this version cannot read)."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            return cls(**json.loads((copy_dir / PROGRESS_FILE).read_text()))
        return None


def return_text(recent_return: float | None) -> str:
    return f"return {recent_return:8.2f}" if recent_return is not None else "return      n/a"


def progress_line(step: int, total_steps: int, steps_per_second: float, recent_return: float | None) -> str:
    return f"step {step}/{total_steps}  {steps_per_second:.0f} SPS  {return_text(recent_return)}"


def evaluation_line(kind: str, step: int, mean: float, std: float) -> str:
    """An evaluation's (or the test's) result: "eval at step 5000: return 181.20 ± 18.46"."""
    return f"{kind} at step {step}: return {mean:.2f} ± {std:.2f}"


_EVALUATION = re.compile(r"\beval at step (\d+): return (-?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")


def evaluations_in_log(log_text: str) -> list[dict[str, float]]:
    """Every evaluation line of a copy's log, as metrics.jsonl holds them (returns rounded to 0.01 by the line)."""
    return [{"step": int(m.group(1)), "mean_return": float(m.group(2)), "std_return": float(m.group(3))}
            for m in map(_EVALUATION.search, log_text.splitlines()) if m]


def last_progress(log_text: str) -> tuple[int | None, float | None]:
    """The step and return of the newest progress or evaluation line in a copy's log."""
    for line in reversed(log_text.splitlines()):
        if match := _LINE.search(line):
            return int(match.group(1)), float(match.group(2))
    return None, None
