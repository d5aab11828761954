"""Variable updates as TensorFlow's fused training kernels: one op per variable instead of a dozen.

Keras's Adam spends about ten element-wise ops on each variable, and Polyak averaging three more.
Inside XLA they fuse; in a CPU learner's plain graph (rlkube.rl.agents.compiled) each op is a trip
through the graph executor, which for DDPG-sized networks costs more than the arithmetic.
ResourceApplyAdam and ResourceApplyGradientDescent do the same updates in one kernel each, and XLA
compiles them too, on a GPU or TPU.

Measured on the 2-core VM in a plain graph on one thread: Adam and Polyak steps over DDPG Pendulum's
actor and two critics took 1.1 ms fused against 1.7 ms as Keras's ops; with bfloat16 matmuls on AMX
the plain graph took DDPG's whole step from 3.7 to 3.2 ms (docs/speed.md). benchmarks/speed_budgets.py
times those steps (`update_us` of the Pendulum sets).
"""

from typing import Any

import tensorflow as tf

from rlkube.rl.networks import Params, named_like, param_leaves


class Adam:
    """Adam (Kingma & Ba 2015) as PyTorch computes it, its defaults included, so results compare with
    Stable-Baselines3: epsilon is added to the bias-corrected sqrt(v),

        var -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + eps),

    which the fused kernel, written with Keras's placement (eps added to the uncorrected sqrt(v)), computes when
    given eps * sqrt(1 - beta_2^t). The placement was the one difference found between rlkube's DQN learner and
    SB3's: from the same weights on the same batches, their Q-values were 3e-3 apart (relative) after 10 gradient
    steps with Keras's placement and 1e-7 default, and are 6e-7 apart with this (benchmarks/dqn_learner_vs_sb3.py).
    """

    def __init__(self, variables: list[tf.Variable], lr: float | tf.Variable, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8) -> None:
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64)
        self.momentums = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.velocities = [tf.Variable(tf.zeros_like(v)) for v in variables]

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.iterations, *self.momentums, *self.velocities]

    def state_dict(self, names: Params) -> dict[str, Any]:
        """Its state for a checkpoint; `names` is the tree of the variables it moves, which names each moment."""
        return self.named_state(names, [variable.numpy() for variable in self.variables])

    @staticmethod
    def named_state(names: Params, values: list[Any]) -> dict[str, Any]:
        """`values` of its `variables`, in their order, as state_dict names them."""
        count = len(param_leaves(names))
        return {"iterations": values[0], "m": named_like(names, values[1:1 + count]),
                "v": named_like(names, values[1 + count:])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = [state["iterations"], *param_leaves(state["m"]), *param_leaves(state["v"])]
        for variable, value in zip(self.variables, values, strict=True):
            variable.assign(value)

    def apply(self, gradients: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        step = tf.cast(self.iterations.assign_add(1), tf.float32)
        beta_1_power, beta_2_power = tf.pow(self.beta_1, step), tf.pow(self.beta_2, step)
        for gradient, variable, momentum, velocity in zip(gradients, variables, self.momentums, self.velocities,
                                                         strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=momentum.handle, v=velocity.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=tf.convert_to_tensor(self.lr, tf.float32), beta1=tf.constant(self.beta_1),
                beta2=tf.constant(self.beta_2), epsilon=self.epsilon * tf.sqrt(1.0 - beta_2_power), grad=gradient)


def polyak(targets: list[tf.Variable], sources: list[tf.Variable], tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, as one gradient-descent step of size tau towards the source."""
    for target, source in zip(targets, sources, strict=True):
        tf.raw_ops.ResourceApplyGradientDescent(var=target.handle, alpha=tf.constant(tau, tf.float32),
                                                delta=target - source)
