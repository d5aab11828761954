"""Schedules as pure functions of the step, so a resumed run is at the same position for free."""

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """From `start` to `end` over `duration` steps, then constant."""

    start: float
    end: float
    duration: int

    def __call__(self, step: int) -> float:
        if self.duration <= 0:
            return self.end
        fraction = min(max(step, 0) / self.duration, 1.0)
        return self.start + fraction * (self.end - self.start)


@dataclass(frozen=True)
class ExponentialSchedule:
    """From `start` towards `end`, the remaining gap shrinking by `decay` each step."""

    start: float
    end: float
    decay: float

    def __call__(self, step: int) -> float:
        return self.end + (self.start - self.end) * self.decay ** max(step, 0)


def multiples_between(before: int, after: int, period: int) -> int:
    """How many multiples of `period` lie in (before, after]: steps advance by num_envs, not by one."""
    return after // period - before // period
