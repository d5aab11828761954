"""IMPALA (Espeholt et al. 2018): an actor-critic whose actors never wait for the learner, corrected by V-trace.

Actors act with whatever weights they last copied (ActorPacing.NEVER_WAIT) and record each action's
log-probability under that behaviour policy. The learner takes each rollout as it comes, time-major
[n_steps, num_envs], and in one compiled call computes its current policy's log-probabilities and values,
the V-trace targets and advantages (rlkube.rl.agents.vtrace), and one gradient step on

    -mean(A_s log pi(a_s|x_s)) + vf_coef mean((v_s - V(x_s))^2) - ent_coef entropy.

Acting, rollouts, the network and its Adam are what every actor-critic agent shares (rlkube.rl.agents.on_policy).
"""

from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.rl.agents.base import AgentState, agent_registry
from rlkube.rl.agents.compiled import compile_learner, xla_suits
from rlkube.rl.agents.on_policy import ActorCriticAgent
from rlkube.rl.agents.vtrace import vtrace
from rlkube.rl.hparams.policy_gradient import IMPALAHParams
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.policies import Extras

# What a rollout hands the compiled learner, each [n_steps, num_envs, ...].
ROLLOUT_FIELDS = ("obs", "action", "log_prob", "reward", "terminated", "truncated", "bootstrap_value")


@agent_registry.register("impala")
class IMPALAAgent(ActorCriticAgent):
    hp: IMPALAHParams
    pacing = ActorPacing.NEVER_WAIT  # V-trace corrects for the policy lag
    # importance_ratio: the mean of pi/mu before clipping, 1 where the rollout is on-policy.
    metric_names = ("policy_loss", "value_loss", "entropy", "importance_ratio")

    def __init__(self, hp: IMPALAHParams, observation_space: gym.Space, action_space: gym.Space, seed: int,
                 strategy: tf.distribute.Strategy | None = None) -> None:
        super().__init__(hp, observation_space, action_space, seed, strategy)
        self.policy_lag = 0  # learner updates between the weights that acted and the learner's, for the last rollout

        def time_major(spec: tf.TensorSpec) -> tf.TensorSpec:
            return tf.TensorSpec([None, *spec.shape], spec.dtype)

        matrix, flags = tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.bool)
        rollout_spec = {"obs": time_major(self.observation_spec), "action": time_major(self.action_spec),
                        "log_prob": matrix, "reward": matrix, "terminated": flags, "truncated": flags,
                        "bootstrap_value": matrix}
        coefficient_spec = {name: tf.TensorSpec([], tf.float32) for name in self._graph_coefficients()}
        # Without autograph, as the on-policy learner: V-trace's backward pass is a tf.scan, not Python control flow.
        self._learn_compiled = compile_learner(self.strategy, self._learn, [rollout_spec, coefficient_spec],
                                               autograph=False, jit_compile=xla_suits(hp.model, self.strategy))

    def _graph_coefficients(self) -> dict[str, float]:
        hp = self.hp
        return {**super()._graph_coefficients(), "gamma": hp.gamma, "rho_bar": hp.rho_bar, "c_bar": hp.c_bar}

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, extras: Extras) -> None:
        super().observe(obs, actions, rewards, next_obs, terminated, truncated, extras)
        # Actor processes tag each step with their rollout's lag (rlkube.run.workers); in this process the
        # policy that acts is the learner's own.
        self.policy_lag = int(extras["policy_lag"][0]) if "policy_lag" in extras else 0

    def update(self) -> dict[str, float]:
        if not self.buffer.full:
            return {}
        metrics = self._learn_compiled({name: self.buffer.arrays[name] for name in ROLLOUT_FIELDS},
                                       self._graph_coefficients())
        self._publish_params()
        self.buffer.clear()
        return {**{f"losses/{name}": float(value) for name, value in metrics.items()},
                "charts/policy_lag": float(self.policy_lag)}

    def _learn(self, rollout: dict[str, tf.Tensor], coefficients: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """V-trace and one gradient step on a whole rollout, inside one compiled call."""
        self.optimizer.learning_rate.assign(coefficients["learning_rate"])
        shape = tf.shape(rollout["reward"])  # [n_steps, num_envs]

        def rows(x: tf.Tensor) -> tf.Tensor:
            return tf.reshape(x, tf.concat([[shape[0] * shape[1]], tf.shape(x)[2:]], axis=0))

        def loss(log_prob: tf.Tensor, entropy: tf.Tensor, values: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            log_prob, values = tf.reshape(log_prob, shape), tf.reshape(values, shape)
            bootstrap = rollout["bootstrap_value"]
            # V of what each step led to: the next row's value, or, after a time limit and past the rollout's
            # last step, V(final observation), which acting recorded with the learner's weights.
            next_values = tf.where(rollout["truncated"], bootstrap, tf.concat([values[1:], bootstrap[-1:]], axis=0))
            log_rhos = log_prob - rollout["log_prob"]
            targets = vtrace(log_rhos, rollout["reward"], values, next_values, rollout["terminated"],
                             rollout["truncated"], coefficients["gamma"], coefficients["rho_bar"],
                             coefficients["c_bar"])
            policy_loss = -tf.reduce_mean(log_prob * targets.advantages)
            value_loss = tf.reduce_mean(tf.square(targets.values - values))
            total = policy_loss - coefficients["ent_coef"] * entropy + coefficients["vf_coef"] * value_loss
            return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                           "importance_ratio": tf.reduce_mean(tf.exp(log_rhos))}

        return self._network_step({"obs": rows(rollout["obs"]), "action": rows(rollout["action"])}, loss)

    def upgrade_state(self, unnamed: dict[str, Any]) -> AgentState:
        del unnamed
        raise ValueError("checkpoint format 1 predates the impala agent: no impala run can have written one")
