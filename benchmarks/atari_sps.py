"""Where Atari time goes: the emulator, the preprocessing, vector envs, the numpy CNN, and dqn_pong's learner.

    python benchmarks/atari_sps.py

Prints one JSON object. Steps per second are agent steps (4 emulator frames each) unless named frames;
vector-env rates are summed over the envs. Training vectors of 1 to 8 envs are timed side by side: the ALE
pipeline in process (vector_mode=sync) and, where the envpool extra is installed, envpool on 1 and 2
threads (vector_mode=envpool). The load average is printed with them: on a shared machine, read the
numbers against it.
"""

import json
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from rlkube.rl import atari, atari_envpool
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps

GAME = "ALE/Pong-v5"
NUM_ENVS = 8
SIDE_BY_SIDE_ENVS = (1, 2, 4, 8)
ENVPOOL_THREADS = (1, 2)


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


def vector_steps_per_second(envs: gym.vector.VectorEnv, seconds: float = 3.0) -> float:
    """Random steps of training envs (they reset themselves), summed over the envs, over about `seconds`;
    closes `envs`."""
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    try:
        return envs.num_envs * per_second(
            lambda: envs.step(rng.integers(envs.single_action_space.n, size=envs.num_envs)), seconds)
    finally:
        envs.close()


def backends_side_by_side() -> dict[str, dict[str, int]]:
    """Steps per second of each training vector size: the ALE pipeline in process, and envpool per thread count."""
    table = {}
    for num_envs in SIDE_BY_SIDE_ENVS:
        row = {"ale_sync": round(vector_steps_per_second(make_vector_env(GAME, num_envs)))}
        if atari_envpool.installed():
            for threads in ENVPOOL_THREADS:
                envs = atari_envpool.EnvpoolAtari(GAME, num_envs, num_threads=threads)
                row[f"envpool_{threads}_threads"] = round(vector_steps_per_second(envs))
        table[f"{num_envs}_envs"] = row
    return table


def cnn_forward_ms(agent: object, batch: int) -> float:
    obs = np.random.default_rng(0).integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8)
    network, params = agent.network, agent.policy.params
    return 1e3 / per_second(lambda: network.forward(params, obs, NumpyOps), seconds=2.0)


def gradient_step_ms(agent: object) -> dict[str, float]:
    """One gradient step (batch 32) as the agent compiles it (XLA), and as a plain TF graph for comparison."""
    import tensorflow as tf  # noqa: PLC0415  (the env timings alone, gpu_check.py's, load no TensorFlow)

    batch = agent.memory.sample(agent.hp.batch_size, 1)
    args = [batch[k] for k in ("obs", "action", "reward", "next_obs", "discount", "weights")]
    graph = tf.function(agent._learn)
    return {"xla": round(1e3 / per_second(lambda: agent._learn_compiled(*args), seconds=5.0), 1),
            "graph": round(1e3 / per_second(lambda: graph(*args), seconds=5.0), 1)}


def dqn_pong_training(steps: int) -> tuple[object, float]:
    """The runner's loop (act, step, observe, update) on one training env, learning from the first steps."""
    from rlkube.rl.agents import make_agent  # noqa: PLC0415  (imports TensorFlow: see gradient_step_ms)

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
        f"async_vector_{NUM_ENVS}_envs_steps_per_s": round(
            vector_steps_per_second(make_vector_env(GAME, NUM_ENVS, "async"))),
        "training_vector_steps_per_s": backends_side_by_side(),
        "numpy_cnn_forward_ms": {"batch_1": round(cnn_forward_ms(agent, 1), 2),
                                 "batch_8": round(cnn_forward_ms(agent, 8), 2)},
        "dqn_pong_gradient_step_ms": gradient_step_ms(agent),
        "dqn_pong_training_sps": round(training_sps, 1),
    }))


if __name__ == "__main__":
    main()
