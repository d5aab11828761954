"""The agent interface from the seed paper, and the agent registry.

An agent has two halves. Its `policy` (rlkube.rl.policies) acts: numpy only, picklable, so an
actor process (`--num-workers`) runs a copy of it without TensorFlow. The agent itself learns: it
observes what the policy's actions led to and updates its variables, then hands the policy fresh
parameters.

Everything is batched over a vector of environments: `obs` is [num_envs, ...], one action per row.
"""

from abc import ABC, abstractmethod
from typing import Any, TypedDict

import gymnasium as gym
import numpy as np

from rlkube.rl.envs import check_action_space
from rlkube.rl.hparams import RUN_LOOP_MUTABLE, HParams, changed_hparams
from rlkube.rl.networks import Params, map_params, param_leaves
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.policies import Extras, Policy
from rlkube.rl.registry import Registry


class AgentState(TypedDict):
    """Everything an agent needs to continue exactly, in one shape for every algorithm (Agent.state_dict).

    Each group maps names to numpy arrays, or to trees of named arrays, so that a reader finds the same thing
    under the same key whatever the agent.
    """

    params: dict[str, Params]  # learned parameters by owner ("online", "target", "actor", ...), each a named tree
    optimizers: dict[str, dict[str, Any]]  # each optimizer's state, under the key of the params it moves
    rng: dict[str, Any]  # the learner's own random streams by use (acting's are in `policy`, replay's in `memory`)
    counters: dict[str, Any]  # where the agent stands: steps observed, updates made, values carried between them
    memory: dict[str, Any]  # what it learns from: the replay memory and n-step builders, or the rollout
    policy: dict[str, Any]  # the acting side's random stream and exploration noise (rlkube.rl.policies)


def numpy_params(variables: Params) -> Params:
    """A tree of variables' values, with the same names: for a checkpoint."""
    return map_params(lambda variable: variable.numpy(), variables)


def assign_params(variables: Params, values: Params) -> None:
    """Set a tree of variables from a tree of values (the same names, taken in `param_leaves` order)."""
    for variable, value in zip(param_leaves(variables), param_leaves(values), strict=True):
        variable.assign(value)


class Agent(ABC):
    """act, observe, update: the whole contract between the runner's loop and an algorithm."""

    # Which gymnasium action spaces the algorithm can drive: its hparams type's (HParams.action_spaces).
    action_spaces: tuple[type[gym.Space], ...] = ()
    # How its actor processes keep pace with learning (rlkube.rl.pacing); each family declares its own.
    pacing: ActorPacing

    hp: HParams
    policy: Policy
    steps: int = 0  # environment steps observed, summed over environments

    @property
    def rollout_steps(self) -> int | None:
        """Vector steps per rollout that an on-policy agent learns from; None when any amount will do."""
        return None

    def act(self, obs: np.ndarray, explore: bool = True) -> tuple[np.ndarray, Extras]:
        """Actions for a batch of observations; `explore=False` is the evaluation policy."""
        return self.policy.act(obs, explore, self.steps)

    @abstractmethod
    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, extras: Extras) -> None:
        """One step of every environment.

        `next_obs` is what each action led to, also where an episode ended (the env has reset since);
        `terminated` is a true terminal (no bootstrap), `truncated` a time limit (bootstrap).
        """

    @abstractmethod
    def update(self) -> dict[str, float]:
        """Learn if it is time to; returns the scalars to log (empty when nothing was learned)."""

    @abstractmethod
    def scalars(self) -> dict[str, float]:
        """Schedule positions worth logging (epsilon, learning rate)."""

    def set_hparams(self, hp: HParams) -> None:
        """Learn and act with `hp` from now on; it may differ only in self.hp.mutable_on_resume().

        The compiled learner reads those from variables or inputs, so it is not retraced. The runner calls
        this after restoring a checkpoint, whose optimizer state holds the old run's learning rate.
        """
        fixed = sorted(set(changed_hparams(self.hp, hp)) - self.hp.mutable_on_resume() - RUN_LOOP_MUTABLE)
        if fixed:
            raise ValueError(f"{type(self).__name__} cannot change {', '.join(fixed)} mid-run; make a new agent")
        self.hp = hp
        self._apply_hparams()

    @abstractmethod
    def _apply_hparams(self) -> None:
        """Put self.hp's mutable values where the learner and the policy read them."""

    def reseed(self, seed: int) -> None:
        """Draw every random stream afresh from `seed`, keeping weights, optimizer, memory and counters: what a PBT
        member does after copying another member's state, so that it goes on with streams of its own."""
        numpy_streams, tf_streams = self._random_streams()
        for index, generator in enumerate(numpy_streams):
            generator.bit_generator.state = np.random.default_rng([seed, index]).bit_generator.state
        for index, generator in enumerate(tf_streams):
            # A 63-bit seed per stream from the same SeedSequence, for TensorFlow's own generators.
            generator.reset_from_seed(int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1)

    def _random_streams(self) -> tuple[list[np.random.Generator], list[Any]]:
        """Every numpy Generator and tf.random.Generator the agent draws from (acting's, then learning's)."""
        return [self.policy.rng], []

    @abstractmethod
    def state_dict(self) -> AgentState:
        """Everything needed to continue exactly: weights, optimizers, random streams, counters, memory."""

    @abstractmethod
    def load_state_dict(self, state: AgentState) -> None: ...

    @abstractmethod
    def upgrade_state(self, unnamed: dict[str, Any]) -> AgentState:
        """The state an rlkube before AgentState saved (checkpoint format 1: DQN's flat lists, the continuous
        agents' `variables`, the on-policy agents' flat vector), in today's shape, bit for bit."""


agent_registry: Registry[type[Agent]] = Registry("agent")


def make_agent(hp: HParams, observation_space: gym.Space, action_space: gym.Space, seed: int,
               strategy: Any = None) -> Agent:
    """The agent named by `hp.agent` for one environment's spaces (not the vector env's batched ones).

    `strategy` (a tf.distribute.Strategy, see rlkube.rl.devices) places the learner; None is the default.
    """
    check_action_space(hp, action_space)
    return agent_registry[hp.agent](hp, observation_space, action_space, seed, strategy)
