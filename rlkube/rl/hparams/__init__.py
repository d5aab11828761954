"""Named hyperparameter sets as typed objects, with typed, range-checked overrides."""

from rlkube.rl.hparams import continuous as _continuous  # noqa: F401  (DDPG, TD3 and SAC sets)
from rlkube.rl.hparams import dqn as _dqn  # noqa: F401  (registers the DQN-family sets)
from rlkube.rl.hparams import policy_gradient as _policy_gradient  # noqa: F401  (VPG and PPO sets)
from rlkube.rl.hparams.base import (
    RUN_LOOP_MUTABLE,
    Domain,
    HParams,
    apply_overrides,
    changed_hparams,
    from_dict,
    get_hparams,
    hparams_registry,
    param,
    parse_overrides,
    to_dict,
)

__all__ = [
    "RUN_LOOP_MUTABLE",
    "Domain",
    "HParams",
    "apply_overrides",
    "changed_hparams",
    "from_dict",
    "get_hparams",
    "hparams_registry",
    "param",
    "parse_overrides",
    "to_dict",
]
