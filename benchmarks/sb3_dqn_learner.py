"""SB3's side of benchmarks/dqn_learner_vs_sb3.py: SB3's own `DQN.train()` from given weights on given batches.

Runs in the SB3 venv (benchmarks/setup_sb3_venv.sh), never in rlkube's. Reads DIR/initial.npz (rlkube's initial
Q-network, kernels [in, out]) and DIR/batches.npz, loads the weights into the zoo's CartPole DQN (q_net and
q_net_target), replaces the replay memory's sampling with the batches in order, and after each of the given
gradient-step counts writes the Q-values on DIR/batches.npz's probe observations to DIR/sb3-<steps>.npy.

    ~/.cache/rlkube/sb3-venv-2.9/bin/python benchmarks/sb3_dqn_learner.py DIR 10,100,1000
"""

import sys
from pathlib import Path

import numpy as np
import torch as th
from sb3_reference import make_model
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples

LAYERS = ("torso.dense_0", "torso.dense_1", "head.dense_0")  # rlkube's names, in the order of SB3's Linear layers


def main() -> None:
    directory, checkpoints = Path(sys.argv[1]), [int(n) for n in sys.argv[2].split(",")]
    th.set_num_threads(1)
    initial, batches = np.load(directory / "initial.npz"), np.load(directory / "batches.npz")
    model = make_model("dqn", 0, "cpu")
    model.set_logger(configure(None, [""]))
    linears = [module for module in model.q_net.q_net if isinstance(module, th.nn.Linear)]
    with th.no_grad():
        for name, linear in zip(LAYERS, linears, strict=True):
            linear.weight.copy_(th.from_numpy(initial[f"{name}.kernel"].T))
            linear.bias.copy_(th.from_numpy(initial[f"{name}.bias"]))
    model.q_net_target.load_state_dict(model.q_net.state_dict())
    steps = iter(range(len(batches["obs"])))

    def sample(*_: object, **__: object) -> ReplayBufferSamples:  # the batches, in order
        i = next(steps)
        return ReplayBufferSamples(
            th.from_numpy(batches["obs"][i]), th.from_numpy(batches["action"][i][:, None]),
            th.from_numpy(batches["next_obs"][i]), th.from_numpy(batches["done"][i][:, None]),
            th.from_numpy(batches["reward"][i][:, None]), None)

    model.replay_buffer.sample = sample
    done = 0
    for checkpoint in checkpoints:
        model.train(gradient_steps=checkpoint - done, batch_size=batches["obs"].shape[1])
        done = checkpoint
        with th.no_grad():
            np.save(directory / f"sb3-{checkpoint}.npy", model.q_net(th.from_numpy(batches["probe"])).numpy())


if __name__ == "__main__":
    main()
