"""What DDPG, TD3 and SAC share: actions scaled to [-1, 1], Q critics on (obs, action), Polyak-averaged targets.

Acting runs in numpy (rlkube.rl.policies.continuous) on copies of the actor's weights. Every learning
call returns those copies with its losses, so refreshing the policy after each gradient step costs no
extra reads. Learning is one compiled graph call per update, however many gradient steps it takes: XLA,
except on a CPU with a bfloat16 matrix unit, where a plain graph runs the hidden layers' matmuls on it
through oneDNN. The updates are fused kernels either way (rlkube.rl.agents.fused).
"""

from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl.agents.base import AgentState, assign_params, numpy_params
from rlkube.rl.agents.compiled import compile_learner, hidden_dtype, on_accelerator
from rlkube.rl.agents.fused import Adam, polyak
from rlkube.rl.agents.off_policy import OffPolicyAgent
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.hparams.continuous import ContinuousControlHParams
from rlkube.rl.networks import MLP, Critics, Params, map_params, named_like, param_leaves
from rlkube.rl.policies import Extras
from rlkube.rl.policies.continuous import BoxScale, ContinuousPolicy

# Where format 1 (before AgentState) kept each optimizer's variables, by the parameters it moves.
_FORMAT_1_OPTIMIZERS = {"actor": "actor_optimizer", "critic": "critic_optimizer", "log_alpha": "alpha_optimizer"}


class ContinuousControlAgent(OffPolicyAgent):
    action_spaces = ContinuousControlHParams.action_spaces
    hp: ContinuousControlHParams
    # What each gradient step reports, in the order `_gradient_step` returns it.
    scalar_names: ClassVar[tuple[str, ...]]

    def __init__(self, hp: ContinuousControlHParams, observation_space: gym.Space, action_space: gym.Space,
                 seed: int, strategy: tf.distribute.Strategy | None = None) -> None:
        if hp.model != "mlp":
            raise UserError(f"agent '{hp.agent}' supports model=mlp only, got '{hp.model}'")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise UserError(f"agent '{hp.agent}' needs a bounded Box action space; env '{hp.env}' has "
                            f"[{action_space.low}, {action_space.high}]")
        self.hp = hp
        self.strategy = strategy or tf.distribute.get_strategy()
        self.action_size = int(np.prod(action_space.shape))
        self.scale = BoxScale(action_space.low, action_space.high)
        obs_size = int(np.prod(observation_space.shape))
        self.actor = MLP(obs_size, hp.hidden_sizes, self.actor_outputs)
        self.critics = Critics(obs_size, self.action_size, hp.hidden_sizes, self.num_critics)
        rng = np.random.default_rng(seed)
        actor_initial = self._initial_actor_params(rng)
        critics_initial = self.critics.initial_params(rng)
        with self.strategy.scope():  # the learner's state lives on the --device
            self.actor_vars = map_params(tf.Variable, actor_initial)
            self.critic_vars = map_params(tf.Variable, critics_initial)
            self.target_critic_vars = map_params(tf.Variable, critics_initial)
            # Every optimizer's learning rate, a variable so that set_hparams changes it without a retrace.
            self.learning_rate = tf.Variable(hp.lr)
            self.actor_optimizer = Adam(param_leaves(self.actor_vars), self.learning_rate)
            self.critic_optimizer = Adam(param_leaves(self.critic_vars), self.learning_rate)
            self.generator = tf.random.Generator.from_seed(seed)
        dtype = hidden_dtype(hp.matmul_precision, self.strategy)
        self.hidden_dtype = None if dtype == tf.float32 else dtype
        self._make_memory(observation_space, (self.action_size,), np.float32, seed + 1)
        self.policy = self._make_policy(map_params(np.copy, actor_initial), seed)

        # A batch travels as one float32 array, [batch, obs | action | reward | next_obs | discount | weight]:
        # every argument of a compiled call costs ~20 us to bind, a lot next to a gradient step.
        self.columns = (obs_size, self.action_size, 1, obs_size, 1, 1)
        width = sum(self.columns)
        # Zoo settings take one gradient step per call, which traces without a loop. XLA compiles it except
        # for bfloat16 on a CPU: XLA never uses the CPU's bfloat16 matrix unit, and oneDNN in a plain graph
        # does (a DDPG step on rl-zoo's Pendulum: 3.2 ms against 4.1 ms all-XLA in float32, 4.5 ms
        # float32 in a plain graph).
        xla = on_accelerator(self.strategy) or self.hidden_dtype is None
        self._learn_one = compile_learner(self.strategy, self._learn_batch,
                                          [tf.TensorSpec([hp.batch_size, width], tf.float32)], autograph=False,
                                          jit_compile=xla)
        self._learn_many = compile_learner(self.strategy, self._learn_batches,
                                           [tf.TensorSpec([None, hp.batch_size, width], tf.float32)],
                                           jit_compile=xla)

    # -- what each algorithm supplies --------------------------------------------------------------

    @property
    @abstractmethod
    def actor_outputs(self) -> int:
        """Width of the actor's last layer."""

    @property
    @abstractmethod
    def num_critics(self) -> int: ...

    @abstractmethod
    def _make_policy(self, actor_params: Params, seed: int) -> ContinuousPolicy: ...

    def _initial_actor_params(self, rng: np.random.Generator) -> Params:
        """The actor's parameters, to learn and to act with: its network's, and whatever else acting reads."""
        return self.actor.initial_params(rng)

    @abstractmethod
    def _gradient_step(self, obs: tf.Tensor, action: tf.Tensor, reward: tf.Tensor, next_obs: tf.Tensor,
                       discount: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One update on one batch; returns the batch's |TD errors| (its priorities) and the scalars."""

    def _params(self) -> dict[str, Params]:
        """Every learned parameter by owner, as variables: what a checkpoint holds under `params`."""
        return {"actor": self.actor_vars, "critic": self.critic_vars, "target_critic": self.target_critic_vars}

    def _optimizers(self) -> dict[str, Adam]:
        """Each optimizer by the key of the parameters it moves in `_params`."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def _learner_counters(self) -> dict[str, tf.Variable]:
        """Variables the compiled learner counts or carries between calls, by name."""
        return {}

    # -- acting and observing ----------------------------------------------------------------------

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, extras: Extras) -> None:
        del extras  # one-step transitions need nothing from acting
        self.steps += len(obs)
        unit_actions = self.scale.to_unit(actions)
        discounts = self.hp.gamma * (1.0 - np.asarray(terminated, np.float32))
        for row in range(len(obs)):
            self.memory.add(obs[row], unit_actions[row], float(rewards[row]), next_obs[row], float(discounts[row]))
        self.policy.episodes_ended(np.logical_or(terminated, truncated))

    # -- learning ----------------------------------------------------------------------------------

    def update(self) -> dict[str, float]:
        gradient_steps = self._gradient_steps_due()
        if gradient_steps == 0:
            return {}
        return self._replay(gradient_steps, self._learn_on)

    def _learn_on(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        count, batch_size = batch["reward"].shape
        packed = np.concatenate([batch[key].reshape(count, batch_size, -1) for key in
                                 ("obs", "action", "reward", "next_obs", "discount", "weights")], axis=-1,
                                dtype=np.float32)
        if count == 1:
            td_errors, scalars, actor = self._learn_one(packed[0])
            td_errors, scalars = td_errors.numpy()[None], scalars.numpy()[None]
        else:
            td_errors, scalars, actor = self._learn_many(packed)
            td_errors, scalars = td_errors.numpy(), scalars.numpy()
        # Views of the call's outputs, not copies (.numpy() copies): acting only reads them.
        self.policy.params = map_params(np.asarray, actor)
        return td_errors, {name: scalars[:, index] for index, name in enumerate(self.scalar_names)}

    def _learn_batch(self, packed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, Params]:
        """One gradient step; then the actor's new weights, for acting."""
        obs, action, reward, next_obs, discount, weights = tf.split(packed, self.columns, axis=-1)
        td_errors, scalars = self._gradient_step(obs, action, reward[:, 0], next_obs, discount[:, 0], weights[:, 0])
        return td_errors, scalars, map_params(tf.identity, self.actor_vars)

    def _learn_batches(self, packed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, Params]:
        """len(packed) gradient steps, one per batch, inside one compiled call; then the actor's new weights."""
        steps = tf.shape(packed)[0]
        td_errors = tf.TensorArray(tf.float32, size=steps)
        scalars = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            step_td_errors, step_scalars, _ = self._learn_batch(packed[i])
            td_errors = td_errors.write(i, step_td_errors)
            scalars = scalars.write(i, step_scalars)
        return td_errors.stack(), scalars.stack(), map_params(tf.identity, self.actor_vars)

    def actor_output(self, params: Params, obs: tf.Tensor) -> tf.Tensor:
        return self.actor.forward(params, obs, TFOps, hidden_dtype=self.hidden_dtype)

    def critic_values(self, params: Params, obs: tf.Tensor, action: tf.Tensor,
                      count: int | None = None) -> tf.Tensor:
        """Q(obs, action) of the first `count` critics (all by default), stacked as [critic, batch]."""
        return self.critics.forward(params, obs, TFOps, actions=action, count=count, hidden_dtype=self.hidden_dtype)

    def _apply(self, optimizer: Adam, gradients: Params, variables: Params) -> None:
        gradients = param_leaves(gradients)
        if self.hp.max_grad_norm > 0:
            gradients, _ = tf.clip_by_global_norm(gradients, self.hp.max_grad_norm)
        optimizer.apply(gradients, param_leaves(variables))

    def _polyak(self, targets: Params, sources: Params) -> None:
        polyak(param_leaves(targets), param_leaves(sources), self.hp.tau)

    def _apply_hparams(self) -> None:
        self.learning_rate.assign(self.hp.lr)

    # -- logging and checkpoints -------------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        return {"charts/learning_rate": self.hp.lr}

    def _random_streams(self) -> tuple[list[np.random.Generator], list[Any]]:
        numpy_streams, tf_streams = super()._random_streams()
        return numpy_streams, [*tf_streams, self.generator]

    def state_dict(self) -> AgentState:
        params, optimizers = self._params(), self._optimizers()
        return {
            "params": {owner: numpy_params(variables) for owner, variables in params.items()},
            "optimizers": {owner: optimizer.state_dict(params[owner]) for owner, optimizer in optimizers.items()},
            "rng": {"learning": self.generator.state.numpy()},
            "counters": {**self._replay_counters(),
                         **{name: variable.numpy() for name, variable in self._learner_counters().items()}},
            "memory": {"replay": self.memory.state_dict()},
            "policy": self.policy.state_dict(),
        }

    def load_state_dict(self, state: AgentState) -> None:
        for owner, variables in self._params().items():
            assign_params(variables, state["params"][owner])
        for owner, optimizer in self._optimizers().items():
            optimizer.load_state_dict(state["optimizers"][owner])
        for name, variable in self._learner_counters().items():
            variable.assign(state["counters"][name])
        self.generator.state.assign(state["rng"]["learning"])
        self.policy.load_state_dict(state["policy"])
        self._load_replay_state(state)
        self.policy.params = map_params(lambda v: v.numpy(), self.actor_vars)

    def upgrade_state(self, unnamed: dict[str, Any]) -> AgentState:
        variables, params = unnamed["variables"], self._params()
        learner_counters = dict(zip(self._learner_counters(), variables.get("counters", []), strict=True))
        return {
            "params": {owner: named_like(tree, variables[owner]) for owner, tree in params.items()},
            "optimizers": {owner: Adam.named_state(params[owner], variables[_FORMAT_1_OPTIMIZERS[owner]])
                           for owner in self._optimizers()},
            "rng": {"learning": unnamed["generator"]},
            "counters": {"steps": unnamed["steps"], "previous_steps": unnamed["previous_steps"], **learner_counters},
            "memory": {"replay": unnamed["memory"]},
            "policy": unnamed["policy"],
        }
