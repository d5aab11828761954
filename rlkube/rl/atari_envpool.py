"""envpool as the Atari backend for training: the games and preprocessing of rlkube.rl.atari, stepped in C++ threads.

Each semantic is envpool's own option, set as `atari.make_atari` sets it: sticky actions from the id (0.25 for
`ALE/<Game>-v5`, none for `<Game>NoFrameskip-v4`), 1 to 30 no-op frames when a game starts, frame skip 4
with the max of the last two frames, 84x84 greyscale, 4 frames stacked, episodic lives and clipped rewards,
the minimal action set, no FIRE at reset, and games cut at 108,000 frames. With sticky actions off and one
no-op frame, its observations equal the ALE pipeline's bit for bit (tests/test_envpool.py). One difference
remains: after a lost life, envpool's reset plays 1 to 30 no-op frames where `atari.EpisodicLife` plays one
no-op step (4 frames). Evaluation stays on the ALE pipeline: it renders, and seeds each episode.

envpool resets an env on the step after its episode ended (gymnasium's NEXT_STEP); `EnvpoolAtari` takes that
step at once for the envs that ended, so that they reset in the same step, with the last observation in
`info["final_obs"]`, as `make_vector_env`'s other vectors do.

envpool's envs cannot be saved: they live in C++, which offers neither pickling nor the emulator's state. A
checkpoint therefore holds no envs, and a resumed run starts new episodes, as runs with async envs or workers do.
"""

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np

from rlkube.errors import UserError
from rlkube.rl import atari

NEEDS_EXTRA = "needs the envpool extra: pip install 'rlkube[envpool]'"


def installed() -> bool:
    """Whether envpool can be imported, without importing it (that takes seconds: it registers every family)."""
    return importlib.util.find_spec("envpool") is not None


def task_id(env_id: str) -> str:
    """envpool's id for the game of Atari id `env_id`: `ALE/SpaceInvaders-v5` -> `SpaceInvaders-v5`."""
    game = gym.spec(env_id).kwargs["game"]
    return "".join(word.capitalize() for word in game.split("_")) + "-v5"


class EnvpoolAtari(gym.vector.VectorEnv):
    """`num_envs` training copies of Atari id `env_id`, as `make_vector_env` gives them: observations
    [num_envs, 84, 84, 4] uint8 with the newest frame last, SAME_STEP autoreset, and each game's lives in
    `info["lives"]`.

    envpool fixes its seeds when it makes its envs, so a seeded reset makes them anew (env i gets seed + i, as
    in gymnasium's vectors). `num_threads` 0 is envpool's default: one thread per env, up to one per core.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}  # noqa: RUF012  (gymnasium's class attribute)

    def __init__(self, env_id: str, num_envs: int, num_threads: int = 0) -> None:
        import envpool  # noqa: PLC0415  (an optional extra, and seconds to import)

        if not atari.register_ale_ids():
            raise UserError(f"env '{env_id}' {atari.NEEDS_EXTRA}")
        self.task = task_id(env_id)
        if self.task not in envpool.list_all_envs():
            raise UserError(f"envpool has no game '{self.task}' for env '{env_id}'; vector_mode=sync runs it on ALE")
        game = gym.spec(env_id).kwargs
        self.options = {
            "num_envs": num_envs, "num_threads": num_threads,
            "repeat_action_probability": game["repeat_action_probability"],
            "noop_max": atari.NOOP_MAX, "frame_skip": atari.FRAME_SKIP,
            "img_height": atari.SCREEN_SIZE, "img_width": atari.SCREEN_SIZE, "gray_scale": True,
            "stack_num": atari.FRAME_STACK, "episodic_life": True, "reward_clip": True,
            "full_action_space": game["full_action_space"], "use_fire_reset": False,
            "max_episode_steps": game["max_num_frames_per_episode"] // atari.FRAME_SKIP,
        }
        self.num_envs = num_envs
        self.single_observation_space = atari.stacked_frames()
        self.single_action_space = envpool.make_spec(self.task, **self.options).action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.pool: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        del options  # gymnasium's vectors take none that these envs know
        if seed is not None or self.pool is None:
            import envpool  # noqa: PLC0415

            if seed is None:  # gymnasium's meaning: unseeded
                seed = int(np.random.SeedSequence().generate_state(1)[0])
            self.pool = None  # free the old envs before making new ones
            self.pool = envpool.make_gymnasium(self.task, seed=seed, **self.options)
        obs, _ = self.pool.reset()
        return _channels_last(obs), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminated, truncated, step_info = self.pool.step(np.asarray(actions))
        done = terminated | truncated
        info: dict[str, Any] = {"lives": step_info["lives"]}
        if done.any():
            info |= {"final_obs": _channels_last(obs), "_final_obs": done}
            ended = np.flatnonzero(done).astype(np.int32)
            # envpool resets an env that ended on its next step, ignoring its action. That reset, unlike envpool's
            # reset(), goes on with the same game after a lost life, as atari.EpisodicLife's does. In sync mode
            # envpool answers in the order of the env ids sent.
            obs[ended], *_, reset_info = self.pool.step(np.zeros(len(ended), np.int32), ended)
            info["lives"][ended] = reset_info["lives"]
        # float64 as gymnasium's vectors give rewards (clipped to -1, 0, 1: exact in either).
        return _channels_last(obs), rewards.astype(np.float64), terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        del kwargs
        self.pool = None  # envpool stops its threads when its pool is freed


def _channels_last(frames: np.ndarray) -> np.ndarray:
    """envpool's [num_envs, stack, height, width] -> [num_envs, height, width, stack], as atari.channels_last."""
    return np.ascontiguousarray(np.moveaxis(frames, 1, -1))
