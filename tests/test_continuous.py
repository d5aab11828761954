"""DDPG, TD3 and SAC piece by piece: the squashed Gaussian, gSDE, exploration noise, target smoothing, prioritized
replay."""

import copy
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl import devices
from rlkube.rl.agents import make_agent
from rlkube.rl.agents.compiled import hidden_dtype
from rlkube.rl.agents.fused import Adam, polyak
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import SDE_EPSILON, SquashedGaussian, SquashedStateDependentNoise
from rlkube.rl.hparams import get_hparams
from rlkube.rl.hparams.continuous import ContinuousControlHParams
from rlkube.rl.networks import NumpyOps, param_leaves
from rlkube.rl.policies.continuous import BoxScale, OrnsteinUhlenbeckNoise

SMALL = ContinuousControlHParams.smoke_overrides
PENDULUM_SETS = ["ddpg_pendulum", "td3_pendulum", "sac_pendulum"]


def run_steps(agent, env, obs, steps: int) -> tuple[np.ndarray, list[dict[str, float]]]:
    """The runner's loop for `steps` steps; returns the last observation and what each update reported."""
    reports = []
    for _ in range(steps):
        actions, extras = agent.act(obs[None])
        next_obs, reward, terminated, truncated, _ = env.step(actions[0])
        agent.observe(obs[None], actions, np.array([reward]), next_obs[None], np.array([terminated]),
                      np.array([truncated]), extras)
        if learned := agent.update():
            reports.append(learned)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return obs, reports


def trained_agent(name: str, overrides: str = SMALL, seed: int = 0, steps: int = 120):
    hp = get_hparams(name, overrides)
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, seed)
    obs, reports = run_steps(agent, env, env.reset(seed=seed)[0], steps)
    return agent, env, obs, reports


# -- the squashed Gaussian --------------------------------------------------------------------------

def test_squashed_gaussian_log_prob_matches_the_change_of_variables_on_numpy_and_tensorflow() -> None:
    rng = np.random.default_rng(0)
    mean = rng.normal(0.0, 1.5, (64, 3))
    log_std = rng.uniform(-2.0, 0.5, (64, 3))
    noise = rng.standard_normal((64, 3))
    pre_tanh = mean + np.exp(log_std) * noise
    # log N(u; mean, std) - log |d tanh(u) / du|, term by term in float64.
    std = np.exp(log_std)
    expected = (-0.5 * ((pre_tanh - mean) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi))
                - np.log(1.0 - np.tanh(pre_tanh) ** 2)).sum(axis=-1)
    on_numpy = SquashedGaussian.log_prob(noise, log_std, pre_tanh, NumpyOps)
    on_tf = SquashedGaussian.log_prob(*(tf.constant(x, tf.float32) for x in (noise, log_std, pre_tanh)), TFOps)
    np.testing.assert_allclose(on_numpy, expected, rtol=1e-9)
    np.testing.assert_allclose(on_tf.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_squashed_gaussian_density_integrates_to_one_and_matches_samples() -> None:
    mean, log_std = 0.7, math.log(0.8)
    actions = np.linspace(-1.0, 1.0, 200_001)[1:-1]
    pre_tanh = np.arctanh(actions)
    noise = (pre_tanh - mean) / math.exp(log_std)
    density = np.exp(SquashedGaussian.log_prob(noise[:, None], np.full((len(actions), 1), log_std),
                                               pre_tanh[:, None], NumpyOps))
    step = actions[1] - actions[0]
    assert density.sum() * step == pytest.approx(1.0, abs=1e-3)
    samples = np.tanh(mean + math.exp(log_std) * np.random.default_rng(1).standard_normal(400_000))
    assert (actions * density).sum() * step == pytest.approx(samples.mean(), abs=3e-3)


def test_squashed_gaussian_log_prob_stays_finite_where_tanh_saturates() -> None:
    pre_tanh = np.array([[30.0], [-30.0]], np.float32)
    log_prob = SquashedGaussian.log_prob(np.zeros_like(pre_tanh), np.zeros_like(pre_tanh), pre_tanh, NumpyOps)
    # log(1 - tanh(u)^2) ~ log 4 - 2|u| for large |u|; the naive formula gives log(0) here.
    expected = -0.5 * math.log(2 * math.pi) - (math.log(4.0) - 60.0)
    np.testing.assert_allclose(log_prob, [expected, expected], rtol=1e-5)


# -- gSDE ------------------------------------------------------------------------------------------

def test_gsde_log_prob_is_the_gaussian_of_its_noise_through_the_tanh_on_numpy_and_tensorflow() -> None:
    """Given the features, u = mean + latent @ M with M's entries N(0, std^2) is N(mean, latent^2 @ std^2): checked
    against samples of M, and the log-probability against the change of variables in float64, on both ops."""
    rng = np.random.default_rng(0)
    sde = SquashedStateDependentNoise(2)
    latent = rng.uniform(0.0, 2.0, (5, 4))
    log_std = rng.uniform(-1.5, 0.0, (4, 2))
    mean = rng.normal(0.0, 0.5, (5, 2))
    variance = (latent ** 2) @ np.exp(2 * log_std) + SDE_EPSILON
    draws = np.stack([sde.sample(mean, latent, log_std, rng.standard_normal((4, 2)), NumpyOps)[1]
                      for _ in range(40_000)])
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(draws.var(axis=0), variance, rtol=0.05)

    pre_tanh = draws[0]
    expected = (-0.5 * (pre_tanh - mean) ** 2 / variance - 0.5 * np.log(2 * math.pi * variance)
                - np.log(1.0 - np.tanh(pre_tanh) ** 2)).sum(axis=-1)
    np.testing.assert_allclose(sde.log_prob(pre_tanh, mean, latent, log_std, NumpyOps), expected, rtol=1e-9)
    on_tf = sde.log_prob(*(tf.constant(x, tf.float32) for x in (pre_tanh, mean, latent, log_std)), TFOps)
    np.testing.assert_allclose(on_tf.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "overrides"), [("sac_mountaincar_continuous", "learning_starts=0"),
                                                 ("ppo_pendulum", "log_std_init=-1")])
def test_gsde_actions_are_a_function_of_the_state_until_new_matrices_are_drawn(name: str, overrides: str) -> None:
    """Each environment keeps its exploration matrix for sample_every steps: the same observation gets the same
    action meanwhile, environments explore differently, and the next draw changes the action."""
    sample_every = 4
    hp = get_hparams(name, f"{overrides},sde_sample_freq={sample_every}")
    assert hp.use_sde
    agent = make_agent(hp, *spaces(hp.env), seed=0)
    obs = np.repeat(agent_obs(hp.env), 2, axis=0)
    held = [agent.act(obs)[0] for _ in range(sample_every)]
    for actions in held[1:]:
        np.testing.assert_array_equal(actions, held[0])
    assert held[0][0] != held[0][1]  # each environment its own matrix
    assert not np.array_equal(agent.act(obs)[0], held[0])
    greedy = agent.act(obs, explore=False)[0]
    np.testing.assert_array_equal(greedy[0], greedy[1])  # evaluation: tanh of the mean, no matrix


def test_gsde_learns_its_exploration_scale_and_numpy_acting_matches_the_learner() -> None:
    agent, *_ = trained_agent("sac_mountaincar_continuous", f"{SMALL},log_std_init=-2")
    log_std = agent.actor_vars["log_std"].numpy()
    assert log_std.shape == (32, 1)
    assert not np.allclose(log_std, -2.0), "the exploration scale never learned"
    np.testing.assert_array_equal(agent.policy.params["log_std"], log_std)
    obs = np.random.default_rng(0).uniform(-1.0, 0.5, (8, 2)).astype(np.float32)
    outputs = agent.actor.forward(agent.actor_vars, tf.constant(obs), TFOps).numpy()
    np.testing.assert_allclose(agent.act(obs, explore=False)[0],
                               agent.scale.to_env(np.tanh(np.clip(outputs, -2.0, 2.0))), rtol=1e-5, atol=1e-6)


def test_ppo_gsde_acts_as_the_diagonal_gaussian_it_learns_from() -> None:
    """PPO's actions latent @ M with M's entries N(0, exp(log_std)^2) are distributed as the Gaussian whose
    log-probability the learner takes (per-row log-std from the features), and acting records that log-prob."""
    hp = get_hparams("ppo_pendulum", "log_std_init=-0.5")
    agent = make_agent(hp, *spaces(hp.env), seed=0)
    policy = agent.policy
    obs = agent_obs(hp.env)
    (mean, row_log_std), _, _ = agent.network.forward_with_features(policy.params, obs, NumpyOps)
    on_tf = agent.network.policy(agent.layout.unflatten(agent.params, TFOps), tf.constant(obs), TFOps)
    np.testing.assert_allclose(on_tf[1].numpy(), row_log_std, rtol=1e-5)
    unclipped = []
    for _ in range(4000):
        policy.exploration.matrices = None  # a new matrix each time: many draws of the noise at one state
        _, extras = policy.act(obs, True, 0)
        unclipped.append(extras["unclipped_action"][0])
    np.testing.assert_allclose(extras["log_prob"], agent.network.distribution.log_prob(
        (mean, row_log_std), extras["unclipped_action"], NumpyOps), rtol=1e-5)
    np.testing.assert_allclose(np.mean(unclipped, axis=0), mean[0], atol=0.05 * np.exp(row_log_std[0, 0]))
    np.testing.assert_allclose(np.std(unclipped, axis=0), np.exp(row_log_std[0]), rtol=0.05)


def test_gsde_needs_continuous_actions() -> None:
    hp = get_hparams("ppo_cartpole", "use_sde=true")
    with pytest.raises(UserError, match="use_sde explores continuous actions; env 'CartPole-v1' has Discrete"):
        make_agent(hp, *spaces(hp.env), seed=0)


def spaces(env_name: str) -> tuple[gym.Space, gym.Space]:
    env = gym.make(env_name)
    return env.observation_space, env.action_space


def agent_obs(env_name: str) -> np.ndarray:
    """One observation of the env, as a batch of one."""
    return gym.make(env_name).reset(seed=0)[0][None].astype(np.float32)


# -- exploration noise ------------------------------------------------------------------------------

def test_ornstein_uhlenbeck_noise_has_its_stationary_variance_and_correlation() -> None:
    std, theta, dt = 0.5, 0.15, 0.01
    noise = OrnsteinUhlenbeckNoise(std, theta, dt)
    rng = np.random.default_rng(0)
    decay = 1.0 - theta * dt
    for _ in range(3_000):  # many times 1 / (theta dt) steps: the start is forgotten
        noise.sample((4_000, 1), rng)
    before = noise.state.copy()
    after = noise.sample((4_000, 1), rng)
    stationary_variance = std**2 * dt / (1.0 - decay**2)
    assert after.mean() == pytest.approx(0.0, abs=4 * math.sqrt(stationary_variance / 4_000))
    assert after.var() == pytest.approx(stationary_variance, rel=0.08)
    assert np.corrcoef(before[:, 0], after[:, 0])[0, 1] == pytest.approx(decay, abs=0.01)


def test_ornstein_uhlenbeck_noise_restarts_only_the_rows_whose_episode_ended() -> None:
    noise = OrnsteinUhlenbeckNoise(0.5, 0.15, 0.01)
    rng = np.random.default_rng(0)
    for _ in range(10):
        noise.sample((3, 2), rng)
    kept = noise.state.copy()
    noise.reset(np.array([False, True, False]))
    np.testing.assert_array_equal(noise.state[1], 0.0)
    np.testing.assert_array_equal(noise.state[[0, 2]], kept[[0, 2]])


def test_agent_restarts_the_noise_of_environments_whose_episode_ended() -> None:
    hp = get_hparams("ddpg_mountaincar_continuous", SMALL)
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    agent.steps = hp.learning_starts  # past the random actions, so the noise runs
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    actions, extras = agent.act(obs)
    noise_before = agent.policy.noise.state.copy()
    assert np.all(noise_before != 0.0)
    agent.observe(obs, actions, np.zeros(3), obs, np.array([False, True, False]), np.array([False, False, True]),
                  extras)
    np.testing.assert_array_equal(agent.policy.noise.state[1:], 0.0)
    np.testing.assert_array_equal(agent.policy.noise.state[0], noise_before[0])


# -- acting -----------------------------------------------------------------------------------------

def test_box_scale_maps_unit_actions_onto_the_bounds_and_back() -> None:
    scale = BoxScale(np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    unit = np.array([[-1.0, -1.0], [0.0, 0.5], [1.0, 1.0]], np.float32)
    np.testing.assert_allclose(scale.to_env(unit), [[-2.0, 0.0], [0.0, 7.5], [2.0, 10.0]])
    np.testing.assert_allclose(scale.to_unit(scale.to_env(unit)), unit, atol=1e-6)


@pytest.mark.parametrize("name", PENDULUM_SETS)
def test_actions_are_uniform_before_learning_starts_and_then_the_actors(name: str) -> None:
    hp = get_hparams(name, SMALL)
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    obs = np.zeros((5_000, 3), np.float32)
    random_actions, _ = agent.act(obs)
    assert random_actions.min() < -1.9
    assert random_actions.max() > 1.9
    assert abs(random_actions.mean()) < 0.1
    agent.steps = hp.learning_starts
    greedy, _ = agent.act(obs[:2], explore=False)
    np.testing.assert_array_equal(greedy[0], greedy[1])  # one observation, one deterministic action
    explored, _ = agent.act(obs)
    if hp.agent == "ddpg":  # Gaussian noise around the actor's action, std 0.1 of the half-range
        assert (explored - greedy[0]).std() == pytest.approx(2.0 * hp.action_noise_std, rel=0.1)
    else:  # a sample from the squashed Gaussian
        assert len(np.unique(explored)) > 4_000


# -- learning ---------------------------------------------------------------------------------------

def test_td3_target_smoothing_noise_is_clipped() -> None:
    hp = get_hparams("td3_pendulum", SMALL + ",target_policy_noise=5.0,target_noise_clip=0.3")
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    next_obs = tf.constant(np.random.default_rng(0).normal(size=(1_000, 3)), tf.float32)
    plain = agent.policy_actions(agent.target_actor_vars, next_obs).numpy()
    smoothed = agent.target_actions(next_obs).numpy()
    shift = smoothed - plain
    assert np.all(np.abs(shift) <= 0.3 + 1e-6)
    inside = np.abs(plain) < 0.7  # where clipping to [-1, 1] cannot interfere
    # With std 5 nearly every draw is beyond the clip, so the shift is +-0.3 but for a few.
    assert np.mean(np.isclose(np.abs(shift[inside]), 0.3, atol=1e-6)) > 0.9
    assert np.all(np.abs(smoothed) <= 1.0)


@pytest.mark.parametrize("name", PENDULUM_SETS)
def test_zero_importance_weight_removes_a_samples_influence(name: str) -> None:
    """A prioritized batch's IS weights scale each sample's critic loss: weight 0, no influence at all."""
    agent, *_ = trained_agent(name, SMALL + ",memory=prioritized")
    start = agent.state_dict()
    batch = agent.memory.sample(agent.hp.batch_size, 1, beta=0.4)
    batch["weights"][0, 0] = 0.0

    def variables_after(reward_of_first: float) -> list[np.ndarray]:
        agent.load_state_dict(start)
        changed = copy.deepcopy(batch)
        changed["reward"][0, 0] = reward_of_first
        agent._learn_on(changed)
        state = agent.state_dict()
        return [leaf for group in ("params", "optimizers", "counters") for leaf in param_leaves(state[group])]

    for mine, theirs in zip(variables_after(0.0), variables_after(1_000.0), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    batch["weights"][0, 0] = 1.0
    assert any(not np.array_equal(a, b) for a, b in zip(variables_after(0.0), variables_after(1_000.0), strict=True))


@pytest.mark.parametrize("name", PENDULUM_SETS)
def test_priorities_become_the_critics_td_errors_after_each_gradient_step(name: str) -> None:
    agent, env, obs, _ = trained_agent(name, SMALL + ",memory=prioritized")
    memory, calls = agent.memory, []
    update_priorities = memory.update_priorities
    memory.update_priorities = lambda indices, td_errors: (calls.append((indices.copy(), td_errors.copy())),
                                                           update_priorities(indices, td_errors))
    run_steps(agent, env, obs, 1)
    assert len(calls) == 1
    indices, td_errors = calls[0]
    assert td_errors.shape == (1, agent.hp.batch_size)
    assert np.all(td_errors >= 0)
    assert np.any(td_errors > 0)
    last = {int(i): float(e) for i, e in zip(indices.ravel(), td_errors.ravel(), strict=True)}  # repeats: last wins
    expected = (np.array(list(last.values())) + agent.hp.per_epsilon) ** agent.hp.per_alpha
    np.testing.assert_allclose(memory.sums[np.array(list(last))], expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["sac_halfcheetah", "td3_halfcheetah"])
def test_halfcheetah_sets_learn_from_float64_mujoco_observations(name: str) -> None:
    agent, *_, reports = trained_agent(name, SMALL.replace("memory_size=500", "memory_size=200"), steps=60)
    assert reports
    assert all(np.isfinite(value) for report in reports for value in report.values())
    assert agent.memory.observations.obs.dtype == np.float64  # stored as the env gives it, cast inside the graph


# -- what the user can get wrong ----------------------------------------------------------------------

def test_continuous_agents_reject_unbounded_action_spaces() -> None:
    hp = get_hparams("sac_pendulum", SMALL)
    unbounded = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    with pytest.raises(UserError, match="needs a bounded Box action space"):
        make_agent(hp, gym.spaces.Box(-1.0, 1.0, (3,), np.float32), unbounded, 0)


def test_a_mujoco_env_without_mujoco_is_a_one_line_user_error() -> None:
    script = ("import sys; sys.modules['mujoco'] = None\n"
              "from rlkube.rl.envs import make_env\n"
              "from rlkube.errors import UserError\n"
              "try:\n    make_env('HalfCheetah-v5')\nexcept UserError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    message = result.stdout.strip()
    assert message.startswith("env 'HalfCheetah-v5' needs an extra")
    assert "mujoco" in message
    assert "\n" not in message


# -- matmul precision --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PENDULUM_SETS)
def test_bfloat16_hidden_layers_stay_within_a_percent_of_float32(name: str) -> None:
    """bfloat16 changes the numbers (so the switch is wired) but only by bfloat16's rounding.

    Learning with it is what tests/test_learning.py checks: on a CPU with AMX its Pendulum runs use it.
    """
    agent = trained_agent(name, f"{SMALL},matmul_precision=bfloat16")[0]
    batch = agent.memory.sample(64)
    obs, action = tf.constant(batch["obs"][0]), tf.constant(batch["action"][0])

    def outputs() -> tuple[np.ndarray, np.ndarray]:
        return (agent.critic_values(agent.critic_vars, obs, action).numpy(),
                agent.actor_output(agent.actor_vars, obs).numpy())

    assert agent.hidden_dtype == tf.bfloat16
    in_bfloat16 = outputs()
    agent.hidden_dtype = None
    for low, full in zip(in_bfloat16, outputs(), strict=True):
        assert not np.array_equal(low, full)
        np.testing.assert_allclose(low, full, rtol=0.01, atol=0.01 * np.abs(full).max())


@pytest.mark.parametrize(("matrix_unit", "expected"), [(True, tf.bfloat16), (False, tf.float32)])
def test_auto_precision_is_bfloat16_only_on_a_cpu_with_a_bfloat16_matrix_unit(monkeypatch, matrix_unit: bool,
                                                                              expected: tf.DType) -> None:
    # Whether this machine's CPU has AMX is fixed, so the probe is replaced to see both answers.
    monkeypatch.setattr(devices, "bfloat16_matrix_unit", lambda: matrix_unit)
    strategy = tf.distribute.get_strategy()
    assert hidden_dtype("auto", strategy) == expected
    assert hidden_dtype("float32", strategy) == tf.float32
    assert hidden_dtype("bfloat16", strategy) == tf.bfloat16


# -- fused updates -----------------------------------------------------------------------------------

def pytorch_adam(start: np.ndarray, gradients: list[np.ndarray], lr: float, epsilon: float) -> np.ndarray:
    """torch.optim.Adam's update, written out: epsilon joins the bias-corrected second moment's root."""
    value, m, v = start.astype(np.float64), np.zeros_like(start, np.float64), np.zeros_like(start, np.float64)
    for t, gradient in enumerate(gradients, start=1):
        m = 0.9 * m + 0.1 * gradient
        v = 0.999 * v + 0.001 * gradient**2
        value = value - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + epsilon)
    return value


def test_fused_adam_takes_pytorchs_steps_epsilon_placement_included() -> None:
    """Gradients small next to epsilon, where the placement matters: Keras's Adam takes other steps."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    gradients = [(1e-3 * rng.normal(size=start.shape)).astype(np.float32) for _ in range(5)]
    fused_var, keras_var = tf.Variable(start), tf.Variable(start)
    fused, keras = Adam([fused_var], 1e-2, epsilon=1e-3), tf.keras.optimizers.Adam(1e-2, epsilon=1e-3)
    for gradient in gradients:
        fused.apply([tf.constant(gradient)], [fused_var])
        keras.apply_gradients([(tf.constant(gradient), keras_var)])
    expected = pytorch_adam(start, gradients, 1e-2, 1e-3)
    np.testing.assert_allclose(fused_var.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(keras_var.numpy() - expected).max() > 1e-3


def test_polyak_moves_each_target_tau_of_the_way_to_its_source() -> None:
    target, source = tf.Variable([0.0, 10.0]), tf.Variable([1.0, 0.0])
    polyak([target], [source], 0.25)
    np.testing.assert_allclose(target.numpy(), [0.25, 7.5])
