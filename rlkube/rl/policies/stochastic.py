"""Policy-gradient agents' policy: actions sampled from a distribution, with what learning needs."""

from typing import Any

import numpy as np

from rlkube.rl.distributions import HeldExplorationMatrices, state_dependent_noise
from rlkube.rl.networks import ActorCriticNetwork, NumpyOps, Params
from rlkube.rl.policies.base import Extras, Policy


class StochasticPolicy(Policy):
    """Samples actions from the network's distribution; evaluation takes its mode.

    Exploring, it returns in extras each action's log-probability and the state's value, so
    learning need not recompute what acting already knew. A Box action space's bounds clip what the
    environment gets (Stable-Baselines3's semantics); learning needs the sample itself, which then
    travels as extras["unclipped_action"].
    """

    def __init__(self, network: ActorCriticNetwork, params: Params, seed: int,
                 action_bounds: tuple[np.ndarray, np.ndarray] | None = None, sde_sample_every: int = 0) -> None:
        self.network = network
        self.params = params
        self.action_bounds = action_bounds
        self.rng = np.random.default_rng(seed)
        # gSDE (rlkube.rl.distributions.StateDependentGaussian): each environment's exploration matrix, drawn
        # afresh every `sde_sample_every` exploring steps; 0 without gSDE.
        self.exploration = HeldExplorationMatrices(sde_sample_every) if sde_sample_every else None

    def act(self, obs: np.ndarray, explore: bool, step: int) -> tuple[np.ndarray, Extras]:
        del step  # no exploration schedule: the distribution's spread is learned
        distribution = self.network.distribution
        if not explore:
            return self._to_env(distribution.mode(self.network.policy(self.params, obs, NumpyOps))), {}
        params, values, features = self.network.forward_with_features(self.params, obs, NumpyOps)
        if self.exploration is not None:
            matrices = self.exploration.next(self.params["log_std"], len(obs), self.rng)
            actions = params[0] + state_dependent_noise(features, matrices)
            log_probs = distribution.log_prob(params, actions, NumpyOps)
        else:
            actions, log_probs = distribution.sample(params, self.rng)
        extras = {"log_prob": log_probs, "value": values}
        if self.action_bounds is None:
            return actions, extras
        return self._to_env(actions), {**extras, "unclipped_action": actions}

    def value(self, obs: np.ndarray) -> np.ndarray:
        """V(obs) with the current parameters, for bootstrapping where a rollout stops mid-episode."""
        return self.network.value(self.params, obs, NumpyOps)

    def _to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions if self.action_bounds is None else np.clip(actions, *self.action_bounds)

    def state_dict(self) -> dict[str, Any]:
        state = {"rng": self.rng.bit_generator.state}
        return {**state, **self.exploration.state_dict()} if self.exploration is not None else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        if self.exploration is not None:
            self.exploration.load_state_dict(state)
