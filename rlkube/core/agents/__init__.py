"""Agents by name. Importing this package imports TensorFlow."""

from rlkube.core.agents import ddpg as _ddpg  # noqa: F401  (registers the DDPG family: DDPG, TD3)
from rlkube.core.agents import dqn as _dqn  # noqa: F401  (registers the DQN family)
from rlkube.core.agents import ppo as _ppo  # noqa: F401
from rlkube.core.agents import sac as _sac  # noqa: F401
from rlkube.core.agents import vpg as _vpg  # noqa: F401
from rlkube.core.agents.base import Agent, agent_registry, make_agent

__all__ = ["Agent", "agent_registry", "make_agent"]
