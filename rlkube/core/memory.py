"""Replay memories (uniform and proportional prioritized) and the n-step transition builder.

Every transition stores its own bootstrap discount: gamma**k for a k-step return that continues,
0 at a terminal state. That one number carries n-step returns, termination and truncation, so the
learner's target is always `reward + discount * max_a Q_target(next_obs, a)`.

Observations keep the env's dtype (uint8 pixels stay uint8, never wrapped through a signed cast).
"""

from collections import deque
from typing import Any

import numpy as np

from rlkube.core.registry import Registry

Batch = dict[str, np.ndarray]

memory_registry: Registry[type["ReplayMemory"]] = Registry("memory")


@memory_registry.register("uniform")
class ReplayMemory:
    """A ring buffer sampled uniformly."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...], action_dtype: np.dtype, seed: int, **_: Any) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.data: Batch = {
            "obs": np.zeros((capacity, *obs_shape), obs_dtype),
            "action": np.zeros((capacity, *action_shape), action_dtype),
            "reward": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, *obs_shape), obs_dtype),
            "discount": np.zeros(capacity, np.float32),
        }
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, discount: float) -> int:
        """Store one transition; returns the slot it went to."""
        slot = self.position
        for key, value in (("obs", obs), ("action", action), ("reward", reward),
                           ("next_obs", next_obs), ("discount", discount)):
            self.data[key][slot] = value
        self.position = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def sample(self, batch_size: int, count: int = 1, beta: float = 0.0) -> Batch:  # noqa: ARG002
        """`count` batches at once, each of `batch_size`, stacked as [count, batch_size, ...]."""
        indices = self.rng.integers(0, self.size, size=(count, batch_size))
        batch = {key: value[indices] for key, value in self.data.items()}
        batch["indices"] = indices
        batch["weights"] = np.ones(indices.shape, np.float32)
        return batch

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities."""

    def state_dict(self) -> dict[str, Any]:
        used = slice(0, self.size)
        return {**{key: value[used] for key, value in self.data.items()}, "position": self.position,
                "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.position = int(state["size"]), int(state["position"])
        for key, value in self.data.items():
            value[: self.size] = state[key]
        self.rng.bit_generator.state = state["rng"]


class SegmentTree:
    """A complete binary tree over `capacity` leaves where each node reduces its two children.

    Leaves sit at [leaf_base, leaf_base + capacity) of one flat array; the root is node 1.
    All updates are vectorised: one pass per level, recomputing parents from their children, so
    repeated indices in one update are harmless.
    """

    def __init__(self, capacity: int, reduce: np.ufunc, neutral: float) -> None:
        self.capacity = capacity
        self.leaf_base = 1 << max(capacity - 1, 0).bit_length()
        self.reduce = reduce
        self.neutral = neutral
        self.nodes = np.full(2 * self.leaf_base, neutral, np.float64)

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        nodes = np.asarray(indices) + self.leaf_base
        self.nodes[nodes] = values
        while nodes[0] > 1:
            nodes = np.unique(nodes // 2)
            self.nodes[nodes] = self.reduce(self.nodes[2 * nodes], self.nodes[2 * nodes + 1])

    @property
    def root(self) -> float:
        return float(self.nodes[1])

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(indices) + self.leaf_base]


class SumTree(SegmentTree):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.add, 0.0)

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each prefix sum in [0, total), the leaf whose cumulative range holds it."""
        prefix = np.minimum(np.asarray(prefix_sums, np.float64), np.nextafter(self.root, 0.0))
        nodes = np.ones(prefix.shape, np.int64)
        while nodes[0] < self.leaf_base:
            left = self.nodes[2 * nodes]
            go_right = prefix >= left
            prefix = np.where(go_right, prefix - left, prefix)
            nodes = 2 * nodes + go_right
        return nodes - self.leaf_base


@memory_registry.register("prioritized")
class PrioritizedReplayMemory(ReplayMemory):
    """Proportional prioritized replay (Schaul et al. 2016) on a sum tree and a min tree.

    New transitions get the highest priority seen so far; the learner reports |TD error| after
    every gradient step through `update_priorities`.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...], action_dtype: np.dtype, seed: int,
                 alpha: float = 0.6, epsilon: float = 1e-6, **_: Any) -> None:
        super().__init__(capacity, obs_shape, obs_dtype, action_shape, action_dtype, seed)
        self.alpha = alpha
        self.epsilon = epsilon
        self.sums = SumTree(capacity)
        self.mins = SegmentTree(capacity, np.minimum, np.inf)
        self.max_priority = 1.0

    def add(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, discount: float) -> int:
        slot = super().add(obs, action, reward, next_obs, discount)
        self._set_priorities(np.array([slot]), np.array([self.max_priority]))
        return slot

    def _set_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        scaled = priorities**self.alpha
        self.sums.update(indices, scaled)
        self.mins.update(indices, scaled)

    def sample(self, batch_size: int, count: int = 1, beta: float = 0.4) -> Batch:
        """Stratified proportional sampling: one draw from each of batch_size equal segments."""
        total = self.sums.root
        segments = (np.arange(batch_size) + self.rng.random((count, batch_size))) * (total / batch_size)
        indices = self.sums.find(segments.ravel()).reshape(count, batch_size)
        probabilities = self.sums[indices] / total
        # IS weights normalised by the largest possible weight (the rarest transition's).
        max_weight = (self.size * self.mins.root / total) ** -beta
        weights = (self.size * probabilities) ** -beta / max_weight
        batch = {key: value[indices] for key, value in self.data.items()}
        batch["indices"] = indices
        batch["weights"] = weights.astype(np.float32)
        return batch

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(np.asarray(td_errors, np.float64)).ravel() + self.epsilon
        self._set_priorities(np.asarray(indices).ravel(), priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sums": self.sums.nodes, "mins": self.mins.nodes,
                "max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.sums.nodes[:] = state["sums"]
        self.mins.nodes[:] = state["mins"]
        self.max_priority = float(state["max_priority"])


class NStepBuilder:
    """Turns 1-step transitions into n-step ones: (s_t, a_t, sum_k gamma^k r_{t+k}, s_{t+n}, gamma^n).

    At a terminal state every pending transition is emitted with discount 0; at a truncation each is
    emitted bootstrapping from the last observation, with gamma to the power of its real length.
    """

    def __init__(self, n: int, gamma: float) -> None:
        self.n = n
        self.gamma = gamma
        self.pending: deque[tuple[np.ndarray, Any, float]] = deque()

    def push(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray,
             terminated: bool, truncated: bool) -> list[tuple[np.ndarray, Any, float, np.ndarray, float]]:
        self.pending.append((obs, action, reward))
        ready = []
        if terminated or truncated:
            while self.pending:
                ready.append(self._pop(next_obs, terminated))
        elif len(self.pending) == self.n:
            ready.append(self._pop(next_obs, False))
        return ready

    def _pop(self, next_obs: np.ndarray, terminated: bool) -> tuple[np.ndarray, Any, float, np.ndarray, float]:
        ret = sum(self.gamma**k * reward for k, (_, _, reward) in enumerate(self.pending))
        discount = 0.0 if terminated else self.gamma ** len(self.pending)
        obs, action, _ = self.pending.popleft()
        return obs, action, ret, next_obs, discount

    def state_dict(self) -> dict[str, Any]:
        return {"pending": list(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = deque(state["pending"])
