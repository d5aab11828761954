"""Where Atari time goes: the emulator, the preprocessing, vector envs, the numpy CNN, and dqn_pong's learner.

    python benchmarks/atari_sps.py

Prints one JSON object. Steps per second are agent steps (4 emulator frames each) unless named frames;
vector-env rates are summed over the envs. The load average is printed with them: on a shared
machine, read the numbers against it.
"""

import json
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.rl import atari
from rlkube.rl.agents import make_agent
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps

GAME = "ALE/Pong-v5"
NUM_ENVS = 8


def per_second(run: Callable[[], object], seconds: float = 3.0) -> float:
    """Calls of `run` per second, after one warm-up call, over about `seconds`."""
    run()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        run()
        calls += 1
    return calls / elapsed


def random_stepper(env: gym.Env, seed: int = 0) -> Callable[[], None]:
    """One random step of `env` per call, resetting where an episode ends."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()

    return step


def vector_steps_per_second(mode: str) -> float:
    envs = make_vector_env(GAME, NUM_ENVS, mode)  # training envs; they reset themselves
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    try:
        return NUM_ENVS * per_second(lambda: envs.step(rng.integers(envs.single_action_space.n, size=NUM_ENVS)))
    finally:
        envs.close()


def cnn_forward_ms(agent: object, batch: int) -> float:
    obs = np.random.default_rng(0).integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8)
    network, params = agent.network, agent.policy.params
    return 1e3 / per_second(lambda: network.forward(params, obs, NumpyOps), seconds=2.0)


def gradient_step_ms(agent: object) -> dict[str, float]:
    """One gradient step (batch 32) as the agent compiles it (XLA), and as a plain TF graph for comparison."""
    batch = agent.memory.sample(agent.hp.batch_size, 1)
    args = [batch[k] for k in ("obs", "action", "reward", "next_obs", "discount", "weights")]
    graph = tf.function(agent._learn)
    return {"xla": round(1e3 / per_second(lambda: agent._learn_compiled(*args), seconds=5.0), 1),
            "graph": round(1e3 / per_second(lambda: graph(*args), seconds=5.0), 1)}


def dqn_pong_training(steps: int) -> tuple[object, float]:
    """The runner's loop (act, step, observe, update) on one training env, learning from the first steps."""
    hp = get_hparams("dqn_pong", "memory_size=10000,learning_starts=200")
    single = make_env(hp.env)
    agent = make_agent(hp, single.observation_space, single.action_space, seed=0)
    envs = make_vector_env(hp.env, hp.num_envs)
    obs, _ = envs.reset(seed=0)

    def loop(count: int) -> None:
        nonlocal obs
        for _ in range(count):
            actions, extras = agent.act(obs)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            done = terminated | truncated
            agent.observe(obs, actions, rewards, learning_next_obs(next_obs, done, info), terminated, truncated,
                          extras)
            agent.update()
            obs = next_obs

    loop(hp.learning_starts + 2 * hp.train_freq)  # fills the memory past learning_starts and compiles the learner
    started = time.perf_counter()
    loop(steps)
    return agent, steps / (time.perf_counter() - started)


def main() -> None:
    atari.register_ale_ids()
    raw = gym.make(GAME)  # frameskip 4 inside the emulator, no preprocessing
    frames = gym.make(GAME, frameskip=1)
    agent, training_sps = dqn_pong_training(steps=400)
    print(json.dumps({
        "load_average_1min": round(os.getloadavg()[0], 2),
        "raw_ale_steps_per_s": round(per_second(random_stepper(raw))),
        "raw_ale_frames_per_s": round(per_second(random_stepper(frames))),
        "preprocessed_training_env_steps_per_s": round(per_second(random_stepper(make_env(GAME, training=True)))),
        f"sync_vector_{NUM_ENVS}_envs_steps_per_s": round(vector_steps_per_second("sync")),
        f"async_vector_{NUM_ENVS}_envs_steps_per_s": round(vector_steps_per_second("async")),
        "numpy_cnn_forward_ms": {"batch_1": round(cnn_forward_ms(agent, 1), 2),
                                 "batch_8": round(cnn_forward_ms(agent, 8), 2)},
        "dqn_pong_gradient_step_ms": gradient_step_ms(agent),
        "dqn_pong_training_sps": round(training_sps, 1),
    }))


if __name__ == "__main__":
    main()
