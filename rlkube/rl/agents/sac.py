"""Soft Actor-Critic (Haarnoja et al. 2018): twin critics, a tanh-squashed Gaussian actor, a learned alpha.

With use_sde the actor explores by gSDE (rlkube.rl.distributions.SquashedStateDependentNoise): its head is the
mean alone, and a learned log-std matrix [last hidden width, action size] sits beside the network's layers in
the actor's parameters.

`_gradient_step` follows Stable-Baselines3's order: the entropy coefficient's step (alpha read
before it), then the critics' towards the soft target, then the actor's through the updated critics,
then the critics' targets.
"""

import math

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.rl.agents.base import agent_registry
from rlkube.rl.agents.continuous import ContinuousControlAgent
from rlkube.rl.agents.fused import Adam
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import SquashedGaussian, SquashedStateDependentNoise
from rlkube.rl.hparams.continuous import SACHParams
from rlkube.rl.networks import Params
from rlkube.rl.policies.continuous import ContinuousPolicy, SquashedGaussianPolicy, StateDependentSquashedPolicy


@agent_registry.register("sac")
class SACAgent(ContinuousControlAgent):
    hp: SACHParams
    scalar_names = ("losses/critic_loss", "losses/actor_loss", "losses/q_values", "losses/alpha",
                    "losses/alpha_loss")

    def __init__(self, hp: SACHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        super().__init__(hp, observation_space, action_space, seed, strategy)
        self.distribution = SquashedGaussian(self.action_size)
        self.sde = SquashedStateDependentNoise(self.action_size) if hp.use_sde else None
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
        return self.action_size if self.hp.use_sde else 2 * self.action_size  # the mean (and the log-std)

    @property
    def num_critics(self) -> int:
        return 2

    def _make_policy(self, actor_params: Params, seed: int) -> ContinuousPolicy:
        hp = self.hp
        if hp.use_sde:
            sample_every = hp.sde_sample_freq if hp.sde_sample_freq > 0 else hp.train_freq
            return StateDependentSquashedPolicy(self.actor, actor_params, self.scale, hp.learning_starts, seed,
                                                sample_every)
        return SquashedGaussianPolicy(self.actor, actor_params, self.scale, hp.learning_starts, seed)

    def _initial_actor_params(self, rng: np.random.Generator) -> Params:
        params = super()._initial_actor_params(rng)
        if self.hp.use_sde:
            latent_size = self.hp.hidden_sizes[-1]
            params["log_std"] = np.full((latent_size, self.action_size), self.hp.log_std_init, np.float32)
        return params

    def _params(self) -> dict[str, Params]:
        return {**super()._params(), "log_alpha": {"log_alpha": self.log_alpha}}

    def _optimizers(self) -> dict[str, Adam]:
        return {**super()._optimizers(), "log_alpha": self.alpha_optimizer}

    def sample_actions(self, obs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Reparameterised actions from the current actor and their log-probabilities."""
        if self.sde is not None:
            outputs, latent = self.actor.forward_with_features(self.actor_vars, obs, TFOps,
                                                               hidden_dtype=self.hidden_dtype)
            mean, latent, log_std = self.sde.mean(outputs, TFOps), tf.stop_gradient(latent), self.actor_vars["log_std"]
            actions, pre_tanh = self.sde.sample(mean, latent, log_std, self.generator.normal(tf.shape(log_std)), TFOps)
            return actions, self.sde.log_prob(pre_tanh, mean, latent, log_std, TFOps)
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
