"""WaitingCartPole-v1, the env whose steps wait (benchmarks/actor_scaling.py): CartPole's, on a 10 ms beat."""

import time

import numpy as np

from rlkube.rl.envs import STEP_WAIT_SECONDS, WAITING_CARTPOLE, make_env, make_vector_env


def test_a_waiting_env_plays_cartpoles_episodes_only_later() -> None:
    waiting, plain = make_env(WAITING_CARTPOLE), make_env("CartPole-v1")
    assert (waiting.observation_space, waiting.action_space) == (plain.observation_space, plain.action_space)
    np.testing.assert_array_equal(waiting.reset(seed=3)[0], plain.reset(seed=3)[0])
    started, steps, terminated = time.perf_counter(), 0, False
    while not terminated:  # always pushing left ends an episode in about ten steps
        obs, reward, terminated, truncated, _ = waiting.step(0)
        plain_obs, *plain_rest, _ = plain.step(0)
        np.testing.assert_array_equal(obs, plain_obs)
        assert [reward, terminated, truncated] == plain_rest
        steps += 1
    assert time.perf_counter() - started >= steps * STEP_WAIT_SECONDS


def test_a_vector_of_waiting_envs_steps_them_side_by_side_on_one_beat() -> None:
    """An actor steps its envs one after another, yet they run in real time together: 8 envs take one wait a step,
    not eight."""
    envs = make_vector_env(WAITING_CARTPOLE, 8)
    envs.reset(seed=0)
    started = time.perf_counter()
    for _ in range(10):
        envs.step(np.zeros(8, dtype=np.int64))
    elapsed = time.perf_counter() - started
    assert 10 * STEP_WAIT_SECONDS <= elapsed < 0.75 * 10 * 8 * STEP_WAIT_SECONDS  # one after another: 8 waits a step


def test_a_waiting_env_asked_late_catches_up_with_no_burst() -> None:
    """A step asked for after its time returns at once, and the beat starts again from then: the next step waits a
    whole beat, as a real-time simulator's would, rather than returning at once to make up for the time lost."""
    env = make_env(WAITING_CARTPOLE)
    env.reset(seed=0)
    time.sleep(3 * STEP_WAIT_SECONDS)
    env.step(0)
    started = time.perf_counter()
    env.step(0)
    assert time.perf_counter() - started >= 0.9 * STEP_WAIT_SECONDS
