"""Every registered DQN-family set: checkpoint round trips and same-seed determinism."""

import copy

import gymnasium as gym
import numpy as np
import pytest

from rlkube.core.agents import make_agent
from rlkube.core.hparams import get_hparams, hparams_registry

SMALL = "hidden_sizes=32;32,learning_starts=50,train_freq=20,gradient_steps=4,batch_size=16,memory_size=500"
DQN_SETS = [name for name in hparams_registry.names() if get_hparams(name).agent == "dqn"]


def run_steps(agent, env, obs, steps: int) -> tuple[object, list[float]]:
    """The runner's loop for `steps` steps; returns the last observation and the losses learned."""
    losses = []
    for _ in range(steps):
        actions, extras = agent.act(obs[None])
        next_obs, reward, terminated, truncated, _ = env.step(actions[0])
        agent.observe(obs[None], actions, np.array([reward]), next_obs[None], np.array([terminated]),
                      np.array([truncated]), extras)
        if learned := agent.update():
            losses.append(learned["losses/td_loss"])
        obs = env.reset()[0] if terminated or truncated else next_obs
    return obs, losses


def trained_agent(name: str, seed: int = 0, steps: int = 200):
    hp = get_hparams(name, SMALL)
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, seed)
    obs, losses = run_steps(agent, env, env.reset(seed=seed)[0], steps)
    return agent, env, obs, losses


@pytest.mark.parametrize("name", DQN_SETS)
def test_same_seed_gives_the_same_losses(name: str) -> None:
    first = trained_agent(name)[3]
    assert first, "the agent never learned"
    assert trained_agent(name)[3] == first


@pytest.mark.parametrize("name", DQN_SETS)
def test_checkpoint_round_trip_continues_identically(name: str) -> None:
    agent, env, obs, _ = trained_agent(name)
    state = agent.state_dict()
    env_copy = copy.deepcopy(env)

    restored, *_ = trained_agent(name, seed=123, steps=0)
    restored.load_state_dict(state)
    for mine, theirs in zip(agent.online + agent.target, restored.online + restored.target, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert run_steps(restored, env_copy, obs, 100)[1] == run_steps(agent, env, obs, 100)[1]


def test_soft_target_updates_collapse_missed_polyak_steps() -> None:
    hp = get_hparams("dqn_cartpole", SMALL + ",target_update_period=5,target_update_tau=0.1")
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
