"""WaitingCartPole-v1, the env whose steps wait (benchmarks/actor_scaling.py): CartPole's, 10 ms later."""

import time

import numpy as np

from rlkube.rl.envs import STEP_WAIT_SECONDS, WAITING_CARTPOLE, make_env, make_vector_env


def test_a_waiting_env_steps_as_cartpole_only_later() -> None:
    waiting, plain = make_env(WAITING_CARTPOLE), make_env("CartPole-v1")
    assert (waiting.observation_space, waiting.action_space) == (plain.observation_space, plain.action_space)
    np.testing.assert_array_equal(waiting.reset(seed=3)[0], plain.reset(seed=3)[0])
    started = time.perf_counter()
    for action in (0, 1, 1, 0, 1):
        np.testing.assert_array_equal(waiting.step(action)[0], plain.step(action)[0])
    assert time.perf_counter() - started >= 5 * STEP_WAIT_SECONDS


def test_a_vector_of_waiting_envs_waits_for_each_in_turn() -> None:
    """An actor's envs step one after another: 4 envs, 4 waits a step, so 100 steps/s per actor whatever the
    number of envs."""
    envs = make_vector_env(WAITING_CARTPOLE, 4)
    envs.reset(seed=0)
    started = time.perf_counter()
    envs.step(np.zeros(4, dtype=np.int64))
    assert time.perf_counter() - started >= 4 * STEP_WAIT_SECONDS
