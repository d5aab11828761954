"""Continuous-control policies: DDPG/TD3's deterministic actor with exploration noise, SAC's squashed Gaussian
with or without gSDE.

Actors and critics work in actions scaled to [-1, 1] (the actor ends in tanh); `BoxScale` maps them
onto the environment's bounds and back. Before learning starts both act uniformly at random, as
Stable-Baselines3 does.
"""

import math
from abc import abstractmethod
from typing import Any

import numpy as np

from rlkube.rl.distributions import HeldExplorationMatrices, SquashedGaussian, SquashedStateDependentNoise
from rlkube.rl.networks import MLP, NumpyOps, Params
from rlkube.rl.policies.base import Extras, Policy


class BoxScale:
    """Maps actions between [-1, 1] per dimension and a bounded Box's [low, high]."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = np.asarray(low, np.float32).ravel()
        self.high = np.asarray(high, np.float32).ravel()
        self.half_range = (self.high - self.low) / 2

    def to_env(self, unit: np.ndarray) -> np.ndarray:
        # The clip only catches rounding at the bounds.
        return np.clip(self.low + (unit + 1.0) * self.half_range, self.low, self.high).astype(np.float32)

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        return ((np.reshape(actions, (len(actions), -1)) - self.low) / self.half_range - 1.0).astype(np.float32)


class GaussianNoise:
    """Independent normal noise on every step."""

    def __init__(self, std: float) -> None:
        self.std = std

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.std * rng.standard_normal(shape, np.float32)

    def reset(self, done: np.ndarray) -> None:
        del done  # no state

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise, one process per environment row, restarting at 0 with each episode.

    x <- x - theta x dt + std sqrt(dt) N(0, 1), as Stable-Baselines3's OrnsteinUhlenbeckActionNoise.
    """

    def __init__(self, std: float, theta: float, dt: float) -> None:
        self.std = std
        self.theta = theta
        self.dt = dt
        self.state: np.ndarray | None = None  # [rows, action size] once the first batch has been acted on

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self.state is None or self.state.shape != shape:
            self.state = np.zeros(shape, np.float32)
        step = self.std * math.sqrt(self.dt) * rng.standard_normal(shape, np.float32)
        self.state = (self.state - self.theta * self.dt * self.state + step).astype(np.float32)
        return self.state

    def reset(self, done: np.ndarray) -> None:
        # Rows that never explored here (a learner fed by actor processes, say) have no state to reset.
        if self.state is not None and len(self.state) == len(done):
            self.state[np.asarray(done, bool)] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"state": None if self.state is None else self.state.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = None if state["state"] is None else state["state"].copy()


def actor_inputs(obs: np.ndarray) -> np.ndarray:
    return NumpyOps.flatten(NumpyOps.float32(obs))


class ContinuousPolicy(Policy):
    """Uniformly random actions before `random_steps`, then the subclass's; all mapped onto the Box."""

    def __init__(self, actor: MLP, params: Params, scale: BoxScale, random_steps: int, seed: int) -> None:
        self.actor = actor
        self.params = params
        self.scale = scale
        self.random_steps = random_steps
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, explore: bool, step: int) -> tuple[np.ndarray, Extras]:
        if explore and step < self.random_steps:
            unit = self.rng.uniform(-1.0, 1.0, (len(obs), len(self.scale.low))).astype(np.float32)
        else:
            unit = self.unit_actions(actor_inputs(obs), explore)
        return self.scale.to_env(unit), {}

    @abstractmethod
    def unit_actions(self, inputs: np.ndarray, explore: bool) -> np.ndarray:
        """Actions in [-1, 1] for the actor's inputs (flattened float32 observations)."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class DeterministicPolicy(ContinuousPolicy):
    """DDPG's and TD3's: tanh of the actor's output, plus exploration noise clipped back into [-1, 1]."""

    def __init__(self, actor: MLP, params: Params, scale: BoxScale, random_steps: int, seed: int,
                 noise: GaussianNoise | OrnsteinUhlenbeckNoise) -> None:
        super().__init__(actor, params, scale, random_steps, seed)
        self.noise = noise

    def unit_actions(self, inputs: np.ndarray, explore: bool) -> np.ndarray:
        actions = np.tanh(self.actor.forward(self.params, inputs, NumpyOps))
        if not explore:
            return actions
        return np.clip(actions + self.noise.sample(actions.shape, self.rng), -1.0, 1.0)

    def episodes_ended(self, done: np.ndarray) -> None:
        self.noise.reset(done)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.noise.load_state_dict(state["noise"])


class SquashedGaussianPolicy(ContinuousPolicy):
    """SAC's: a squashed Gaussian sample (rlkube.rl.distributions.SquashedGaussian); evaluation, tanh of the mean."""

    def __init__(self, actor: MLP, params: Params, scale: BoxScale, random_steps: int, seed: int) -> None:
        super().__init__(actor, params, scale, random_steps, seed)
        self.distribution = SquashedGaussian(len(scale.low))

    def unit_actions(self, inputs: np.ndarray, explore: bool) -> np.ndarray:
        params = self.distribution.params(self.actor.forward(self.params, inputs, NumpyOps), NumpyOps)
        if not explore:
            return self.distribution.mode(params)
        return self.distribution.sample(params, self.rng.standard_normal(params[0].shape, np.float32), NumpyOps)[0]


class StateDependentSquashedPolicy(ContinuousPolicy):
    """SAC's with gSDE (rlkube.rl.distributions.SquashedStateDependentNoise): each environment explores with its
    own exploration matrix, drawn afresh every `sample_every` vector steps; evaluation, tanh of the mean.

    The matrices and the steps since they were drawn are acting's state, so a resume continues exactly.
    """

    def __init__(self, actor: MLP, params: Params, scale: BoxScale, random_steps: int, seed: int,
                 sample_every: int) -> None:
        super().__init__(actor, params, scale, random_steps, seed)
        self.distribution = SquashedStateDependentNoise(len(scale.low))
        self.exploration = HeldExplorationMatrices(sample_every)

    def unit_actions(self, inputs: np.ndarray, explore: bool) -> np.ndarray:
        outputs, latent = self.actor.forward_with_features(self.params, inputs, NumpyOps)
        mean = self.distribution.mean(outputs, NumpyOps)
        if not explore:
            return self.distribution.mode(mean)
        matrices = self.exploration.next(self.params["log_std"], len(inputs), self.rng)
        return self.distribution.explore(mean, latent, matrices)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.exploration.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.exploration.load_state_dict(state)
