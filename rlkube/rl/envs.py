"""The environment registry: names map to factories that build a wrapped gymnasium env.

Registered names get the wrappers they need, and Atari ids (`ALE/<Game>-v5`, `<Game>NoFrameskip-v4`) get
rlkube.rl.atari's preprocessing. Any other id that gymnasium itself knows also works, so a user's own
registered env runs without touching rlkube.

Training envs may differ from evaluation envs: a factory's `training=True` adds what only learning wants
(Atari: episodic lives, clipped rewards), while evaluation sees the real task.
"""

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rlkube.errors import UserError, one_of, unknown_name
from rlkube.rl import atari, atari_envpool
from rlkube.rl.hparams import HParams, hparams_registry
from rlkube.rl.registry import Registry

EnvFactory = Callable[..., gym.Env]

env_registry: Registry[EnvFactory] = Registry("env")


def _plain(env_id: str) -> EnvFactory:
    def make(render_mode: str | None = None, training: bool = False) -> gym.Env:
        del training  # these envs train as they evaluate
        return gym.make(env_id, render_mode=render_mode)

    make.__name__ = env_id
    return make


CLASSIC_CONTROL_IDS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0")
# These need the mujoco extra (pip install rlkube[mujoco]); make_env says so in one line where it is missing.
MUJOCO_IDS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5", "Swimmer-v5",
              "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5")
for _env_id in CLASSIC_CONTROL_IDS + MUJOCO_IDS:
    env_registry.register(_env_id)(_plain(_env_id))


class StepWait(gym.Wrapper):
    """A simulator that runs in real time: its steps come `seconds` apart, counted from its reset, and a step asked
    for early waits for its time on no CPU. Two cores cannot show actors scaling by CPU; with waiting envs the envs,
    not the cores, set the actors' pace (benchmarks/actor_scaling.py).

    The wait counts from the env's own beat, not from the call: an actor steps its envs one after another, yet they
    advance side by side, as game servers or a batched simulator would. So a vector of them takes `seconds` a step
    whatever its size, and an actor with E envs steps E / `seconds` env steps per second for as long as its own work
    takes less than `seconds` a step.
    """

    def __init__(self, env: gym.Env, seconds: float) -> None:
        super().__init__(env)
        self.seconds = seconds
        self.ready_at = 0.0  # time.monotonic() at which the next step may return

    def reset(self, **kwargs: Any) -> tuple:
        result = self.env.reset(**kwargs)
        self.ready_at = time.monotonic() + self.seconds
        return result

    def step(self, action: object) -> tuple:
        now = time.monotonic()
        if now < self.ready_at:
            time.sleep(self.ready_at - now)
            self.ready_at += self.seconds  # on the beat, however late the sleep woke
        else:
            self.ready_at = now + self.seconds  # called late: the beat starts again from now, with no burst
        return self.env.step(action)


# CartPole in real time at 100 steps/s: its steps come 10 ms apart, whatever the machine.
WAITING_CARTPOLE = "WaitingCartPole-v1"
STEP_WAIT_SECONDS = 0.01


@env_registry.register(WAITING_CARTPOLE)
def waiting_cartpole(render_mode: str | None = None, training: bool = False) -> gym.Env:
    del training
    return StepWait(gym.make("CartPole-v1", render_mode=render_mode), STEP_WAIT_SECONDS)


def env_ids() -> list[str]:
    """Every env id a run accepts, once each: rlkube's registered envs and gymnasium's ids, Atari's among them
    where ale-py is installed."""
    atari.register_ale_ids()
    return sorted({*env_registry.names(), *gym.envs.registry.keys()})


def check_env_name(name: str) -> None:
    """Raise a UserError unless `name` is a registered env or a gymnasium id."""
    if name in env_registry:
        return
    if atari.is_atari_id(name) and not atari.register_ale_ids():
        return  # no ale-py here (a laptop submitting to a cluster, say): the run's own ale-py judges the name
    if name in gym.envs.registry:
        return
    raise unknown_name("env", name, env_ids(), listing="`rlkube envs` lists them")


def check_action_space(hp: HParams, action_space: gym.Space) -> None:
    """A UserError, naming the agents that would fit, unless `hp`'s agent can drive this action space."""
    wanted = type(hp).action_spaces
    if not wanted or isinstance(action_space, wanted):
        return
    fits = sorted({hp_of_set.agent for hp_of_set in (hparams_registry[name]() for name in hparams_registry)
                   if isinstance(action_space, type(hp_of_set).action_spaces)})
    hint = f"; agents for it: {', '.join(fits)}" if fits else ""
    raise UserError(f"agent '{hp.agent}' needs a {one_of([space.__name__ for space in wanted])} action space, but "
                    f"env '{hp.env}' has {type(action_space).__name__}{hint}")


def check_vector_mode(name: str, mode: str) -> None:
    """A UserError for vector_mode=envpool on an env that is not an Atari id: rlkube steps only Atari on envpool."""
    if mode == "envpool" and not atari.is_atari_id(name):
        raise UserError(f"vector_mode=envpool steps Atari ids only, and env '{name}' is not one; "
                        f"use vector_mode=sync or async")


def check_env_fits(hp: HParams) -> None:
    """A UserError unless `hp.env` can be built here, with `hp.vector_mode`, and `hp`'s agent can drive its action
    space: what the run would find out only once TensorFlow had loaded."""
    check_vector_mode(hp.env, hp.vector_mode)
    env = make_env(hp.env)
    try:
        check_action_space(hp, env.action_space)
    finally:
        env.close()


def _factory(name: str) -> EnvFactory:
    if name in env_registry:
        return env_registry[name]
    if atari.is_atari_id(name):
        return functools.partial(atari.make_atari, name)
    return _plain(name)


def make_env(name: str, render_mode: str | None = None, training: bool = False) -> gym.Env:
    """Build the env named `name`; `render_mode` is gymnasium's ('rgb_array', 'human' or None).

    `training=True` builds the env that learning steps through; the default is the one evaluation scores.
    """
    check_env_name(name)
    try:
        return _factory(name)(render_mode=render_mode, training=training)
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"env '{name}' needs an extra: {error}") from None


def make_vector_env(name: str, num_envs: int, mode: str = "sync") -> gym.vector.VectorEnv:
    """`num_envs` training copies of env `name`, stepped together: in this process (sync), one process each
    (async), or, for Atari ids, in envpool's C++ threads (envpool; sync where envpool is not installed).

    Episodes reset in the same step they end (gymnasium's SAME_STEP autoreset), with the last
    observation in `info["final_obs"]`; `learning_next_obs` puts it back for the learner.
    """
    check_env_name(name)
    check_vector_mode(name, mode)
    if mode == "envpool":
        if atari_envpool.installed():
            return atari_envpool.EnvpoolAtari(name, num_envs)
        # Falling back rather than failing: the ALE pipeline trains the same game the same way, only slower.
        warnings.warn(f"vector_mode=envpool {atari_envpool.NEEDS_EXTRA}; training on the ALE pipeline in process",
                      stacklevel=2)
        mode = "sync"
    make_one = functools.partial(make_env, name, training=True)
    if mode == "sync":
        return gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    make_one().close()  # reject a missing extra here, in one line, rather than inside a worker process
    return gym.vector.AsyncVectorEnv([make_one] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def stacked_frame_axis(name: str) -> int | None:
    """The axis along which env `name`'s observations stack frames (Atari's last 4), or None."""
    return atari.FRAME_AXIS if atari.is_atari_id(name) else None


def learning_next_obs(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """What each env's action led to: `next_obs`, except the final observation where an episode ended."""
    if not done.any():
        return next_obs
    result = next_obs.copy()
    for index in np.flatnonzero(done):
        result[index] = info["final_obs"][index]
    return result
