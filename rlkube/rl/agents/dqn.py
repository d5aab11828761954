"""The DQN family: DQN, Double DQN, dueling heads, noisy nets, n-step returns, prioritized replay, and the
distributional heads of C51 and QR-DQN (all of them together: Rainbow).

Acting runs in numpy on a copy of the weights (rlkube.rl.policies.QPolicy); learning runs many
gradient steps inside one XLA-compiled graph call. `_learn` is the loop around the loss; the loss
itself (rlkube.rl.losses, chosen by the hparams) says what the Q-values should have been.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.rl.agents.base import AgentState, agent_registry, assign_params, numpy_params
from rlkube.rl.agents.compiled import compile_learner, xla_suits
from rlkube.rl.agents.fused import Adam
from rlkube.rl.agents.off_policy import OffPolicyAgent
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.hparams.dqn import DQNHParams
from rlkube.rl.losses import Transitions, dqn_loss
from rlkube.rl.networks import Params, QNetwork, map_params, named_like, param_leaves, q_head
from rlkube.rl.policies import Extras, QPolicy
from rlkube.rl.replay import NStepBuilder
from rlkube.rl.schedules import ExponentialSchedule, LinearSchedule


@agent_registry.register("dqn")
class DQNAgent(OffPolicyAgent):
    action_spaces = DQNHParams.action_spaces

    def __init__(self, hp: DQNHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        self.hp = hp
        self.strategy = strategy or tf.distribute.get_strategy()
        self.num_actions = int(action_space.n)
        self.network = QNetwork(
            hp.model, observation_space.shape, self.num_actions, hp.hidden_sizes, dueling=hp.dueling,
            noisy=hp.noisy, sigma0=hp.noisy_sigma0, head=q_head(hp))
        initial = self.network.initial_params(seed)
        with self.strategy.scope():  # the learner's state lives on the --device
            self.online = map_params(tf.Variable, initial)
            self.target = map_params(tf.Variable, initial)
            self.learning_rate = tf.Variable(hp.lr)  # a variable: set_hparams changes it without a retrace
            self.optimizer = Adam(param_leaves(self.online), self.learning_rate, epsilon=hp.adam_epsilon)
            self.noise_generator = tf.random.Generator.from_seed(seed)
        self._make_memory(observation_space, (), np.int64, seed + 1)
        # One n-step builder per environment stream (an actor's envs have their own indices).
        self.n_step: dict[int, NStepBuilder] = {}
        self.loss = dqn_loss(hp)
        self.last_learn_step = 0
        self.policy = QPolicy(self.network, map_params(lambda v: v.numpy(), self.online), self.num_actions,
                              epsilon_schedule(hp), hp.learning_starts, seed)
        obs_spec = tf.TensorSpec([None, hp.batch_size, *observation_space.shape], observation_space.dtype)
        batch_spec = tf.TensorSpec([None, hp.batch_size], tf.float32)
        self._learn_compiled = compile_learner(
            self.strategy, self._learn,
            [obs_spec, tf.TensorSpec([None, hp.batch_size], tf.int64), batch_spec, obs_spec, batch_spec, batch_spec],
            jit_compile=xla_suits(hp.model, self.strategy))

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, extras: Extras) -> None:
        self.steps += len(obs)
        streams = extras.get("env_index", range(len(obs)))
        for row, stream in enumerate(streams):
            builder = self.n_step.setdefault(int(stream), NStepBuilder(self.hp.n_step, self.hp.gamma))
            for transition in builder.push(obs[row], actions[row], float(rewards[row]), next_obs[row],
                                           bool(terminated[row]), bool(truncated[row])):
                self.memory.add(*transition, stream=int(stream))

    # -- learning -------------------------------------------------------------------------------

    def update(self) -> dict[str, float]:
        gradient_steps = self._gradient_steps_due()
        if gradient_steps == 0:
            return {}
        self._sync_target()
        scalars = self._replay(gradient_steps, self._learn_on)
        self.policy.params = map_params(lambda v: v.numpy(), self.online)
        self.last_learn_step = self.steps
        return scalars

    def _learn_on(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        losses, priorities, q_means = self._learn_compiled(batch["obs"], batch["action"], batch["reward"],
                                                           batch["next_obs"], batch["discount"], batch["weights"])
        return priorities, {"losses/td_loss": losses, "losses/q_values": q_means}

    def _sync_target(self) -> None:
        """Apply the target updates due at every multiple of target_update_period since the last learn.

        The online weights did not change in between, so k Polyak steps collapse into one.
        """
        period = self.hp.target_update_period
        due = self.steps // period - self.last_learn_step // period
        if due <= 0:
            return
        keep = (1.0 - self.hp.target_update_tau) ** due
        for target, online in zip(param_leaves(self.target), param_leaves(self.online), strict=True):
            target.assign(keep * target + (1.0 - keep) * online)

    def _learn(self, obs: tf.Tensor, action: tf.Tensor, reward: tf.Tensor, next_obs: tf.Tensor,
               discount: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """len(obs) gradient steps, one per batch, inside one compiled call: the losses, priorities and mean Qs."""
        steps = tf.shape(obs)[0]
        losses = tf.TensorArray(tf.float32, size=steps)
        priorities = tf.TensorArray(tf.float32, size=steps)
        q_means = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            batch = Transitions(obs[i], action[i], reward[i], next_obs[i], discount[i], weights[i])
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(self.online)
                output = self.loss(self._apply_network, self.online, self.target, batch)
            gradients = tape.gradient(output.loss, param_leaves(self.online))
            if self.hp.max_grad_norm > 0:
                gradients, _ = tf.clip_by_global_norm(gradients, self.hp.max_grad_norm)
            self.optimizer.apply(gradients, param_leaves(self.online))
            losses = losses.write(i, output.loss)
            priorities = priorities.write(i, output.priorities)
            q_means = q_means.write(i, output.q_values)
        return losses.stack(), priorities.stack(), q_means.stack()

    def _apply_network(self, params: Params, obs: tf.Tensor) -> tf.Tensor:
        """The network's output (Q-values, or a distributional head's), with fresh noise for noisy layers: what
        a loss calls the network by."""
        return self.network.forward(params, obs, TFOps, noise=self.network.noise_tf(self.noise_generator))

    def _apply_hparams(self) -> None:
        self.learning_rate.assign(self.hp.lr)
        self.policy.epsilon = epsilon_schedule(self.hp)

    # -- logging and checkpoints ----------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        return {"charts/epsilon": self.policy.epsilon(self.steps), "charts/learning_rate": self.hp.lr}

    def _random_streams(self) -> tuple[list[np.random.Generator], list[Any]]:
        numpy_streams, tf_streams = super()._random_streams()
        return numpy_streams, [*tf_streams, self.noise_generator]

    def state_dict(self) -> AgentState:
        return {
            "params": {"online": numpy_params(self.online), "target": numpy_params(self.target)},
            "optimizers": {"online": self.optimizer.state_dict(self.online)},
            "rng": {"noisy_nets": self.noise_generator.state.numpy()},
            "counters": {**self._replay_counters(), "last_learn_step": self.last_learn_step},
            "memory": {"replay": self.memory.state_dict(),
                       "n_step": {stream: builder.state_dict() for stream, builder in self.n_step.items()}},
            "policy": self.policy.state_dict(),
        }

    def load_state_dict(self, state: AgentState) -> None:
        assign_params(self.online, state["params"]["online"])
        assign_params(self.target, state["params"]["target"])
        self.optimizer.load_state_dict(state["optimizers"]["online"])
        self.noise_generator.state.assign(state["rng"]["noisy_nets"])
        self.policy.load_state_dict(state["policy"])
        self._load_replay_state(state)
        self.last_learn_step = state["counters"]["last_learn_step"]
        self.n_step = {}
        for stream, builder_state in state["memory"]["n_step"].items():
            self.n_step[stream] = NStepBuilder(self.hp.n_step, self.hp.gamma)
            self.n_step[stream].load_state_dict(builder_state)
        self.policy.params = map_params(lambda v: v.numpy(), self.online)

    def upgrade_state(self, unnamed: dict[str, Any]) -> AgentState:
        return {
            "params": {"online": named_like(self.online, unnamed["online"]),
                       "target": named_like(self.target, unnamed["target"])},
            "optimizers": {"online": Adam.named_state(self.online, unnamed["optimizer"])},
            "rng": {"noisy_nets": unnamed["noise_generator"]},
            "counters": {name: unnamed[name] for name in ("steps", "previous_steps", "last_learn_step")},
            "memory": {"replay": unnamed["memory"], "n_step": unnamed["n_step"]},
            "policy": unnamed["policy"],
        }

def epsilon_schedule(hp: DQNHParams) -> LinearSchedule | ExponentialSchedule:
    """Epsilon-greedy's epsilon by step: linear over exploration_fraction of the budget, or exponential."""
    if hp.epsilon_schedule == "linear":
        return LinearSchedule(hp.epsilon_start, hp.epsilon_end, int(hp.exploration_fraction * hp.train_steps))
    return ExponentialSchedule(hp.epsilon_start, hp.epsilon_end, hp.epsilon_decay)
