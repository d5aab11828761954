"""How an agent turns its estimates into actions: swappable pieces, separate from learning.

Everything works on a batch: one row of Q-values per environment.
"""

import numpy as np


def greedy(q_values: np.ndarray) -> np.ndarray:
    return np.argmax(q_values, axis=-1)


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Per row, a uniformly random action with probability epsilon, else the greedy one."""
    actions = greedy(q_values)
    if epsilon > 0.0:
        explore = rng.random(len(actions)) < epsilon
        if explore.any():
            actions = np.where(explore, rng.integers(q_values.shape[-1], size=len(actions)), actions)
    return actions
