"""Networks: named parameters and one pure forward function that runs on numpy or TensorFlow.

Every network is called the same way, `forward(params, obs, ops, **options)`:
- `params` names each part of the network and maps it to that part's parameters, down to one layer's
  ({"kernel": ..., "bias": ...}): a Q-network's are {"torso": {"dense_0": {...}, "dense_1": {...}},
  "head": {"dense_0": {...}}}. The tree holds numpy arrays on an actor and tf.Variables in the learner.
  `map_params` and `param_leaves` walk it; `ParamLayout` lays it out in one flat vector and back.
- `ops` is `NumpyOps` on an actor and `rlkube.rl.agents.tf_ops.TFOps` in the learner.
- options are keywords: `noise` (a tree named like the noisy layers' parameters, drawn by the caller
  from numpy or from a TF generator), `hidden_dtype`, a critic's `actions`.

Speed: acting never calls TensorFlow. A tf.function forward on one CartPole observation costs
250-420 µs on the 2-core VM, the same matmuls in numpy ~8 µs (benchmarks/dqn_update_speed.py), so
actors run `forward` on numpy copies of the learner's variables and the learner runs the very same
function inside its compiled update, so the two cannot drift apart. `forward` runs on every
environment step (benchmarks/speed_budgets.py, `act_us`): it looks each layer's parameters up by name
and allocates nothing but activations; a policy's tree of arrays is built once per weight sync, never
per call.

This module imports no TensorFlow: actor processes (`--num-workers`) act with it alone.
"""

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rlkube.errors import UserError
from rlkube.rl.registry import Registry

if TYPE_CHECKING:
    from rlkube.rl.hparams.dqn import DQNHParams

# A network's parameters: part (or layer) name -> that part's parameters, down to arrays or tf.Variables.
Params = dict[str, Any]

# Torsos by hparam `model`: observations in, a feature vector of `out_size` out, for any head to use.
model_registry: Registry[Any] = Registry("model")


def is_convolutional(model: str) -> bool:
    """Whether model `model` convolves: such learners are compiled and threaded differently on a CPU."""
    return getattr(model_registry[model], "convolutional", False)


def map_params(fn: Callable[[Any], Any], params: Params) -> Params:
    """The same tree of names with `fn` applied to every array (or variable), in `param_leaves` order."""
    return {name: map_params(fn, value) if isinstance(value, dict) else fn(value) for name, value in params.items()}


def param_leaves(params: Params) -> list[Any]:
    """Every array (or variable) of the tree, in the order its names were given: for optimizers and checkpoints."""
    return [leaf for value in params.values() for leaf in (param_leaves(value) if isinstance(value, dict) else [value])]


def named_like(names: Params, leaves: Sequence[Any]) -> Params:
    """`leaves`, given in `param_leaves` order, as a tree with the names of `names`."""
    if len(leaves) != len(param_leaves(names)):
        raise ValueError(f"{len(leaves)} arrays for a tree of {len(param_leaves(names))}")
    remaining = iter(leaves)
    return map_params(lambda _: next(remaining), names)


class ParamLayout:
    """Where each array of a parameter tree lies in one flat vector.

    The on-policy learner keeps its network as one flat variable (rlkube.rl.agents.on_policy) and actor
    processes receive parameters through one shared buffer (rlkube.run.workers); both turn the vector
    back into the tree here, once per weight sync. On numpy the arrays are views of the vector.
    """

    def __init__(self, params: Params) -> None:
        self.names = map_params(lambda _: None, params)
        self.shapes = [tuple(p.shape) for p in param_leaves(params)]
        self.sizes = [math.prod(shape) for shape in self.shapes]

    def flatten(self, params: Params, out: np.ndarray | None = None) -> np.ndarray:
        """The tree's numpy arrays in one vector (written into `out` where given)."""
        return np.concatenate([np.ravel(p) for p in param_leaves(params)], out=out)

    def unflatten(self, flat: Any, ops: Any) -> Params:
        arrays = iter([ops.reshape(piece, shape) for piece, shape in zip(ops.split(flat, self.sizes), self.shapes,
                                                                         strict=True)])
        return map_params(lambda _: next(arrays), self.names)


def conv2d_numpy(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """tf.nn.conv2d with VALID padding: [batch, height, width, in] * [kh, kw, in, out] -> [batch, h', w', out].

    The strided windows are a view; tensordot copies them into one matrix (im2col) for a single matmul.
    """
    windows = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))[:, ::stride, ::stride]  # [b, h', w', in, kh, kw]
    return np.tensordot(windows, kernel, axes=([4, 5, 3], [0, 1, 2]))


class NumpyOps:
    conv2d = staticmethod(conv2d_numpy)
    relu = staticmethod(lambda x: np.maximum(x, 0.0))
    tanh = staticmethod(np.tanh)
    exp = staticmethod(np.exp)
    mean = staticmethod(lambda x, axis: x.mean(axis=axis, keepdims=True))
    sign = staticmethod(np.sign)
    sqrt = staticmethod(np.sqrt)
    log = staticmethod(np.log)
    abs = staticmethod(np.abs)
    matmul = staticmethod(np.matmul)
    stop_gradient = staticmethod(lambda x: x)  # numpy computes no gradients
    float32 = staticmethod(lambda x: np.asarray(x, np.float32))
    flatten = staticmethod(lambda x: x.reshape(x.shape[0], -1))
    concat = staticmethod(lambda xs: np.concatenate(xs, axis=-1))
    stack = staticmethod(np.stack)
    split = staticmethod(lambda x, sizes: np.split(x, np.cumsum(sizes)[:-1]))
    reshape = staticmethod(np.reshape)
    clip = staticmethod(np.clip)
    softplus = staticmethod(lambda x: np.logaddexp(0.0, x))
    sum = staticmethod(lambda x: x.sum(axis=-1))
    take = staticmethod(lambda x, indices: x[np.arange(len(x)), indices])

    @staticmethod
    def log_softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class Dense:
    """A fully connected layer; a noisy one (Fortunato et al. 2018) adds factorised Gaussian noise.

    Parameters: kernel [fan_in, fan_out] and bias, and for a noisy layer their noise scales kernel_sigma
    and bias_sigma. Noise: (input noise [fan_in], output noise [fan_out]).
    """

    fan_in: int
    fan_out: int
    noisy: bool = False
    sigma0: float = 0.5
    scale: float = 1.0  # shrinks the initial weights, e.g. 0.01 for a policy's output layer

    def initial_params(self, rng: np.random.Generator) -> Params:
        # PyTorch's default Linear init, so results compare with Stable-Baselines3.
        bound = 1.0 / math.sqrt(self.fan_in)
        kernel = (self.scale * rng.uniform(-bound, bound, (self.fan_in, self.fan_out))).astype(np.float32)
        bias = (self.scale * rng.uniform(-bound, bound, (self.fan_out,))).astype(np.float32)
        if not self.noisy:
            return {"kernel": kernel, "bias": bias}
        sigma = self.sigma0 / math.sqrt(self.fan_in)
        return {"kernel": kernel, "bias": bias, "kernel_sigma": np.full_like(kernel, sigma),
                "bias_sigma": np.full_like(bias, sigma)}

    def apply(self, params: Params, x: Any, noise: tuple[Any, Any] | None, ops: Any) -> Any:
        out = x @ params["kernel"] + params["bias"]
        if self.noisy and noise is not None:
            f_in, f_out = (ops.sign(e) * ops.sqrt(ops.abs(e)) for e in noise)
            # (x * f_in) @ W_sigma * f_out equals x @ (W_sigma * outer(f_in, f_out)) without the outer.
            out = out + ((x * f_in) @ params["kernel_sigma"] + params["bias_sigma"]) * f_out
        return out


class MLP:
    """Dense layers dense_0, dense_1, ... with an activation between them (none after the last)."""

    def __init__(self, in_size: int, hidden_sizes: Sequence[int], out_size: int, activation: str = "relu",
                 out_scale: float = 1.0, noisy: bool = False, sigma0: float = 0.5) -> None:
        sizes = [in_size, *hidden_sizes, out_size]
        layers = [Dense(i, o, noisy, sigma0) for i, o in itertools.pairwise(sizes[:-1])]
        layers.append(Dense(sizes[-2], out_size, noisy, sigma0, scale=out_scale))
        self.layers = {f"dense_{index}": layer for index, layer in enumerate(layers)}
        self.output_layer = f"dense_{len(layers) - 1}"
        self.activation = activation
        self.noisy = noisy

    def initial_params(self, rng: np.random.Generator) -> Params:
        return {name: layer.initial_params(rng) for name, layer in self.layers.items()}

    def forward(self, params: Params, obs: Any, ops: Any, *, noise: Params | None = None,
                last_activation: bool = False, hidden_dtype: Any = None) -> Any:
        """The network's output for inputs `obs` [batch, in_size].

        With `hidden_dtype` (see rlkube.rl.agents.compiled.hidden_dtype) the layers before the output
        multiply in it: bfloat16 on AMX, in a plain graph with fused updates, took DDPG's Pendulum step from
        3.7 to 3.2 ms. The output layer stays float32: values and log-probabilities need its precision.
        """
        return self.forward_with_features(params, obs, ops, noise=noise, last_activation=last_activation,
                                          hidden_dtype=hidden_dtype)[0]

    def forward_with_features(self, params: Params, obs: Any, ops: Any, *, noise: Params | None = None,
                              last_activation: bool = False, hidden_dtype: Any = None) -> tuple[Any, Any]:
        """The output, and the output layer's input (float32): the features gSDE's noise is a function of."""
        activate = getattr(ops, self.activation)
        x = features = obs
        for name, layer in self.layers.items():
            layer_params = params[name]
            output_layer = name == self.output_layer
            if hidden_dtype is not None:
                x = ops.float32(x) if output_layer else ops.cast(x, hidden_dtype)
                if not output_layer:
                    layer_params = {key: ops.cast(p, hidden_dtype) for key, p in layer_params.items()}
            if output_layer:
                features = x
            x = layer.apply(layer_params, x, None if noise is None else noise[name], ops)
            if not output_layer or last_activation:
                x = activate(x)
        return x, features

    def noise_numpy(self, rng: np.random.Generator) -> Params:
        return {name: (rng.standard_normal(layer.fan_in, np.float32), rng.standard_normal(layer.fan_out, np.float32))
                for name, layer in self.layers.items()}

    def noise_tf(self, generator: Any) -> Params:
        """The same draw from a tf.random.Generator, inside the learner's graph."""
        return {name: (generator.normal([layer.fan_in]), generator.normal([layer.fan_out]))
                for name, layer in self.layers.items()}


@model_registry.register("mlp")
class MLPTorso:
    """Flattened observations through dense layers, activated at the end: features for any head."""

    def __init__(self, obs_shape: tuple[int, ...], hidden_sizes: Sequence[int], noisy: bool = False,
                 sigma0: float = 0.5, activation: str = "relu") -> None:
        in_size = int(np.prod(obs_shape))
        self.mlp = MLP(in_size, hidden_sizes[:-1], hidden_sizes[-1], activation, noisy=noisy, sigma0=sigma0) \
            if hidden_sizes else None
        self.out_size = hidden_sizes[-1] if hidden_sizes else in_size

    def initial_params(self, rng: np.random.Generator) -> Params:
        return self.mlp.initial_params(rng) if self.mlp else {}

    def forward(self, params: Params, obs: Any, ops: Any, *, noise: Params | None = None) -> Any:
        x = ops.flatten(ops.float32(obs))
        return self.mlp.forward(params, x, ops, noise=noise, last_activation=True) if self.mlp else x

    def noise_numpy(self, rng: np.random.Generator) -> Params:
        return self.mlp.noise_numpy(rng) if self.mlp else {}

    def noise_tf(self, generator: Any) -> Params:
        return self.mlp.noise_tf(generator) if self.mlp else {}


@dataclass(frozen=True)
class Conv2D:
    """A convolution without padding, its kernel laid out [height, width, in, out] as TensorFlow's."""

    in_channels: int
    filters: int
    size: int
    stride: int

    def initial_params(self, rng: np.random.Generator) -> Params:
        # PyTorch's default Conv2d init, like Dense's.
        bound = 1.0 / math.sqrt(self.in_channels * self.size * self.size)
        kernel = rng.uniform(-bound, bound, (self.size, self.size, self.in_channels, self.filters))
        return {"kernel": kernel.astype(np.float32),
                "bias": rng.uniform(-bound, bound, (self.filters,)).astype(np.float32)}

    def apply(self, params: Params, x: Any, ops: Any) -> Any:
        return ops.conv2d(x, params["kernel"], self.stride) + params["bias"]

    def output_size(self, size: int) -> int:
        return (size - self.size) // self.stride + 1


@model_registry.register("nature_cnn")
class NatureCNN:
    """Mnih et al. (2015)'s torso for stacked frames: three convolutions, then dense layers (512 in the paper).

    Observations are [height, width, channels] pixels, uint8 up to here and scaled to [0, 1] inside.
    Weights start like PyTorch's defaults (uniform within 1/sqrt(fan_in)), as in Stable-Baselines3's DQN.
    Noisy nets make only the dense layers noisy, as Rainbow (Hessel et al. 2018) does.
    Parameters: conv_0, conv_1, conv_2 and dense (an MLPTorso's).
    """

    CONVOLUTIONS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (filters, size, stride)
    convolutional = True  # see is_convolutional

    def __init__(self, obs_shape: tuple[int, ...], hidden_sizes: Sequence[int], noisy: bool = False,
                 sigma0: float = 0.5, activation: str = "relu") -> None:
        if len(obs_shape) != 3:
            raise UserError(f"model 'nature_cnn' needs image observations [height, width, channels], "
                            f"not shape {tuple(obs_shape)}; use model=mlp")
        height, width, channels = obs_shape
        self.convolutions = {}
        for index, (filters, size, stride) in enumerate(self.CONVOLUTIONS):
            layer = Conv2D(channels, filters, size, stride)
            self.convolutions[f"conv_{index}"] = layer
            height, width, channels = layer.output_size(height), layer.output_size(width), filters
        if height < 1 or width < 1:
            raise UserError(f"model 'nature_cnn' needs images of at least 36x36 pixels, not {obs_shape[:2]}")
        self.dense = MLPTorso((height, width, channels), hidden_sizes, noisy, sigma0, activation)
        self.out_size = self.dense.out_size
        self.activation = activation

    def initial_params(self, rng: np.random.Generator) -> Params:
        return {**{name: layer.initial_params(rng) for name, layer in self.convolutions.items()},
                "dense": self.dense.initial_params(rng)}

    def forward(self, params: Params, obs: Any, ops: Any, *, noise: Params | None = None) -> Any:
        activate = getattr(ops, self.activation)
        x = ops.float32(obs) * (1.0 / 255.0)
        for name, layer in self.convolutions.items():
            x = activate(layer.apply(params[name], x, ops))
        return self.dense.forward(params["dense"], x, ops, noise=None if noise is None else noise["dense"])

    def noise_numpy(self, rng: np.random.Generator) -> Params:
        return {"dense": self.dense.noise_numpy(rng)}

    def noise_tf(self, generator: Any) -> Params:
        return {"dense": self.dense.noise_tf(generator)}


def c51_support(num_atoms: int, v_min: float, v_max: float) -> np.ndarray:
    """C51's atoms: `num_atoms` returns evenly spaced from v_min to v_max."""
    return np.linspace(v_min, v_max, num_atoms, dtype=np.float32)


class QHead(ABC):
    """What a Q network outputs per action, chosen by the hparam `distributional`, and how an action's Q-value is
    read from it (acting is greedy on Q-values, whatever the head).

    A kind of head is one subclass here, listed in Q_HEADS, plus its loss in rlkube.rl.losses.HEAD_LOSSES (kept
    there because learning is TensorFlow's side).
    """

    name: ClassVar[str]  # the hparam `distributional`'s value for this head

    @classmethod
    @abstractmethod
    def from_hparams(cls, hp: "DQNHParams") -> "QHead":
        """The head sized by the hparams."""

    @property
    @abstractmethod
    def per_action(self) -> tuple[int, ...]:
        """The shape of the head's output for one action: () for a Q-value, (atoms,) for a return distribution."""

    @abstractmethod
    def q_values(self, outputs: Any, ops: Any) -> Any:
        """Q-values [batch, actions] from the head's outputs [batch, actions, *per_action]."""


class QValueHead(QHead):
    """DQN's (Mnih et al. 2015): each action's Q-value itself."""

    name = "none"

    @classmethod
    def from_hparams(cls, hp: "DQNHParams") -> "QValueHead":
        del hp  # one number per action, whatever the hparams
        return cls()

    @property
    def per_action(self) -> tuple[int, ...]:
        return ()

    def q_values(self, outputs: Any, ops: Any) -> Any:
        del ops  # the outputs are the Q-values
        return outputs


@dataclass(frozen=True, eq=False)
class CategoricalHead(QHead):
    """C51's (Bellemare et al. 2017): logits over a fixed support of returns; a Q-value is the expected return."""

    name = "c51"
    support: np.ndarray  # [atoms], float32

    @classmethod
    def from_hparams(cls, hp: "DQNHParams") -> "CategoricalHead":
        return cls(c51_support(hp.num_atoms, hp.v_min, hp.v_max))

    @property
    def per_action(self) -> tuple[int, ...]:
        return (len(self.support),)

    def q_values(self, outputs: Any, ops: Any) -> Any:
        return ops.sum(ops.exp(ops.log_softmax(outputs)) * self.support)


@dataclass(frozen=True)
class QuantileHead(QHead):
    """QR-DQN's (Dabney et al. 2017): the return's quantiles at fixed fractions; a Q-value is their mean."""

    name = "qr"
    num_quantiles: int

    @classmethod
    def from_hparams(cls, hp: "DQNHParams") -> "QuantileHead":
        return cls(hp.num_quantiles)

    @property
    def per_action(self) -> tuple[int, ...]:
        return (self.num_quantiles,)

    def q_values(self, outputs: Any, ops: Any) -> Any:
        return ops.sum(outputs) * (1.0 / self.num_quantiles)


Q_HEADS: dict[str, type[QHead]] = {head.name: head for head in (QValueHead, CategoricalHead, QuantileHead)}
DISTRIBUTIONAL_HEADS = tuple(Q_HEADS)


def q_head(hp: "DQNHParams") -> QHead:
    """The head that hp.distributional names, sized by hp."""
    return Q_HEADS[hp.distributional].from_hparams(hp)


class QNetwork:
    """A torso (hp.model: mlp, or a CNN for pixels) with a Q head, or dueling value and advantage heads.

    `head` says how many numbers the network outputs per action (one Q-value, or C51's logits, or QR-DQN's
    quantiles: see QHead). Dueling then works per atom, as in Rainbow (Hessel et al. 2018).
    Parameters: torso and head, or torso, value and advantage.
    """

    def __init__(self, model: str, obs_shape: tuple[int, ...], num_actions: int, hidden_sizes: Sequence[int],
                 dueling: bool = False, noisy: bool = False, sigma0: float = 0.5,
                 head: QHead | None = None) -> None:
        self.torso = model_registry[model](obs_shape, hidden_sizes, noisy=noisy, sigma0=sigma0)
        width = self.torso.out_size
        self.num_actions = num_actions
        self.head = head or QValueHead()
        per_action = math.prod(self.head.per_action)
        # Dueling: one stack whose last layer has 1 + num_actions outputs is not the same network as two
        # heads on a shared torso (the heads' noise differs), so the heads are separate layers.
        outputs = num_actions * per_action
        self.heads = {"value": MLP(width, (), per_action, noisy=noisy, sigma0=sigma0),
                      "advantage": MLP(width, (), outputs, noisy=noisy, sigma0=sigma0)} \
            if dueling else {"head": MLP(width, (), outputs, noisy=noisy, sigma0=sigma0)}
        self.dueling = dueling
        self.noisy = noisy

    def initial_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        return {"torso": self.torso.initial_params(rng),
                **{name: head.initial_params(rng) for name, head in self.heads.items()}}

    def forward(self, params: Params, obs: Any, ops: Any, *, noise: Params | None = None) -> Any:
        """The head's output for a batch of observations; without `noise`, the noise-free (mean) network's.

        [batch, actions, *head.per_action]: Q-values, or C51's logits, or QR-DQN's quantiles, which `q_values`
        turns into Q-values.
        """
        features = self.torso.forward(params["torso"], obs, ops, noise=None if noise is None else noise["torso"])
        heads = {name: self.heads[name].forward(params[name], features, ops,
                                                noise=None if noise is None else noise[name])
                 for name in self.heads}
        if self.head.per_action:
            heads = {name: ops.reshape(out, (-1, 1 if name == "value" else self.num_actions, *self.head.per_action))
                     for name, out in heads.items()}
        if not self.dueling:
            return heads["head"]
        return heads["value"] + heads["advantage"] - ops.mean(heads["advantage"], 1)

    def q_values(self, outputs: Any, ops: Any) -> Any:
        """Q-values [batch, actions] from `forward`'s outputs: each action's expected return."""
        return self.head.q_values(outputs, ops)

    def noise_numpy(self, rng: np.random.Generator) -> Params | None:
        if not self.noisy:
            return None
        return {"torso": self.torso.noise_numpy(rng),
                **{name: head.noise_numpy(rng) for name, head in self.heads.items()}}

    def noise_tf(self, generator: Any) -> Params | None:
        if not self.noisy:
            return None
        return {"torso": self.torso.noise_tf(generator),
                **{name: head.noise_tf(generator) for name, head in self.heads.items()}}


class Critics:
    """Q(obs, action) estimates side by side, critic_0, critic_1, ...: DDPG's one, TD3's and SAC's twins.

    Each is an MLP on [obs | action]; all share one shape, so one MLP runs each critic's parameters.
    """

    def __init__(self, obs_size: int, action_size: int, hidden_sizes: Sequence[int], count: int) -> None:
        self.mlp = MLP(obs_size + action_size, hidden_sizes, 1)
        self.names = tuple(f"critic_{index}" for index in range(count))

    def initial_params(self, rng: np.random.Generator) -> Params:
        return {name: self.mlp.initial_params(rng) for name in self.names}

    def forward(self, params: Params, obs: Any, ops: Any, *, actions: Any, count: int | None = None,
                hidden_dtype: Any = None) -> Any:
        """Q(obs, actions) of the first `count` critics (all by default), stacked as [critic, batch]."""
        x = ops.concat([obs, actions])
        return ops.stack([self.mlp.forward(params[name], x, ops, hidden_dtype=hidden_dtype)[:, 0]
                          for name in self.names[:count]])


def orthogonal(shape: tuple[int, ...], gain: float, rng: np.random.Generator) -> np.ndarray:
    """A (semi-)orthogonal weight matrix times `gain` (Saxe et al. 2014); kernels are flattened to [fan_in, out]."""
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.sign(np.diag(r))  # makes the draw uniform over orthogonal matrices
    return (gain * (q if rows >= cols else q.T)).reshape(shape).astype(np.float32)


def orthogonal_init(params: Params, gain: float, rng: np.random.Generator) -> Params:
    """Stable-Baselines3's initialisation of a part: orthogonal weights times `gain`, zero biases."""
    return map_params(lambda p: orthogonal(p.shape, gain, rng) if p.ndim > 1 else np.zeros_like(p), params)


class ActorCriticNetwork:
    """A policy (its distribution's parameters) and a state-value estimate, for policy-gradient agents.

    Separate torsos for the two, like Stable-Baselines3's MlpPolicy, or one shared torso under both
    heads, like its CnnPolicy (pixels). Initialised like SB3 too, whatever the torso: orthogonal
    weights with gain sqrt(2) in torsos, 0.01 on the policy head (near-uniform first actions) and 1 on
    the value head, zero biases. A Gaussian policy's log-std is one learned vector, not a head; with gSDE
    (rlkube.rl.distributions.StateDependentGaussian) it is a matrix [policy features, action size], and the
    distribution's per-row log-std comes from it and the policy's features.
    Parameters: policy_torso, policy_head, value_torso (unless shared), value_head and log_std (Gaussian).
    """

    def __init__(self, model: str, obs_shape: tuple[int, ...], distribution: Any, hidden_sizes: Sequence[int],
                 shared_torso: bool, activation: str, log_std_init: float | None) -> None:
        self.distribution = distribution
        self.policy_torso = model_registry[model](obs_shape, hidden_sizes, activation=activation)
        self.value_torso = self.policy_torso if shared_torso else model_registry[model](
            obs_shape, hidden_sizes, activation=activation)
        self.policy_head = MLP(self.policy_torso.out_size, (), distribution.num_outputs)
        self.value_head = MLP(self.value_torso.out_size, (), 1)
        self.shared_torso = shared_torso
        self.value_torso_params = "policy_torso" if shared_torso else "value_torso"
        self.log_std_init = log_std_init  # None: the distribution has no learned scale (Categorical)
        gains = {"policy_torso": math.sqrt(2.0), "policy_head": 0.01, "value_torso": math.sqrt(2.0), "value_head": 1.0}
        if shared_torso:
            del gains["value_torso"]
        self.gains = gains

    def initial_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        params = {name: orthogonal_init(getattr(self, name).initial_params(rng), gain, rng)
                  for name, gain in self.gains.items()}
        if self.log_std_init is not None:
            shape = self.distribution.log_std_shape(self.policy_torso.out_size)
            params["log_std"] = np.full(shape, self.log_std_init, np.float32)
        return params

    def policy(self, params: Params, obs: Any, ops: Any) -> tuple[Any, ...]:
        """The action distribution's parameters for a batch of observations."""
        return self._distribution_params(params, self.policy_torso.forward(params["policy_torso"], obs, ops), ops)

    def value(self, params: Params, obs: Any, ops: Any) -> Any:
        """V(obs), one per row."""
        features = self.value_torso.forward(params[self.value_torso_params], obs, ops)
        return self.value_head.forward(params["value_head"], features, ops)[:, 0]

    def forward(self, params: Params, obs: Any, ops: Any) -> tuple[tuple[Any, ...], Any]:
        """Both at once; a shared torso runs once."""
        return self.forward_with_features(params, obs, ops)[:2]

    def forward_with_features(self, params: Params, obs: Any, ops: Any) -> tuple[tuple[Any, ...], Any, Any]:
        """The distribution's parameters, the values, and the policy's features (what gSDE's noise is made of)."""
        policy_features = self.policy_torso.forward(params["policy_torso"], obs, ops)
        value_features = policy_features if self.shared_torso else self.value_torso.forward(
            params["value_torso"], obs, ops)
        values = self.value_head.forward(params["value_head"], value_features, ops)[:, 0]
        return self._distribution_params(params, policy_features, ops), values, policy_features

    def _distribution_params(self, params: Params, features: Any, ops: Any) -> tuple[Any, ...]:
        outputs = self.policy_head.forward(params["policy_head"], features, ops)
        if self.log_std_init is None:
            return (outputs,)
        return outputs, self.distribution.row_log_std(params["log_std"], features, ops)
