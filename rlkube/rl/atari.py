"""Atari 2600 games through ale-py, preprocessed as in Mnih et al. (2015) and Stable-Baselines3's AtariWrapper.

Every `ALE/<Game>-v5` id gets this pipeline, and so does every `<Game>NoFrameskip-v4` id:

- no-op reset: up to 30 NOOPs when a game starts, so games start in different states;
- frame skip 4: an action repeats for 4 emulator frames, and the observation is the pixel-wise max of the
  last two (sprites flicker between frames);
- 84x84 greyscale, 4 frames stacked channels-last: [84, 84, 4] uint8 with the newest frame last;
- training only: a lost life ends the learner's episode while the game goes on, and rewards are clipped
  to their sign. Evaluation sees the real score of whole games.

Sticky actions: v5 ids keep gymnasium's meaning, repeat_action_probability=0.25 (Machado et al. 2018: with
that probability the emulator repeats the previous action, which makes games stochastic).
rl-baselines3-zoo's published Atari scores were measured on NoFrameskip-v4 ids, which have no sticky
actions; `<Game>NoFrameskip-v4` runs exactly that setting.

Checkpoints pickle the training envs, and a resumed run continues mid-game, bit for bit: see `ResumableALE`.
"""

import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformObservation, TransformReward

from rlkube.errors import UserError

ATARI_ID = re.compile(r"ALE/\w+-v5|\w+NoFrameskip-v4")
NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84
FRAME_STACK = 4
FRAME_AXIS = -1  # observations are [height, width, stack]: see channels_last
NEEDS_EXTRA = "needs the atari extra: pip install 'rlkube[atari]'"


def is_atari_id(name: str) -> bool:
    return ATARI_ID.fullmatch(name) is not None


def register_ale_ids() -> bool:
    """Make ale-py's ids known to gymnasium; False where ale-py is not installed."""
    try:
        import ale_py  # noqa: PLC0415  (an optional extra, imported only for Atari ids)
    except ImportError:
        return False
    gym.register_envs(ale_py)
    return True


def make_atari(env_id: str, render_mode: str | None = None, training: bool = False) -> gym.Env:
    """The preprocessed game `env_id`; `training` adds episodic lives and reward clipping."""
    if not register_ale_ids():
        raise UserError(f"env '{env_id}' {NEEDS_EXTRA}")
    sticky = gym.spec(env_id).kwargs["repeat_action_probability"]
    # frameskip=1: AtariPreprocessing skips, so that it can max-pool the last two frames.
    game = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, render_mode=render_mode)
    env = ResumableALE(game, sticky)
    try:
        env = AtariPreprocessing(env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE)
    except gym.error.DependencyNotInstalled:  # OpenCV, for resizing
        raise UserError(f"env '{env_id}' {NEEDS_EXTRA}") from None
    if training:
        # np.sign rather than gymnasium's ClipReward, whose lambda does not pickle into a checkpoint.
        env = TransformReward(EpisodicLife(env), np.sign)
    env = FrameStackObservation(env, FRAME_STACK)
    return TransformObservation(env, channels_last, stacked_frames())


def stacked_frames() -> gym.spaces.Box:
    """The observation space of a preprocessed game: [84, 84, 4] uint8."""
    return gym.spaces.Box(0, 255, (SCREEN_SIZE, SCREEN_SIZE, FRAME_STACK), np.uint8)


def channels_last(frames: np.ndarray) -> np.ndarray:
    """[stack, height, width] -> [height, width, stack]: the layout TensorFlow's CPU convolutions take."""
    return np.ascontiguousarray(np.moveaxis(frames, 0, -1))


class EpisodicLife(gym.Wrapper):
    """Losing a life ends the episode for the learner; the next reset continues the same game.

    This is SB3's EpisodicLifeEnv. Gymnasium's `AtariPreprocessing(terminal_on_life_loss=True)` differs:
    its reset starts a new game, so the agent would rarely see the later stages of a game.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        terminated = terminated or 0 < lives < self.lives
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, game_over, truncated, info = self.env.step(0)  # NOOP: the game goes on
            if game_over or truncated:
                obs, info = self.env.reset(options=options)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class ResumableALE(gym.Wrapper):
    """The game with sticky actions, pickled where it stands.

    ale-py's env pickles as a newly constructed game, so this adds the emulator's state and the env's
    numpy RNG. The emulator's state leaves out the previous action that ALE's sticky actions repeat,
    though; so the emulator runs without them, and this wrapper repeats actions instead, frame by frame
    as ALE does (the base env skips no frames), drawing from the env's numpy RNG.
    """

    def __init__(self, env: gym.Env, repeat_action_probability: float) -> None:
        super().__init__(env)
        self.repeat_action_probability = repeat_action_probability
        self.previous_action = 0  # NOOP, as after ALE's own reset

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.np_random.random() >= self.repeat_action_probability:
            self.previous_action = action
        return self.env.step(self.previous_action)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.previous_action = 0
        return self.env.reset(seed=seed, options=options)

    def __getstate__(self) -> dict[str, Any]:
        game = self.env.unwrapped
        return {**self.__dict__, "emulator": game.clone_state(include_rng=True),
                "np_random_state": game.np_random.bit_generator.state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        emulator, np_random_state = state.pop("emulator"), state.pop("np_random_state")
        self.__dict__.update(state)
        game = self.env.unwrapped
        game.restore_state(emulator)
        game.np_random.bit_generator.state = np_random_state
