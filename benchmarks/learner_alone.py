"""The learner's own ceiling: how many env steps a second an IMPALA learner takes in with no actors beside it.

Rollouts shaped as the hparams set's (n_steps x num_envs of the env's observations, made up in memory) are fed to
the agent as the runner feeds an actor's (observe each step, then update: rlkube.run.runner._train_with_workers),
in this process; the weights are flattened after each as publishing them does. Timed twice: with IMPALA's gradient
step and without it (benchmarks/impala_without_updates.py), so that the learner's feeding and its update are apart.
On two cores, actors and learner share the CPU in benchmarks/actor_scaling.py; this says where the learner alone
would stop.

    python benchmarks/learner_alone.py [--hparams impala_cartpole,impala_pong] [--rollouts 50]
"""

import argparse
import contextlib
import json
import time

import gymnasium as gym
import numpy as np
from impala_without_updates import without_updates

from rlkube.rl.agents import make_agent
from rlkube.rl.envs import make_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import ParamLayout
from rlkube.run.workers import Rollout


def made_up_rollout(rng: np.random.Generator, steps: int, envs: int, observation_space: gym.spaces.Box,
                    actions: int) -> Rollout:
    shape = (steps + 1, envs, *observation_space.shape)
    obs = rng.integers(0, 256, shape, np.uint8) if observation_space.dtype == np.uint8 \
        else rng.standard_normal(shape).astype(observation_space.dtype)
    flags = np.zeros((steps, envs), bool)
    return Rollout(0, 1, 0, obs, rng.integers(0, actions, (steps, envs)), np.zeros((steps, envs), np.float32), flags,
                   flags, {"log_prob": np.full((steps, envs), -np.log(actions), np.float32),
                           "value": np.zeros((steps, envs), np.float32)})


def steps_per_second(hparams: str, rollouts: int, updates: bool) -> float:
    hp = get_hparams(hparams)
    env = make_env(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, seed=0)
    rng = np.random.default_rng(0)
    made = [made_up_rollout(rng, hp.n_steps, hp.num_envs, env.observation_space, int(env.action_space.n))
            for _ in range(rollouts + 1)]
    layout = ParamLayout(agent.policy.params)
    published = np.zeros(sum(layout.sizes), np.float32)
    with contextlib.nullcontext() if updates else without_updates():
        for index, rollout in enumerate(made):
            if index == 1:  # the first rollout compiles the update
                started = time.perf_counter()
            for t in range(len(rollout)):
                agent.observe(*rollout.step(t), rollout.step_extras(t))
                agent.update()
            layout.flatten(agent.policy.params, out=published)
    return rollouts * hp.n_steps * hp.num_envs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default="impala_cartpole,impala_pong", help="comma-separated IMPALA sets")
    parser.add_argument("--rollouts", type=int, default=50, help="rollouts timed, after one that compiles")
    args = parser.parse_args()
    for hparams in args.hparams.split(","):
        print(json.dumps({"hparams": hparams, **{f"{'with' if updates else 'without'}_updates_sps":
                                                 round(steps_per_second(hparams, args.rollouts, updates))
                                                 for updates in (False, True)}}), flush=True)


if __name__ == "__main__":
    main()
