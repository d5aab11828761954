"""rlkube's DQN learner against SB3's own `DQN.train()`: the same weights and batches, how far apart after N steps.

The learners are compared alone, so that what they learn from cannot differ: rlkube's `dqn_cartpole` agent and
SB3's zoo CartPole DQN (benchmarks/sb3_dqn_learner.py, in the SB3 venv) start from rlkube's initial Q-network and
take gradient steps on the same batches (random CartPole-shaped transitions, 5% terminal), with the target network
held at the initial weights. Printed: after each number of steps, the largest difference between their Q-values on
256 probe observations, relative to the largest Q-value. Float32 rounding alone makes two exact implementations
drift apart slowly over many steps; a real difference (a loss, a clip, Adam's epsilon) shows within the first 10.

    bash benchmarks/setup_sb3_venv.sh && python benchmarks/dqn_learner_vs_sb3.py
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
from dqn_cartpole import SB3_PYTHON

from rlkube.rl.agents.dqn import DQNAgent
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import NumpyOps, map_params

HERE = Path(__file__).resolve().parent
CHECKPOINTS = (1, 10, 100, 1000)
BATCH = 64


def flat(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for name, value in params.items():
        out.update(flat(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name: value})
    return out


def main() -> None:
    if not SB3_PYTHON.exists():
        sys.exit(f"no SB3 venv at {SB3_PYTHON}; run: bash benchmarks/setup_sb3_venv.sh")
    hp = get_hparams("dqn_cartpole", "")
    env = gym.make("CartPole-v1")
    agent = DQNAgent(hp, env.observation_space, env.action_space, seed=0)
    rng = np.random.default_rng(1)
    steps = CHECKPOINTS[-1]
    obs = rng.normal(size=(steps, BATCH, 4)).astype(np.float32)
    batches = {"obs": obs, "next_obs": (obs + 0.05 * rng.normal(size=obs.shape)).astype(np.float32),
               "action": rng.integers(2, size=(steps, BATCH)), "reward": np.ones((steps, BATCH), np.float32),
               "done": (rng.random((steps, BATCH)) < 0.05).astype(np.float32),
               "probe": rng.normal(size=(256, 4)).astype(np.float32)}
    discount = (hp.gamma * (1 - batches["done"])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        np.savez(directory / "initial.npz", **flat(map_params(lambda v: v.numpy(), agent.online)))
        np.savez(directory / "batches.npz", **batches)
        sb3 = subprocess.Popen([str(SB3_PYTHON), str(HERE / "sb3_dqn_learner.py"), tmp,
                                ",".join(map(str, CHECKPOINTS))])
        rlkube_q, done = {}, 0
        for checkpoint in CHECKPOINTS:
            chunk = slice(done, checkpoint)
            agent._learn_compiled(batches["obs"][chunk], batches["action"][chunk], batches["reward"][chunk],
                                  batches["next_obs"][chunk], discount[chunk], np.ones_like(discount[chunk]))
            done = checkpoint
            params = map_params(lambda v: v.numpy(), agent.online)
            rlkube_q[checkpoint] = agent.network.forward(params, batches["probe"], NumpyOps)
        if sb3.wait() != 0:
            sys.exit("the SB3 side failed (see above)")
        for checkpoint in CHECKPOINTS:
            theirs = np.load(directory / f"sb3-{checkpoint}.npy")
            gap = float(np.abs(rlkube_q[checkpoint] - theirs).max() / np.abs(theirs).max())
            print(json.dumps({"gradient_steps": checkpoint, "max_q_difference_relative": float(f"{gap:.2e}")}))


if __name__ == "__main__":
    main()
