"""Soft Actor-Critic (Haarnoja et al. 2018): twin critics, a tanh-squashed Gaussian actor, a learned alpha.

`_gradient_step` follows Stable-Baselines3's order: the entropy coefficient's step (alpha read
before it), then the critics' towards the soft target, then the actor's through the updated critics,
then the critics' targets.
"""

import math

import gymnasium as gym
import tensorflow as tf

from rlkube.rl.agents.base import agent_registry
from rlkube.rl.agents.continuous import ContinuousControlAgent
from rlkube.rl.agents.fused import Adam
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import SquashedGaussian
from rlkube.rl.hparams.continuous import SACHParams
from rlkube.rl.networks import Params
from rlkube.rl.policies.continuous import SquashedGaussianPolicy


@agent_registry.register("sac")
class SACAgent(ContinuousControlAgent):
    hp: SACHParams
    scalar_names = ("losses/critic_loss", "losses/actor_loss", "losses/q_values", "losses/alpha",
                    "losses/alpha_loss")

    def __init__(self, hp: SACHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        super().__init__(hp, observation_space, action_space, seed, strategy)
        self.distribution = SquashedGaussian(self.action_size)
        with self.strategy.scope():
            self.log_alpha = tf.Variable(math.log(hp.init_ent_coef))
            self.alpha_optimizer = Adam([self.log_alpha], self.learning_rate)
            # A variable rather than a constant of the compiled step, as the learning rate is.
            self.target_entropy = tf.Variable(0.0)
        self._apply_hparams()

    def _apply_hparams(self) -> None:
        super()._apply_hparams()
        hp = self.hp
        self.target_entropy.assign(-float(self.action_size) if hp.target_entropy is None else hp.target_entropy)
        if not hp.auto_entropy:
            self.log_alpha.assign(math.log(hp.init_ent_coef))  # alpha is a constant that only this sets

    @property
    def actor_outputs(self) -> int:
        return 2 * self.action_size  # the Gaussian's mean and log-std

    @property
    def num_critics(self) -> int:
        return 2

    def _make_policy(self, actor_params: Params, seed: int) -> SquashedGaussianPolicy:
        return SquashedGaussianPolicy(self.actor, actor_params, self.scale, self.hp.learning_starts, seed)

    def _variables(self) -> dict[str, list[tf.Variable]]:
        return {**super()._variables(), "log_alpha": [self.log_alpha],
                "alpha_optimizer": self.alpha_optimizer.variables}

    def sample_actions(self, obs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Reparameterised actions from the current actor and their log-probabilities."""
        params = self.distribution.params(self.actor_output(self.actor_vars, obs), TFOps)
        noise = self.generator.normal(tf.shape(params[0]))
        actions, pre_tanh = self.distribution.sample(params, noise, TFOps)
        return actions, self.distribution.log_prob(noise, params[1], pre_tanh, TFOps)

    def _gradient_step(self, obs: tf.Tensor, action: tf.Tensor, reward: tf.Tensor, next_obs: tf.Tensor,
                       discount: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape(watch_accessed_variables=False) as actor_tape:
            actor_tape.watch(self.actor_vars)
            policy_action, log_prob = self.sample_actions(obs)
            with actor_tape.stop_recording():
                alpha = tf.exp(self.log_alpha)
                # -mean(log_alpha * (log_prob + target_entropy)), differentiated by hand.
                entropy_gap = tf.stop_gradient(log_prob) + self.target_entropy
                alpha_loss = -self.log_alpha * tf.reduce_mean(entropy_gap)
                if self.hp.auto_entropy:
                    self.alpha_optimizer.apply([-tf.reduce_mean(entropy_gap)], [self.log_alpha])

                next_action, next_log_prob = self.sample_actions(next_obs)
                next_value = tf.reduce_min(self.critic_values(self.target_critic_vars, next_obs, next_action), axis=0)
                target = reward + discount * (next_value - alpha * next_log_prob)
                with tf.GradientTape(watch_accessed_variables=False) as critic_tape:
                    critic_tape.watch(self.critic_vars)
                    q = self.critic_values(self.critic_vars, obs, action)
                    td_errors = target - q
                    # Importance-sampling weights (all 1 without prioritized replay) scale each sample's loss.
                    critic_loss = 0.5 * tf.reduce_sum(tf.reduce_mean(weights * td_errors * td_errors, axis=1))
                self._apply(self.critic_optimizer, critic_tape.gradient(critic_loss, self.critic_vars),
                            self.critic_vars)
            policy_value = tf.reduce_min(self.critic_values(self.critic_vars, obs, policy_action), axis=0)
            actor_loss = tf.reduce_mean(alpha * log_prob - policy_value)
        self._apply(self.actor_optimizer, actor_tape.gradient(actor_loss, self.actor_vars), self.actor_vars)
        self._polyak(self.target_critic_vars, self.critic_vars)
        scalars = tf.stack([critic_loss, actor_loss, tf.reduce_mean(q[0]), alpha, alpha_loss])
        # Priorities: the larger of the critics' errors.
        return tf.reduce_max(tf.abs(td_errors), axis=0), scalars
