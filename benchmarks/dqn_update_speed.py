"""Where DQN's time goes: compiled vs eager gradient steps, numpy vs tf.function acting, an env step.

    python benchmarks/dqn_update_speed.py
"""

import json
import time

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlkube.rl.agents import make_agent
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps


def per_second(run: callable, repeats: int) -> float:
    run()  # compile / warm up
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return repeats / (time.perf_counter() - started)


def main() -> None:
    hp = get_hparams("dqn_cartpole")
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(5_000):
        next_obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        agent.observe(obs[None], np.zeros(1, np.int64), np.array([reward]), next_obs[None], np.array([terminated]),
                      np.array([truncated]), {})
        obs = env.reset()[0] if terminated or truncated else next_obs

    steps = hp.gradient_steps
    batches = agent.memory.sample(hp.batch_size, steps)
    compiled = per_second(lambda: agent._learn_on(batches), 20) * steps
    eager_batch = agent.memory.sample(hp.batch_size, 1)
    eager_args = [tf.constant(eager_batch[k]) for k in ("obs", "action", "reward", "next_obs", "discount", "weights")]
    eager = per_second(lambda: agent._learn(*eager_args), 20)

    single = obs[None].astype(np.float32)
    forward_tf = tf.function(lambda x: agent.network.forward(agent.online, x, TFOps))
    tf_act_us = 1e6 / per_second(lambda: forward_tf(single).numpy(), 2_000)
    numpy_act_us = 1e6 / per_second(lambda: agent.act(single, explore=False), 20_000)
    numpy_forward_us = 1e6 / per_second(lambda: agent.network.forward(agent.policy.params, single, NumpyOps), 20_000)
    env.reset(seed=0)
    env_step_us = 1e6 / per_second(lambda: env.step(0) if not env.step(1)[2] else env.reset(), 20_000) / 2

    print(json.dumps({
        "compiled_gradient_steps_per_s": round(compiled),
        "eager_gradient_steps_per_s": round(eager),
        "act_tf_function_us": round(tf_act_us, 1),
        "act_numpy_forward_us": round(numpy_forward_us, 1),
        "act_agent_greedy_us": round(numpy_act_us, 1),
        "cartpole_step_us": round(env_step_us, 1),
    }))


if __name__ == "__main__":
    main()
