"""DQN's policy: epsilon-greedy on Q-values, or on the expected returns of a distributional head."""

from typing import Any

import numpy as np

from rlkube.rl import action_selection
from rlkube.rl.networks import NumpyOps, Params, QNetwork
from rlkube.rl.policies.base import Extras, Policy
from rlkube.rl.schedules import ExponentialSchedule, LinearSchedule


class QPolicy(Policy):
    """DQN's: epsilon-greedy on Q-values (or greedy on a noisy network's), random before learning starts."""

    def __init__(self, network: QNetwork, params: Params, num_actions: int,
                 epsilon: LinearSchedule | ExponentialSchedule, random_steps: int, seed: int) -> None:
        self.network = network
        self.params = params
        self.num_actions = num_actions
        self.epsilon = epsilon
        self.random_steps = random_steps
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        noise = self.network.noise_numpy(self.rng) if explore else None
        return self.network.q_values(self.network.forward(self.params, obs, NumpyOps, noise=noise), NumpyOps)

    def act(self, obs: np.ndarray, explore: bool, step: int) -> tuple[np.ndarray, Extras]:
        if not explore:
            return action_selection.greedy(self.q_values(obs, explore=False)), {}
        if step < self.random_steps:
            return self.rng.integers(self.num_actions, size=len(obs)), {}
        return action_selection.epsilon_greedy(self.q_values(obs, True), self.epsilon(step), self.rng), {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
