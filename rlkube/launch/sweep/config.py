"""What a sweep is (its config, kept in the study itself) and how a trial's value is made from its copies' evaluations.

Pure: no Optuna here, so the CLI can check a sweep's flags without importing it.
"""

import dataclasses
import re
import statistics
from dataclasses import dataclass
from typing import Any

from rlkube.errors import UserError
from rlkube.launch.spec import MAX_NAME_LENGTH, check_name
from rlkube.launch.sweep.methods import PRUNERS, SAMPLERS
from rlkube.run.options import MAX_COPIES, CopyPlan, TrainOptions

OBJECTIVE = re.compile(r"(final|best|last:([1-9]\d*))")  # fullmatch: `$` lets a trailing newline in
DEFAULT_OBJECTIVE = "last:3"
TRIAL_SUFFIX = "-t{number}"
# The longest trial suffix is "-t" and four digits; a confirmation's is "-confirm".
MAX_SWEEP_NAME_LENGTH = MAX_NAME_LENGTH - len("-confirm")


@dataclass(frozen=True)
class SweepConfig:
    name: str
    cluster: str
    train: TrainOptions  # the base of every trial: the set, --train-steps, --seed (copy k's seed is seed+k), ...
    space: dict[str, Any]  # as its YAML file writes it (space.space_to_yaml)
    trials: int
    parallel: int
    seeds: int
    sampler: str = SAMPLERS.default()
    pruner: str = PRUNERS.default()
    objective: str = DEFAULT_OBJECTIVE
    retries: int = 1
    poll_seconds: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepConfig":
        return cls(**{**data, "train": TrainOptions(**data["train"])})

    def trial_name(self, number: int) -> str:
        return f"{self.name}{TRIAL_SUFFIX.format(number=number)}"

    def trial_copies(self, overrides: str, first_seed: int | None = None, seeds: int | None = None) -> list[CopyPlan]:
        """A trial's copies: the same params, one seed each. Every trial uses the same seeds, so trials are compared
        seed by seed (what the Wilcoxon pruner needs); a confirmation passes fresh ones."""
        first = self.train.seed if first_seed is None else first_seed
        return [CopyPlan(k, first + k, overrides) for k in range(self.seeds if seeds is None else seeds)]


def check_sweep_flags(name: str, sampler: str, pruner: str, objective: str, trials: int, parallel: int,
                      seeds: int) -> None:
    """The flags' own mistakes, before the space or any cluster is looked at."""
    check_name(name)
    if len(name) > MAX_SWEEP_NAME_LENGTH:
        raise UserError(f"sweep name '{name}' is too long: its trials add '-t<n>', so use at most "
                        f"{MAX_SWEEP_NAME_LENGTH} characters")
    SAMPLERS[sampler]  # an unknown name raises, listing the known ones
    PRUNERS[pruner]
    if not OBJECTIVE.fullmatch(objective):
        raise UserError(f"bad --objective '{objective}'; use final, best, or last:N (the mean of the last N "
                        f"evaluations)")
    for flag, value in (("--trials", trials), ("--parallel", parallel), ("--seeds", seeds)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if seeds > MAX_COPIES:  # a trial's seeds are one experiment's copies
        raise UserError(f"--seeds must be at most {MAX_COPIES}, got {seeds}")


def copy_value(evaluations: list[dict[str, float]], objective: str) -> float | None:
    """One copy's value under the objective: its final evaluation, its best, or the mean of its last N."""
    returns = [e["mean_return"] for e in evaluations]
    if not returns:
        return None
    match = OBJECTIVE.fullmatch(objective)
    if match is None:
        raise ValueError(objective)
    if match.group(1) == "final":
        return returns[-1]
    if match.group(1) == "best":
        return max(returns)
    return statistics.fmean(returns[-int(match.group(2)):])


def _returns_at_shared_steps(evaluations: dict[int, list[dict[str, float]]],
                             copies: int) -> tuple[list[dict[int, float]], list[int]]:
    """Each copy's return by step, and the steps that every copy has evaluated, in order."""
    by_copy = [{e["step"]: e["mean_return"] for e in evaluations.get(k, [])} for k in range(copies)]
    shared = set.intersection(*(set(c) for c in by_copy)) if by_copy else set()
    return by_copy, sorted(shared)


def intermediate_values(evaluations: dict[int, list[dict[str, float]]], copies: int) -> dict[int, float]:
    """At each step that every copy has evaluated, the mean over copies: what the pruner sees."""
    by_copy, shared = _returns_at_shared_steps(evaluations, copies)
    return {step: statistics.fmean(c[step] for c in by_copy) for step in shared}


def per_seed_values(evaluations: dict[int, list[dict[str, float]]], copies: int) -> dict[int, float]:
    """For the Wilcoxon pruner, which compares trials instance by instance: at each step every copy has evaluated,
    each copy's own return, keyed step * copies + copy so that the same seed at the same step pairs up."""
    by_copy, shared = _returns_at_shared_steps(evaluations, copies)
    return {step * copies + k: by_copy[k][step] for step in shared for k in range(copies)}
