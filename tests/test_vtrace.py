"""IMPALA's V-trace against the paper's equations, re-derived here in float64 numpy; and the lag its learner logs."""

import math

import numpy as np
import pytest

from rlkube.rl.agents import make_agent
from rlkube.rl.agents.vtrace import vtrace
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.rollout import generalized_advantages

STEPS, ENVS = 9, 6


def paper_vtrace(log_rhos: np.ndarray, rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                 terminated: np.ndarray, truncated: np.ndarray, gamma: float, rho_bar: float,
                 c_bar: float) -> tuple[np.ndarray, np.ndarray]:
    """Espeholt et al. (2018), section 4.1, one environment and one step at a time, backwards from the rollout's end:

        v_s = V(x_s) + delta_s + gamma c_s (v_{s+1} - V(x_{s+1})),  delta_s = rho_s (r_s + gamma V(x_{s+1}) - V(x_s)),
        A_s = rho_s (r_s + gamma v_{s+1} - V(x_s)),

    with rho_s = min(rho_bar, pi/mu), c_s = min(c_bar, pi/mu). Past the rollout's end v = V. At an episode's end
    the recursion stops: a terminal's successor is worth 0, a truncated step's is V(final observation).
    """
    values, next_values, rewards = (np.asarray(x, np.float64) for x in (values, next_values, rewards))
    targets, advantages = np.zeros_like(values), np.zeros_like(values)
    for env in range(values.shape[1]):
        for s in reversed(range(values.shape[0])):
            ratio = math.exp(float(log_rhos[s, env]))
            rho, c = min(rho_bar, ratio), min(c_bar, ratio)
            successor = 0.0 if terminated[s, env] else next_values[s, env]  # V(x_{s+1})
            delta = rho * (rewards[s, env] + gamma * successor - values[s, env])
            same_episode_next = s + 1 < values.shape[0] and not (terminated[s, env] or truncated[s, env])
            if same_episode_next:
                targets[s, env] = values[s, env] + delta + gamma * c * (targets[s + 1, env] - values[s + 1, env])
                next_target = targets[s + 1, env]
            else:
                targets[s, env] = values[s, env] + delta
                next_target = successor
            advantages[s, env] = rho * (rewards[s, env] + gamma * next_target - values[s, env])
    return targets, advantages


def random_rollout(seed: int, episode_ends: bool) -> dict[str, np.ndarray]:
    """[STEPS, ENVS] float32 arrays: values of a chain of states per environment, some episodes ending inside."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(STEPS + 1, ENVS)).astype(np.float32)  # V(x_0) .. V(x_T)
    terminated = rng.random((STEPS, ENVS)) < (0.15 if episode_ends else 0.0)
    truncated = ~terminated & (rng.random((STEPS, ENVS)) < (0.15 if episode_ends else 0.0))
    next_values = states[1:].copy()
    # After a time limit the successor is the episode's final observation, not the next row's first state.
    next_values[truncated] = rng.normal(size=int(truncated.sum())).astype(np.float32)
    return {"log_rhos": rng.normal(0.0, 0.6, (STEPS, ENVS)).astype(np.float32),
            "rewards": rng.normal(size=(STEPS, ENVS)).astype(np.float32), "values": states[:-1],
            "next_values": next_values, "terminated": terminated, "truncated": truncated}


@pytest.mark.parametrize(("rho_bar", "c_bar"), [(1.0, 1.0), (2.0, 0.7), (0.8, 0.8), (math.inf, math.inf)])
@pytest.mark.parametrize("episode_ends", [False, True], ids=["no-ends", "episode-ends"])
def test_vtrace_equals_the_papers_recursion_in_float64(rho_bar: float, c_bar: float, episode_ends: bool) -> None:
    rollout = random_rollout(seed=int(episode_ends), episode_ends=episode_ends)
    if episode_ends:
        assert rollout["terminated"].any(), "an episode terminates inside the rollout"
        assert rollout["truncated"].any(), "an episode is truncated inside the rollout"
    ratios = np.exp(rollout["log_rhos"])
    assert (ratios > 2.0).any(), "the clipping is exercised"
    assert (ratios < 0.5).any(), "and so are ratios below it"
    expected_targets, expected_advantages = paper_vtrace(**rollout, gamma=0.9, rho_bar=rho_bar, c_bar=c_bar)
    got = vtrace(**rollout, gamma=0.9, rho_bar=rho_bar, c_bar=c_bar)
    np.testing.assert_allclose(got.values.numpy(), expected_targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.advantages.numpy(), expected_advantages, rtol=1e-5, atol=1e-5)


def n_step_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                   gamma: float) -> np.ndarray:
    """Each step's discounted rewards to its episode's end or the rollout's, plus the discounted bootstrap value there
    (none after a terminal), summed forwards in float64."""
    returns = np.zeros(rewards.shape)
    for env in range(rewards.shape[1]):
        for s in range(rewards.shape[0]):
            total, discount, t = 0.0, 1.0, s
            while True:
                total += discount * float(rewards[t, env])
                discount *= gamma
                if terminated[t, env]:
                    break
                if truncated[t, env] or t == rewards.shape[0] - 1:
                    total += discount * float(next_values[t, env])
                    break
                t += 1
            returns[s, env] = total
    return returns


@pytest.mark.parametrize("truncation", [1.0, 3.0], ids=["rho-c-bar-1", "rho-c-bar-3"])
@pytest.mark.parametrize("episode_ends", [False, True], ids=["no-ends", "episode-ends"])
def test_on_policy_vtrace_is_the_n_step_bootstrapped_return(truncation: float, episode_ends: bool) -> None:
    rollout = {**random_rollout(seed=7, episode_ends=episode_ends), "log_rhos": np.zeros((STEPS, ENVS), np.float32)}
    got = vtrace(**rollout, gamma=0.95, rho_bar=truncation, c_bar=truncation)
    returns = n_step_returns(rollout["rewards"], rollout["next_values"], rollout["terminated"], rollout["truncated"],
                             0.95)
    np.testing.assert_allclose(got.values.numpy(), returns, rtol=1e-5, atol=1e-5)
    # The same targets as GAE with lambda 1 (no truncation of the traces), which VPG learns from.
    bootstrap = np.where(rollout["truncated"], rollout["next_values"], 0.0)
    bootstrap[-1] = rollout["next_values"][-1]
    _, gae_returns = generalized_advantages(rollout["rewards"], rollout["values"], bootstrap, rollout["terminated"],
                                            rollout["truncated"], 0.95, 1.0)
    np.testing.assert_allclose(got.values.numpy(), gae_returns, rtol=1e-5, atol=1e-5)
    # The policy gradient's advantage: the one-step TD error towards the next step's target.
    next_targets = np.concatenate([returns[1:], np.zeros((1, ENVS))])
    next_targets = np.where(rollout["terminated"] | rollout["truncated"], rollout["next_values"], next_targets)
    next_targets[-1] = rollout["next_values"][-1]
    next_targets[rollout["terminated"]] = 0.0
    np.testing.assert_allclose(got.advantages.numpy(), rollout["rewards"] + 0.95 * next_targets - rollout["values"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lag", [None, 3])
def test_impala_logs_the_policy_lag_of_the_rollout_it_learned_from(lag: int | None) -> None:
    """In this process the policy that acted is the learner's (lag 0); actor processes tag their steps with theirs."""
    hp = get_hparams("impala_cartpole", "hidden_sizes=8;8,n_steps=4,num_envs=2")
    env, envs = make_env(hp.env), make_vector_env(hp.env, hp.num_envs)
    agent = make_agent(hp, env.observation_space, env.action_space, 0)
    obs, _ = envs.reset(seed=0)
    learned = {}
    while not learned:
        actions, extras = agent.act(obs)
        if lag is not None:
            extras["policy_lag"] = np.full(hp.num_envs, lag)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        agent.observe(obs, actions, rewards, learning_next_obs(next_obs, terminated | truncated, info), terminated,
                      truncated, extras)
        learned, obs = agent.update(), next_obs
    assert learned["charts/policy_lag"] == (lag or 0)
    assert learned["losses/importance_ratio"] == pytest.approx(1.0, abs=1e-5), "acting and learning share weights"
