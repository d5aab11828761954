"""The DQN family's hparams and its named sets.

Settings follow rl-baselines3-zoo where it has them, so results compare with Stable-Baselines3.
"""

import dataclasses
from dataclasses import dataclass

from rlkube.rl.hparams.base import hparams_registry, param
from rlkube.rl.hparams.off_policy import OffPolicyHParams


@dataclass(frozen=True)
class DQNHParams(OffPolicyHParams):
    agent: str = param("dqn", choices=("dqn",), doc="agent registry name")
    target_update_period: int = param(10, lo=1, doc="environment steps between target updates")
    target_update_tau: float = param(1.0, lo=0.0, hi=1.0, doc="1 copies (hard); below 1 is Polyak")
    double_q: bool = param(False, doc="Double DQN: the online net picks, the target net rates")
    dueling: bool = param(False, doc="separate value and advantage heads")
    noisy: bool = param(False, doc="factorised-Gaussian noisy layers replace epsilon-greedy")
    noisy_sigma0: float = param(0.5, lo=0.0)
    n_step: int = param(1, lo=1, hi=100)
    loss: str = param("huber", choices=("huber", "mse"))
    epsilon_schedule: str = param("linear", choices=("linear", "exponential"))
    epsilon_start: float = param(1.0, lo=0.0, hi=1.0)
    epsilon_end: float = param(0.05, lo=0.0, hi=1.0)
    exploration_fraction: float = param(0.1, lo=0.0, hi=1.0, doc="linear: share of train_steps to decay")
    epsilon_decay: float = param(0.999, lo=0.0, hi=1.0, doc="exponential: factor per step")

    def mutable_on_resume(self) -> frozenset[str]:
        # lr: Adam reads it from its variable inside the compiled step. epsilon's end-points: acting reads
        # the schedule, a pure function of the step, on every action. Not gamma: the replay memory holds
        # discounts and n-step returns already multiplied out with the old one.
        return frozenset({"lr", "epsilon_start", "epsilon_end"})


@hparams_registry.register()
def dqn_cartpole() -> DQNHParams:
    """rl-baselines3-zoo's CartPole-v1 settings."""
    return DQNHParams(
        env="CartPole-v1", lr=2.3e-3, batch_size=64, memory_size=100_000, learning_starts=1_000,
        gamma=0.99, target_update_period=10, train_freq=256, gradient_steps=128,
        exploration_fraction=0.16, epsilon_end=0.04, hidden_sizes=(256, 256), train_steps=50_000,
        eval_every=2_500, target_return=475.0,
    )


@hparams_registry.register()
def double_dqn_cartpole() -> DQNHParams:
    return dataclasses.replace(dqn_cartpole(), double_q=True)


@hparams_registry.register()
def dueling_dqn_cartpole() -> DQNHParams:
    return dataclasses.replace(dqn_cartpole(), dueling=True)


@hparams_registry.register()
def noisy_dqn_cartpole() -> DQNHParams:
    """Exploration comes from the noisy layers alone, so epsilon stays at zero."""
    return dataclasses.replace(dqn_cartpole(), noisy=True, epsilon_start=0.0, epsilon_end=0.0)


@hparams_registry.register()
def prioritized_dqn_cartpole() -> DQNHParams:
    return dataclasses.replace(dqn_cartpole(), memory="prioritized")


@hparams_registry.register()
def rainbow_cartpole() -> DQNHParams:
    """Double, dueling, noisy, 3-step and prioritized DQN together (no distributional head)."""
    return dataclasses.replace(
        dqn_cartpole(), double_q=True, dueling=True, noisy=True, n_step=3, memory="prioritized",
        epsilon_start=0.0, epsilon_end=0.0,
    )


@hparams_registry.register()
def dqn_acrobot() -> DQNHParams:
    """rl-baselines3-zoo's Acrobot-v1 settings."""
    return DQNHParams(
        env="Acrobot-v1", lr=6.3e-4, batch_size=128, memory_size=50_000, learning_starts=0,
        gamma=0.99, target_update_period=250, train_freq=4, gradient_steps=4,
        exploration_fraction=0.12, epsilon_end=0.1, hidden_sizes=(256, 256), train_steps=100_000,
        eval_every=5_000, target_return=-100.0,
    )


@hparams_registry.register()
def dqn_mountaincar() -> DQNHParams:
    """rl-baselines3-zoo's MountainCar-v0 settings."""
    return DQNHParams(
        env="MountainCar-v0", lr=4e-3, batch_size=128, memory_size=10_000, learning_starts=1_000,
        gamma=0.98, target_update_period=600, train_freq=16, gradient_steps=8,
        exploration_fraction=0.2, epsilon_end=0.07, hidden_sizes=(256, 256), train_steps=120_000,
        eval_every=10_000, target_return=-110.0,
    )


@hparams_registry.register()
def dqn_pong() -> DQNHParams:
    """rl-baselines3-zoo's Atari settings (Nature CNN, 10M steps) on ALE/Pong-v5, which has sticky actions.

    The zoo's Pong score, 20.9, was measured on PongNoFrameskip-v4, without sticky actions: override
    env=PongNoFrameskip-v4 to compare like with like. The memory holds 100k transitions, as SB3's does.
    It stores each 7 KB frame once rather than in 8 stacks, so it grows to ~0.7 GB, not 5.6 GB. Every
    checkpoint writes it whole, hence checkpoints every 500k steps rather than every 10k.
    """
    return DQNHParams(
        env="ALE/Pong-v5", model="nature_cnn", hidden_sizes=(512,), lr=1e-4, batch_size=32, memory_size=100_000,
        learning_starts=100_000, gamma=0.99, target_update_period=1_000, train_freq=4, gradient_steps=1,
        exploration_fraction=0.1, epsilon_end=0.01, train_steps=10_000_000, eval_every=250_000,
        checkpoint_every=500_000, log_every=10_000, target_return=20.0,
    )


@hparams_registry.register()
def double_dqn_pong() -> DQNHParams:
    return dataclasses.replace(dqn_pong(), double_q=True)


@hparams_registry.register()
def rainbow_pong() -> DQNHParams:
    """Double, dueling, noisy, 3-step and prioritized DQN with Hessel et al. (2018)'s Atari settings.

    Their learning rate, priority exponent and start of learning (80k frames); their target period of
    32k frames (8k steps). The memory stays at dqn_pong's 100k rather than their 1M, which would take
    ~14 GB (with 3-step returns a transition keeps ~2 frames of its own).
    """
    return dataclasses.replace(
        dqn_pong(), double_q=True, dueling=True, noisy=True, n_step=3, memory="prioritized", per_alpha=0.5,
        lr=6.25e-5, learning_starts=20_000, target_update_period=8_000, epsilon_start=0.0, epsilon_end=0.0,
    )
