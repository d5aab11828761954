"""The DDPG family: DDPG (Lillicrap et al. 2016) and TD3 (Fujimoto et al. 2018).

TD3 is DDPG with three switches (rlkube.rl.hparams.continuous.DDPGHParams): twin critics whose
smaller value is the target, actor and target updates every `policy_delay` critic updates, and
clipped noise on the target's action. `_gradient_step` reads like TD3's pseudo-code.
"""

import gymnasium as gym
import tensorflow as tf

from rlkube.rl.agents.base import agent_registry
from rlkube.rl.agents.continuous import ContinuousControlAgent
from rlkube.rl.hparams.continuous import DDPGHParams
from rlkube.rl.networks import Params, map_params
from rlkube.rl.policies.continuous import DeterministicPolicy, GaussianNoise, OrnsteinUhlenbeckNoise


@agent_registry.register("ddpg")
class DDPGAgent(ContinuousControlAgent):
    hp: DDPGHParams
    scalar_names = ("losses/critic_loss", "losses/actor_loss", "losses/q_values")

    def __init__(self, hp: DDPGHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        super().__init__(hp, observation_space, action_space, seed, strategy)
        with self.strategy.scope():
            self.target_actor_vars = map_params(tf.Variable, self.actor_vars)
            self.critic_updates = tf.Variable(0, dtype=tf.int64)
            # Logged on the steps between delayed actor updates too.
            self.last_actor_loss = tf.Variable(0.0)

    @property
    def actor_outputs(self) -> int:
        return self.action_size

    @property
    def num_critics(self) -> int:
        return self.hp.num_critics

    def _make_policy(self, actor_params: Params, seed: int) -> DeterministicPolicy:
        hp = self.hp
        noise = GaussianNoise(hp.action_noise_std) if hp.action_noise == "gaussian" \
            else OrnsteinUhlenbeckNoise(hp.action_noise_std, hp.ou_theta, hp.ou_dt)
        return DeterministicPolicy(self.actor, actor_params, self.scale, hp.learning_starts, seed, noise)

    def _apply_hparams(self) -> None:
        super()._apply_hparams()
        self.policy.noise.std = self.hp.action_noise_std

    def _params(self) -> dict[str, Params]:
        return {**super()._params(), "target_actor": self.target_actor_vars}

    def _learner_counters(self) -> dict[str, tf.Variable]:
        return {"critic_updates": self.critic_updates, "last_actor_loss": self.last_actor_loss}

    def policy_actions(self, params: Params, obs: tf.Tensor) -> tf.Tensor:
        return tf.tanh(self.actor_output(params, obs))

    def target_actions(self, next_obs: tf.Tensor) -> tf.Tensor:
        """The target actor's actions; TD3 smooths them with clipped noise, so the target is an average."""
        hp = self.hp
        next_action = self.policy_actions(self.target_actor_vars, next_obs)
        if hp.target_policy_noise == 0:
            return next_action
        noise = tf.clip_by_value(hp.target_policy_noise * self.generator.normal(tf.shape(next_action)),
                                 -hp.target_noise_clip, hp.target_noise_clip)
        return tf.clip_by_value(next_action + noise, -1.0, 1.0)

    def _gradient_step(self, obs: tf.Tensor, action: tf.Tensor, reward: tf.Tensor, next_obs: tf.Tensor,
                       discount: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        hp = self.hp
        next_value = tf.reduce_min(self.critic_values(self.target_critic_vars, next_obs, self.target_actions(next_obs)),
                                   axis=0)
        target = tf.stop_gradient(reward + discount * next_value)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.critic_vars)
            q = self.critic_values(self.critic_vars, obs, action)
            td_errors = target - q
            # Importance-sampling weights (all 1 without prioritized replay) scale each sample's loss.
            critic_loss = tf.reduce_sum(tf.reduce_mean(weights * td_errors * td_errors, axis=1))
        self._apply(self.critic_optimizer, tape.gradient(critic_loss, self.critic_vars), self.critic_vars)

        self.critic_updates.assign_add(1)
        if hp.policy_delay == 1:
            actor_loss = self._actor_step(obs)
        else:
            actor_loss = tf.cond(self.critic_updates % hp.policy_delay == 0, lambda: self._actor_step(obs),
                                 lambda: tf.identity(self.last_actor_loss))
        scalars = tf.stack([critic_loss, actor_loss, tf.reduce_mean(q[0])])
        # Priorities: the larger of the critics' errors.
        return tf.reduce_max(tf.abs(td_errors), axis=0), scalars

    def _actor_step(self, obs: tf.Tensor) -> tf.Tensor:
        """The deterministic policy gradient through the first critic; then the targets follow."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.actor_vars)
            actor_loss = -tf.reduce_mean(self.critic_values(self.critic_vars, obs,
                                                            self.policy_actions(self.actor_vars, obs), count=1))
        self._apply(self.actor_optimizer, tape.gradient(actor_loss, self.actor_vars), self.actor_vars)
        self._polyak(self.target_actor_vars, self.actor_vars)
        self._polyak(self.target_critic_vars, self.critic_vars)
        self.last_actor_loss.assign(actor_loss)
        return actor_loss
