"""What every replay-based agent's hparams share: the memory and how often to learn from it."""

from dataclasses import dataclass

from rlkube.rl.hparams.base import HParams, param


@dataclass(frozen=True)
class OffPolicyHParams(HParams):
    memory: str = param("uniform", choices=("uniform", "prioritized"))
    memory_size: int = param(100_000, lo=1)
    learning_starts: int = param(1_000, lo=0, doc="random-action steps before learning starts")
    train_freq: int = param(4, lo=1, doc="environment steps between training phases")
    gradient_steps: int = param(1, lo=1, doc="gradient steps per training phase")
    per_alpha: float = param(0.6, lo=0.0, hi=1.0, doc="prioritization exponent")
    per_beta_start: float = param(0.4, lo=0.0, hi=1.0, doc="importance-sampling exponent at start")
    per_beta_end: float = param(1.0, lo=0.0, hi=1.0, doc="... annealed linearly to this by the end")
    per_epsilon: float = param(1e-6, lo=0.0, doc="added to |TD error| so no priority is zero")
