"""Action distributions of the stochastic policies, for numpy (acting) and TensorFlow (learning) alike.

Both halves of an agent import this module: its maths takes `ops` (rlkube.rl.networks.NumpyOps or
rlkube.rl.agents.tf_ops.TFOps), so the learner's loss runs the very formula a test runs on numpy.
It imports no TensorFlow, and policies never import agents.

Categorical and DiagonalGaussian serve the policy-gradient agents: `log_prob` and `entropy` take
`ops`; sampling and the mode are numpy only, since only actors draw their actions, and `sample`
also returns the samples' log-probabilities from what sampling has already computed (acting is on
every environment step's path). SquashedGaussian is SAC's: its learner samples too
(reparameterised), so its `sample` takes the noise and `ops`; SquashedStateDependentNoise is SAC's
with gSDE.

A distribution's parameters are a tuple: (logits,) for Categorical, (mean, log_std) for the
Gaussians, each row one environment.
"""

import math
from typing import Any

import numpy as np

LOG_2 = math.log(2.0)
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

    def log_std_shape(self, features: int) -> tuple[int, ...]:
        """The shape of the learned log-std parameter, for a policy with `features` features."""
        del features
        return (self.num_outputs,)

    @staticmethod
    def row_log_std(log_std: Any, features: Any, ops: Any) -> Any:
        """The log-std the distribution's parameters carry: the learned vector itself."""
        del features, ops
        return log_std

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


class SquashedGaussian:
    """Actions tanh(u) in (-1, 1), u from a diagonal Gaussian whose mean and log-std are one head's two halves.

    SAC's policy (Haarnoja et al. 2018), with Stable-Baselines3's bounds on the log standard deviation.
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, action_size: int) -> None:
        self.action_size = action_size
        self.num_outputs = 2 * action_size  # [mean | log_std]

    def params(self, outputs: Any, ops: Any) -> tuple[Any, Any]:
        """The head's outputs as the Gaussian's (mean, log_std) before the tanh, log_std within SB3's bounds."""
        return outputs[:, :self.action_size], ops.clip(outputs[:, self.action_size:], self.LOG_STD_MIN,
                                                       self.LOG_STD_MAX)

    @staticmethod
    def sample(params: tuple[Any, Any], noise: Any, ops: Any) -> tuple[Any, Any]:
        """Actions tanh(u), u = mean + exp(log_std) * noise (reparameterised: differentiable in the params), and u."""
        mean, log_std = params
        pre_tanh = mean + ops.exp(log_std) * noise
        return ops.tanh(pre_tanh), pre_tanh

    @staticmethod
    def log_prob(noise: Any, log_std: Any, pre_tanh: Any, ops: Any) -> Any:
        """log pi(tanh(u)) for u = mean + exp(log_std) * noise, summed over action dimensions.

        The Gaussian's log-density of u, less the log-determinant of the tanh: log(1 - tanh(u)^2), written
        as 2 (log 2 - u - softplus(-2u)), which stays finite where tanh(u) rounds to +-1.
        """
        gaussian = -0.5 * noise * noise - log_std - 0.5 * LOG_2PI
        return ops.sum(gaussian - 2.0 * (LOG_2 - pre_tanh - ops.softplus(-2.0 * pre_tanh)))

    @staticmethod
    def mode(params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.tanh(params[0])


# -- gSDE (Raffin et al. 2022), as SB3's full_std: exploration noise latent @ M, M [features, action] with entries
# N(0, exp(log_std)^2), log_std a learned matrix; given the features, the noise is Gaussian with variance
# latent^2 @ exp(2 log_std) per action. Features enter the noise and its variance without a gradient (SB3's
# learn_features=False): `ops.stop_gradient`.

SDE_EPSILON = 1e-6  # SB3's, added to the variance


def exploration_matrices(log_std: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` matrices [count, features, action], one per environment (acting)."""
    return np.exp(log_std) * rng.standard_normal((count, *log_std.shape), np.float32)


class HeldExplorationMatrices:
    """Acting's exploration matrices, one per environment, drawn afresh every `sample_every` exploring steps (and
    whenever the number of environments changes); part of a policy's state, so that a resume continues exactly."""

    def __init__(self, sample_every: int) -> None:
        self.sample_every = sample_every
        self.matrices: np.ndarray | None = None
        self.steps_since_sample = 0

    def next(self, log_std: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """The matrices for this exploring step."""
        if self.matrices is None or len(self.matrices) != count or self.steps_since_sample >= self.sample_every:
            self.matrices = exploration_matrices(log_std, count, rng)
            self.steps_since_sample = 0
        self.steps_since_sample += 1
        return self.matrices

    def state_dict(self) -> dict[str, Any]:
        return {"steps_since_sample": self.steps_since_sample,
                "matrices": None if self.matrices is None else self.matrices.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_since_sample = state["steps_since_sample"]
        self.matrices = None if state["matrices"] is None else state["matrices"].copy()


def state_dependent_noise(latent: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Each environment's noise through its own matrix (acting)."""
    return np.einsum("bi,bij->bj", latent, matrices)


def state_dependent_variance(latent: Any, log_std: Any, ops: Any) -> Any:
    latent = ops.stop_gradient(latent)
    return ops.matmul(latent * latent, ops.exp(2.0 * log_std)) + SDE_EPSILON


class StateDependentGaussian(DiagonalGaussian):
    """PPO's and VPG's gSDE, unsquashed as SB3's: a diagonal Gaussian whose per-row log-std comes from the
    policy's features and a learned log-std matrix. Acting draws latent @ M with each environment's M, which has
    exactly that distribution, so log_prob and entropy are the diagonal Gaussian's."""

    def log_std_shape(self, features: int) -> tuple[int, ...]:
        return (features, self.num_outputs)

    @staticmethod
    def row_log_std(log_std: Any, features: Any, ops: Any) -> Any:
        return 0.5 * ops.log(state_dependent_variance(features, log_std, ops))


class SquashedStateDependentNoise:
    """SAC's actions with generalised state-dependent exploration (gSDE, Raffin et al. 2022), as SB3's full_std.

    The pre-tanh action is mean + latent @ M: `latent` is the actor's last hidden features, and M [latent, action]
    a matrix of N(0, std^2) entries, std = exp(log_std) a learned matrix of the same shape. An actor holds one M
    per environment for several steps, so its exploration is a smooth function of the state rather than noise
    drawn afresh each step; the learner draws one M per batch, reparameterised. Given the features, the pre-tanh
    action is Gaussian around the mean with variance latent^2 @ std^2 (plus SB3's epsilon), which log_prob uses.
    Features enter the noise without a gradient (SB3's learn_features=False): the caller stops it.
    """

    CLIP_MEAN = 2.0  # SB3 bounds the mean of a gSDE actor (Hardtanh) so that tanh keeps a gradient

    def __init__(self, action_size: int) -> None:
        self.num_outputs = action_size  # the mean; the log-std is a matrix of its own

    def mean(self, outputs: Any, ops: Any) -> Any:
        return ops.clip(outputs, -self.CLIP_MEAN, self.CLIP_MEAN)

    @staticmethod
    def explore(mean: np.ndarray, latent: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """Each environment's action in [-1, 1] with its own matrix (acting)."""
        return np.tanh(mean + state_dependent_noise(latent, matrices))

    @staticmethod
    def sample(mean: Any, latent: Any, log_std: Any, standard_normal: Any, ops: Any) -> tuple[Any, Any]:
        """Actions and their pre-tanh values with one matrix exp(log_std) * standard_normal for the whole batch."""
        pre_tanh = mean + ops.matmul(latent, ops.exp(log_std) * standard_normal)
        return ops.tanh(pre_tanh), pre_tanh

    def log_prob(self, pre_tanh: Any, mean: Any, latent: Any, log_std: Any, ops: Any) -> Any:
        """log pi(tanh(u)) summed over action dimensions, with the tanh's log-determinant as SquashedGaussian's."""
        variance = state_dependent_variance(latent, log_std, ops)
        deviation = pre_tanh - mean
        gaussian = -0.5 * deviation * deviation / variance - 0.5 * ops.log(variance) - 0.5 * LOG_2PI
        return ops.sum(gaussian - 2.0 * (LOG_2 - pre_tanh - ops.softplus(-2.0 * pre_tanh)))

    @staticmethod
    def mode(mean: np.ndarray) -> np.ndarray:
        return np.tanh(mean)
