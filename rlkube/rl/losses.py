"""The DQN family's losses, shaped as Acme's LossFn: from a Q-network, its parameters and a batch, the loss.

The learner (rlkube.rl.agents.dqn) owns the loop, the gradient and the optimizer; a loss owns what is
wrong with the network's values. A variant with another head (C51's distribution over returns, say)
is that head plus a loss here, selected by `dqn_loss`, not a copy of the loop. Each loss also hands back
what replay and logging need: every sample's priority and the mean value of the actions taken.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import tensorflow as tf

from rlkube.rl.hparams.dqn import DQNHParams
from rlkube.rl.networks import Params
from rlkube.rl.registry import Registry

# The network's output for some parameters and observations; noisy layers draw fresh noise on every call.
NetworkApply = Callable[[Params, tf.Tensor], tf.Tensor]


class Transitions(NamedTuple):
    """One replayed batch. n-step returns arrive folded into `reward` and `discount` (rlkube.rl.replay)."""

    obs: tf.Tensor
    action: tf.Tensor
    reward: tf.Tensor
    next_obs: tf.Tensor
    discount: tf.Tensor  # 0 after a terminal step; gamma^n otherwise
    weights: tf.Tensor  # importance-sampling weights of prioritized replay; all 1 for uniform replay


class LossOutput(NamedTuple):
    loss: tf.Tensor  # the scalar to minimise: per-sample losses, importance-weighted, averaged
    priorities: tf.Tensor  # [batch], non-negative: what prioritized replay ranks each transition by
    q_values: tf.Tensor  # the mean value of the actions taken, logged as losses/q_values


class DQNLoss(Protocol):
    def __call__(self, apply: NetworkApply, online: Params, target: Params,
                 batch: Transitions) -> LossOutput:
        """The loss of the online parameters on `batch`; the learner differentiates it with respect to them."""


# Per-sample losses on TD errors, by the hparam `loss`; the TD loss weights and averages them.
loss_registry: Registry[Callable[[tf.Tensor], tf.Tensor]] = Registry("loss")


@loss_registry.register("huber")
def huber(td_error: tf.Tensor) -> tf.Tensor:
    """Huber with delta 1 (PyTorch's smooth L1): quadratic near zero, linear beyond."""
    absolute = tf.abs(td_error)
    quadratic = tf.minimum(absolute, 1.0)
    return 0.5 * tf.square(quadratic) + (absolute - quadratic)


@loss_registry.register("mse")
def mse(td_error: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.square(td_error)


@dataclass(frozen=True)
class TDLoss:
    """DQN's (Mnih et al. 2015) regression towards r + discount * max_a Q_target(s', a), one- or n-step.

    Double DQN (van Hasselt et al. 2016) lets the online network pick the next action and the target
    network rate it. A transition's priority is its |TD error|.
    """

    per_sample: Callable[[tf.Tensor], tf.Tensor]
    double_q: bool

    def __call__(self, apply: NetworkApply, online: Params, target: Params,
                 batch: Transitions) -> LossOutput:
        next_q = apply(target, batch.next_obs)
        if self.double_q:
            next_value = tf.gather(next_q, tf.argmax(apply(online, batch.next_obs), axis=1), batch_dims=1)
        else:
            next_value = tf.reduce_max(next_q, axis=1)
        td_target = tf.stop_gradient(batch.reward + batch.discount * next_value)
        q_taken = tf.gather(apply(online, batch.obs), batch.action, batch_dims=1)
        td_error = td_target - q_taken
        return LossOutput(tf.reduce_mean(batch.weights * self.per_sample(td_error)), tf.abs(td_error),
                          tf.reduce_mean(q_taken))


def dqn_loss(hp: DQNHParams) -> DQNLoss:
    """The loss `hp` selects, its constants fixed: the TD loss, double or not, with hp.loss per sample."""
    return TDLoss(loss_registry[hp.loss], hp.double_q)
