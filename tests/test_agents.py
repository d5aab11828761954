"""Every agent, through the batched interface: same-seed determinism, exact checkpoint round trips, spaces.

Each registered hparams set is driven the way the runner drives it (act, step, observe, update over a
vector env) with settings shrunk so that it learns within a few hundred steps.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest

from rlkube.errors import UserError
from rlkube.rl.agents import agent_registry, make_agent
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams, hparams_registry

# Per agent, overrides that make any of its sets learn early and often on a small network.
SMALL = {
    "ddpg": "hidden_sizes=32;32,learning_starts=50,batch_size=16,memory_size=500",
    "dqn": "hidden_sizes=32;32,learning_starts=50,train_freq=20,gradient_steps=4,batch_size=16,memory_size=500",
    "ppo": "hidden_sizes=16;16,n_steps=16,batch_size=32,n_epochs=2",
    "sac": "hidden_sizes=32;32,learning_starts=50,batch_size=16,memory_size=500",
    "vpg": "hidden_sizes=16;16,n_steps=16,batch_size=128",
}
CLASSIC_ENVS = ("CartPole-v1", "Pendulum-v1")


def small_sets() -> list[str]:
    """Every set on a cheap env, plus one set per agent whatever its env (Atari and MuJoCo are slower)."""
    names = sorted(hparams_registry.names())
    chosen = [n for n in names if get_hparams(n).env in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0",
                                                           "Pendulum-v1", "MountainCarContinuous-v0")]
    for agent in agent_registry.names():
        if not any(get_hparams(n).agent == agent for n in chosen):
            chosen += [n for n in names if get_hparams(n).agent == agent][:1]
    return chosen


def small_hparams(name: str):
    return get_hparams(name, SMALL[get_hparams(name).agent])


def run_steps(agent, envs, obs, steps: int) -> tuple[np.ndarray, list[dict[str, float]]]:
    """The runner's loop for `steps` vector steps; returns the last observations and what was learned."""
    learned_all = []
    for _ in range(steps):
        actions, extras = agent.act(obs)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        agent.observe(obs, actions, rewards, learning_next_obs(next_obs, done, info), terminated, truncated, extras)
        if learned := agent.update():
            learned_all.append(learned)
        obs = next_obs
    return obs, learned_all


def trained_agent(name: str, seed: int = 0, steps: int = 200):
    hp = small_hparams(name)
    single = make_env(hp.env)
    envs = make_vector_env(hp.env, hp.num_envs)
    agent = make_agent(hp, single.observation_space, single.action_space, seed)
    obs, learned = run_steps(agent, envs, envs.reset(seed=seed)[0], steps)
    return agent, envs, obs, learned


@pytest.mark.parametrize("name", small_sets())
def test_same_seed_gives_the_same_updates(name: str) -> None:
    first = trained_agent(name)[3]
    assert first, "the agent never learned"
    assert trained_agent(name)[3] == first


@pytest.mark.parametrize("name", small_sets())
def test_checkpoint_round_trip_continues_identically(name: str) -> None:
    agent, envs, obs, _ = trained_agent(name)
    state = copy.deepcopy(agent.state_dict())
    envs_copy = copy.deepcopy(envs)

    restored, *_ = trained_agent(name, seed=123, steps=0)
    restored.load_state_dict(state)
    for mine, theirs in zip(agent.policy.params, restored.policy.params, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    continued = run_steps(restored, envs_copy, obs, 100)[1]
    assert continued, "nothing was learned after the restore"
    assert continued == run_steps(agent, envs, obs, 100)[1]


@pytest.mark.parametrize("agent", agent_registry.names())
def test_an_agent_refuses_an_action_space_it_cannot_drive(agent: str) -> None:
    name = next(n for n in hparams_registry.names() if get_hparams(n).agent == agent)
    for env_name in CLASSIC_ENVS:
        hp = get_hparams(name, {"env": env_name})
        env = make_env(env_name)
        if isinstance(env.action_space, agent_registry[agent].action_spaces):
            continue
        with pytest.raises(UserError, match=f"agent '{agent}' needs a .* action space, but env '{env_name}' has"):
            make_agent(hp, env.observation_space, env.action_space, 0)


def test_soft_target_updates_collapse_missed_polyak_steps() -> None:
    hp = get_hparams("dqn_cartpole", SMALL["dqn"] + ",target_update_period=5,target_update_tau=0.1")
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    for variable in agent.online:
        variable.assign(variable + 1.0)
    before = [v.numpy() for v in agent.target]
    agent.steps = 20  # four target periods have passed since the last learning step
    agent._sync_target()
    for old, online, new in zip(before, agent.online, agent.target, strict=True):
        expected = old
        for _ in range(4):
            expected = 0.9 * expected + 0.1 * online.numpy()
        np.testing.assert_allclose(new.numpy(), expected, rtol=1e-5)
