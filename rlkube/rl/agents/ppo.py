"""Proximal Policy Optimization (Schulman et al. 2017), the clipped-surrogate variant, as in Stable-Baselines3.

The loop around the loss (rollouts, advantage estimation, minibatch epochs in one compiled call) is
rlkube.rl.agents.on_policy's; the loss below is the whole algorithm.
"""

import tensorflow as tf

from rlkube.rl.agents.base import agent_registry
from rlkube.rl.agents.on_policy import OnPolicyAgent, annealed
from rlkube.rl.hparams.policy_gradient import PPOHParams


def clipped_surrogate_loss(log_prob: tf.Tensor, old_log_prob: tf.Tensor, advantage: tf.Tensor,
                           clip_range: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """PPO's policy loss, -E[min(r A, clip(r, 1 - eps, 1 + eps) A)] with r the probability ratio; and r."""
    ratio = tf.exp(log_prob - old_log_prob)
    clipped_ratio = tf.clip_by_value(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return -tf.reduce_mean(tf.minimum(ratio * advantage, clipped_ratio * advantage)), ratio


@agent_registry.register("ppo")
class PPOAgent(OnPolicyAgent):
    hp: PPOHParams
    metric_names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")

    def coefficients(self) -> dict[str, float]:
        return {**super().coefficients(), "clip_range": self.clip_range(self.steps)}

    def _apply_hparams(self) -> None:
        super()._apply_hparams()
        self.clip_range = annealed(self.hp.clip_range, self.hp.clip_range_schedule, self.hp.train_steps)

    def _loss(self, log_prob: tf.Tensor, entropy: tf.Tensor, values: tf.Tensor, minibatch: dict[str, tf.Tensor],
              coefficients: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        hp, clip_range = self.hp, coefficients["clip_range"]
        policy_loss, ratio = clipped_surrogate_loss(log_prob, minibatch["log_prob"], minibatch["advantage"],
                                                    clip_range)
        if hp.clip_range_vf is not None:
            # The value may move at most clip_range_vf from what acting estimated.
            old = minibatch["value"]
            values = old + tf.clip_by_value(values - old, -hp.clip_range_vf, hp.clip_range_vf)
        value_loss = tf.reduce_mean(tf.square(minibatch["return"] - values))
        loss = policy_loss - coefficients["ent_coef"] * entropy + coefficients["vf_coef"] * value_loss
        log_ratio = log_prob - minibatch["log_prob"]
        return loss, {
            "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
            # An unbiased, low-variance estimate of KL(old || new) (Schulman's k3), as SB3 and CleanRL log it.
            "approx_kl": tf.reduce_mean(tf.exp(log_ratio) - 1.0 - log_ratio),
            "clip_fraction": tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip_range, tf.float32)),
        }
