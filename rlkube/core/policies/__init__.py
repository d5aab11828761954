"""Policies: the acting half of each agent, numpy only (see rlkube.core.policies.base)."""

from rlkube.core.policies.base import Extras, Policy
from rlkube.core.policies.q import QPolicy
from rlkube.core.policies.stochastic import StochasticPolicy

__all__ = ["Extras", "Policy", "QPolicy", "StochasticPolicy"]
