"""A Pong-shaped environment for timing learners: 84x84x4 uint8 frame stacks, 6 actions, almost free to step.

Imports only gymnasium and numpy, so that rlkube's side and Stable-Baselines3's (in its own venv) step the very
same environment, at the same cost, and the time measured is the frameworks'. Each step shifts the stack by one
new frame (drawn from a small pool, as Atari's preprocessing stacks its last four), so rlkube's replay stores
each frame once as it does for Atari; an episode lasts EPISODE_STEPS steps with a reward now and then.
"""

import gymnasium as gym
import numpy as np

EPISODE_STEPS = 1_000
FRAME_POOL = 64


class PongShapedEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    action_space = gym.spaces.Discrete(6)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.frames = self.rng.integers(0, 256, (FRAME_POOL, 84, 84), dtype=np.uint8)
        self.stack = np.zeros((84, 84, 4), np.uint8)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed, options=options)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.steps = 0
        for _ in range(4):
            self._push_frame()
        return self.stack.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        del action
        self.steps += 1
        self._push_frame()
        reward = float(self.rng.choice((-1.0, 0.0, 1.0), p=(0.01, 0.98, 0.01)))
        return self.stack.copy(), reward, self.steps >= EPISODE_STEPS, False, {}

    def _push_frame(self) -> None:
        self.stack[..., :-1] = self.stack[..., 1:]
        self.stack[..., -1] = self.frames[self.rng.integers(FRAME_POOL)]
