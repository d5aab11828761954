"""Networks as parameter lists plus one pure forward function that runs on numpy or TensorFlow.

Acting must not pay a TensorFlow call per environment step (~300 us against ~8 us for the same
matmuls in numpy), so the actor runs `forward` on numpy copies of the learner's variables, and the
learner runs the very same function inside its compiled update. Noise for noisy layers is an
input, drawn by the caller from numpy or from a TF generator.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from rlkube.core.registry import Registry

model_registry: Registry[type["QNetwork"]] = Registry("model")


class NumpyOps:
    relu = staticmethod(lambda x: np.maximum(x, 0.0))
    mean = staticmethod(lambda x, axis: x.mean(axis=axis, keepdims=True))
    sign = staticmethod(np.sign)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    float32 = staticmethod(lambda x: np.asarray(x, np.float32))


class TFOps:
    relu = staticmethod(tf.nn.relu)
    mean = staticmethod(lambda x, axis: tf.reduce_mean(x, axis=axis, keepdims=True))
    sign = staticmethod(tf.sign)
    sqrt = staticmethod(tf.sqrt)
    abs = staticmethod(tf.abs)
    float32 = staticmethod(lambda x: tf.cast(x, tf.float32))


@dataclass(frozen=True)
class Dense:
    """A fully connected layer; a noisy one (Fortunato et al. 2018) adds factorised Gaussian noise."""

    fan_in: int
    fan_out: int
    noisy: bool = False
    sigma0: float = 0.5

    def initial_params(self, rng: np.random.Generator) -> list[np.ndarray]:
        # PyTorch's default Linear init, so results compare with Stable-Baselines3.
        bound = 1.0 / math.sqrt(self.fan_in)
        weights = rng.uniform(-bound, bound, (self.fan_in, self.fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, (self.fan_out,)).astype(np.float32)
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


@model_registry.register("mlp")
class QNetwork:
    """An MLP torso with a Q head, or dueling value and advantage heads."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, hidden_sizes: Sequence[int],
                 dueling: bool = False, noisy: bool = False, sigma0: float = 0.5) -> None:
        sizes = [int(np.prod(obs_shape)), *hidden_sizes]
        self.torso = [Dense(i, o, noisy, sigma0) for i, o in itertools.pairwise(sizes)]
        self.dueling = dueling
        heads = [Dense(sizes[-1], 1, noisy, sigma0), Dense(sizes[-1], num_actions, noisy, sigma0)] \
            if dueling else [Dense(sizes[-1], num_actions, noisy, sigma0)]
        self.layers = [*self.torso, *heads]
        self.noisy = noisy

    def initial_params(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [p for layer in self.layers for p in layer.initial_params(rng)]

    def forward(self, params: Sequence[Any], obs: Any, noise: Sequence[tuple[Any, Any]] | None,
                ops: Any) -> Any:
        """Q-values for a batch of observations; `noise` is None for the noise-free (mean) network."""
        x = ops.float32(obs)
        x = x if len(x.shape) == 2 else x.reshape(x.shape[0], -1) if ops is NumpyOps \
            else tf.reshape(x, (tf.shape(x)[0], -1))
        outputs = []
        offset = 0
        for index, layer in enumerate(self.layers):
            layer_params = params[offset: offset + layer.num_params]
            offset += layer.num_params
            layer_noise = noise[index] if noise is not None else None
            if index < len(self.torso):
                x = ops.relu(layer.apply(layer_params, x, layer_noise, ops))
            else:
                outputs.append(layer.apply(layer_params, x, layer_noise, ops))
        if self.dueling:
            value, advantage = outputs
            return value + advantage - ops.mean(advantage, 1)
        return outputs[0]

    def noise_numpy(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]] | None:
        if not self.noisy:
            return None
        return [(rng.standard_normal(layer.fan_in, np.float32), rng.standard_normal(layer.fan_out, np.float32))
                for layer in self.layers]

    def noise_tf(self, generator: tf.random.Generator) -> list[tuple[tf.Tensor, tf.Tensor]] | None:
        if not self.noisy:
            return None
        return [(generator.normal([layer.fan_in]), generator.normal([layer.fan_out])) for layer in self.layers]
