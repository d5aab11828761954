"""Every agent, through the batched interface: same-seed determinism, exact checkpoint round trips, spaces.

Each registered hparams set is driven the way the runner drives it (act, step, observe, update over a
vector env) with settings shrunk so that it learns within a few hundred steps. The networks under the
agents compute the same on numpy (acting) and TensorFlow (learning) from the same named parameters.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl.agents import agent_registry, make_agent
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.distributions import DiagonalGaussian
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams, hparams_registry
from rlkube.rl.networks import ActorCriticNetwork, Critics, NumpyOps, ParamLayout, QNetwork, map_params, param_leaves
from rlkube.rl.pacing import ActorPacing

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


def smoke_overrides(name: str) -> str:
    """What makes the set learn early and often on a small network: its hparams type's smoke_overrides."""
    return type(get_hparams(name)).smoke_overrides


def small_hparams(name: str):
    return get_hparams(name, smoke_overrides(name))


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


# make test-all: per change, tests/test_golden.py's fixed-seed run of every variant, bit for bit, proves it.
@pytest.mark.full
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
    for mine, theirs in zip(param_leaves(agent.policy.params), param_leaves(restored.policy.params), strict=True):
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


@pytest.mark.parametrize("agent", agent_registry.names())
def test_an_agent_declares_how_its_actors_keep_pace(agent: str) -> None:
    # Agent declares no default: one that named no pacing would fail only once run with --num-workers. The worker
    # loop itself is tested under every mode (tests/test_workers.py).
    assert isinstance(agent_registry[agent].pacing, ActorPacing)


def test_soft_target_updates_collapse_missed_polyak_steps() -> None:
    hp = get_hparams("dqn_cartpole", smoke_overrides("dqn_cartpole") + ",target_update_period=5,target_update_tau=0.1")
    env = gym.make(hp.env)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    for variable in param_leaves(agent.online):
        variable.assign(variable + 1.0)
    before = [v.numpy() for v in param_leaves(agent.target)]
    agent.steps = 20  # four target periods have passed since the last learning step
    agent._sync_target()
    for old, online, new in zip(before, param_leaves(agent.online), param_leaves(agent.target), strict=True):
        expected = old
        for _ in range(4):
            expected = 0.9 * expected + 0.1 * online.numpy()
        np.testing.assert_allclose(new.numpy(), expected, rtol=1e-5)


# -- networks: one forward shape over named parameters, the same on numpy and TensorFlow ------------

OBS = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)


def noisy_dueling_q(rng: np.random.Generator) -> tuple[QNetwork, dict, dict]:
    network = QNetwork("mlp", (3,), 2, (8, 8), dueling=True, noisy=True)
    return network, network.initial_params(0), {"noise": network.noise_numpy(rng)}


def actor_critic(rng: np.random.Generator) -> tuple[ActorCriticNetwork, dict, dict]:
    del rng
    network = ActorCriticNetwork("mlp", (3,), DiagonalGaussian(2), (8,), False, "tanh", 0.5)
    return network, network.initial_params(0), {}


def twin_critics(rng: np.random.Generator) -> tuple[Critics, dict, dict]:
    network = Critics(3, 2, (8, 8), 2)
    return network, network.initial_params(rng), {"actions": rng.standard_normal((5, 2)).astype(np.float32)}


@pytest.mark.parametrize("make", [noisy_dueling_q, actor_critic, twin_critics])
def test_a_networks_forward_gives_the_same_on_numpy_and_tensorflow(make) -> None:
    network, params, options = make(np.random.default_rng(1))
    on_numpy = network.forward(params, OBS, NumpyOps, **options)
    on_tf = network.forward(map_params(tf.Variable, params), tf.constant(OBS), TFOps,
                            **tf.nest.map_structure(tf.constant, options))
    for mine, theirs in zip(tf.nest.flatten(on_numpy), tf.nest.flatten(on_tf), strict=True):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_param_layout_lays_a_tree_out_flat_and_back_as_views() -> None:
    network = ActorCriticNetwork("mlp", (3,), DiagonalGaussian(2), (8,), True, "tanh", 0.5)
    params = network.initial_params(0)
    layout = ParamLayout(params)
    flat = layout.flatten(params)
    restored = layout.unflatten(flat, NumpyOps)
    assert set(restored) == {"policy_torso", "policy_head", "value_head", "log_std"}  # a shared torso, once
    for mine, theirs in zip(param_leaves(restored), param_leaves(params), strict=True):
        np.testing.assert_array_equal(mine, theirs)
        assert np.shares_memory(mine, flat)
    on_tf = layout.unflatten(tf.constant(flat), TFOps)
    np.testing.assert_array_equal(on_tf["policy_head"]["dense_0"]["kernel"].numpy(),
                                  params["policy_head"]["dense_0"]["kernel"])
