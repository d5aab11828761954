"""Replay memories: sum-tree sampling, priority updates, capacity edges, n-step targets, dtypes."""

import numpy as np
import pytest

from rlkube.rl.replay import NStepBuilder, PrioritizedReplayMemory, ReplayMemory, SumTree


def make_memory(cls: type[ReplayMemory], capacity: int, **kwargs) -> ReplayMemory:
    return cls(capacity, (2,), np.float32, (), np.int64, seed=0, **kwargs)


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8, 1000])
def test_sum_tree_root_is_the_sum_and_its_size_stays_linear(capacity: int) -> None:
    tree = SumTree(capacity)
    priorities = np.arange(1, capacity + 1, dtype=np.float64)
    tree.update(np.arange(capacity), priorities)
    assert tree.root == pytest.approx(priorities.sum())
    assert len(tree.nodes) <= 4 * capacity


def test_sum_tree_find_maps_prefix_sums_to_their_leaves() -> None:
    tree = SumTree(5)
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    found = tree.find(np.array([0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999, 10.0, 1e9]))
    # The zero-priority leaf is never found, even for prefix sums at or past the total.
    np.testing.assert_array_equal(found, [0, 0, 1, 1, 2, 2, 3, 3, 3, 3])


def test_sum_tree_sampling_follows_priorities() -> None:
    tree = SumTree(7)
    priorities = np.array([1.0, 0.0, 5.0, 2.0, 0.5, 0.0, 1.5])
    tree.update(np.arange(7), priorities)
    draws = tree.find(np.random.default_rng(1).random(200_000) * tree.root)
    frequencies = np.bincount(draws, minlength=7) / len(draws)
    np.testing.assert_allclose(frequencies, priorities / priorities.sum(), atol=0.005)


def test_sum_tree_updates_with_repeated_indices_keep_sums_consistent() -> None:
    tree = SumTree(6)
    tree.update(np.arange(6), np.ones(6))
    tree.update(np.array([2, 2, 4]), np.array([7.0, 7.0, 3.0]))
    assert tree.root == pytest.approx(1 + 1 + 7 + 1 + 3 + 1)
    for node in range(1, tree.leaf_base):
        assert tree.nodes[node] == pytest.approx(tree.nodes[2 * node] + tree.nodes[2 * node + 1])


@pytest.mark.parametrize("cls", [ReplayMemory, PrioritizedReplayMemory])
def test_memory_wraps_around_at_capacity(cls: type[ReplayMemory]) -> None:
    memory = make_memory(cls, 3)
    for i in range(5):
        memory.add(np.full(2, i), i, float(i), np.full(2, i + 1), 0.99)
    assert len(memory) == 3
    batch = memory.sample(64)
    assert set(batch["reward"].ravel()) <= {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(batch["obs"][..., 0], batch["reward"])


def test_uniform_sample_stacks_many_batches() -> None:
    memory = make_memory(ReplayMemory, 100)
    for i in range(50):
        memory.add(np.full(2, i), 0, 0.0, np.zeros(2), 1.0)
    batch = memory.sample(batch_size=8, count=16)
    assert batch["obs"].shape == (16, 8, 2)
    assert batch["indices"].max() < 50


def test_prioritized_memory_updates_priorities_and_weights() -> None:
    memory = make_memory(PrioritizedReplayMemory, 4, alpha=1.0, epsilon=0.0)
    for i in range(4):
        memory.add(np.full(2, i), 0, 0.0, np.zeros(2), 1.0)
    memory.update_priorities(np.array([0, 1, 2, 3]), np.array([-4.0, 1.0, 1.0, 2.0]))
    assert memory.sums.root == pytest.approx(8.0)
    assert memory.max_priority == pytest.approx(4.0)
    # New transitions enter at the highest priority seen so far.
    memory.add(np.full(2, 9), 0, 0.0, np.zeros(2), 1.0)
    assert memory.sums[np.array([0])][0] == pytest.approx(4.0)
    batch = memory.sample(4, beta=1.0)
    probabilities = memory.sums[batch["indices"]] / memory.sums.root
    expected = (4 * probabilities) ** -1.0 / (4 * memory.mins.root / memory.sums.root) ** -1.0
    np.testing.assert_allclose(batch["weights"], expected, rtol=1e-5)
    assert batch["weights"].max() <= 1.0


def test_prioritized_sampling_prefers_high_td_error() -> None:
    memory = make_memory(PrioritizedReplayMemory, 10, alpha=1.0)
    for i in range(10):
        memory.add(np.full(2, i), 0, 0.0, np.zeros(2), 1.0)
    memory.update_priorities(np.arange(10), np.where(np.arange(10) == 3, 100.0, 1.0))
    draws = memory.sample(32, count=1)["indices"]
    assert np.mean(draws == 3) > 0.5


def test_pixels_keep_uint8_without_wrapping() -> None:
    memory = ReplayMemory(4, (2, 2), np.uint8, (), np.int64, seed=0)
    frame = np.full((2, 2), 255, np.uint8)
    memory.add(frame, 0, 0.0, frame, 1.0)
    batch = memory.sample(1)
    assert batch["obs"].dtype == np.uint8
    assert batch["obs"].max() == 255


def test_n_step_returns_discount_and_bootstrap() -> None:
    builder = NStepBuilder(n=3, gamma=0.5)
    out = []
    for t in range(4):
        out += builder.push(np.array([t]), t, 1.0, np.array([t + 1]), terminated=False, truncated=False)
    assert [(o[0][0], o[2], o[3][0], o[4]) for o in out] == [(0, 1.75, 3, 0.125), (1, 1.75, 4, 0.125)]


def test_n_step_flushes_at_termination_without_bootstrap() -> None:
    builder = NStepBuilder(n=3, gamma=0.5)
    builder.push(np.array([0]), 0, 1.0, np.array([1]), False, False)
    out = builder.push(np.array([1]), 1, 2.0, np.array([2]), terminated=True, truncated=False)
    assert [(o[0][0], o[2], o[4]) for o in out] == [(0, 2.0, 0.0), (1, 2.0, 0.0)]
    assert not builder.pending


def test_n_step_flushes_at_truncation_with_bootstrap_of_real_length() -> None:
    builder = NStepBuilder(n=3, gamma=0.5)
    builder.push(np.array([0]), 0, 1.0, np.array([1]), False, False)
    out = builder.push(np.array([1]), 1, 2.0, np.array([2]), terminated=False, truncated=True)
    assert [(o[2], o[3][0], o[4]) for o in out] == [(2.0, 2, 0.25), (2.0, 2, 0.5)]


@pytest.mark.parametrize("cls", [ReplayMemory, PrioritizedReplayMemory])
def test_memory_state_round_trips(cls: type[ReplayMemory]) -> None:
    memory = make_memory(cls, 8)
    for i in range(11):
        memory.add(np.full(2, i), i % 2, float(i), np.zeros(2), 0.9)
    copy = make_memory(cls, 8)
    copy.load_state_dict(memory.state_dict())
    for key in memory.data:
        np.testing.assert_array_equal(copy.data[key], memory.data[key])
    np.testing.assert_array_equal(copy.sample(5)["indices"], memory.sample(5)["indices"])


def stacked_frame_transitions(streams: int, steps: int, n_step: int, seed: int = 0):
    """(stream, transition) pairs from envs whose observations stack their last 4 frames, channels last.

    Episodes start with the reset frame 4 times (gymnasium's FrameStackObservation padding), end at
    random (terminated or truncated), and the streams interleave in chunks, as actors' rollouts do.
    Frames are drawn from few values so that equal frames in different places also occur.
    """
    rng = np.random.default_rng(seed)
    stacks = [np.repeat(rng.integers(0, 3, (5, 6, 1), np.uint8), 4, axis=-1) for _ in range(streams)]
    builders = [NStepBuilder(n_step, 0.9) for _ in range(streams)]
    for _ in range(steps):
        stream = int(rng.integers(streams))
        for _ in range(int(rng.integers(1, 5))):
            obs = stacks[stream]
            next_obs = np.concatenate([obs[..., 1:], rng.integers(0, 3, (5, 6, 1), np.uint8)], axis=-1)
            ended = rng.random() < 0.05
            for transition in builders[stream].push(obs, int(rng.integers(6)), float(rng.random()), next_obs,
                                                     terminated=ended and rng.random() < 0.5, truncated=ended):
                yield stream, transition
            stacks[stream] = np.repeat(rng.integers(0, 3, (5, 6, 1), np.uint8), 4, axis=-1) if ended else next_obs


@pytest.mark.parametrize("cls", [ReplayMemory, PrioritizedReplayMemory])
@pytest.mark.parametrize("n_step", [1, 3])
def test_stacked_frames_stored_once_sample_exactly_what_was_added(cls: type[ReplayMemory], n_step: int) -> None:
    whole = cls(50, (5, 6, 4), np.uint8, (), np.int64, seed=0)
    deduplicated = cls(50, (5, 6, 4), np.uint8, (), np.int64, seed=0, frame_axis=-1)
    for stream, transition in stacked_frame_transitions(streams=3, steps=400, n_step=n_step):
        whole.add(*transition, stream=stream)
        deduplicated.add(*transition, stream=stream)
    expected, got = whole.sample(32, count=4), deduplicated.sample(32, count=4)
    np.testing.assert_array_equal(got["indices"], expected["indices"])
    for key in ("obs", "next_obs", "action", "reward", "discount"):
        np.testing.assert_array_equal(got[key], expected[key])
    # Whole stacks take 8 frames a transition. Shared frames take about 1 (n=1: next_obs's newest) or
    # 2 (n>1: obs and next_obs each move on by one), plus 4 at each episode start (every ~20 steps here).
    store = deduplicated.observations
    live_frames = np.count_nonzero(store.references[: store.used])
    assert live_frames <= (2 if n_step == 1 else 3) * 50
    assert store.used < len(store.frames)  # the ring wrapped many times, reusing freed frames


def test_stacked_frame_memory_state_round_trips() -> None:
    memory = ReplayMemory(30, (5, 6, 4), np.uint8, (), np.int64, seed=0, frame_axis=-1)
    transitions = list(stacked_frame_transitions(streams=2, steps=200, n_step=3))
    for stream, transition in transitions[:150]:
        memory.add(*transition, stream=stream)
    copy = ReplayMemory(30, (5, 6, 4), np.uint8, (), np.int64, seed=0, frame_axis=-1)
    copy.load_state_dict(memory.state_dict())
    for stream, transition in transitions[150:]:  # streams continue where they were, reusing remembered frames
        memory.add(*transition, stream=stream)
        copy.add(*transition, stream=stream)
    expected, got = memory.sample(30), copy.sample(30)
    for key in ("obs", "next_obs", "indices"):
        np.testing.assert_array_equal(got[key], expected[key])
    assert copy.observations.used == memory.observations.used
