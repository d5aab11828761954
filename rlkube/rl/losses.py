"""The DQN family's losses, shaped as Acme's LossFn: from a Q-network, its parameters and a batch, the loss.

The learner (rlkube.rl.agents.dqn) owns the loop, the gradient and the optimizer; a loss owns what is
wrong with the network's values. A variant with another head (C51's distribution over returns, say)
is that head (rlkube.rl.networks.QHead) plus its loss in HEAD_LOSSES, not a copy of the loop. Each loss
also hands back what replay and logging need: every sample's priority and the mean value of the actions
taken.

Every loss composes with the rest of the family the same way: Double DQN picks the next action by the
online network's (expected) Q-values; n-step returns arrive folded into the batch's reward and discount;
prioritized replay ranks a transition by its own loss; dueling and noisy layers live in the network.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import tensorflow as tf

from rlkube.rl.hparams.dqn import DQNHParams
from rlkube.rl.networks import CategoricalHead, Params, QHead, QuantileHead, QValueHead, q_head
from rlkube.rl.registry import Registry

# The network's output for some parameters and observations: Q-values [batch, actions], or a distributional
# head's [batch, actions, atoms]. Noisy layers draw fresh noise on every call.
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


def categorical_projection(probs: tf.Tensor, returns: tf.Tensor, support: tf.Tensor) -> tf.Tensor:
    """C51's projection (Bellemare et al. 2017, Algorithm 1): the distribution that puts probs[b, j] on
    returns[b, j], moved onto the fixed `support` [atoms] so that it can be compared with the network's.

    Returns beyond the support count as its ends; each return's mass is then shared between the two
    atoms around it, in proportion to how near it lies to each. The result is [batch, atoms], summing to 1.
    Speed: one segment sum over the 2 x batch x atoms shares, as the paper writes it; the equivalent dense form
    (every atom's share of every return, batch x atoms x atoms) cost 170 µs a call in XLA on one thread, this 40.
    """
    batch, atoms = tf.shape(probs)[0], tf.shape(probs)[1]
    # Where each return lies in atoms from the first. Clipped after dividing: in float32 the last atom can lie a
    # hair past atoms - 1 (50.00005 on Atari's [-10, 10]), and its mass would land in the next row.
    position = tf.clip_by_value((returns - support[0]) / (support[1] - support[0]), 0.0,
                                tf.cast(atoms - 1, tf.float32))
    lower, upper = tf.floor(position), tf.math.ceil(position)
    # A return on an atom (lower == upper) gives it all its mass.
    lower_share = probs * (upper - position + tf.cast(tf.equal(lower, upper), tf.float32))
    upper_share = probs * (position - lower)
    row_start = tf.range(batch)[:, None] * atoms
    destinations = tf.concat([row_start + tf.cast(lower, tf.int32), row_start + tf.cast(upper, tf.int32)], axis=1)
    projected = tf.math.unsorted_segment_sum(tf.concat([lower_share, upper_share], axis=1), destinations,
                                             batch * atoms)
    return tf.reshape(projected, (batch, atoms))


@dataclass(frozen=True)
class CategoricalLoss:
    """C51: the cross-entropy between the projected target distribution and the online one, for the action taken.

    The target is the target network's distribution for the next state's greedy action (by expected return),
    shifted by the reward and shrunk by the discount (gamma^n after n steps), then projected onto the support.
    A transition's priority is its cross-entropy, as in Rainbow (Hessel et al. 2018).
    """

    support: tuple[float, ...]
    double_q: bool

    def __call__(self, apply: NetworkApply, online: Params, target: Params,
                 batch: Transitions) -> LossOutput:
        support = tf.constant(self.support, tf.float32)
        next_probs = tf.nn.softmax(apply(target, batch.next_obs))
        chooser_probs = tf.nn.softmax(apply(online, batch.next_obs)) if self.double_q else next_probs
        next_action = tf.argmax(tf.reduce_sum(chooser_probs * support, axis=2), axis=1)
        next_returns = batch.reward[:, None] + batch.discount[:, None] * support
        target_probs = tf.stop_gradient(categorical_projection(
            tf.gather(next_probs, next_action, batch_dims=1), next_returns, support))
        log_probs = tf.nn.log_softmax(tf.gather(apply(online, batch.obs), batch.action, batch_dims=1))
        cross_entropy = -tf.reduce_sum(target_probs * log_probs, axis=1)
        q_taken = tf.reduce_sum(tf.exp(log_probs) * support, axis=1)
        return LossOutput(tf.reduce_mean(batch.weights * cross_entropy), cross_entropy, tf.reduce_mean(q_taken))


def quantile_huber_loss(quantiles: tf.Tensor, target_samples: tf.Tensor) -> tf.Tensor:
    """QR-DQN's loss per sample (Dabney et al. 2017, kappa 1): quantiles [batch, N], estimated at the fractions
    (2i + 1) / 2N, against samples of the target distribution [batch, M].

    For each pair, u = sample_j - quantile_i weighs its Huber loss by |fraction_i - 1{u < 0}|, so that an
    estimate above its fraction's share of the samples is pushed down and one below is pushed up. Summed over
    i, averaged over j.
    """
    count = quantiles.shape[-1]
    fractions = (tf.range(count, dtype=tf.float32) + 0.5) / count
    errors = target_samples[:, None, :] - quantiles[:, :, None]
    weights = tf.abs(fractions[None, :, None] - tf.cast(errors < 0.0, tf.float32))
    return tf.reduce_sum(tf.reduce_mean(weights * huber(errors), axis=2), axis=1)


@dataclass(frozen=True)
class QuantileLoss:
    """QR-DQN: the quantile Huber loss of the online quantiles of the action taken against the target's.

    The target quantiles are the target network's for the next state's greedy action (by mean quantile),
    shifted by the reward and shrunk by the discount. A transition's priority is its loss.
    """

    double_q: bool

    def __call__(self, apply: NetworkApply, online: Params, target: Params,
                 batch: Transitions) -> LossOutput:
        next_quantiles = apply(target, batch.next_obs)
        chooser = apply(online, batch.next_obs) if self.double_q else next_quantiles
        next_action = tf.argmax(tf.reduce_mean(chooser, axis=2), axis=1)
        target_samples = tf.stop_gradient(
            batch.reward[:, None] + batch.discount[:, None] * tf.gather(next_quantiles, next_action, batch_dims=1))
        quantiles = tf.gather(apply(online, batch.obs), batch.action, batch_dims=1)
        per_sample = quantile_huber_loss(quantiles, target_samples)
        return LossOutput(tf.reduce_mean(batch.weights * per_sample), per_sample, tf.reduce_mean(quantiles))


# Each Q head's loss (rlkube.rl.networks.Q_HEADS), its constants fixed from the head and the hparams; each double
# or not. A plain Q-value head takes the TD loss with hp.loss per sample.
HEAD_LOSSES: dict[type[QHead], Callable[[Any, DQNHParams], DQNLoss]] = {
    QValueHead: lambda _head, hp: TDLoss(loss_registry[hp.loss], hp.double_q),
    CategoricalHead: lambda head, hp: CategoricalLoss(tuple(head.support.tolist()), hp.double_q),
    QuantileHead: lambda _head, hp: QuantileLoss(hp.double_q),
}


def dqn_loss(hp: DQNHParams) -> DQNLoss:
    """The loss of the head that hp.distributional names."""
    head = q_head(hp)
    return HEAD_LOSSES[type(head)](head, hp)
