"""What an experiment may hold at most: its chips or GPUs, times copies, times the
deadline; and at a price, what that costs.

Every copy's Job carries activeDeadlineSeconds, which counts from the Job's start and ends its pods, retries and
preemptions included: so no copy holds its accelerators longer, and accelerators times copies times the deadline
bounds the experiment. (A node an autoscaler added may outlive its pod by the autoscaler's scale-down delay.)
"""

from dataclasses import dataclass

from rlkube.launch.clusters import ClusterProfile

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Ceiling:
    unit: str  # chip (TPU) or GPU
    per_copy: int  # a TPU slice's chips, or the GPUs of a copy's pod
    accelerator: str  # what one copy takes, as the profile names it (v5litepod-1, nvidia-l4)
    copies: int
    hours: float | None  # the deadline; None: the profile sets none
    price_per_hour: float | None  # per chip or GPU; None: the profile gives no price

    @property
    def held(self) -> int:
        return self.per_copy * self.copies

    @property
    def accelerator_hours(self) -> float | None:
        return None if self.hours is None else self.held * self.hours

    @property
    def cost(self) -> float | None:
        hours = self.accelerator_hours
        return None if hours is None or self.price_per_hour is None else hours * self.price_per_hour

    def line(self) -> str:
        """`at most 5 chips (5 copies of v5litepod-1, 1 chip each) for 72 h: 360 chip-hours, cost ceiling $432.00
        at $1.20 per chip-hour`."""
        held = (f"{self.held} {_plural(self.unit, self.held)} ({self.copies} {_plural('copy', self.copies)} of "
                f"{self.accelerator}, {self.per_copy} {_plural(self.unit, self.per_copy)} each)")
        if self.hours is None:
            return (f"holds {held} with no deadline (active_deadline_seconds: null): no ceiling on "
                    f"{self.unit}-hours")
        line = f"at most {held} for {_number(self.hours)} h: {_number(self.accelerator_hours)} {self.unit}-hours"
        if self.cost is not None:
            line += f", cost ceiling ${self.cost:,.2f} at ${self.price_per_hour:,.2f} per {self.unit}-hour"
        return line


def _plural(noun: str, count: int) -> str:
    if count == 1:
        return noun
    return "copies" if noun == "copy" else f"{noun}s"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"


def ceiling(profile: ClusterProfile, copies: int) -> Ceiling | None:
    """What `copies` copies on this profile may hold at most; None for a profile without accelerators."""
    accelerator = profile.accelerator
    if accelerator is None:
        return None
    tpu_slice = profile.tpu_slice
    unit, per_copy = ("chip", tpu_slice.chips) if tpu_slice is not None else ("GPU", accelerator.count)
    deadline = profile.active_deadline_seconds
    return Ceiling(unit, per_copy, accelerator.name, copies,
                   None if deadline is None else deadline / SECONDS_PER_HOUR, profile.price_per_hour)
