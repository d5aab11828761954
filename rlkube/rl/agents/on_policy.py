"""What the actor-critic agents share (ActorCriticAgent: VPG, PPO, IMPALA), and VPG's and PPO's update loop.

Acting runs in numpy (rlkube.rl.policies.StochasticPolicy) and returns each action's log-probability
and the state's value as extras; the agent records rollouts of `n_steps` steps from every environment,
and learns with one flat variable under Adam. What it learns from a full rollout is the subclass's:

- OnPolicyAgent (VPG, PPO): the agent's advantage estimator (GAE(lambda), rlkube.rl.rollout) turns the
  rollout into advantages and returns in numpy, then every epoch's every minibatch runs on them inside one
  XLA-compiled graph call. A subclass supplies only its loss.
- IMPALA (rlkube.rl.agents.impala): V-trace and one gradient step, inside one compiled call.
"""

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl.agents.base import Agent, AgentState
from rlkube.rl.agents.compiled import compile_learner, convolution_dtype, xla_suits
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import Categorical, DiagonalGaussian, StateDependentGaussian
from rlkube.rl.hparams.policy_gradient import ActorCriticHParams, PolicyGradientHParams
from rlkube.rl.networks import ActorCriticNetwork, NumpyOps, ParamLayout
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.policies import Extras, StochasticPolicy
from rlkube.rl.rollout import GAE, AdvantageEstimator, RolloutBuffer
from rlkube.rl.schedules import LinearSchedule

# Stable-Baselines3's Adam epsilon for its actor-critic policies (PyTorch's default is 1e-8).
ADAM_EPSILON = 1e-5


class ActorCriticAgent(Agent):
    """Acting with log-probabilities and values, rollouts, the flat variable and its Adam, checkpoints."""

    action_spaces = ActorCriticHParams.action_spaces
    # The loss's diagnostics, averaged over an update's gradient steps and logged as losses/<name>.
    metric_names: ClassVar[tuple[str, ...]]

    def __init__(self, hp: ActorCriticHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        self.hp = hp
        self.strategy = strategy or tf.distribute.get_strategy()
        continuous = isinstance(action_space, gym.spaces.Box)
        if hp.use_sde and not continuous:
            raise UserError(f"use_sde explores continuous actions; env '{hp.env}' has {action_space}: drop use_sde")
        gaussian = StateDependentGaussian if hp.use_sde else DiagonalGaussian
        distribution = gaussian(int(np.prod(action_space.shape))) if continuous \
            else Categorical(int(action_space.n))
        self.network = ActorCriticNetwork(hp.model, observation_space.shape, distribution, hp.hidden_sizes,
                                          hp.shared_torso, hp.activation, hp.log_std_init if continuous else None)
        initial = self.network.initial_params(seed)
        self.layout = ParamLayout(initial)
        self.hidden_dtype = convolution_dtype(hp, self.strategy)
        with self.strategy.scope():  # the learner's state lives on the --device
            # One flat variable: Adam then compiles to a handful of ops instead of a handful per layer,
            # which halves XLA's compile time; Adam is elementwise, so the updates are the same.
            self.params = tf.Variable(self.layout.flatten(initial))
            self.optimizer = tf.keras.optimizers.Adam(hp.lr, epsilon=ADAM_EPSILON)
            self.optimizer.build([self.params])
        bounds = (action_space.low, action_space.high) if continuous else None
        sde_sample_every = (hp.sde_sample_freq if hp.sde_sample_freq > 0 else hp.n_steps) if hp.use_sde else 0
        self.policy = StochasticPolicy(self.network, initial, seed, bounds, sde_sample_every)
        self.buffer = RolloutBuffer(hp.n_steps)
        self._apply_hparams()  # the schedules
        self.steps = 0
        # A batch of observations and of the actions taken there, for the compiled learner's signature.
        self.observation_spec = tf.TensorSpec([None, *observation_space.shape], observation_space.dtype)
        self.action_spec = tf.TensorSpec([None, *action_space.shape], tf.float32) if continuous \
            else tf.TensorSpec([None], tf.int64)

    @property
    def rollout_steps(self) -> int:
        return self.hp.n_steps

    def coefficients(self) -> dict[str, float]:
        """Scheduled values for the next update, as of the current step; logged as charts/<name>."""
        return {"learning_rate": self.lr(self.steps)}

    def _graph_coefficients(self) -> dict[str, float]:
        """The update's scalar inputs: the schedules' values and the loss's weights.

        Inputs rather than constants of the compiled update, so set_hparams changes them without a retrace.
        """
        return {**self.coefficients(), "ent_coef": self.hp.ent_coef, "vf_coef": self.hp.vf_coef}

    def _apply_hparams(self) -> None:
        hp = self.hp
        self.lr = annealed(hp.lr, hp.lr_schedule, hp.train_steps)

    # -- acting's results -----------------------------------------------------------------------

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, extras: Extras) -> None:
        self.steps += len(obs)
        # V(next obs) is needed where the rollout cannot take it from its next step: after a time limit
        # (next_obs holds the episode's final observation) and at the rollout's last step.
        bootstrap_values = np.zeros(len(obs), np.float32)
        if self.buffer.size == self.hp.n_steps - 1:
            bootstrap_values = self.policy.value(next_obs)
        elif truncated.any():
            bootstrap_values[truncated] = self.policy.value(next_obs[truncated])
        self.buffer.add(obs=obs, action=extras.get("unclipped_action", actions), reward=rewards.astype(np.float32),
                        terminated=terminated, truncated=truncated, log_prob=extras["log_prob"],
                        value=extras["value"], bootstrap_value=bootstrap_values)

    def _network_step(self, data: dict[str, tf.Tensor],
                      loss_fn: Callable[..., tuple[tf.Tensor, dict[str, tf.Tensor]]]) -> dict[str, tf.Tensor]:
        """One gradient step of the network on `data`'s observations and actions, inside the compiled learner.

        `loss_fn(log_prob, entropy, values)` gets the current network's log-probabilities of the actions, its mean
        entropy and its values there, and returns the loss and its diagnostics by `metric_names`.
        """
        distribution = self.network.distribution
        with tf.GradientTape() as tape:
            network_params = self.layout.unflatten(self.params, TFOps)  # the flat variable, by name
            params, values = self.network.forward(network_params, data["obs"], TFOps, self.hidden_dtype)
            log_prob = distribution.log_prob(params, data["action"], TFOps)
            entropy = tf.reduce_mean(distribution.entropy(params, TFOps))
            loss, metrics = loss_fn(log_prob, entropy, values)
        gradient = tape.gradient(loss, self.params)
        if self.hp.max_grad_norm > 0:
            gradient = tf.clip_by_norm(gradient, self.hp.max_grad_norm)  # the global norm: one flat vector
        self.optimizer.apply_gradients([(gradient, self.params)])
        return metrics

    def _publish_params(self) -> None:
        """Hand the learner's newest weights to the acting policy."""
        self.policy.params = self.layout.unflatten(self.params.numpy(), NumpyOps)

    # -- logging and checkpoints ----------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        return {f"charts/{name}": value for name, value in self.coefficients().items()}

    def state_dict(self) -> AgentState:
        return {
            "params": {"network": self.layout.unflatten(self.params.numpy(), NumpyOps)},
            "optimizers": {"network": self._optimizer_state([v.numpy() for v in self.optimizer.variables])},
            "rng": {},
            "counters": {"steps": self.steps},
            "memory": {"rollout": self.buffer.state_dict()},
            "policy": self.policy.state_dict(),
        }

    def _optimizer_state(self, values: list[np.ndarray]) -> dict[str, Any]:
        """Keras's Adam variables, [iteration, learning_rate, m, v] with moments as flat as the network, by name."""
        iterations, learning_rate, m, v = values
        return {"iterations": iterations, "learning_rate": learning_rate, "m": self.layout.unflatten(m, NumpyOps),
                "v": self.layout.unflatten(v, NumpyOps)}

    def load_state_dict(self, state: AgentState) -> None:
        self.params.assign(self.layout.flatten(state["params"]["network"]))
        optimizer = state["optimizers"]["network"]
        values = [optimizer["iterations"], optimizer["learning_rate"], *(self.layout.flatten(optimizer[moment])
                                                                        for moment in ("m", "v"))]
        for variable, value in zip(self.optimizer.variables, values, strict=True):
            variable.assign(value)
        self.policy.load_state_dict(state["policy"])
        self.steps = state["counters"]["steps"]
        self.buffer.load_state_dict(state["memory"]["rollout"])
        self._publish_params()


class OnPolicyAgent(ActorCriticAgent):
    """VPG and PPO: GAE(lambda) advantages in numpy, then epochs of minibatches in one compiled call."""

    pacing = ActorPacing.WAIT_FOR_WEIGHTS  # learning needs data from the current policy
    hp: PolicyGradientHParams

    def __init__(self, hp: PolicyGradientHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        rollout_size = hp.n_steps * hp.num_envs
        if rollout_size % min(hp.batch_size, rollout_size):
            raise UserError(f"a rollout of n_steps * num_envs = {rollout_size} steps does not split into "
                            f"minibatches of batch_size {hp.batch_size}; pick a divisor of {rollout_size}")
        super().__init__(hp, observation_space, action_space, seed, strategy)
        self.minibatch_rng = np.random.default_rng(seed + 1)
        vector = tf.TensorSpec([None], tf.float32)
        rollout_spec = {"obs": self.observation_spec, "action": self.action_spec, "log_prob": vector,
                        "value": vector, "advantage": vector, "return": vector}
        coefficient_spec = {name: tf.TensorSpec([], tf.float32) for name in self._graph_coefficients()}
        # Without autograph: converting the network's and the optimizer's Python would take seconds of tracing.
        self._learn_compiled = compile_learner(
            self.strategy, self._learn, [rollout_spec, tf.TensorSpec([None, None], tf.int32), coefficient_spec],
            autograph=False, jit_compile=xla_suits(hp.model, self.strategy))

    def advantage_estimator(self) -> AdvantageEstimator:
        """What turns a rollout into the update's advantages and returns: GAE(lambda), with the set's values."""
        return GAE(self.hp.gamma, self.hp.gae_lambda)

    # -- learning -------------------------------------------------------------------------------

    def update(self) -> dict[str, float]:
        if not self.buffer.full:
            return {}
        advantages, returns = self.advantage_estimator()(self.buffer.arrays)
        data = {name: self.buffer.flat(name) for name in ("obs", "action", "log_prob", "value")}
        data.update(advantage=advantages.reshape(-1), **{"return": returns.reshape(-1)})
        metrics = self._learn_compiled(data, self._minibatch_indices(len(data["value"])), self._graph_coefficients())
        self._publish_params()
        self.buffer.clear()
        return {**{f"losses/{name}": float(value) for name, value in metrics.items()},
                "losses/explained_variance": explained_variance(data["value"], data["return"])}

    def _minibatch_indices(self, rollout_size: int) -> np.ndarray:
        """[n_epochs * minibatches, batch_size] rollout rows: each epoch a fresh shuffle, split into minibatches."""
        batch_size = min(self.hp.batch_size, rollout_size)
        usable = rollout_size - rollout_size % batch_size
        return np.stack([self.minibatch_rng.permutation(rollout_size)[:usable].reshape(-1, batch_size)
                         for _ in range(self.hp.n_epochs)]).reshape(-1, batch_size).astype(np.int32)

    def _learn(self, rollout: dict[str, tf.Tensor], indices: tf.Tensor,
               coefficients: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One gradient step per row of `indices`, inside one compiled call."""
        self.optimizer.learning_rate.assign(coefficients["learning_rate"])

        def gradient_step(i: tf.Tensor, totals: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            minibatch = {name: tf.gather(values, indices[i]) for name, values in rollout.items()}
            if self.hp.normalize_advantage:
                minibatch["advantage"] = standardized(minibatch["advantage"])
            metrics = self._network_step(minibatch, lambda log_prob, entropy, values: self._loss(
                log_prob, entropy, values, minibatch, coefficients))
            return i + 1, {name: totals[name] + metrics[name] for name in self.metric_names}

        steps = tf.shape(indices)[0]
        _, totals = tf.while_loop(lambda i, _: i < steps, gradient_step,
                                  (tf.constant(0), {name: tf.zeros([]) for name in self.metric_names}))
        return {name: total / tf.cast(steps, tf.float32) for name, total in totals.items()}

    @abstractmethod
    def _loss(self, log_prob: tf.Tensor, entropy: tf.Tensor, values: tf.Tensor, minibatch: dict[str, tf.Tensor],
              coefficients: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The loss to minimise on one minibatch, and its diagnostics by `metric_names`.

        `log_prob` and `values` are the current network's on the minibatch's observations and actions;
        `entropy` is the policy's mean entropy there; `minibatch` holds what acting recorded
        (log_prob, value), the advantages (normalised if hp.normalize_advantage) and the returns;
        `coefficients` holds the inputs named by `_graph_coefficients`.
        """

    # -- checkpoints: the minibatches' random stream beside what every actor-critic agent keeps ------------------

    def _random_streams(self) -> tuple[list[np.random.Generator], list[Any]]:
        numpy_streams, tf_streams = super()._random_streams()
        return [*numpy_streams, self.minibatch_rng], tf_streams

    def state_dict(self) -> AgentState:
        state = super().state_dict()
        state["rng"]["minibatches"] = self.minibatch_rng.bit_generator.state
        return state

    def load_state_dict(self, state: AgentState) -> None:
        super().load_state_dict(state)
        self.minibatch_rng.bit_generator.state = state["rng"]["minibatches"]

    def upgrade_state(self, unnamed: dict[str, Any]) -> AgentState:
        return {
            "params": {"network": self.layout.unflatten(unnamed["params"], NumpyOps)},
            "optimizers": {"network": self._optimizer_state(unnamed["optimizer"])},
            "rng": {"minibatches": unnamed["minibatch_rng"]},
            "counters": {"steps": unnamed["steps"]},
            "memory": {"rollout": unnamed["rollout"]},
            "policy": unnamed["policy"],
        }

def standardized(x: tf.Tensor) -> tf.Tensor:
    """(x - mean) / (std + 1e-8), with the sample (n - 1) standard deviation as Stable-Baselines3's torch.std."""
    centered = x - tf.reduce_mean(x)
    count = tf.cast(tf.size(x), tf.float32)
    return centered / (tf.sqrt(tf.reduce_sum(tf.square(centered)) / tf.maximum(count - 1.0, 1.0)) + 1e-8)


def annealed(value: float, schedule: str, train_steps: int) -> LinearSchedule:
    """`value` throughout ("constant"), or falling linearly to 0 at train_steps ("linear", rl-zoo's lin_)."""
    return LinearSchedule(value, 0.0 if schedule == "linear" else value, train_steps)


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 - Var(targets - predictions) / Var(targets): 1 is perfect, 0 no better than a constant."""
    variance = float(np.var(targets))
    return float("nan") if variance == 0 else 1.0 - float(np.var(targets - predictions)) / variance
