"""Stable-Baselines3 reference timings/returns for side-by-side comparison with rlkube.

This script deliberately imports ``stable_baselines3`` (PyTorch) and NOT rlkube. It must run in the
separate virtualenv created by ``benchmarks/setup_sb3_venv.sh`` (default
``~/.cache/rlkube/sb3-venv-2.9``) so SB3/PyTorch never become dependencies of rlkube and the two
frameworks never share one environment. Hyperparameters follow rl-baselines3-zoo.

Output (stdout): one JSON line per seed, then one JSON summary line. Progress goes to stderr.

* ``wall_s``: wall seconds of ``model.learn`` INCLUDING the periodic evaluations (model construction
  excluded); ``sps`` = timesteps / ``wall_s``.
* ``train_wall_s`` / ``train_sps``: the same with evaluation time subtracted.
* ``first_step_reaching_target``: first evaluation step whose mean return >= target (475 CartPole,
  -200 Pendulum), ``null`` if never; ``wall_s_to_target`` is the ``model.learn`` wall time (incl.
  evaluations) at the end of that evaluation. Resolution is ``--eval-every``.

Example::

    ~/.cache/rlkube/sb3-venv-2.9/bin/python benchmarks/sb3_reference.py --algo dqn --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

EVAL_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class AlgoSpec:
    """Environment, budget, target and default evaluation cadence of one benchmark."""

    env_id: str
    total_steps: int
    target: float
    default_eval_every: int


SPECS: dict[str, AlgoSpec] = {
    "dqn": AlgoSpec("CartPole-v1", 50_000, 475.0, 5_000),
    "ppo": AlgoSpec("CartPole-v1", 100_000, 475.0, 5_000),
    "sac": AlgoSpec("Pendulum-v1", 20_000, -200.0, 2_000),
    "td3": AlgoSpec("Pendulum-v1", 20_000, -200.0, 2_000),
    "ddpg": AlgoSpec("Pendulum-v1", 20_000, -200.0, 2_000),
}


def linear_schedule(initial: float) -> Callable[[float], float]:
    """Zoo ``lin_<x>`` schedule: decays linearly from ``initial`` to 0 over training."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def make_model(algo: str, seed: int, device: str) -> BaseAlgorithm:
    """Build the SB3 model with rl-baselines3-zoo hyperparameters for ``algo``."""
    spec = SPECS[algo]
    common: dict[str, Any] = {"seed": seed, "device": device, "verbose": 0}
    if algo == "dqn":
        env = make_vec_env(spec.env_id, n_envs=1, seed=seed)
        return DQN(
            "MlpPolicy",
            env,
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1_000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
            policy_kwargs={"net_arch": [256, 256]},
            **common,
        )
    if algo == "ppo":
        env = make_vec_env(spec.env_id, n_envs=8, seed=seed)
        return PPO(
            "MlpPolicy",
            env,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear_schedule(1e-3),
            clip_range=linear_schedule(0.2),
            **common,
        )
    if algo == "sac":
        env = make_vec_env(spec.env_id, n_envs=1, seed=seed)
        return SAC(
            "MlpPolicy",
            env,
            learning_rate=1e-3,
            buffer_size=1_000_000,
            learning_starts=100,
            batch_size=256,
            tau=0.005,
            gamma=0.99,
            ent_coef="auto",
            policy_kwargs={"net_arch": [256, 256]},
            **common,
        )
    if algo in ("td3", "ddpg"):
        env = make_vec_env(spec.env_id, n_envs=1, seed=seed)
        n_actions = env.action_space.shape[-1]
        noise = NormalActionNoise(mean=np.zeros(n_actions), sigma=0.1 * np.ones(n_actions))
        cls = TD3 if algo == "td3" else DDPG
        return cls(
            "MlpPolicy",
            env,
            learning_rate=1e-3,
            gamma=0.98,
            buffer_size=200_000,
            learning_starts=10_000,
            action_noise=noise,
            train_freq=1,
            gradient_steps=1,
            policy_kwargs={"net_arch": [400, 300]},
            **common,
        )
    raise ValueError(f"unknown algo {algo!r}")


@dataclass
class EvalRecord:
    """Results of periodic evaluations plus bookkeeping of time spent evaluating."""

    evals: list[tuple[int, float, float]] = field(default_factory=list)
    eval_wall_s: float = 0.0
    first_step_reaching_target: int | None = None
    wall_s_to_target: float | None = None
    train_s_to_target: float | None = None


@dataclass(frozen=True)
class RunConfig:
    """Settings shared by all seeds of one invocation."""

    algo: str
    total_steps: int
    eval_every: int
    eval_episodes: int
    device: str


class PeriodicEval(BaseCallback):
    """Deterministic evaluation on a separate env every ``eval_every`` steps and at the end.

    Runs inside ``model.learn`` (so its time is part of ``wall_s``) but tracks its own duration so
    the pure training time can be reported separately.
    """

    def __init__(self, eval_env: VecEnv, eval_every: int, n_episodes: int, target: float, label: str) -> None:
        """Evaluate on ``eval_env`` every ``eval_every`` steps; ``label`` prefixes progress lines."""
        super().__init__(verbose=0)
        self.eval_env = eval_env
        self.eval_every = eval_every
        self.n_episodes = n_episodes
        self.target = target
        self.label = label
        self.record = EvalRecord()
        self.t_start = 0.0
        self.next_eval = eval_every
        self.last_eval_step = -1

    def _on_training_start(self) -> None:
        self.t_start = time.perf_counter()

    def _evaluate(self) -> None:
        t0 = time.perf_counter()
        mean, std = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=self.n_episodes, deterministic=True, warn=False
        )
        t1 = time.perf_counter()
        rec = self.record
        rec.eval_wall_s += t1 - t0
        step = self.num_timesteps
        rec.evals.append((step, float(mean), float(std)))
        self.last_eval_step = step
        if rec.first_step_reaching_target is None and mean >= self.target:
            rec.first_step_reaching_target = step
            rec.wall_s_to_target = t1 - self.t_start
            rec.train_s_to_target = rec.wall_s_to_target - rec.eval_wall_s
        print(
            f"[{self.label}] step={step} eval_mean={mean:.1f} eval_std={std:.1f} "
            f"elapsed={t1 - self.t_start:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self._evaluate()
            while self.next_eval <= self.num_timesteps:
                self.next_eval += self.eval_every
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps != self.last_eval_step:
            self._evaluate()


def run_seed(cfg: RunConfig, seed: int) -> dict[str, Any]:
    """Train one seed and return its result row."""
    algo = cfg.algo
    spec = SPECS[algo]
    model = make_model(algo, seed, cfg.device)
    eval_env = DummyVecEnv([lambda: Monitor(gym.make(spec.env_id))])
    eval_env.seed(seed + EVAL_SEED_OFFSET)
    callback = PeriodicEval(eval_env, cfg.eval_every, cfg.eval_episodes, spec.target, f"{algo} seed={seed}")

    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.total_steps, callback=callback)
    wall_s = time.perf_counter() - t0
    eval_env.close()
    model.get_env().close()

    rec = callback.record
    steps = model.num_timesteps
    train_wall_s = wall_s - rec.eval_wall_s
    _, final_mean, final_std = rec.evals[-1]
    return {
        "algo": algo,
        "seed": seed,
        "wall_s": round(wall_s, 3),
        "sps": round(steps / wall_s, 1),
        "final_eval_mean": round(final_mean, 2),
        "final_eval_std": round(final_std, 2),
        "first_step_reaching_target": rec.first_step_reaching_target,
        "wall_s_to_target": None if rec.wall_s_to_target is None else round(rec.wall_s_to_target, 3),
        "train_wall_s": round(train_wall_s, 3),
        "train_sps": round(steps / train_wall_s, 1),
        "eval_wall_s": round(rec.eval_wall_s, 3),
        "train_s_to_target": None if rec.train_s_to_target is None else round(rec.train_s_to_target, 3),
        "env_id": spec.env_id,
        "target": spec.target,
        "total_steps": steps,
        "evals": [[s, round(m, 2), round(sd, 2)] for s, m, sd in rec.evals],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", required=True, choices=sorted(SPECS))
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--eval-every", type=int, default=None, help="default: 5000 (CartPole), 2000 (Pendulum)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--total-steps", type=int, default=None, help="override the zoo budget (smoke tests)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: cores)")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run all seeds and print per-seed JSON lines plus a summary line."""
    args = parse_args(argv)
    spec = SPECS[args.algo]
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    total_steps = args.total_steps or spec.total_steps
    eval_every = args.eval_every or spec.default_eval_every
    cfg = RunConfig(args.algo, total_steps, eval_every, args.eval_episodes, args.device)

    rows = []
    for seed in seeds:
        row = run_seed(cfg, seed)
        rows.append(row)
        print(json.dumps(row), flush=True)

    reached = [r for r in rows if r["first_step_reaching_target"] is not None]
    summary = {
        "summary": True,
        "algo": args.algo,
        "env_id": spec.env_id,
        "target": spec.target,
        "n_seeds": len(rows),
        "n_reached_target": len(reached),
        "mean_wall_s": round(statistics.fmean(r["wall_s"] for r in rows), 3),
        "mean_train_wall_s": round(statistics.fmean(r["train_wall_s"] for r in rows), 3),
        "mean_wall_s_to_target": (
            round(statistics.fmean(r["wall_s_to_target"] for r in reached), 3) if reached else None
        ),
        "mean_final_eval": round(statistics.fmean(r["final_eval_mean"] for r in rows), 2),
        "total_steps": total_steps,
        "eval_every": eval_every,
        "eval_episodes": args.eval_episodes,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "sb3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
        },
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
