"""Policies: the acting half of each agent, numpy only (see rlkube.rl.policies.base)."""

from rlkube.rl.policies.base import Extras, Policy
from rlkube.rl.policies.q import QPolicy
from rlkube.rl.policies.stochastic import StochasticPolicy

__all__ = ["Extras", "Policy", "QPolicy", "StochasticPolicy"]
