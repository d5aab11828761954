"""Evaluation and test: greedy episodes with frozen weights on environments of their own, and the best policy.

Evaluation and test episodes draw env seeds from ranges of their own, apart from training's.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlkube.rl.agents import Agent
from rlkube.rl.envs import make_env
from rlkube.run.video import write_episode
from rlkube.run.viewer import Viewer
from rlkube.rundir import checkpoint, layout

EVAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000

Kind = Literal["eval", "test"]


def episodes(envs: list[gym.Env], agent: Agent, seeds: list[int], record: bool,
             viewer: Viewer | None) -> tuple[list[float], list[int], list[np.ndarray]]:
    """One greedy episode on each env from its seed, acting on all running ones as one batch.

    Greedy acting draws no randomness, so each episode is what it would be on its own. Frames are the first env's.
    """
    frames: list[np.ndarray] = []

    def frame() -> None:
        if record or viewer:
            image = envs[0].render()
            if record:
                frames.append(image)
            if viewer:
                viewer.show(image)

    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    frame()
    returns, lengths = [0.0] * len(envs), [0] * len(envs)
    running = list(range(len(envs)))
    while running:
        actions, _ = agent.act(np.stack([obs[i] for i in running]), explore=False)
        still_running = []
        for i, action in zip(running, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += float(reward)
            lengths[i] += 1
            if i == 0:
                frame()
            if not (terminated or truncated):
                still_running.append(i)
        running = still_running
    return returns, lengths, frames


class Evaluation:
    """The evaluation environments, the episodes a copy evaluates and tests its agent on, and the best policy.

    The first env renders (--render, --record-video); the others are made when a batch first needs them.
    """

    def __init__(self, env_name: str, first_env: gym.Env, agent: Agent, copy_dir: Path, seed: int,
                 record_video: bool) -> None:
        self.env_name = env_name
        self.envs = [first_env]
        self.agent = agent
        self.copy_dir = copy_dir
        self.seed = seed
        self.record_video = record_video
        # The best evaluation so far: its step, mean_return, std_return, and the acting params it evaluated.
        self.best: dict[str, Any] | None = None

    def run(self, kind: Kind, count: int, step: int, evaluations: int,
            viewer: Viewer | None) -> tuple[list[float], list[int], list[Path]]:
        """`count` greedy episodes from the seeds of the `evaluations`-th evaluation (or of the test): their returns,
        their lengths, and with --record-video the files of the first episode's video."""
        base = self.seed + (EVAL_SEED_OFFSET if kind == "eval" else TEST_SEED_OFFSET) + evaluations * count
        # Episodes run side by side on copies of the evaluation env, except when someone watches (--render).
        batch = 1 if viewer else count
        while len(self.envs) < batch:
            self.envs.append(make_env(self.env_name))
        returns, lengths, videos = [], [], []
        for first in range(0, count, batch):
            size = min(batch, count - first)
            record = self.record_video and first == 0
            totals, steps, frames = episodes(self.envs[:size], self.agent,
                                             [base + index for index in range(first, first + size)], record, viewer)
            returns += totals
            lengths += steps
            if record:
                name = f"{kind}-step{step}" if kind == "eval" else "test"
                videos += write_episode(frames, self.copy_dir / layout.VIDEOS / name)
        return returns, lengths, videos

    def keep_if_best(self, step: int, mean: float, std: float) -> None:
        """Keep the policy that just evaluated if it is at least as good as the best so far (the first always is).
        Of equal evaluations the later wins: it has trained longer, and CartPole's often tie at the cap of 500
        (`make run`'s seed first evaluates 500 at 10k, a policy that tests at 467.5; its 500 at 50k tests at 500)."""
        if self.best is not None and mean < self.best["mean_return"]:
            return
        # Policies replace their params whole, never in place, so the reference stays this evaluation's.
        self.best = {"step": step, "mean_return": mean, "std_return": std, "params": self.agent.policy.params}
        checkpoint.save_best(self.copy_dir, self.best)

    def restore_best(self, best: dict[str, Any] | None) -> None:
        """The best policy of the checkpoint a run resumes from, in memory and on file."""
        # The checkpoint's best, not the file's: a kill after a new best but before its checkpoint left the file
        # ahead of the run it resumes. (A checkpoint from before best policies holds none.)
        self.best = best
        if best:
            checkpoint.save_best(self.copy_dir, best)
        else:
            checkpoint.remove_best(self.copy_dir)

    @contextmanager
    def acting_with_best(self) -> Iterator[None]:
        """The agent acts with the best evaluation's params meanwhile, then with its own again."""
        policy = self.agent.policy
        last_params, policy.params = policy.params, self.best["params"]
        try:
            yield
        finally:
            policy.params = last_params

    def close(self) -> None:
        for env in self.envs:
            env.close()
