"""Distributional DQN: C51's projection and cross-entropy, QR-DQN's quantile Huber loss, their heads and acting.

The losses are checked against references written independently in numpy: C51's projection as Bellemare
et al.'s Algorithm 1 (floor and ceiling of each return's position), QR-DQN's loss as the paper's double sum.
The losses run on a tabular "network" (a table of outputs indexed by observation) so that every value
they see is known.
"""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl.agents import make_agent
from rlkube.rl.agents.tf_ops import TFOps
from rlkube.rl.envs import make_env, make_vector_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.losses import (
    HEAD_LOSSES,
    CategoricalLoss,
    QuantileLoss,
    Transitions,
    categorical_projection,
    dqn_loss,
    quantile_huber_loss,
)
from rlkube.rl.networks import (
    Q_HEADS,
    CategoricalHead,
    NumpyOps,
    QHead,
    QNetwork,
    QuantileHead,
    c51_support,
    map_params,
    q_head,
)
from rlkube.rl.policies import QPolicy
from rlkube.rl.schedules import LinearSchedule
from tests.test_agents import run_steps

SUPPORT = (-1.0, 0.0, 1.0)


def test_categorical_projection_matches_a_hand_computed_example() -> None:
    probs = tf.constant([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]])
    # Row 0: reward 0.5, discount 1 moves the atoms to -0.5, 0.5 and 1.5 (clipped to 1). Row 1: terminal, all
    # the mass on the reward 0.3.
    returns = tf.constant([[-0.5, 0.5, 1.5], [0.3, 0.3, 0.3]])
    projected = categorical_projection(probs, returns, tf.constant(SUPPORT))
    np.testing.assert_allclose(projected.numpy(), [[0.1, 0.35, 0.55], [0.0, 0.7, 0.3]], atol=1e-6)


def test_categorical_projection_keeps_returns_at_or_beyond_the_ends_in_their_own_row() -> None:
    """On Atari's support, float32 puts the last atom a hair past its index: its mass must not spill over."""
    support = tf.constant(c51_support(51, -10.0, 10.0))
    probs = tf.fill((3, 51), 1.0 / 51)
    returns = tf.constant([[10.0] * 51, [-10.0] * 51, [25.0] * 51])
    projected = categorical_projection(probs, returns, support).numpy()
    np.testing.assert_allclose(projected[:, -1], [1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(projected[:, 0], [0.0, 1.0, 0.0], atol=1e-6)


def projection_reference(probs: np.ndarray, returns: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Bellemare et al. (2017), Algorithm 1, one return at a time."""
    spacing = support[1] - support[0]
    projected = np.zeros_like(probs)
    for row in range(len(probs)):
        for j, value in enumerate(np.clip(returns[row], support[0], support[-1])):
            position = (value - support[0]) / spacing
            lower, upper = int(np.floor(position)), int(np.ceil(position))
            if lower == upper:  # on an atom: all of it there
                projected[row, lower] += probs[row, j]
            else:
                projected[row, lower] += probs[row, j] * (upper - position)
                projected[row, upper] += probs[row, j] * (position - lower)
    return projected


def quantile_loss_reference(quantiles: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Dabney et al. (2017), eq. 10 with kappa 1: sum over quantiles i, mean over target samples j."""
    count = quantiles.shape[1]
    losses = np.zeros(len(quantiles))
    for row in range(len(quantiles)):
        for i in range(count):
            fraction = (2 * i + 1) / (2 * count)
            for sample in samples[row]:
                error = sample - quantiles[row, i]
                huber = 0.5 * error ** 2 if abs(error) <= 1.0 else abs(error) - 0.5
                losses[row] += abs(fraction - (error < 0)) * huber / samples.shape[1]
    return losses


def test_quantile_huber_loss_matches_the_papers_double_sum() -> None:
    rng = np.random.default_rng(0)
    quantiles = rng.normal(0.0, 2.0, (4, 5)).astype(np.float32)
    samples = rng.normal(0.5, 2.0, (4, 7)).astype(np.float32)
    np.testing.assert_allclose(quantile_huber_loss(tf.constant(quantiles), tf.constant(samples)).numpy(),
                               quantile_loss_reference(quantiles, samples), rtol=1e-5)


# -- the losses on a tabular network: observation i's outputs are table[i], [actions, atoms] ------------------

BATCH = Transitions(obs=tf.constant([0, 1]), action=tf.constant([1, 0], tf.int64), reward=tf.constant([0.5, -0.25]),
                    next_obs=tf.constant([2, 3]), discount=tf.constant([0.9 ** 3, 0.0]),  # 3-step; terminal
                    weights=tf.constant([1.0, 0.5]))


def tabular(params: tf.Tensor, obs: tf.Tensor) -> tf.Tensor:
    return tf.gather(params, obs)


def tables() -> tuple[np.ndarray, np.ndarray]:
    """Online and target outputs for 4 observations, 2 actions, 3 atoms. For observation 2 they disagree on the
    best action, by expected return on SUPPORT and by mean alike (seed 15 is one where they do)."""
    online, target = np.random.default_rng(15).normal(0.0, 1.0, (2, 4, 2, 3)).astype(np.float32)
    return online, target


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("double_q", [False, True])
def test_c51_loss_is_the_cross_entropy_to_the_projected_target(double_q: bool) -> None:
    online, target = tables()
    support = np.array(SUPPORT, np.float32)
    reward, discount, weights = (BATCH.reward.numpy(), BATCH.discount.numpy(), BATCH.weights.numpy())
    chooser = online if double_q else target
    next_action = (softmax(chooser[[2, 3]]) @ support).argmax(axis=1)
    next_probs = softmax(target[[2, 3]])[np.arange(2), next_action]
    target_probs = projection_reference(next_probs, reward[:, None] + discount[:, None] * support, support)
    log_probs = np.log(softmax(online[[0, 1]])[np.arange(2), BATCH.action.numpy()])
    cross_entropy = -(target_probs * log_probs).sum(axis=1)

    output = CategoricalLoss(SUPPORT, double_q)(tabular, tf.constant(online), tf.constant(target), BATCH)
    np.testing.assert_allclose(output.priorities.numpy(), cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(output.loss.numpy(), np.mean(weights * cross_entropy), rtol=1e-5)
    np.testing.assert_allclose(output.q_values.numpy(), np.mean(np.exp(log_probs) @ support), rtol=1e-5)


@pytest.mark.parametrize("double_q", [False, True])
def test_qr_loss_is_the_quantile_huber_loss_to_the_shifted_target_quantiles(double_q: bool) -> None:
    online, target = tables()
    reward, discount, weights = (BATCH.reward.numpy(), BATCH.discount.numpy(), BATCH.weights.numpy())
    chooser = online if double_q else target
    next_action = chooser[[2, 3]].mean(axis=2).argmax(axis=1)
    samples = reward[:, None] + discount[:, None] * target[[2, 3]][np.arange(2), next_action]
    quantiles = online[[0, 1]][np.arange(2), BATCH.action.numpy()]
    per_sample = quantile_loss_reference(quantiles, samples)

    output = QuantileLoss(double_q)(tabular, tf.constant(online), tf.constant(target), BATCH)
    np.testing.assert_allclose(output.priorities.numpy(), per_sample, rtol=1e-5)
    np.testing.assert_allclose(output.loss.numpy(), np.mean(weights * per_sample), rtol=1e-5)
    np.testing.assert_allclose(output.q_values.numpy(), quantiles.mean(), rtol=1e-5)


@pytest.mark.parametrize("loss", [CategoricalLoss(SUPPORT, double_q=False), QuantileLoss(double_q=False)])
def test_double_q_changes_which_next_action_the_target_rates(loss: CategoricalLoss | QuantileLoss) -> None:
    """The tables' online and target outputs disagree on the non-terminal transition's best next action, so a
    loss that ignored double_q would pass only one of the tests above: here it would give the same loss twice."""
    online, target = (tf.constant(table) for table in tables())
    single = loss(tabular, online, target, BATCH)
    double = dataclasses.replace(loss, double_q=True)(tabular, online, target, BATCH)
    assert single.priorities[1].numpy() == pytest.approx(double.priorities[1].numpy())  # terminal: no next action
    assert single.priorities[0].numpy() != pytest.approx(double.priorities[0].numpy())


@pytest.mark.parametrize(("distributional", "expected"), [("c51", [0.5, 0.5]), ("qr", [0.25, 0.75])])
def test_a_head_learns_the_return_distribution_of_a_coin_flip(distributional: str, expected: list[float]) -> None:
    """Terminal transitions paying 0 or 1 at random: C51 learns half the mass on each; QR-DQN's two quantiles,
    at fractions 1/4 and 3/4, settle where their Huber (quadratic below 1) loss balances: 1/4 and 3/4."""
    hp = get_hparams("dqn_cartpole", f"distributional={distributional},num_atoms=3,v_min=0,v_max=2,num_quantiles=2")
    network = QNetwork("mlp", (1,), 1, (), head=q_head(hp))
    online = map_params(tf.Variable, network.initial_params(0))
    loss = dqn_loss(hp)
    optimizer = tf.keras.optimizers.Adam(0.05)
    rewards = np.random.default_rng(0).integers(0, 2, (300, 64)).astype(np.float32)

    @tf.function
    def step(reward: tf.Tensor) -> None:
        ones = tf.ones_like(reward)
        batch = Transitions(ones[:, None], tf.zeros_like(reward, tf.int64), reward, ones[:, None], 0.0 * ones, ones)
        with tf.GradientTape() as tape:
            output = loss(lambda params, obs: network.forward(params, obs, TFOps), online, online, batch)
        variables = tf.nest.flatten(online)
        optimizer.apply_gradients(zip(tape.gradient(output.loss, variables), variables, strict=True))

    for reward in rewards:
        step(tf.constant(reward))
    outputs = network.forward(map_params(lambda v: v.numpy(), online), np.ones((1, 1), np.float32), NumpyOps)[0, 0]
    learned = softmax(outputs)[:2] if distributional == "c51" else outputs
    np.testing.assert_allclose(learned, expected, atol=0.06)


# -- the heads: numpy (acting) and TensorFlow (learning) agree; acting is greedy on the expected return ---------

@pytest.mark.parametrize("head", [CategoricalHead(c51_support(5, -2.0, 2.0)), QuantileHead(5)], ids=["c51", "qr"])
@pytest.mark.parametrize(("model", "obs_shape", "hidden_sizes"),
                         [("mlp", (3,), (8, 8)), ("nature_cnn", (36, 36, 2), (16,))])
def test_a_distributional_heads_forward_gives_the_same_on_numpy_and_tensorflow(
        head: QHead, model: str, obs_shape: tuple[int, ...], hidden_sizes: tuple[int, ...]) -> None:
    network = QNetwork(model, obs_shape, 4, hidden_sizes, dueling=True, noisy=True, head=head)
    params = network.initial_params(0)
    obs = np.random.default_rng(0).uniform(0, 255, (6, *obs_shape)).astype(np.float32)
    noise = network.noise_numpy(np.random.default_rng(1))
    on_numpy = network.forward(params, obs, NumpyOps, noise=noise)
    on_tf = network.forward(map_params(tf.Variable, params), tf.constant(obs), TFOps,
                            noise=tf.nest.map_structure(tf.constant, noise))
    assert on_numpy.shape == (6, 4, 5)
    np.testing.assert_allclose(on_numpy, on_tf.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(network.q_values(on_numpy, NumpyOps), network.q_values(on_tf, TFOps).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_per_atom_dueling_centres_the_advantages_of_every_atom() -> None:
    network = QNetwork("mlp", (3,), 4, (8,), dueling=True, head=QuantileHead(5))
    params = network.initial_params(0)
    obs = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    outputs = network.forward(params, obs, NumpyOps)
    features = network.torso.forward(params["torso"], obs, NumpyOps)
    value = network.heads["value"].forward(params["value"], features, NumpyOps)
    np.testing.assert_allclose(outputs.mean(axis=1), value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("distributional", "head_bias"), [
    # Action 0: nearly certain to return 1. Action 1: likelier to return 0 than 10, so its most likely return
    # is the lower, but its expected return (about 4) the higher.
    ("c51", [-20.0, 20.0, -20.0, np.log(0.6), -20.0, np.log(0.4)]),
    # Action 0: all quantiles at 1. Action 1: median 0, mean 4/3.
    ("qr", [1.0, 1.0, 1.0, -5.0, 0.0, 9.0]),
])
def test_acting_is_greedy_on_the_expected_return(distributional: str, head_bias: list[float]) -> None:
    head = CategoricalHead(np.array([0.0, 1.0, 10.0], np.float32)) if distributional == "c51" else QuantileHead(3)
    network = QNetwork("mlp", (2,), 2, (4,), head=head)
    params = network.initial_params(0)
    params["head"]["dense_0"]["kernel"][:] = 0.0
    params["head"]["dense_0"]["bias"][:] = head_bias
    policy = QPolicy(network, params, 2, LinearSchedule(0.0, 0.0, 1), random_steps=0, seed=0)
    obs = np.zeros((3, 2), np.float32)
    assert policy.q_values(obs, explore=False)[0, 1] == pytest.approx(4.0 if distributional == "c51" else 4 / 3,
                                                                      rel=1e-4)
    assert list(policy.act(obs, explore=False, step=0)[0]) == [1, 1, 1]
    assert list(policy.act(obs, explore=True, step=0)[0]) == [1, 1, 1]


# -- hparams ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "message"), [
    ("distributional=c51,v_min=5,v_max=5", "hparam 'v_min' (5.0) must be below 'v_max' (5.0)"),
    ("distributional=iqn", "hparam 'distributional' must be one of none, c51, qr, got 'iqn'"),
    ("distributional=qr,loss=mse", "hparam 'loss=mse' applies to distributional=none only"),
    ("num_atoms=1", "hparam 'num_atoms' must be within [2, 1001], got 1"),
])
def test_a_bad_distributional_setting_says_what_would_be_right(override: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        get_hparams("dqn_cartpole", override)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", sorted(Q_HEADS))
def test_every_head_is_a_choice_of_the_hparam_and_has_its_loss(name: str) -> None:
    hp = get_hparams("dqn_cartpole", {"distributional": name})
    assert type(q_head(hp)) is Q_HEADS[name]
    assert type(q_head(hp)) in HEAD_LOSSES


@pytest.mark.parametrize("name", ["rainbow_cartpole", "rainbow_pong"])
def test_rainbow_is_c51_with_every_other_extension(name: str) -> None:
    hp = get_hparams(name)
    assert (hp.distributional, hp.double_q, hp.dueling, hp.noisy, hp.n_step, hp.memory) == \
        ("c51", True, True, True, 3, "prioritized")


@pytest.mark.parametrize("name", ["rainbow_pong", "qrdqn_pong"])
def test_the_pong_sets_learn_from_pixels(name: str) -> None:
    """Their heads on the Nature CNN (6 actions x 51 atoms, or x 200 quantiles), prioritized replay and n-step."""
    hp = get_hparams(name, "memory_size=64,batch_size=8,learning_starts=20,train_freq=20")
    envs = make_vector_env(hp.env, hp.num_envs)
    single = make_env(hp.env)
    agent = make_agent(hp, single.observation_space, single.action_space, 0)
    learned = run_steps(agent, envs, envs.reset(seed=0)[0], 60)[1]
    assert len(learned) == 2
    assert all(math.isfinite(value) for scalars in learned for value in scalars.values())
