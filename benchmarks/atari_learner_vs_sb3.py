"""rlkube's dqn_pong and ppo_pong against Stable-Baselines3's DQN and PPO CnnPolicy, side by side, in one run.

    bash benchmarks/setup_sb3_venv.sh && python benchmarks/atari_learner_vs_sb3.py --rounds 5
    python benchmarks/atari_learner_vs_sb3.py --precisions auto,float32 --no-sb3   # a trick's A/B, rlkube alone

Both frameworks step the same Pong-shaped env (benchmarks/pong_shaped_env.py: 84x84x4 uint8, 6 actions, almost
free), so what differs is the learner and the acting. Each side is a worker process (rlkube's here, one per
`--precisions` value; SB3's benchmarks/sb3_atari_speed.py in its venv) that builds both agents with the zoo's
settings, warms them up, and then answers timing commands; the driver sends each command to every worker in
turn, round after round, so that a burst of other work on a shared machine falls on all of them alike. Printed:
each measurement's median over the rounds with its range, and the median over rounds of rlkube / SB3.

Measured, per worker and round:
- `dqn_step`: ms per gradient step, batch 32, replay sampling included (rlkube: the memory's sample and the
  compiled step; SB3: `DQN.train(1, 32)`);
- `dqn_1k`: seconds per 1,000 environment steps of training past learning_starts (act, step, store, a
  gradient step every 4 steps, the target copied every 1,000), at the final epsilon;
- `ppo_1k`: seconds per 1,000 environment steps of PPO (8 envs x 128 steps, 4 epochs of minibatches of 256),
  and `ppo_step`: ms per gradient step within it.
Both memories hold 10k transitions (the zoo's 100k would take SB3 5.6 GB) and learning starts at 1k.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SB3_PYTHON = Path.home() / ".cache/rlkube/sb3-venv-2.9/bin/python"
COMMANDS = ("dqn_step", "dqn_1k", "ppo_1k")
MEMORY_SIZE = 10_000
LEARNING_STARTS = 1_000
DQN_STEP_BLOCK = 30


class RlkubeWorker:
    """rlkube's side, in this process: dqn_pong and ppo_pong driven as the runner drives them, learning on `device`
    (cpu here; benchmarks/gpu_check.py times the same commands on a GPU node's). `learning_starts`: the transitions
    dqn_pong stores before its first gradient step (gpu_check.py's dry run stores fewer)."""

    def __init__(self, precision: str, threads: int, device: str = "cpu",
                 learning_starts: int = LEARNING_STARTS) -> None:
        import gymnasium as gym  # noqa: PLC0415  (the worker alone imports TensorFlow)
        import tensorflow as tf  # noqa: PLC0415

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        from pong_shaped_env import PongShapedEnv  # noqa: PLC0415

        from rlkube.rl import devices  # noqa: PLC0415
        from rlkube.rl.agents import make_agent  # noqa: PLC0415
        from rlkube.rl.agents.compiled import one_thread_per_op  # noqa: PLC0415
        from rlkube.rl.hparams import get_hparams  # noqa: PLC0415

        # epsilon reaches its final 0.01 at step 1,000 (train_steps 10M x 1e-4), the default learning_starts, as
        # SB3's does here
        dqn_hp = get_hparams("dqn_pong", f"memory_size={MEMORY_SIZE},learning_starts={learning_starts},"
                                         f"exploration_fraction=0.0001,matmul_precision={precision}")
        ppo_hp = get_hparams("ppo_pong", f"matmul_precision={precision}")
        strategy = devices.strategy_for(device, inline_ops=one_thread_per_op(dqn_hp))

        def vector_env(count: int) -> gym.vector.VectorEnv:
            return gym.vector.SyncVectorEnv([PongShapedEnv] * count, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

        self.dqn_envs, self.ppo_envs = vector_env(1), vector_env(ppo_hp.num_envs)
        space = (PongShapedEnv.observation_space, PongShapedEnv.action_space)
        self.dqn = make_agent(dqn_hp, *space, seed=0, strategy=strategy)
        self.ppo = make_agent(ppo_hp, *space, seed=0, strategy=strategy)
        self.dqn_obs = self.dqn_envs.reset(seed=0)[0]
        self.ppo_obs = self.ppo_envs.reset(seed=0)[0]
        self.update_seconds: list[float] = []
        self._train(self.dqn, self.dqn_envs, "dqn_obs", learning_starts + 200)
        self._train(self.ppo, self.ppo_envs, "ppo_obs", 1024)
        self.ready = {"ready": True, "dqn_dtype": str(self.dqn.hidden_dtype), "ppo_dtype": str(self.ppo.hidden_dtype)}

    def _train(self, agent: Any, envs: Any, obs_name: str, env_steps: int) -> float:
        """The runner's loop (act, step, observe, update) for `env_steps` steps; its wall seconds."""
        from rlkube.rl.envs import learning_next_obs  # noqa: PLC0415

        obs = getattr(self, obs_name)
        self.update_seconds.clear()
        started = time.perf_counter()
        for _ in range(env_steps // envs.num_envs):
            actions, extras = agent.act(obs)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            done = terminated | truncated
            agent.observe(obs, actions, rewards, learning_next_obs(next_obs, done, info), terminated, truncated,
                          extras)
            update_started = time.perf_counter()
            if agent.update():
                self.update_seconds.append(time.perf_counter() - update_started)
            obs = next_obs
        setattr(self, obs_name, obs)
        return time.perf_counter() - started

    def run(self, command: str) -> dict[str, float]:
        if command == "dqn_step":
            times = []
            for _ in range(DQN_STEP_BLOCK):
                started = time.perf_counter()
                self.dqn._replay(1, self.dqn._learn_on)
                times.append(time.perf_counter() - started)
            return {"ms": 1e3 * statistics.median(times)}
        if command == "dqn_1k":
            return {"s": self._train(self.dqn, self.dqn_envs, "dqn_obs", 1_000)}
        seconds = self._train(self.ppo, self.ppo_envs, "ppo_obs", 1024)
        gradient_steps = self.ppo.hp.n_epochs * 1024 // self.ppo.hp.batch_size
        return {"s": seconds * 1_000 / 1024, "step_ms": 1e3 * sum(self.update_seconds) / gradient_steps}


def serve(precision: str, threads: int) -> None:
    import rlkube  # noqa: F401, PLC0415  (before numpy: it keeps acting's OpenBLAS on one thread, as in a run)

    worker = RlkubeWorker(precision, threads)
    print(json.dumps(worker.ready), flush=True)
    for command in sys.stdin:
        print(json.dumps(worker.run(command.strip())), flush=True)


class Worker:
    """A worker process, spoken to one command (a line) at a time."""

    def __init__(self, label: str, command: list[str]) -> None:
        self.label = label
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=HERE)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"worker {self.label} exited (code {self.process.wait()}); see its errors above")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precisions", default="auto", help="rlkube workers' matmul_precision, e.g. auto,float32")
    parser.add_argument("--no-sb3", action="store_true", help="rlkube's workers alone")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of TensorFlow's pools and of torch (default 0: each framework's own, all cores). "
                             "On a busy machine, 1 compares the work itself: torch's OpenMP threads spin at their "
                             "barriers: a dqn_pong step of SB3's took 1.5 s rather than 32 ms at load 15 on 2 cores")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # run as rlkube's worker with this precision
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
        return
    if not args.no_sb3 and not SB3_PYTHON.exists():
        sys.exit(f"no SB3 venv at {SB3_PYTHON}; run: bash benchmarks/setup_sb3_venv.sh (or pass --no-sb3)")
    threads = ["--threads", str(args.threads)]
    workers = [Worker(f"rlkube-{precision}", [sys.executable, __file__, "--serve", precision, *threads])
               for precision in args.precisions.split(",")]
    if not args.no_sb3:
        workers.append(Worker("sb3", [str(SB3_PYTHON), str(HERE / "sb3_atari_speed.py"), *threads]))
    for worker in workers:
        print(json.dumps({"worker": worker.label, **worker.info}), flush=True)
    results: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        for command in COMMANDS:
            for worker in workers:
                record = worker.ask(command)
                print(json.dumps({"round": round_index, "worker": worker.label, "command": command, **record}),
                      flush=True)
                for key, value in record.items():
                    name = command if key in ("ms", "s") else f"{command.split('_')[0]}_{key}"
                    results.setdefault((worker.label, name), []).append(value)
    for worker in workers:
        worker.close()
    names = ("dqn_step", "dqn_1k", "ppo_step_ms", "ppo_1k")
    units = {"dqn_step": "ms per gradient step", "dqn_1k": "s per 1k env steps", "ppo_step_ms": "ms per gradient step",
             "ppo_1k": "s per 1k env steps"}
    print(f"\n{'':28}" + "".join(f"{worker.label:>26}" for worker in workers))
    for name in names:
        cells = [summary(results[(worker.label, name)]) for worker in workers]
        print(f"{name + ' (' + units[name].split(' per')[0] + ')':28}" + "".join(f"{cell:>26}" for cell in cells))
    if not args.no_sb3:
        print("\nrlkube / SB3, median over rounds of each round's ratio:")
        for worker in workers[:-1]:
            ratios = {name: [a / b for a, b in zip(results[(worker.label, name)], results[("sb3", name)],
                                                  strict=True)] for name in names}
            print(f"  {worker.label}: " + ", ".join(f"{name} {summary(r)}" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
