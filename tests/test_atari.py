"""Atari: the preprocessed envs (evaluation and training), the Nature CNN on numpy and TF, dqn_pong end to end,
impala_pong's learner on pixels."""

import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkube.errors import UserError
from rlkube.rl import atari, devices
from rlkube.rl.agents import make_agent
from rlkube.rl.agents.compiled import convolution_dtype
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.envs import check_env_name, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps, QNetwork, conv2d_numpy, param_leaves
from tests.conftest import run_rlkube
from tests.test_agents import run_steps

FRAMES = (84, 84, 4)
LEARNING_TAGS = ("losses/td_loss", "losses/q_values")


def logged(copy_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Each TensorBoard scalar's (step, value) pairs."""
    events = EventAccumulator(str(copy_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


def random_steps(env, steps: int, seed: int) -> Iterator[tuple]:
    """`steps` seeded random actions, resetting where an episode ends."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        result = env.step(int(rng.integers(env.action_space.n)))
        yield result
        if result[2] or result[3]:
            env.reset()


def test_evaluation_and_training_envs_give_stacked_uint8_frames() -> None:
    env = make_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == FRAMES
    assert env.observation_space.dtype == np.uint8
    assert obs.shape == FRAMES
    assert obs.dtype == np.uint8

    envs = make_vector_env("ALE/Pong-v5", 2)
    obs, _ = envs.reset(seed=0)
    next_obs = envs.step(np.array([0, 1]))[0]
    assert obs.shape == next_obs.shape == (2, *FRAMES)
    assert obs.dtype == next_obs.dtype == np.uint8


def test_the_newest_frame_lands_in_the_last_channel_and_older_ones_shift_down() -> None:
    env = make_env("ALE/Pong-v5")
    previous, _ = env.reset(seed=0)
    # A new game's stack repeats its first frame.
    assert all(np.array_equal(previous[..., k], previous[..., 0]) for k in range(4))
    newest_changed = 0
    for obs, *_ in random_steps(env, 60, seed=0):
        np.testing.assert_array_equal(obs[..., :3], previous[..., 1:])
        newest_changed += not np.array_equal(obs[..., 3], previous[..., 3])
        previous = obs
    assert newest_changed > 30  # the ball and paddles move


def test_training_clips_rewards_and_ends_episodes_at_each_lost_life_evaluation_does_not() -> None:
    # Space Invaders: 3 lives, and invaders are worth 5 to 30 points.
    train_env = make_env("ALE/SpaceInvaders-v5", training=True)
    train_env.reset(seed=0)
    lives = train_env.unwrapped.ale.lives()
    train_rewards = []
    for _, reward, terminated, truncated, _ in random_steps(train_env, 5_000, seed=0):
        train_rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated
    assert 0 < train_env.unwrapped.ale.lives() == lives - 1
    train_env.reset()
    assert train_env.unwrapped.ale.lives() == lives - 1, "reset after a lost life must continue the game"
    assert set(train_rewards) <= {-1.0, 0.0, 1.0}
    assert 1.0 in train_rewards

    eval_env = make_env("ALE/SpaceInvaders-v5")
    eval_env.reset(seed=0)
    eval_rewards = []
    for _, reward, terminated, truncated, _ in random_steps(eval_env, 20_000, seed=0):
        eval_rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated
    assert eval_env.unwrapped.ale.lives() == 0, "evaluation episodes are whole games"
    assert max(eval_rewards) > 1.0, "evaluation sees the real score"


def test_a_pickled_training_env_continues_the_same_game_exactly() -> None:
    """Checkpoints pickle sync vector envs; sticky actions and emulator state must survive."""
    envs = make_vector_env("ALE/SpaceInvaders-v5", 2)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        envs.step(rng.integers(6, size=2))
    resumed = pickle.loads(pickle.dumps(envs))
    for _ in range(300):
        actions = rng.integers(6, size=2)
        mine, theirs = envs.step(actions), resumed.step(actions)
        for a, b in zip(mine[:4], theirs[:4], strict=True):
            np.testing.assert_array_equal(a, b)


def test_atari_names_are_checked_with_close_matches() -> None:
    check_env_name("ALE/Breakout-v5")
    check_env_name("BreakoutNoFrameskip-v4")
    with pytest.raises(UserError, match="ALE/Pong-v5"):
        check_env_name("ALE/Pogn-v5")


def test_a_missing_atari_extra_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atari, "register_ale_ids", lambda: False)
    check_env_name("ALE/Pong-v5")  # submitting from a machine without ale-py: the run's image judges the name
    with pytest.raises(UserError, match=r"pip install 'rlkube\[atari\]'"):
        make_env("ALE/Pong-v5")


@pytest.mark.parametrize(("shape", "kernel_size", "stride"), [((2, 84, 84, 4), 8, 4), ((3, 20, 20, 32), 4, 2),
                                                             ((1, 9, 9, 64), 3, 1), ((2, 11, 13, 3), 5, 3)])
def test_numpy_convolution_matches_tensorflows(shape: tuple[int, ...], kernel_size: int, stride: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((kernel_size, kernel_size, shape[-1], 7)).astype(np.float32)
    expected = TFOps.conv2d(tf.constant(x), tf.constant(kernel), stride).numpy()
    np.testing.assert_allclose(conv2d_numpy(x, kernel, stride), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("noisy", [False, True], ids=["plain", "noisy-dueling"])
def test_nature_cnn_q_values_agree_on_numpy_and_tensorflow(noisy: bool) -> None:
    network = QNetwork("nature_cnn", FRAMES, 6, (512,), dueling=noisy, noisy=noisy)
    params = network.initial_params(0)
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, (5, *FRAMES), dtype=np.uint8)
    noise = network.noise_numpy(rng)
    on_numpy = network.forward(params, obs, NumpyOps, noise=noise)
    tf_params = tf.nest.map_structure(tf.constant, params)
    tf_noise = tf.nest.map_structure(tf.constant, noise) if noisy else None
    compiled = tf.function(lambda o: network.forward(tf_params, o, TFOps, noise=tf_noise), jit_compile=True)
    for on_tf in (network.forward(tf_params, tf.constant(obs), TFOps, noise=tf_noise), compiled(tf.constant(obs))):
        np.testing.assert_allclose(on_numpy, on_tf.numpy(), rtol=1e-4, atol=1e-6)
    assert on_numpy.shape == (5, 6)
    assert np.ptp(on_numpy, axis=0).max() > 0, "different frames must give different Q-values"


def test_nature_cnn_in_bfloat16_differs_from_float32_only_by_bfloat16s_rounding() -> None:
    network = QNetwork("nature_cnn", FRAMES, 6, (512,))
    params = tf.nest.map_structure(tf.constant, network.initial_params(0))
    obs = tf.constant(np.random.default_rng(1).integers(0, 256, (5, *FRAMES), dtype=np.uint8))
    full = network.forward(params, obs, TFOps).numpy()
    low = network.forward(params, obs, TFOps, hidden_dtype=tf.bfloat16)
    assert low.dtype == tf.float32  # the heads, and so the losses, stay float32
    assert not np.array_equal(low.numpy(), full)
    np.testing.assert_allclose(low.numpy(), full, rtol=0.02, atol=0.02 * np.abs(full).max())


@pytest.mark.parametrize(("hparams", "dot_products", "expected"), [
    ("dqn_pong", True, tf.bfloat16), ("dqn_pong", False, None), ("ppo_pong", True, tf.bfloat16),
    ("ppo_pong", False, None), ("dqn_cartpole", True, None),  # dense torsos keep float32
])
def test_auto_precision_convolves_in_bfloat16_only_on_a_cpu_with_bfloat16_dot_products(
        monkeypatch: pytest.MonkeyPatch, hparams: str, dot_products: bool, expected: tf.DType | None) -> None:
    # Whether this machine's CPU has them is fixed, so the probe is replaced to see both answers.
    monkeypatch.setattr(devices, "bfloat16_dot_products", lambda: dot_products)
    strategy = tf.distribute.get_strategy()
    assert convolution_dtype(get_hparams(hparams), strategy) == expected
    assert convolution_dtype(get_hparams(hparams, "matmul_precision=float32"), strategy) is None


def test_nature_cnn_rejects_flat_observations() -> None:
    with pytest.raises(UserError, match="image observations"):
        QNetwork("nature_cnn", (4,), 2, (512,))


def test_replay_stores_each_uint8_frame_once_and_samples_the_stacks_added() -> None:
    env = make_env("ALE/Pong-v5")
    hp = get_hparams("dqn_pong", "memory_size=64,batch_size=8")
    agent = make_agent(hp, env.observation_space, env.action_space, seed=0)
    obs, _ = env.reset(seed=0)
    stored = []
    for next_obs, reward, terminated, truncated, _ in random_steps(env, 40, seed=0):
        agent.observe(obs[None], np.array([1]), np.array([reward]), next_obs[None], np.array([terminated]),
                      np.array([truncated]), {})
        stored.append((obs, next_obs))
        obs = next_obs
    batch = agent.memory.sample(8, 2)
    assert batch["obs"].dtype == batch["next_obs"].dtype == np.uint8
    for row, index in enumerate(batch["indices"].ravel()):
        np.testing.assert_array_equal(batch["obs"].reshape(16, *obs.shape)[row], stored[index][0])
        np.testing.assert_array_equal(batch["next_obs"].reshape(16, *obs.shape)[row], stored[index][1])
    # The first stack's 4 frames, then one new frame a step: not 8 frames a transition.
    assert agent.memory.observations.used == 4 + 40


SMOKE = ("memory_size=2000,learning_starts=500,train_freq=50,batch_size=16,target_update_period=100,"
         "eval_every=1500,checkpoint_every=1500,log_every=100")


def test_dqn_pong_starts_learning_through_the_cli(tmp_path: Path) -> None:
    """A short dqn_pong run: losses logged and moving, a checkpoint, an evaluation of a whole game."""
    result = run_rlkube("train", "--hparams", "dqn_pong", "--hparam-override", SMOKE, "--train-steps", "1500",
                        "--eval-episodes", "1", "--test-episodes", "0", "--output-dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    copy_dir = tmp_path / "copy-0"
    assert (copy_dir / "checkpoints" / "ckpt-1500" / "state.pkl").is_file()
    evaluation = json.loads((copy_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert evaluation["step"] == 1500
    assert -21 <= evaluation["mean_return"] <= 21

    scalars = logged(copy_dir, LEARNING_TAGS)
    steps = [step for step, _ in scalars["losses/td_loss"]]
    losses, q_values = ([value for _, value in scalars[tag]] for tag in LEARNING_TAGS)
    assert len(losses) >= 5
    assert all(math.isfinite(v) for v in losses + q_values)
    assert len(set(q_values)) == len(q_values), "Q-values must move as the network learns"
    assert min(steps) > 500, "no learning before learning_starts"


def test_impala_pong_learns_from_rollouts_of_stacked_frames() -> None:
    """impala_pong as set (Nature CNN, shared torso), on two envs of the ALE pipeline: two rollouts, two updates."""
    hp = get_hparams("impala_pong", "num_envs=2,n_steps=8,vector_mode=sync")
    env, envs = make_env(hp.env), make_vector_env(hp.env, hp.num_envs, hp.vector_mode)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    initial = [leaf.copy() for leaf in param_leaves(agent.policy.params)]
    learned = run_steps(agent, envs, envs.reset(seed=0)[0], 2 * hp.n_steps)[1]
    assert len(learned) == 2
    assert all(math.isfinite(value) for metrics in learned for value in metrics.values()), learned
    assert learned[0]["charts/policy_lag"] == 0
    assert any(not np.array_equal(now, before) for now, before in zip(param_leaves(agent.policy.params), initial,
                                                                      strict=True))


@pytest.mark.full
def test_dqn_pong_resumed_from_a_checkpoint_continues_mid_game_exactly(tmp_path: Path) -> None:
    """Straight to 1000 steps, or to 500 then resumed: the same losses, Q-values and episode returns.

    On the ALE pipeline (vector_mode=sync), whose envs a checkpoint holds; envpool's restart their episodes
    (tests/test_envpool.py)."""
    overrides = ("vector_mode=sync,memory_size=2000,learning_starts=300,train_freq=50,batch_size=8,"
                 "target_update_period=100,checkpoint_every=500,log_every=50,epsilon_start=0.2,epsilon_end=0.2")
    common = ("train", "--hparams", "dqn_pong", "--hparam-override", overrides, "--eval-episodes", "0",
              "--test-episodes", "0")
    for steps, run_dir in (("1000", "straight"), ("500", "resumed"), ("1000", "resumed")):
        result = run_rlkube(*common, "--train-steps", steps, "--output-dir", str(tmp_path / run_dir), timeout=300)
        assert result.returncode == 0, result.stderr
    tags = (*LEARNING_TAGS, "charts/episodic_return")
    straight, resumed = (logged(tmp_path / run_dir / "copy-0", tags) for run_dir in ("straight", "resumed"))
    assert any(step > 500 for step, _ in straight["losses/td_loss"])
    assert straight == resumed
