"""Vanilla policy gradient: REINFORCE with a learned value baseline (Williams 1992; Sutton et al. 2000).

The policy climbs E[log pi(a|s) (G - V(s))], where G is the discounted return (GAE with lambda 1:
Monte Carlo, bootstrapped where a rollout or a time limit cuts an episode) and V is fitted to G by
regression. The loop around the loss is rlkube.rl.agents.on_policy's; one epoch on one batch
of the whole rollout is the textbook algorithm.
"""

import tensorflow as tf

from rlkube.rl.agents.base import agent_registry
from rlkube.rl.agents.on_policy import OnPolicyAgent


@agent_registry.register("vpg")
class VPGAgent(OnPolicyAgent):
    metric_names = ("policy_loss", "value_loss", "entropy")

    def _loss(self, log_prob: tf.Tensor, entropy: tf.Tensor, values: tf.Tensor, minibatch: dict[str, tf.Tensor],
              coefficients: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        policy_loss = -tf.reduce_mean(log_prob * minibatch["advantage"])
        value_loss = tf.reduce_mean(tf.square(minibatch["return"] - values))
        loss = policy_loss - coefficients["ent_coef"] * entropy + coefficients["vf_coef"] * value_loss
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}
