"""envpool as the Atari training backend (vector_mode=envpool): the ALE pipeline's observations and semantics,
a fallback where envpool is missing, and resume at episode boundaries."""

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlkube.errors import UserError
from rlkube.rl import atari, atari_envpool
from rlkube.rl.envs import check_env_fits, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.run.runner import Runner, RunOptions
from rlkube.rundir import checkpoint
from tests.test_resume import assert_same_state

needs_envpool = pytest.mark.skipif(not atari_envpool.installed(),
                                   reason="envpool is not installed (pip install 'rlkube[envpool]')")
BACKENDS = ("sync", "envpool")  # the ALE pipeline in process, and envpool


def random_actions(envs: gym.vector.VectorEnv, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(envs.single_action_space.n, size=envs.num_envs) for _ in range(steps)]


def new_game(stack: np.ndarray) -> bool:
    """A game's first observation repeats its first frame in every slot of the stack."""
    return all(np.array_equal(stack[..., k], stack[..., 0]) for k in range(1, atari.FRAME_STACK))


@needs_envpool
def test_without_sticky_actions_envpool_gives_the_ale_pipelines_observations_bit_for_bit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical observations, rewards and episode ends for one seeded action sequence.

    The two align where nothing random is left: NoFrameskip-v4 has no sticky actions, and NOOP_MAX=1 makes
    every game start with exactly one no-op frame. Pong has no lives, so episodic lives play no part.
    """
    monkeypatch.setattr(atari, "NOOP_MAX", 1)
    ale, pool = (make_vector_env("PongNoFrameskip-v4", 2, mode) for mode in BACKENDS)
    assert pool.single_observation_space == ale.single_observation_space
    assert pool.single_action_space == ale.single_action_space
    first_ale, first_pool = ale.reset(seed=0)[0], pool.reset(seed=0)[0]
    np.testing.assert_array_equal(first_pool, first_ale, strict=True)
    changed = 0
    for actions in random_actions(ale, 300, seed=0):
        on_ale, on_pool = ale.step(actions), pool.step(actions)
        for got, expected in zip(on_pool[:4], on_ale[:4], strict=True):
            np.testing.assert_array_equal(got, expected, strict=True)
        changed += not np.array_equal(on_pool[0], first_pool)
    assert changed > 250  # the ball and paddles move


@needs_envpool
def test_with_sticky_actions_and_random_no_ops_episodes_of_a_fixed_policy_match_in_statistics() -> None:
    """Statistics, not frames: with sticky actions (v5) and 1 to 30 no-op frames per game, each backend draws from
    its own random stream, so no action sequence aligns them. The fixed policy is uniform random play from one
    seed; Breakout's training episodes are single lives (~35 steps), so 8 envs give ~60 of them in seconds.
    The means of their lengths and clipped returns must agree within 3 standard errors of their difference."""
    statistics = {}
    for mode in BACKENDS:
        envs = make_vector_env("ALE/Breakout-v5", 8, mode)
        envs.reset(seed=0)
        returns, lengths = np.zeros(envs.num_envs), np.zeros(envs.num_envs)
        ended: list[tuple[float, float]] = []
        for actions in random_actions(envs, 250, seed=1):
            _, rewards, terminated, truncated, _ = envs.step(actions)
            returns, lengths = returns + rewards, lengths + 1
            done = terminated | truncated
            ended += zip(returns[done], lengths[done], strict=True)
            returns[done], lengths[done] = 0.0, 0.0
        envs.close()
        statistics[mode] = np.array(ended)
    ale, pool = statistics["sync"], statistics["envpool"]
    assert min(len(ale), len(pool)) > 40
    for column, name in enumerate(("return", "length")):
        standard_error = np.hypot(ale[:, column].std() / np.sqrt(len(ale)), pool[:, column].std() / np.sqrt(len(pool)))
        difference = abs(ale[:, column].mean() - pool[:, column].mean())
        assert difference < 3 * standard_error, f"mean {name}: {ale[:, column].mean()} against {pool[:, column].mean()}"


@needs_envpool
def test_envpool_ends_training_episodes_at_each_lost_life_clips_rewards_and_plays_the_game_on() -> None:
    # Space Invaders: 3 lives, and invaders are worth 5 to 30 points.
    envs = make_vector_env("ALE/SpaceInvaders-v5", 1, "envpool")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (1, *atari.stacked_frames().shape)
    assert obs.dtype == np.uint8
    assert new_game(obs[0])
    rewards, lives = [], [3]
    for actions in random_actions(envs, 5_000, seed=0):
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        rewards.append(float(reward[0]))
        assert not truncated[0]
        if terminated[0]:
            # SAME_STEP: the last observation of the life, then the first of the next in the same step.
            np.testing.assert_array_equal(info["final_obs"][0][..., :3], obs[0][..., 1:])
            lives.append(int(info["lives"][0]))
            if new_game(next_obs[0]):
                break  # the game is over: a new one starts
        obs = next_obs
    assert lives == [3, 2, 1, 3], "each life is an episode of the same game, until a new game starts"
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    assert 1.0 in rewards


@needs_envpool
def test_envpool_envs_cannot_be_pickled() -> None:
    """What makes envpool runs resume at episode boundaries."""
    envs = make_vector_env("ALE/Pong-v5", 1, "envpool")
    envs.reset(seed=0)
    with pytest.raises(TypeError):
        pickle.dumps(envs)


@needs_envpool
def test_a_resumed_envpool_run_restores_the_learner_exactly_and_starts_new_episodes(tmp_path: Path) -> None:
    # No gradient step (learning starts past the run's end): the envs' restart is what is checked, and the
    # learner's state is restored whole, whatever it holds.
    hp = get_hparams("dqn_pong", "num_envs=2,memory_size=256,learning_starts=1000,train_steps=64,"
                                 "checkpoint_every=32,eval_every=64,log_every=32")
    assert hp.vector_mode == "envpool"
    options = RunOptions(eval_episodes=0, test_episodes=0, live_progress=False)
    Runner(hp, tmp_path, options).run()
    saved = checkpoint.load(checkpoint.latest(tmp_path / "checkpoints"))
    assert saved["envs"] is None, "a checkpoint holds no envpool envs"

    runner = Runner(hp, tmp_path, options)
    runner._restore(saved)
    assert_same_state(runner.agent.state_dict(), saved["agent"], "agent")
    assert all(new_game(stack) for stack in runner.obs)
    assert not np.array_equal(runner.obs, saved["obs"])
    assert not runner.state.episode_returns.any()
    assert not runner.state.episode_lengths.any()


def test_vector_mode_envpool_falls_back_to_the_ale_pipeline_where_envpool_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atari_envpool, "installed", lambda: False)
    with pytest.warns(UserWarning, match=r"pip install 'rlkube\[envpool\]'.*ALE pipeline"):
        envs = make_vector_env("ALE/Pong-v5", 2, "envpool")
    assert isinstance(envs, gym.vector.SyncVectorEnv)


def test_vector_mode_envpool_on_an_env_that_is_not_atari_is_one_clear_error() -> None:
    with pytest.raises(UserError, match=r"vector_mode=envpool steps Atari ids only.*use vector_mode=sync or async"):
        check_env_fits(get_hparams("ppo_cartpole", "vector_mode=envpool"))
