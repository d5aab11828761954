"""The policy interface: the acting half of each agent (see rlkube.rl.agents.base).

A policy is a function of numpy parameters (a network's named tree, rlkube.rl.networks.Params) plus
its own random state. It imports no TensorFlow and pickles, so actor processes (`--num-workers`) run
copies of it and the learner sends them fresh parameters now and then.
"""

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from rlkube.rl.networks import Params

Extras = dict[str, np.ndarray]


class Policy(ABC):
    """Acts on a batch of observations, one row per environment."""

    params: Params  # numpy arrays, replaced whole (never edited in place) when the learner syncs its weights

    @abstractmethod
    def act(self, obs: np.ndarray, explore: bool, step: int) -> tuple[np.ndarray, Extras]:
        """Actions for a batch of observations, and what learning needs from acting (log-probs, values).

        `step` is the learner's environment step count, for exploration schedules.
        """

    rng: np.random.Generator

    def seed(self, seed: int) -> None:
        """Reseed acting's randomness: every actor process draws its own exploration."""
        self.rng = np.random.default_rng(seed)

    def episodes_ended(self, done: np.ndarray) -> None:
        """Forget per-environment exploration state (e.g. Ornstein-Uhlenbeck noise) where `done`."""
        del done

    def state_dict(self) -> dict[str, Any]:
        """Random state and exploration-noise state; the parameters travel separately."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
