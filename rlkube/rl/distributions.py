"""Action distributions of stochastic policies, for numpy (acting) and TensorFlow (learning) alike.

`log_prob` and `entropy` take `ops` (rlkube.rl.networks.NumpyOps or agents.tf_ops.TFOps): the
learner's loss runs the same formula on TensorFlow that a test runs on numpy. Sampling and the mode
are numpy only, since only actors draw actions; `sample` also returns the samples' log-probabilities,
from what sampling has already computed (acting is on every environment step's path).

A distribution's parameters are a tuple: (logits,) for Categorical, (mean, log_std) for
DiagonalGaussian, each row one environment.
"""

import math
from typing import Any

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


class Categorical:
    """Discrete actions with probabilities softmax(logits)."""

    def __init__(self, num_actions: int) -> None:
        self.num_outputs = num_actions  # what the policy head produces

    @staticmethod
    def log_prob(params: tuple[Any, ...], actions: Any, ops: Any) -> Any:
        (logits,) = params
        return ops.take(ops.log_softmax(logits), actions)

    @staticmethod
    def entropy(params: tuple[Any, ...], ops: Any) -> Any:
        log_probs = ops.log_softmax(params[0])
        return -ops.sum(ops.exp(log_probs) * log_probs)

    @staticmethod
    def sample(params: tuple[np.ndarray, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Actions and their log-probabilities, by inverse-CDF sampling (one uniform draw per row)."""
        (logits,) = params
        shifted = logits - logits.max(axis=-1, keepdims=True)
        cumulative = np.cumsum(np.exp(shifted), axis=-1)
        total = cumulative[:, -1:]
        # The minimum guards the last bin against rounding in the cumulative sum.
        actions = np.minimum((cumulative <= rng.random((len(logits), 1)) * total).sum(axis=-1), logits.shape[-1] - 1)
        return actions, shifted[np.arange(len(logits)), actions] - np.log(total[:, 0])

    @staticmethod
    def mode(params: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.argmax(params[0], axis=-1)


class DiagonalGaussian:
    """Continuous actions, independent normals per dimension; log_std is a learned vector, not a head."""

    def __init__(self, action_size: int) -> None:
        self.num_outputs = action_size

    @staticmethod
    def log_prob(params: tuple[Any, ...], actions: Any, ops: Any) -> Any:
        mean, log_std = params
        z = (actions - mean) / ops.exp(log_std)
        return ops.sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI)

    @staticmethod
    def entropy(params: tuple[Any, ...], ops: Any) -> Any:
        mean, log_std = params
        # The same for every row; `0 * mean` gives it the batch's shape.
        return ops.sum(0.0 * mean + log_std + 0.5 * (1.0 + LOG_2PI))

    @staticmethod
    def sample(params: tuple[np.ndarray, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Actions and their log-probabilities."""
        mean, log_std = params
        noise = rng.standard_normal(mean.shape, np.float32)
        log_probs = (-0.5 * noise * noise - log_std - np.float32(0.5 * LOG_2PI)).sum(axis=-1)
        return mean + np.exp(log_std) * noise, log_probs

    @staticmethod
    def mode(params: tuple[np.ndarray, ...]) -> np.ndarray:
        return params[0]
