"""How an agent turns its estimates into an action: swappable pieces, separate from learning."""

import numpy as np


def greedy(q_values: np.ndarray) -> int:
    return int(np.argmax(q_values))


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """A uniformly random action with probability epsilon, else the greedy one."""
    if epsilon > 0.0 and rng.random() < epsilon:
        return int(rng.integers(q_values.shape[-1]))
    return greedy(q_values)
