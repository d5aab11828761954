"""Agents by name. Importing this package imports TensorFlow."""

from rlkube.rl.agents import ddpg as _ddpg  # noqa: F401  (registers the DDPG family: DDPG, TD3)
from rlkube.rl.agents import dqn as _dqn  # noqa: F401  (registers the DQN family)
from rlkube.rl.agents import impala as _impala  # noqa: F401
from rlkube.rl.agents import ppo as _ppo  # noqa: F401
from rlkube.rl.agents import sac as _sac  # noqa: F401
from rlkube.rl.agents import vpg as _vpg  # noqa: F401
from rlkube.rl.agents.base import Agent, agent_registry, make_agent

__all__ = ["Agent", "agent_registry", "make_agent"]
