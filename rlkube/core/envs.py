"""The environment registry: names map to factories that build a wrapped gymnasium env.

Registered names get the wrappers they need (Atari preprocessing, say). Any other id that gymnasium
itself knows also works, so a user's own registered env runs without touching rlkube.
"""

from collections.abc import Callable

import gymnasium as gym

from rlkube.core.errors import UserError, unknown_name
from rlkube.core.registry import Registry

EnvFactory = Callable[..., gym.Env]

env_registry: Registry[EnvFactory] = Registry("env")


def _plain(env_id: str) -> EnvFactory:
    def make(render_mode: str | None = None) -> gym.Env:
        return gym.make(env_id, render_mode=render_mode)

    make.__name__ = env_id
    return make


for _env_id in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0"):
    env_registry.register(_env_id)(_plain(_env_id))


def check_env_name(name: str) -> None:
    """Raise a UserError unless `name` is a registered env or a gymnasium id."""
    if name in env_registry or name in gym.envs.registry:
        return
    raise unknown_name("env", name, [*env_registry.names(), *gym.envs.registry.keys()])


def make_env(name: str, render_mode: str | None = None) -> gym.Env:
    """Build the env named `name`; `render_mode` is gymnasium's ('rgb_array', 'human' or None)."""
    check_env_name(name)
    factory = env_registry[name] if name in env_registry else _plain(name)
    try:
        return factory(render_mode=render_mode)
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"env '{name}' needs an extra: {error}") from None
