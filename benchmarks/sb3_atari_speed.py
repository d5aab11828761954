"""SB3's side of benchmarks/atari_learner_vs_sb3.py: its DQN and PPO CnnPolicy on the Pong-shaped env, timed.

Runs in the SB3 venv (benchmarks/setup_sb3_venv.sh), never in rlkube's. rl-baselines3-zoo's Atari settings
(hyperparams/dqn.yml and ppo.yml, atari), except the replay memory (10k rather than 100k, 0.56 GB rather than 5.6)
and learning_starts (1k rather than 100k), which change what a step costs only through memory that is touched
once. Acting is at the final epsilon (0.01), as past the first tenth of training. `--threads N` sets torch's
threads (default: its own, all cores). A worker: it builds both models, warms them up, then answers each
command read from stdin with one JSON line:

    dqn_step   ms per gradient step (`DQN.train(1, 32)`: replay sample, target, loss, Adam), median of a block
    dqn_1k     seconds per 1,000 environment steps of `DQN.learn` (act, step, store, a gradient step every 4)
    ppo_1k     seconds per 1,000 environment steps of `PPO.learn` (8 envs x 128 steps, then 4 epochs of
               minibatches of 256), and ms per gradient step within it
"""

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from pong_shaped_env import PongShapedEnv
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

MEMORY_SIZE = 10_000
LEARNING_STARTS = 1_000
DQN_STEP_BLOCK = 30


def linear(initial: float) -> Callable[[float], float]:
    """The zoo's lin_<x>: from `initial` down to 0 over training."""
    return lambda progress_remaining: progress_remaining * initial


def make_dqn() -> DQN:
    model = DQN("CnnPolicy", DummyVecEnv([PongShapedEnv]), learning_rate=1e-4, buffer_size=MEMORY_SIZE,
                learning_starts=LEARNING_STARTS, batch_size=32, target_update_interval=1_000, train_freq=4,
                gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01,
                optimize_memory_usage=False, device="cpu", seed=0, verbose=0)
    model.learn(LEARNING_STARTS + 200)  # fills the memory past learning_starts; the first gradient steps
    model.exploration_schedule = lambda _: 0.01  # the final epsilon: every step runs the network
    return model


def make_ppo() -> tuple[PPO, list[float]]:
    model = PPO("CnnPolicy", DummyVecEnv([PongShapedEnv] * 8), n_steps=128, n_epochs=4, batch_size=256,
                learning_rate=linear(2.5e-4), clip_range=linear(0.1), vf_coef=0.5, ent_coef=0.01, device="cpu",
                seed=0, verbose=0)
    train_seconds: list[float] = []
    train = model.train

    def timed_train() -> None:
        started = time.perf_counter()
        train()
        train_seconds.append(time.perf_counter() - started)

    model.train = timed_train
    model.learn(1024)
    return model, train_seconds


def main() -> None:
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 0
    if threads:
        torch.set_num_threads(threads)
    dqn = make_dqn()
    ppo, ppo_train_seconds = make_ppo()
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "dqn_step":
            times = []
            for _ in range(DQN_STEP_BLOCK):
                started = time.perf_counter()
                dqn.train(gradient_steps=1, batch_size=32)
                times.append(time.perf_counter() - started)
            result = {"ms": 1e3 * statistics.median(times)}
        elif command == "dqn_1k":
            started = time.perf_counter()
            dqn.learn(1_000, reset_num_timesteps=False)
            result = {"s": time.perf_counter() - started}
        elif command == "ppo_1k":
            ppo_train_seconds.clear()
            started = time.perf_counter()
            ppo.learn(1024, reset_num_timesteps=False)
            seconds = time.perf_counter() - started
            result = {"s": seconds * 1_000 / 1024, "step_ms": 1e3 * sum(ppo_train_seconds) / 16}
        else:
            sys.exit(f"unknown command {command!r}")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
