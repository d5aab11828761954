"""The agent interface from the seed paper, and the agent registry."""

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym

from rlkube.core.errors import UserError
from rlkube.core.hparams import HParams
from rlkube.core.registry import Registry


class Agent(ABC):
    """act, observe, update: the whole contract between the runner's loop and an algorithm."""

    # Which gymnasium action spaces the algorithm can drive.
    action_spaces: tuple[type[gym.Space], ...] = ()

    @abstractmethod
    def act(self, state: Any, explore: bool = True) -> Any:
        """The action for one observation; `explore=False` is the evaluation policy."""

    @abstractmethod
    def observe(self, last_state: Any, action: Any, reward: float, state: Any, done: bool,
                truncated: bool = False) -> None:
        """One transition; `done` is a true terminal (no bootstrap), `truncated` a time limit."""

    @abstractmethod
    def update(self) -> dict[str, float]:
        """Learn if it is time to; returns the scalars to log (empty when nothing was learned)."""

    @abstractmethod
    def scalars(self) -> dict[str, float]:
        """Schedule positions worth logging (epsilon, learning rate)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, memory, RNG states, counters."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


agent_registry: Registry[type[Agent]] = Registry("agent")


def make_agent(hp: HParams, observation_space: gym.Space, action_space: gym.Space, seed: int,
               strategy: Any = None) -> Agent:
    """The agent named by `hp.agent`, or a UserError if it cannot drive this env's action space.

    `strategy` (a tf.distribute.Strategy, see rlkube.core.devices) places the learner; None is the default.
    """
    cls = agent_registry[hp.agent]
    if not isinstance(action_space, cls.action_spaces):
        wanted = " or ".join(space.__name__ for space in cls.action_spaces)
        fits = [name for name in agent_registry if isinstance(action_space, agent_registry[name].action_spaces)]
        hint = f"; agents for it: {', '.join(fits)}" if fits else ""
        raise UserError(f"agent '{hp.agent}' needs a {wanted} action space, but env '{hp.env}' has "
                        f"{type(action_space).__name__}{hint}")
    return cls(hp, observation_space, action_space, seed, strategy)
