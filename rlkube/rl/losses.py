"""Per-sample losses on TD errors, by name; the learner weights and averages them."""

from collections.abc import Callable

import tensorflow as tf

from rlkube.rl.registry import Registry

loss_registry: Registry[Callable[[tf.Tensor], tf.Tensor]] = Registry("loss")


@loss_registry.register("huber")
def huber(td_error: tf.Tensor) -> tf.Tensor:
    """Huber with delta 1 (PyTorch's smooth L1): quadratic near zero, linear beyond."""
    absolute = tf.abs(td_error)
    quadratic = tf.minimum(absolute, 1.0)
    return 0.5 * tf.square(quadratic) + (absolute - quadratic)


@loss_registry.register("mse")
def mse(td_error: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.square(td_error)
