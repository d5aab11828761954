"""The pieces of VPG and PPO against hand-computed values: GAE, distributions, the clipped surrogate, schedules."""

import math

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl.agents import make_agent
from rlkube.rl.agents.on_policy import standardized
from rlkube.rl.agents.ppo import clipped_surrogate_loss
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import Categorical, DiagonalGaussian
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps, param_leaves
from rlkube.rl.rollout import RolloutBuffer, generalized_advantages


def test_gae_cuts_at_episode_ends_and_bootstraps_only_truncations() -> None:
    # [T=3, 2 envs], gamma 0.5, lambda 0.5 (so gamma * lambda = 0.25).
    # env 0 terminates at t=1; its rollout ends mid-episode at t=2 (bootstrap V=4).
    # env 1 is truncated at t=0 (bootstrap V(final obs)=2) and terminates at t=2.
    rewards = np.array([[1, 0], [1, 0], [1, 1]], np.float32)
    values = np.array([[1, 1], [2, 1], [3, 1]], np.float32)
    bootstrap = np.array([[0, 2], [0, 0], [4, 0]], np.float32)
    terminated = np.array([[False, False], [True, False], [False, True]])
    truncated = np.array([[False, True], [False, False], [False, False]])
    advantages, returns = generalized_advantages(rewards, values, bootstrap, terminated, truncated, 0.5, 0.5)
    # env 0: t2: 1 + 0.5*4 - 3 = 0. t1 (terminal): 1 - 2 = -1. t0: delta 1 + 0.5*2 - 1 = 1, plus 0.25 * -1.
    # env 1: t2 (terminal): 1 - 1 = 0. t1: 0 + 0.5*1 - 1 = -0.5. t0 (truncated): 0 + 0.5*2 - 1 = 0, no carry.
    np.testing.assert_allclose(advantages, [[0.75, 0.0], [-1.0, -0.5], [0.0, 0.0]])
    np.testing.assert_allclose(returns, advantages + values)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_baseline() -> None:
    rewards = np.ones((4, 1), np.float32)
    values = np.full((4, 1), 0.5, np.float32)
    terminated = np.array([[False], [False], [False], [True]])
    advantages, returns = generalized_advantages(rewards, values, np.zeros_like(values), terminated,
                                                 np.zeros_like(terminated), 0.9, 1.0)
    expected_returns = [1 + 0.9 + 0.81 + 0.729, 1 + 0.9 + 0.81, 1 + 0.9, 1]
    np.testing.assert_allclose(returns[:, 0], expected_returns, rtol=1e-6)
    np.testing.assert_allclose(advantages[:, 0], np.array(expected_returns) - 0.5, rtol=1e-6)


def test_rollout_buffer_round_trips_a_partial_rollout() -> None:
    buffer = RolloutBuffer(3)
    buffer.add(obs=np.ones((2, 4), np.float32), action=np.array([0, 1]))
    restored = RolloutBuffer(3)
    restored.load_state_dict(buffer.state_dict())
    assert restored.size == 1
    np.testing.assert_array_equal(restored.arrays["action"][0], [0, 1])
    restored.add(obs=np.zeros((2, 4), np.float32), action=np.array([1, 1]))
    restored.add(obs=np.zeros((2, 4), np.float32), action=np.array([1, 0]))
    assert restored.full
    assert restored.flat("obs").shape == (6, 4)
    with pytest.raises(RuntimeError):
        restored.add(obs=np.zeros((2, 4), np.float32), action=np.array([1, 0]))


def test_categorical_log_prob_and_entropy_match_the_closed_form_on_numpy_and_tensorflow() -> None:
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]], np.float32)  # probabilities 1/4, 3/4 and 1/2, 1/2
    actions = np.array([1, 0])
    numpy_log_prob = Categorical.log_prob((logits,), actions, NumpyOps)
    tf_log_prob = Categorical.log_prob((tf.constant(logits),), tf.constant(actions), TFOps).numpy()
    np.testing.assert_allclose(numpy_log_prob, [math.log(0.75), math.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(tf_log_prob, numpy_log_prob, rtol=1e-6)
    numpy_entropy = Categorical.entropy((logits,), NumpyOps)
    tf_entropy = Categorical.entropy((tf.constant(logits),), TFOps).numpy()
    np.testing.assert_allclose(numpy_entropy, [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2.0)],
                               rtol=1e-6)
    np.testing.assert_allclose(tf_entropy, numpy_entropy, rtol=1e-6)


def test_diagonal_gaussian_log_prob_and_entropy_match_the_closed_form_on_numpy_and_tensorflow() -> None:
    mean = np.array([[0.0, 1.0], [2.0, -1.0]], np.float32)
    log_std = np.array([math.log(2.0), 0.0], np.float32)
    actions = np.array([[2.0, 1.0], [2.0, 0.0]], np.float32)  # z = (1, 0) and (0, 1)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    expected = [-0.5 - math.log(2.0) - 2 * half_log_2pi, -math.log(2.0) - 0.5 - 2 * half_log_2pi]
    numpy_log_prob = DiagonalGaussian.log_prob((mean, log_std), actions, NumpyOps)
    tf_log_prob = DiagonalGaussian.log_prob((tf.constant(mean), tf.constant(log_std)), tf.constant(actions),
                                            TFOps).numpy()
    np.testing.assert_allclose(numpy_log_prob, expected, rtol=1e-6)
    np.testing.assert_allclose(tf_log_prob, numpy_log_prob, rtol=1e-6)
    # 0.5 * log(2 pi e sigma^2) per dimension.
    per_row = sum(0.5 * math.log(2 * math.pi * math.e * s * s) for s in (2.0, 1.0))
    numpy_entropy = DiagonalGaussian.entropy((mean, log_std), NumpyOps)
    tf_entropy = DiagonalGaussian.entropy((tf.constant(mean), tf.constant(log_std)), TFOps).numpy()
    np.testing.assert_allclose(numpy_entropy, [per_row, per_row], rtol=1e-6)
    np.testing.assert_allclose(tf_entropy, numpy_entropy, rtol=1e-6)


@pytest.mark.parametrize("distribution", [Categorical, DiagonalGaussian])
def test_samples_come_with_their_log_probs(distribution) -> None:
    rng = np.random.default_rng(0)
    params = (rng.standard_normal((1000, 3)).astype(np.float32),)
    if distribution is DiagonalGaussian:
        params = (*params, np.array([-1.0, 0.0, 0.5], np.float32))
    actions, log_probs = distribution.sample(params, rng)
    np.testing.assert_allclose(log_probs, distribution.log_prob(params, actions, NumpyOps), rtol=1e-5, atol=1e-5)


def test_categorical_samples_follow_the_probabilities() -> None:
    logits = np.tile(np.log(np.array([[0.2, 0.5, 0.3]], np.float32)), (200_000, 1))
    actions, _ = Categorical.sample((logits,), np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), [0.2, 0.5, 0.3], atol=0.005)


@pytest.mark.parametrize(("ratio", "advantage", "loss", "gradient"), [
    (1.0, 1.0, -1.0, -1.0),  # inside the trust region: the plain surrogate
    (1.5, 1.0, -1.2, 0.0),  # a good action already made more likely: clipped, no push further
    (0.5, 1.0, -0.5, -0.5),  # a good action made less likely: the unclipped term keeps pulling it back
    (0.5, -1.0, 0.8, 0.0),  # a bad action already made less likely: clipped
    (1.5, -1.0, 1.5, 1.5),  # a bad action made more likely: pushed back
])
def test_clipped_surrogate_takes_the_pessimistic_bound(ratio: float, advantage: float, loss: float,
                                                       gradient: float) -> None:
    log_prob = tf.Variable([math.log(ratio)])
    with tf.GradientTape() as tape:
        value, _ = clipped_surrogate_loss(log_prob, tf.constant([0.0]), tf.constant([advantage]), tf.constant(0.2))
    # d loss / d log_prob = d loss / d ratio * ratio.
    assert value.numpy() == pytest.approx(loss, rel=1e-6)
    assert tape.gradient(value, log_prob).numpy()[0] == pytest.approx(gradient, rel=1e-6, abs=1e-7)


def test_advantages_are_standardised_with_the_sample_standard_deviation() -> None:
    # mean 2, sample std sqrt(((-1)^2 + 0 + 1^2) / 2) = 1, as SB3's torch.std gives.
    np.testing.assert_allclose(standardized(tf.constant([1.0, 2.0, 3.0])).numpy(), [-1.0, 0.0, 1.0], rtol=1e-6)


def cartpole_agent(name: str, overrides: str = ""):
    hp = get_hparams(name, overrides)
    env = gym.make(hp.env)
    return make_agent(hp, env.observation_space, env.action_space, 0), env


def test_learning_rate_and_clip_range_anneal_linearly_to_zero() -> None:
    agent, _ = cartpole_agent("ppo_cartpole")
    for steps, fraction in ((0, 1.0), (25_000, 0.75), (100_000, 0.0)):
        agent.steps = steps
        assert agent.coefficients() == pytest.approx({"learning_rate": 1e-3 * fraction, "clip_range": 0.2 * fraction})
    constant, _ = cartpole_agent("ppo_cartpole", "lr_schedule=constant,clip_range_schedule=constant")
    constant.steps = 100_000
    assert constant.scalars() == pytest.approx({"charts/learning_rate": 1e-3, "charts/clip_range": 0.2})


def test_truncated_steps_and_the_rollouts_last_step_store_the_value_of_what_followed() -> None:
    agent, _ = cartpole_agent("ppo_cartpole", "n_steps=2,num_envs=2,batch_size=4")
    obs = np.zeros((2, 4), np.float32)
    next_obs = np.array([[0.1, 0.2, 0.0, 0.0], [0.3, 0.0, 0.1, 0.0]], np.float32)
    actions, extras = agent.act(obs)
    no = np.array([False, False])
    agent.observe(obs, actions, np.ones(2), next_obs, no, np.array([False, True]), extras)
    expected = agent.policy.value(next_obs)
    np.testing.assert_allclose(agent.buffer.arrays["bootstrap_value"][0], [0.0, expected[1]], rtol=1e-5)
    assert agent.update() == {}
    agent.observe(next_obs, actions, np.ones(2), next_obs, no, no, extras)
    np.testing.assert_allclose(agent.buffer.arrays["bootstrap_value"][1], expected, rtol=1e-5)
    before = [p.copy() for p in param_leaves(agent.policy.params)]
    learned = agent.update()
    assert set(learned) >= {"losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/clip_fraction"}
    assert any((a != b).any() for a, b in zip(before, param_leaves(agent.policy.params), strict=True))
    assert agent.buffer.size == 0


@pytest.mark.parametrize("use_sde", [False, True])
def test_gaussian_policy_clips_what_the_env_gets_and_learns_from_the_sample(use_sde: bool) -> None:
    hp = get_hparams("ppo_pendulum", f"n_steps=4,num_envs=2,batch_size=4,log_std_init=1.0,use_sde={use_sde}")
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    obs = np.ones((2, 3), np.float32)  # not zeros: gSDE's noise is a function of the features, 0 at 0
    actions, extras = agent.act(np.repeat(obs, 50, axis=0))
    assert (np.abs(actions) <= 2.0).all()
    assert (np.abs(extras["unclipped_action"]) > 2.0).any()
    np.testing.assert_array_equal(np.clip(extras["unclipped_action"], -2.0, 2.0), actions)
    greedy, _ = agent.act(obs, explore=False)
    assert greedy.shape == (2, 1)
    no = np.array([False, False])
    for _ in range(4):
        actions, extras = agent.act(obs)
        agent.observe(obs, actions, np.ones(2), obs, no, no, extras)
    np.testing.assert_array_equal(agent.buffer.arrays["action"][-1], extras["unclipped_action"])
    assert "losses/entropy" in agent.update()


def test_a_rollout_that_does_not_split_into_minibatches_is_refused() -> None:
    with pytest.raises(UserError, match="batch_size"):
        cartpole_agent("ppo_cartpole", "n_steps=10,num_envs=3,batch_size=7")
