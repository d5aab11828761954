"""How every agent's learning step becomes one compiled graph call on the learner's device."""

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from rlkube.core import devices
from rlkube.core.networks import is_convolutional


def on_accelerator(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy's learner runs on a GPU or a TPU rather than the CPU."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return any("GPU" in device.upper() for device in strategy.extended.worker_devices)
    return bool(tf.config.list_logical_devices("GPU"))  # the default strategy uses a GPU where there is one


def xla_suits(model: str, strategy: tf.distribute.Strategy) -> bool:
    """Whether to XLA-compile learning: always, except convolutions on a CPU.

    XLA fuses dense updates well everywhere, but on a CPU it runs convolutions inside a
    gradient-step loop about 30x slower than plain TensorFlow (930 ms against 32 ms for one Nature
    CNN step of dqn_pong, benchmarks/atari_sps.py).
    """
    return not is_convolutional(model) or on_accelerator(strategy)


def hidden_dtype(matmul_precision: str, strategy: tf.distribute.Strategy) -> tf.DType:
    """The dtype of hidden layers' matmuls: `auto` is bfloat16 on a CPU with a bfloat16 matrix unit, else float32.

    Like TensorFloat-32 on a GPU (TensorFlow's default there), AMX multiplies bfloat16 inputs into
    float32 sums, several times faster than float32 arithmetic.
    """
    if matmul_precision == "auto":
        use_bfloat16 = not on_accelerator(strategy) and devices.bfloat16_matrix_unit()
        return tf.bfloat16 if use_bfloat16 else tf.float32
    return tf.as_dtype(matmul_precision)


def compile_learner(strategy: tf.distribute.Strategy, learn: Callable[..., Any], input_signature: list[Any],
                    autograph: bool = True, jit_compile: bool = True) -> Callable[..., Any]:
    """`learn` compiled (XLA unless `jit_compile=False`) on the strategy's device, traced once for the signature.

    One compiled function is the whole call: a plain tf.function around an XLA one costs a graph
    executor's round trip (~0.5 ms) per call. TPUStrategy.run compiles for the TPU itself and must
    sit in a plain tf.function. `autograph=False` traces faster (up to a second), for a `learn` whose
    Python has no loops or branches on tensors. Arguments may be nested (dicts of arrays).
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        learn_on_device = tf.function(learn, jit_compile=True, autograph=autograph)
        compiled = tf.function(lambda *args: strategy.run(learn_on_device, args=args), autograph=autograph,
                               input_signature=input_signature)
    else:
        compiled = tf.function(lambda *args: strategy.run(learn, args=args), jit_compile=jit_compile,
                               autograph=autograph, input_signature=input_signature)
    concrete = None

    def call(*arrays: Any) -> Any:
        # The one concrete function, traced on first use: calling it skips tf.function's argument
        # binding (~0.4 ms a call), and tf.constant converts numpy five times faster than the call would.
        nonlocal concrete
        if concrete is None:
            concrete = compiled.get_concrete_function()
        return concrete(*tf.nest.map_structure(tf.constant, arrays))

    return call
