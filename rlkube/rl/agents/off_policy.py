"""What replay-based agents (DQN, DDPG, TD3, SAC) share: the memory, when learning is due, prioritized replay.

A subclass stores transitions in `self.memory` as it observes them and supplies `learn`, one compiled
graph call over a stack of batches; `replay` decides how the batches are drawn.
"""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rlkube.rl.agents.base import Agent, AgentState
from rlkube.rl.envs import stacked_frame_axis
from rlkube.rl.hparams.off_policy import OffPolicyHParams
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.replay import Batch, memory_registry
from rlkube.rl.schedules import LinearSchedule, multiples_between

# One compiled learning call: the batches' priorities ([count, batch], e.g. |TD errors|) and per-step scalars.
Learn = Callable[[Batch], tuple[Any, dict[str, Any]]]


class OffPolicyAgent(Agent):
    hp: OffPolicyHParams
    pacing = ActorPacing.STREAM_TRANSITIONS  # replay learns from any policy's transitions

    def _make_memory(self, observation_space: gym.Space, action_shape: tuple[int, ...], action_dtype: np.dtype,
                     seed: int) -> None:
        hp = self.hp
        self.memory = memory_registry[hp.memory](
            hp.memory_size, observation_space.shape, observation_space.dtype, action_shape, action_dtype, seed,
            frame_axis=stacked_frame_axis(hp.env), alpha=hp.per_alpha, epsilon=hp.per_epsilon)
        self.beta = LinearSchedule(hp.per_beta_start, hp.per_beta_end, hp.train_steps)
        self.steps = 0
        self.previous_steps = 0  # where the last update call found self.steps

    def _gradient_steps_due(self) -> int:
        """gradient_steps per multiple of train_freq passed since the last call; none before learning starts."""
        hp = self.hp
        phases = multiples_between(self.previous_steps, self.steps, hp.train_freq)
        self.previous_steps = self.steps
        if self.steps <= hp.learning_starts or len(self.memory) == 0:
            return 0
        return phases * hp.gradient_steps

    def _replay(self, gradient_steps: int, learn: Learn) -> dict[str, float]:
        """Learn from `gradient_steps` batches; returns each scalar's mean over them."""
        hp = self.hp
        if hp.memory == "prioritized":
            # Priorities change after every gradient step, so each batch is drawn after the last update.
            results = []
            for _ in range(gradient_steps):
                batch = self.memory.sample(hp.batch_size, 1, beta=self.beta(self.steps))
                priorities, scalars = learn(batch)
                self.memory.update_priorities(batch["indices"], np.asarray(priorities))
                results.append(scalars)
        else:
            # Uniform draws do not depend on learning: every batch at once, in one call.
            results = [learn(self.memory.sample(hp.batch_size, gradient_steps))[1]]
        return {name: float(np.mean([np.mean(r[name]) for r in results])) for name in results[0]}

    def _random_streams(self) -> tuple[list[np.random.Generator], list[Any]]:
        numpy_streams, tf_streams = super()._random_streams()
        return [*numpy_streams, self.memory.rng], tf_streams

    def _replay_counters(self) -> dict[str, int]:
        return {"steps": self.steps, "previous_steps": self.previous_steps}

    def _load_replay_state(self, state: AgentState) -> None:
        """The counters of _replay_counters and the memory's state under memory/replay."""
        self.steps = state["counters"]["steps"]
        self.previous_steps = state["counters"]["previous_steps"]
        self.memory.load_state_dict(state["memory"]["replay"])
