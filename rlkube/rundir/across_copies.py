"""Mean and spread over an experiment's copies (its seeds), said one way wherever rlkube says it.

The experiment's summary.json, `rlkube results`, a sweep trial's value, `rlkube hparams --results` and the
results report all give the mean and the population standard deviation: the copies run are the whole population
being described, not a sample of a larger one.
"""

import statistics
from collections.abc import Sequence


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and population standard deviation of one or more values (0 for a single value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def mean_plus_minus(values: Sequence[float], digits: int = 1) -> str:
    """"mean ± std" to `digits` places; the mean alone for a single value."""
    mean, std = mean_and_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
