"""V-trace (Espeholt et al. 2018, section 4.1): value targets and policy-gradient advantages for a learner whose
data came from an older policy, in TensorFlow ops, so that it runs inside the compiled learner.

With rho_s = pi(a_s|x_s) / mu(a_s|x_s) the importance weight of the learner's policy pi against the behaviour policy
mu that acted, its clipped forms rho-bar-clipped and c-bar-clipped,

    delta_s = min(rho_bar, rho_s) (r_s + gamma V(x_{s+1}) - V(x_s))
    v_s     = V(x_s) + delta_s + gamma min(c_bar, rho_s) (v_{s+1} - V(x_{s+1}))      (the n-step target, backwards)
    A_s     = min(rho_bar, rho_s) (r_s + gamma v_{s+1} - V(x_s))                     (the policy gradient's advantage)

and v = V past the rollout's end. rho_bar picks the fixed point (the value of a policy between mu and pi; pi's for
rho_bar = infinity); c_bar only how fast the targets get there. Where pi = mu and rho_bar = c_bar >= 1, v_s is the
n-step bootstrapped return to the rollout's end.

Episodes end inside rollouts. A terminated step's future is worth nothing; a truncated one (a time limit) bootstraps
from V of the episode's final observation; and neither lets the trace reach into the next episode.
"""

from typing import NamedTuple

import tensorflow as tf


class VTrace(NamedTuple):
    values: tf.Tensor  # v_s, the value targets: [T, B]
    advantages: tf.Tensor  # A_s, what log pi(a_s|x_s) is weighted by: [T, B]


def vtrace(log_rhos: tf.Tensor, rewards: tf.Tensor, values: tf.Tensor, next_values: tf.Tensor,
           terminated: tf.Tensor, truncated: tf.Tensor, gamma: tf.Tensor | float, rho_bar: tf.Tensor | float,
           c_bar: tf.Tensor | float) -> VTrace:
    """V-trace targets and advantages for time-major [T, B] float32 rollouts, with no gradient through them.

    `log_rhos` is log pi(a_s|x_s) - log mu(a_s|x_s); `values` is V(x_s); `next_values` is V of what step s led to,
    in the same episode: V(x_{s+1}), or V(final observation) where s was truncated and at the rollout's last step
    (where s terminated it is not read). `terminated` and `truncated` are bools.
    """
    log_rhos, rewards, values, next_values = (tf.stop_gradient(x) for x in (log_rhos, rewards, values, next_values))
    rhos = tf.exp(log_rhos)
    clipped_rhos = tf.minimum(tf.cast(rho_bar, tf.float32), rhos)
    traces = tf.minimum(tf.cast(c_bar, tf.float32), rhos)
    gamma = tf.cast(gamma, tf.float32)
    bootstrap_discounts = gamma * (1.0 - tf.cast(terminated, tf.float32))
    # The trace goes on only within an episode: a truncated step's successor is the next episode's first.
    episode_goes_on = 1.0 - tf.cast(terminated | truncated, tf.float32)
    deltas = clipped_rhos * (rewards + bootstrap_discounts * next_values - values)

    def backwards(later: tf.Tensor, step: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        delta, goes_on, trace = step
        return delta + gamma * goes_on * trace * later

    # corrections[s] = v_s - V(x_s), with v - V = 0 past the rollout's end.
    corrections = tf.scan(backwards, (deltas, episode_goes_on, traces), initializer=tf.zeros_like(values[0]),
                          reverse=True)
    later_corrections = tf.concat([corrections[1:], tf.zeros_like(corrections[:1])], axis=0)
    next_targets = next_values + episode_goes_on * later_corrections  # v_{s+1}, or V(final observation)
    advantages = clipped_rhos * (rewards + bootstrap_discounts * next_targets - values)
    return VTrace(tf.stop_gradient(values + corrections), tf.stop_gradient(advantages))
