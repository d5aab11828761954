"""Networks as parameter lists plus one pure forward function that runs on numpy or TensorFlow.

Acting must not pay a TensorFlow call per environment step (~300 us against ~8 us for the same
matmuls in numpy), so actors run `forward` on numpy copies of the learner's variables, and the
learner runs the very same function inside its compiled update. Noise for noisy layers is an
input, drawn by the caller from numpy or from a TF generator.

This module imports no TensorFlow: actor processes (`--num-workers`) act with it alone. The learner
passes `rlkube.rl.agents.tf_ops.TFOps` where actors pass `NumpyOps`.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rlkube.errors import UserError
from rlkube.rl.registry import Registry

# Torsos by hparam `model`: observations in, a feature vector of `out_size` out, for any head to use.
model_registry: Registry[Any] = Registry("model")


def is_convolutional(model: str) -> bool:
    """Whether model `model` convolves: such learners are compiled and threaded differently on a CPU."""
    return getattr(model_registry[model], "convolutional", False)


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
    abs = staticmethod(np.abs)
    float32 = staticmethod(lambda x: np.asarray(x, np.float32))
    flatten = staticmethod(lambda x: x.reshape(x.shape[0], -1))
    concat = staticmethod(lambda xs: np.concatenate(xs, axis=-1))
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
    """A fully connected layer; a noisy one (Fortunato et al. 2018) adds factorised Gaussian noise."""

    fan_in: int
    fan_out: int
    noisy: bool = False
    sigma0: float = 0.5
    scale: float = 1.0  # shrinks the initial weights, e.g. 0.01 for a policy's output layer

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        # PyTorch's default Linear init, so results compare with Stable-Baselines3.
        bound = 1.0 / math.sqrt(self.fan_in)
        weights = (self.scale * rng.uniform(-bound, bound, (self.fan_in, self.fan_out))).astype(np.float32)
        bias = (self.scale * rng.uniform(-bound, bound, (self.fan_out,))).astype(np.float32)
        if not self.noisy:
            return [weights, bias]
        sigma = self.sigma0 / math.sqrt(self.fan_in)
        return [weights, bias, np.full_like(weights, sigma), np.full_like(bias, sigma)]

    def apply(self, params: Sequence[Any], x: Any, noise: tuple[Any, Any] | None, ops: Any) -> Any:
        out = x @ params[0] + params[1]
        if self.noisy and noise is not None:
            f_in, f_out = (ops.sign(e) * ops.sqrt(ops.abs(e)) for e in noise)
            # (x * f_in) @ W_sigma * f_out equals x @ (W_sigma * outer(f_in, f_out)) without the outer.
            out = out + ((x * f_in) @ params[2] + params[3]) * f_out
        return out

    @property
    def num_params(self) -> int:
        return 4 if self.noisy else 2


class MLP:
    """Dense layers with an activation between them (none after the last)."""

    def __init__(self, in_size: int, hidden_sizes: Sequence[int], out_size: int, activation: str = "relu",
                 out_scale: float = 1.0, noisy: bool = False, sigma0: float = 0.5) -> None:
        sizes = [in_size, *hidden_sizes, out_size]
        self.layers = [Dense(i, o, noisy, sigma0) for i, o in itertools.pairwise(sizes[:-1])]
        self.layers.append(Dense(sizes[-2], out_size, noisy, sigma0, scale=out_scale))
        self.activation = activation
        self.noisy = noisy

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.initial_params(rng)]

    def forward(self, params: Sequence[Any], x: Any, ops: Any, noise: Sequence[Any] | None = None,
                last_activation: bool = False, hidden_dtype: Any = None) -> Any:
        """The network's output; with `hidden_dtype` (e.g. bfloat16) the layers before the output compute in it."""
        activate = getattr(ops, self.activation)
        offset = 0
        for index, layer in enumerate(self.layers):
            layer_params = params[offset: offset + layer.num_params]
            offset += layer.num_params
            if hidden_dtype is not None:
                # The output layer stays float32: values and log-probabilities need its precision.
                output_layer = index == len(self.layers) - 1
                x = ops.float32(x) if output_layer else ops.cast(x, hidden_dtype)
                if not output_layer:
                    layer_params = [ops.cast(p, hidden_dtype) for p in layer_params]
            x = layer.apply(layer_params, x, noise[index] if noise is not None else None, ops)
            if index < len(self.layers) - 1 or last_activation:
                x = activate(x)
        return x

    def noise_numpy(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]] | None:
        if not self.noisy:
            return None
        return [(rng.standard_normal(layer.fan_in, np.float32), rng.standard_normal(layer.fan_out, np.float32))
                for layer in self.layers]

    def noise_tf(self, generator: Any) -> list[tuple[Any, Any]] | None:
        """The same draw from a tf.random.Generator, inside the learner's graph."""
        if not self.noisy:
            return None
        return [(generator.normal([layer.fan_in]), generator.normal([layer.fan_out])) for layer in self.layers]


@model_registry.register("mlp")
class MLPTorso:
    """Flattened observations through dense layers, activated at the end: features for any head."""

    def __init__(self, obs_shape: tuple[int, ...], hidden_sizes: Sequence[int], noisy: bool = False,
                 sigma0: float = 0.5, activation: str = "relu") -> None:
        in_size = int(np.prod(obs_shape))
        self.mlp = MLP(in_size, hidden_sizes[:-1], hidden_sizes[-1], activation, noisy=noisy, sigma0=sigma0) \
            if hidden_sizes else None
        self.out_size = hidden_sizes[-1] if hidden_sizes else in_size
        self.noisy = noisy

    @property
    def num_params(self) -> int:
        return self.mlp.num_params if self.mlp else 0

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        return self.mlp.initial_params(rng) if self.mlp else []

    def forward(self, params: Sequence[Any], obs: Any, ops: Any, noise: Any = None) -> Any:
        x = ops.flatten(ops.float32(obs))
        return self.mlp.forward(params, x, ops, noise, last_activation=True) if self.mlp else x

    def noise_numpy(self, rng: np.random.Generator) -> Any:
        return self.mlp.noise_numpy(rng) if self.mlp else None

    def noise_tf(self, generator: Any) -> Any:
        return self.mlp.noise_tf(generator) if self.mlp else None


@dataclass(frozen=True)
class Conv2D:
    """A convolution without padding, its kernel laid out [height, width, in, out] as TensorFlow's."""

    in_channels: int
    filters: int
    size: int
    stride: int

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        # PyTorch's default Conv2d init, like Dense's.
        bound = 1.0 / math.sqrt(self.in_channels * self.size * self.size)
        kernel = rng.uniform(-bound, bound, (self.size, self.size, self.in_channels, self.filters))
        return [kernel.astype(np.float32), rng.uniform(-bound, bound, (self.filters,)).astype(np.float32)]

    def apply(self, params: Sequence[Any], x: Any, ops: Any) -> Any:
        return ops.conv2d(x, params[0], self.stride) + params[1]

    def output_size(self, size: int) -> int:
        return (size - self.size) // self.stride + 1


@model_registry.register("nature_cnn")
class NatureCNN:
    """Mnih et al. (2015)'s torso for stacked frames: three convolutions, then dense layers (512 in the paper).

    Observations are [height, width, channels] pixels, uint8 up to here and scaled to [0, 1] inside.
    Weights start like PyTorch's defaults (uniform within 1/sqrt(fan_in)), as in Stable-Baselines3's DQN.
    Noisy nets make only the dense layers noisy, as Rainbow (Hessel et al. 2018) does.
    """

    CONVOLUTIONS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (filters, size, stride)
    convolutional = True  # see is_convolutional

    def __init__(self, obs_shape: tuple[int, ...], hidden_sizes: Sequence[int], noisy: bool = False,
                 sigma0: float = 0.5, activation: str = "relu") -> None:
        if len(obs_shape) != 3:
            raise UserError(f"model 'nature_cnn' needs image observations [height, width, channels], "
                            f"not shape {tuple(obs_shape)}; use model=mlp")
        height, width, channels = obs_shape
        self.convolutions = []
        for filters, size, stride in self.CONVOLUTIONS:
            layer = Conv2D(channels, filters, size, stride)
            self.convolutions.append(layer)
            height, width, channels = layer.output_size(height), layer.output_size(width), filters
        if height < 1 or width < 1:
            raise UserError(f"model 'nature_cnn' needs images of at least 36x36 pixels, not {obs_shape[:2]}")
        self.dense = MLPTorso((height, width, channels), hidden_sizes, noisy, sigma0, activation)
        self.out_size = self.dense.out_size
        self.activation = activation
        self.noisy = noisy

    @property
    def num_params(self) -> int:
        return 2 * len(self.convolutions) + self.dense.num_params

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [p for layer in self.convolutions for p in layer.initial_params(rng)] + self.dense.initial_params(rng)

    def forward(self, params: Sequence[Any], obs: Any, ops: Any, noise: Any = None) -> Any:
        activate = getattr(ops, self.activation)
        x = ops.float32(obs) * (1.0 / 255.0)
        for index, layer in enumerate(self.convolutions):
            x = activate(layer.apply(params[2 * index: 2 * index + 2], x, ops))
        return self.dense.forward(params[2 * len(self.convolutions):], x, ops, noise)

    def noise_numpy(self, rng: np.random.Generator) -> Any:
        return self.dense.noise_numpy(rng)

    def noise_tf(self, generator: Any) -> Any:
        return self.dense.noise_tf(generator)


class QNetwork:
    """A torso (hp.model: mlp, or a CNN for pixels) with a Q head, or dueling value and advantage heads."""

    def __init__(self, model: str, obs_shape: tuple[int, ...], num_actions: int, hidden_sizes: Sequence[int],
                 dueling: bool = False, noisy: bool = False, sigma0: float = 0.5) -> None:
        self.torso = model_registry[model](obs_shape, hidden_sizes, noisy=noisy, sigma0=sigma0)
        width = self.torso.out_size
        # Dueling: one stack whose last layer has 1 + num_actions outputs is not the same network as two
        # heads on a shared torso (the heads' noise differs), so the heads are separate layers.
        self.heads = [MLP(width, (), 1, noisy=noisy, sigma0=sigma0), MLP(width, (), num_actions, noisy=noisy,
                                                                         sigma0=sigma0)] \
            if dueling else [MLP(width, (), num_actions, noisy=noisy, sigma0=sigma0)]
        self.parts = [self.torso, *self.heads]
        self.dueling = dueling
        self.noisy = noisy

    def initial_params(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [p for part in self.parts for p in part.initial_params(rng)]

    def forward(self, params: Sequence[Any], obs: Any, noise: Sequence[Any] | None, ops: Any) -> Any:
        """Q-values for a batch of observations; `noise` is None for the noise-free (mean) network."""
        features = self.torso.forward(params[:self.torso.num_params], obs, ops, noise[0] if noise else None)
        offset, outputs = self.torso.num_params, []
        for index, head in enumerate(self.heads, start=1):
            outputs.append(head.forward(params[offset: offset + head.num_params], features, ops,
                                        noise[index] if noise else None))
            offset += head.num_params
        if self.dueling:
            value, advantage = outputs
            return value + advantage - ops.mean(advantage, 1)
        return outputs[0]

    def noise_numpy(self, rng: np.random.Generator) -> list[Any] | None:
        return [part.noise_numpy(rng) for part in self.parts] if self.noisy else None

    def noise_tf(self, generator: Any) -> list[Any] | None:
        return [part.noise_tf(generator) for part in self.parts] if self.noisy else None


def unflatten(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """A flat parameter vector as the list of arrays `shapes` describes (views, not copies)."""
    arrays, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        arrays.append(flat[start:start + size].reshape(shape))
        start += size
    return arrays


def orthogonal(shape: tuple[int, ...], gain: float, rng: np.random.Generator) -> np.ndarray:
    """A (semi-)orthogonal weight matrix times `gain` (Saxe et al. 2014); kernels are flattened to [fan_in, out]."""
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.sign(np.diag(r))  # makes the draw uniform over orthogonal matrices
    return (gain * (q if rows >= cols else q.T)).reshape(shape).astype(np.float32)


class ActorCriticNetwork:
    """A policy (its distribution's parameters) and a state-value estimate, for policy-gradient agents.

    Separate torsos for the two, like Stable-Baselines3's MlpPolicy, or one shared torso under both
    heads, like its CnnPolicy (pixels). Initialised like SB3 too, whatever the torso: orthogonal
    weights with gain sqrt(2) in torsos, 0.01 on the policy head (near-uniform first actions) and 1 on
    the value head, zero biases. A Gaussian policy's log-std is one learned vector, not a head.
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
        self.log_std_init = log_std_init  # None: the distribution has no learned scale (Categorical)
        gains = {"policy_torso": math.sqrt(2.0), "policy_head": 0.01, "value_torso": math.sqrt(2.0), "value_head": 1.0}
        if shared_torso:
            del gains["value_torso"]
        self.gains = gains
        # Where each part's parameters lie in the flat list (by name: the network is pickled to actors).
        self.slices, offset = {}, 0
        for name in gains:
            size = getattr(self, name).num_params
            self.slices[name], offset = slice(offset, offset + size), offset + size
        self.slices["value_torso"] = self.slices["policy_torso"] if shared_torso else self.slices["value_torso"]

    def initial_params(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        params = [orthogonal(p.shape, gain, rng) if p.ndim > 1 else np.zeros_like(p)
                  for name, gain in self.gains.items() for p in getattr(self, name).initial_params(rng)]
        if self.log_std_init is not None:
            params.append(np.full(self.distribution.num_outputs, self.log_std_init, np.float32))
        return params

    def _run(self, name: str, params: Sequence[Any], x: Any, ops: Any) -> Any:
        return getattr(self, name).forward(params[self.slices[name]], x, ops)

    def _distribution_params(self, params: Sequence[Any], features: Any, ops: Any) -> tuple[Any, ...]:
        outputs = self._run("policy_head", params, features, ops)
        return (outputs,) if self.log_std_init is None else (outputs, params[-1])

    def policy(self, params: Sequence[Any], obs: Any, ops: Any) -> tuple[Any, ...]:
        """The action distribution's parameters for a batch of observations."""
        return self._distribution_params(params, self._run("policy_torso", params, obs, ops), ops)

    def value(self, params: Sequence[Any], obs: Any, ops: Any) -> Any:
        """V(obs), one per row."""
        return self._run("value_head", params, self._run("value_torso", params, obs, ops), ops)[:, 0]

    def forward(self, params: Sequence[Any], obs: Any, ops: Any) -> tuple[tuple[Any, ...], Any]:
        """Both at once; a shared torso runs once."""
        policy_features = self._run("policy_torso", params, obs, ops)
        value_features = policy_features if self.shared_torso else self._run("value_torso", params, obs, ops)
        values = self._run("value_head", params, value_features, ops)[:, 0]
        return self._distribution_params(params, policy_features, ops), values
