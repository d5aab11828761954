"""On-policy data: a rollout of consecutive steps from every environment, and the estimators of its advantages.

Numpy only, like the policies. Between the rollout and the update an advantage estimator (GAE(lambda)
today) turns the rollout into advantages and value targets; the learner hands those, as flat arrays,
to its compiled update, which never computes them itself.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# A full rollout's [n_steps, num_envs] arrays by name in; its advantages and returns (value targets) out.
AdvantageEstimator = Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


class RolloutBuffer:
    """`n_steps` consecutive steps of a batch of environments, as [n_steps, num_envs, ...] arrays by name.

    The arrays are made by the first `add`, shaped like its rows, so the buffer holds whatever an
    agent records (observations, actions, log-probs, values...).
    """

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == self.n_steps

    def add(self, **rows: np.ndarray) -> None:
        """One step: each keyword is a batch with one row per environment."""
        if self.full:
            raise RuntimeError("the rollout is full: learn from it and clear it before adding more")
        if not self.arrays:
            self.arrays = {name: np.zeros((self.n_steps, *np.shape(row)), np.asarray(row).dtype)
                           for name, row in rows.items()}
        for name, row in rows.items():
            self.arrays[name][self.size] = row
        self.size += 1

    def clear(self) -> None:
        self.size = 0

    def flat(self, name: str) -> np.ndarray:
        """One array with time and environments merged into rows: [n_steps * num_envs, ...]."""
        array = self.arrays[name]
        return array.reshape(-1, *array.shape[2:])

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "arrays": {name: array[:self.size].copy() for name, array in self.arrays.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arrays, self.size = {}, 0
        for step in range(state["size"]):
            self.add(**{name: array[step] for name, array in state["arrays"].items()})


def generalized_advantages(rewards: np.ndarray, values: np.ndarray, bootstrap_values: np.ndarray,
                           terminated: np.ndarray, truncated: np.ndarray, gamma: float,
                           gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) advantages and the value targets (advantages + values) for [T, num_envs] arrays.

    `values[t]` is V(s_t) from acting. The value of what step t led to is `values[t + 1]`, except
    where that is not the same episode's next state or there is none: where step t was truncated
    (a time limit, not a real end, so the episode's final observation is bootstrapped) and at the
    last step, `bootstrap_values[t]` holds V(next observation). Where step t terminated the future is
    worth nothing. Advantages never reach back across an episode's end (Schulman et al. 2016).
    """
    next_values = np.where(truncated, bootstrap_values, np.roll(values, -1, axis=0))
    next_values[-1] = bootstrap_values[-1]
    deltas = rewards + gamma * np.where(terminated, 0.0, next_values) - values
    continues = gamma * gae_lambda * ~(terminated | truncated)
    advantages = np.zeros_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):
        running = deltas[t] + continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


@dataclass(frozen=True)
class GAE:
    """GAE(lambda) as an advantage estimator, on what acting recorded (see generalized_advantages)."""

    gamma: float
    gae_lambda: float

    def __call__(self, rollout: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return generalized_advantages(rollout["reward"], rollout["value"], rollout["bootstrap_value"],
                                      rollout["terminated"], rollout["truncated"], self.gamma, self.gae_lambda)
