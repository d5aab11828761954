"""How every agent's learning step becomes one compiled graph call on the learner's device, and why it is fast.

Each rule below was measured (the numbers are beside it), and benchmarks/speed_budgets.py times every
agent family's gradient step against a budget, so that an edit which breaks one shows up:
- many gradient steps per call: DQN CartPole learns ~2,450 gradient steps/s compiled, ~80/s eager
  (benchmarks/dqn_update_speed.py);
- the call is one concrete function, traced once (`compile_learner`);
- XLA, except for convolutions on a CPU (`xla_suits`);
- bfloat16 hidden layers on a CPU with AMX, as TensorFloat-32 on a GPU (`hidden_dtype`);
- bfloat16 convolutions on a CPU with bfloat16 dot products (`convolution_dtype`);
- one thread per op for a CPU learner whose ops are small (`one_thread_per_op`).
"""

import itertools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from rlkube.rl import devices
from rlkube.rl.hparams import HParams
from rlkube.rl.networks import is_convolutional


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


def cpu_matmuls_in_bfloat16(matmul_precision: str) -> bool:
    """Whether a CPU learner multiplies its hidden layers in bfloat16: asked to, or `auto` on a CPU with AMX."""
    return matmul_precision == "bfloat16" or (matmul_precision == "auto" and devices.bfloat16_matrix_unit())


def hidden_dtype(matmul_precision: str, strategy: tf.distribute.Strategy) -> tf.DType:
    """The dtype of hidden layers' matmuls: `auto` is bfloat16 on a CPU with a bfloat16 matrix unit, else float32.

    Like TensorFloat-32 on a GPU (TensorFlow's default there), AMX multiplies bfloat16 inputs into
    float32 sums, several times faster than float32 arithmetic.
    """
    if on_accelerator(strategy):
        return tf.bfloat16 if matmul_precision == "bfloat16" else tf.float32
    return tf.bfloat16 if cpu_matmuls_in_bfloat16(matmul_precision) else tf.float32


def convolution_dtype(hp: HParams, strategy: tf.distribute.Strategy) -> tf.DType | None:
    """The dtype a convolutional torso computes in, or None for float32 (and for dense torsos, which keep theirs).

    `auto` is bfloat16 on a CPU with bfloat16 dot products (AVX512-BF16 or AMX): oneDNN then runs the Nature
    CNN's convolutions and their gradients in bfloat16 with float32 sums. Measured on the 2-core AMD EPYC VM
    (AVX512-BF16, no AMX), CPU time of one thread, interleaved with float32: a dqn_pong gradient step (batch 32)
    33.3 -> 24.2 ms (0.72x), a ppo_pong one (batch 256) 160 -> 114 ms (0.71x); keeping the first convolution
    (4 input channels) in float32 lost 0.05x of the gain (benchmarks/atari_learner_vs_sb3.py). The kernels stay
    float32 variables, the torso's output is cast back to float32, and heads, losses and Adam stay float32,
    as Keras's mixed precision does; acting (numpy) stays float32.
    """
    precision = getattr(hp, "matmul_precision", "float32")
    if not is_convolutional(hp.model) or precision == "float32":
        return None
    if on_accelerator(strategy):
        return tf.bfloat16 if precision == "bfloat16" else None  # TensorFloat-32 already, on a GPU
    return tf.bfloat16 if precision == "bfloat16" or devices.bfloat16_dot_products() else None


# A hidden-layer matmul of fewer multiply-adds than this is done on one core before a second pool thread
# would have woken up. Measured on the 2-core VM, one thread against two: DQN CartPole's 64 x 256 x 256
# ran 2,775 gradient steps/s against 2,272; SAC's 256 x 256 x 256 in float32 took 5.1 ms a step against 4.4.
ONE_THREAD_MATMUL = 8_000_000


def one_thread_per_op(hp: HParams) -> bool:
    """Whether a CPU learner for `hp` is faster running each op on one thread (devices.run_ops_inline).

    Yes for small dense networks, and for dense networks whose hidden layers run in bfloat16 on AMX
    (DDPG's 256 x 400 x 300: 2.7 ms a step on one thread, 3.3 ms on two; in float32, 4.8 against 4.1).
    Convolutions and large float32 matmuls keep TensorFlow's thread pool.
    """
    if is_convolutional(hp.model):
        return False
    if cpu_matmuls_in_bfloat16(getattr(hp, "matmul_precision", "float32")):
        return True
    largest_layer = max((a * b for a, b in itertools.pairwise(hp.hidden_sizes)), default=0)
    return hp.batch_size * largest_layer < ONE_THREAD_MATMUL


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
