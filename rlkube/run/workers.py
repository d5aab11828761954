"""`--num-workers N`: actor processes that step their own environments while the learner learns.

Each actor runs a pickled copy of the agent's policy (numpy only: actors never import TensorFlow)
on its own vector of `hp.num_envs` training environments, and sends what happened to the learner
as a `Rollout` (its observations in the actor's `ObservationSlots`, the rest through a queue). The
learner feeds rollouts to the very same `agent.observe` / `agent.update` as the in-process loop, one
environment step at a time, so an hparams set runs unchanged with 0, 1 or N workers. After learning
from a rollout the learner publishes its policy parameters on a `ParameterBoard` in shared memory;
actors copy them whenever the version has moved.

How actors keep pace with the learner is the agent's `pacing` (rlkube.rl.pacing):

- Streamed transitions (off-policy agents): actors send chunks of `OFF_POLICY_CHUNK` steps and keep
  going. The bounded queue throttles them to the learner's pace, so the replay ratio stays the hparams'.
- Waiting for weights (on-policy agents): a rollout is `n_steps` steps collected with one policy
  version; after sending one, an actor waits for a newer version before collecting the next. A rollout
  is therefore at most N - 1 versions behind the learner when it is learned from (PPO's clipped ratio
  against the behaviour policy's log-probs corrects for that lag). Rollouts more than `MAX_POLICY_LAG`
  versions behind are dropped; that only happens around an actor restart.
- Never waiting (IMPALA): actors send rollouts of the agent's length back to back, acting with the newest
  weights they have, and none is dropped. Each rollout's `version` gives its `policy_lag`, the learner
  updates since the weights that acted, which reaches the agent with every step (extras["policy_lag"]);
  the agent corrects with V-trace against the behaviour policy's log-probs, and logs the lag.
- An actor that dies is restarted with the newest parameters and a fresh seed; the run goes on.
  Rollouts it left in the queue are dropped with its observation slots.
- Checkpoints hold the learner only. Actors are restarted on resume and begin new episodes, so a
  worker run resumes exactly as far as learning goes, not bit-for-bit like the in-process loop.

The acting itself (`Actor`) is the same whichever transport carries weights and rollouts: `ActorPool` here (actor
processes, shared memory and a queue) or `RayActorPool` (`--actors ray`, rlkube.run.ray_actors). Both are
`Actors`: the runner publishes weights to them and learns from the rollouts they yield, and knows no more.
"""

import ctypes
import math
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rlkube.rl.envs import make_vector_env
from rlkube.rl.networks import NumpyOps, ParamLayout, Params
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.policies import Extras, Policy

OFF_POLICY_CHUNK = 32  # vector steps per message from an off-policy actor
MAX_POLICY_LAG = 8  # rollouts of actors that wait for weights, further behind the learner than this are dropped
QUEUED_PER_WORKER = 2  # rollouts waiting for the learner, per actor, before actors block
RESTART_DELAY_S = 1.0
FAILED_STARTS_ALLOWED = 3  # an actor that dies this often in a row before sending anything is broken


@dataclass(frozen=True)
class ActorSpec:
    """What each of a run's actors is made of, whichever transport carries its weights and rollouts."""

    env_name: str
    num_envs: int
    vector_mode: str
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    policy: Policy  # a copy acts in each actor; the learner's weights replace its params as they come
    rollout_steps: int
    pacing: ActorPacing


@dataclass
class Rollout:
    """Consecutive steps of one actor's environments, as the learner's `observe` wants them."""

    worker: int
    version: int  # the policy version that acted
    first_env_index: int  # the actor's environments are first_env_index + row
    obs: np.ndarray | None  # [T + 1, num_envs, ...]: the observations before each step, and after the last
    actions: np.ndarray  # [T, num_envs, ...]
    rewards: np.ndarray  # [T, num_envs]
    terminated: np.ndarray
    truncated: np.ndarray
    extras: Extras  # each [T, num_envs, ...]
    final_obs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (t, row) where an episode ended
    episodes: list[tuple[int, float, int]] = field(default_factory=list)  # (t, return, length) of ended episodes
    incarnation: int = -1  # which start of the actor sent it
    policy_lag: int = 0  # versions the learner's weights were past `version` when it took the rollout
    obs_slot: int = -1  # in transit, obs is None and lies in this slot of the actor's ObservationSlots

    def __len__(self) -> int:
        return len(self.actions)

    def step(self, t: int) -> tuple[np.ndarray, ...]:
        """The arguments of `agent.observe` for step t: obs, actions, rewards, next_obs, terminated, truncated."""
        next_obs = self.obs[t + 1]
        ended = [row for (step, row) in self.final_obs if step == t]
        if ended:
            next_obs = next_obs.copy()
            for row in ended:
                next_obs[row] = self.final_obs[(t, row)]
        return self.obs[t], self.actions[t], self.rewards[t], next_obs, self.terminated[t], self.truncated[t]

    def step_extras(self, t: int) -> Extras:
        rows = len(self.rewards[t])
        return {**{key: value[t] for key, value in self.extras.items()},
                "env_index": np.arange(self.first_env_index, self.first_env_index + rows),
                "policy_lag": np.full(rows, self.policy_lag)}


class ParameterBoard:
    """The learner's newest policy parameters in shared memory, with a version number and its step count."""

    def __init__(self, params: Params, context: Any) -> None:
        self.layout = ParamLayout(params)
        self.buffer = context.RawArray("f", sum(self.layout.sizes))
        self.version = context.RawValue("q", 0)
        self.learner_step = context.RawValue("q", 0)
        self.lock = context.Lock()
        self.publish(params, 0)

    def publish(self, params: Params | None, learner_step: int) -> None:
        """New parameters (None: unchanged, which spares copying megabytes of a CNN) and the step count."""
        if params is None:
            self.learner_step.value = learner_step
            return
        flat = np.frombuffer(self.buffer, np.float32)
        with self.lock:
            self.layout.flatten(params, out=flat)
            self.version.value += 1
            self.learner_step.value = learner_step

    def fetch_newer(self, known_version: int) -> tuple[int, Params, int] | None:
        """(version, params, learner step) if the board moved past `known_version`, else None."""
        if self.version.value == known_version:
            return None
        with self.lock:
            flat = np.frombuffer(self.buffer, np.float32).copy()
            version, step = self.version.value, self.learner_step.value
        return version, self.layout.unflatten(flat, NumpyOps), step


class ObservationSlots:
    """Shared memory that one actor writes its rollouts' observations into, a few rollouts' worth.

    Pickled through the queue's pipe, 64 KB at a time, Atari observations cost the learner more
    system time than everything else it does for a step. Instead the actor writes them into a free
    slot, sends the slot's number, and the learner copies them out and frees the slot.
    """

    def __init__(self, context: Any, count: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.buffers = [context.RawArray(ctypes.c_ubyte, math.prod(shape) * self.dtype.itemsize)
                        for _ in range(count)]
        self.free = context.RawArray(ctypes.c_bool, [True] * count)  # each flag flips between the two sides

    def view(self, slot: int) -> np.ndarray:
        return np.frombuffer(self.buffers[slot], self.dtype).reshape(self.shape)

    def send(self, rollout: Rollout, learner_alive: Callable[[], bool]) -> bool:
        """Move rollout.obs into a free slot (waiting for one); False if the learner died meanwhile."""
        while learner_alive():
            slot = next((slot for slot, free in enumerate(self.free) if free), None)
            if slot is not None:
                self.free[slot] = False
                self.view(slot)[:] = rollout.obs
                rollout.obs, rollout.obs_slot = None, slot
                return True
            time.sleep(0.001)
        return False

    def receive(self, rollout: Rollout) -> None:
        """Put the observations back into `rollout` and free their slot."""
        rollout.obs = self.view(rollout.obs_slot).copy()
        self.free[rollout.obs_slot] = True


class Actor:
    """One actor's environments, policy and episodes under way: the acting that every transport shares."""

    def __init__(self, spec: ActorSpec, index: int, seed: int, incarnation: int) -> None:
        self.spec, self.index, self.incarnation = spec, index, incarnation
        self.policy = spec.policy
        self.envs = make_vector_env(spec.env_name, spec.num_envs, spec.vector_mode)
        self.obs, _ = self.envs.reset(seed=seed)
        self.policy.seed(seed)
        self.version = 0  # of the weights acting; 0 until the learner's first arrive
        self.returns, self.lengths = np.zeros(spec.num_envs), np.zeros(spec.num_envs, np.int64)

    def take_weights(self, version: int, params: Params) -> None:
        self.version, self.policy.params = version, params

    def collect(self, learner_step: int) -> Rollout:
        """The next `rollout_steps` steps of this actor's environments, acted with the weights it has."""
        rollout = _collect(self.envs, self.policy, self.obs, self.spec.rollout_steps, learner_step, self.returns,
                           self.lengths)
        rollout.worker, rollout.version, rollout.incarnation = self.index, self.version, self.incarnation
        rollout.first_env_index = self.index * self.spec.num_envs
        self.obs = rollout.obs[-1].copy()
        return rollout

    def close(self) -> None:
        self.envs.close()


def actor_seed(seed: int, incarnation: int) -> int:
    """Every start of an actor, restarts included, gets its own seed: a restarted actor must not replay its episodes."""
    return seed + 10_007 * (incarnation + 1)


def _actor(spec: ActorSpec, index: int, board: ParameterBoard, slots: ObservationSlots, incarnation: int,
           rollouts: Any, seed: int, parent_pid: int) -> None:
    """One actor process's life: act, step, and send, until the learner is gone or stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle; it stops us
    actor = Actor(spec, index, seed, incarnation)

    def learner_alive() -> bool:
        return os.getppid() == parent_pid

    while learner_alive():
        newer = board.fetch_newer(actor.version)
        if newer is None and spec.pacing is ActorPacing.WAIT_FOR_WEIGHTS and actor.version > 0:
            time.sleep(0.001)  # wait for the learner to learn from our last rollout
            continue
        if newer is not None:
            version, params, _ = newer
            actor.take_weights(version, params)
        rollout = actor.collect(board.learner_step.value)
        if not slots.send(rollout, learner_alive):
            return
        while learner_alive():
            try:
                rollouts.put(rollout, timeout=1.0)
                break
            except queue.Full:
                continue


def _collect(envs: Any, policy: Policy, obs: np.ndarray, steps: int, learner_step: int, returns: np.ndarray,
             lengths: np.ndarray) -> Rollout:
    observations, actions, rewards, terminated, truncated, extras = [obs], [], [], [], [], []
    final_obs, episodes = {}, []
    for t in range(steps):
        action, extra = policy.act(obs, True, learner_step)
        obs, reward, term, trunc, info = envs.step(action)
        done = term | trunc
        policy.episodes_ended(done)
        returns += reward
        lengths += 1
        for row in np.flatnonzero(done):
            final_obs[(t, int(row))] = info["final_obs"][row]
            episodes.append((t, float(returns[row]), int(lengths[row])))
            returns[row], lengths[row] = 0.0, 0
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        extras.append(extra)
    stacked_extras = {key: np.stack([e[key] for e in extras]) for key in extras[0]} if extras[0] else {}
    return Rollout(-1, -1, -1, np.stack(observations), np.stack(actions), np.stack(rewards).astype(np.float32),
                   np.stack(terminated), np.stack(truncated), stacked_extras, final_obs, episodes)


class Actors(Protocol):
    """A run's actors as the learner sees them, whichever transport carries their weights and rollouts."""

    def publish(self, params: Params, learner_step: int, learned: bool) -> None:
        """After the learner took in a rollout: its parameters if it learned, else only its step count."""

    def rollouts_to_learn(self) -> Iterator[Rollout]:
        """Rollouts as they arrive, with their policy lag; dead actors are restarted meanwhile."""

    def close(self) -> None:
        """Stop every actor."""


class ActorPool:
    """N actor processes, restarted when they die, and the queue their rollouts arrive on."""

    def __init__(self, spec: ActorSpec, num_workers: int, seed: int, on_message: Callable[[str], None] = print) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.spec = spec
        self.pacing = spec.pacing
        self.seed = seed
        self.on_message = on_message
        self.board = ParameterBoard(spec.policy.params, self.context)
        self.rollouts = self.context.Queue(maxsize=QUEUED_PER_WORKER * num_workers)
        # Its share of the queue, and one more being written: an actor that is further ahead waits.
        self.slots_per_actor = QUEUED_PER_WORKER + 1
        self.slots_shape = (spec.rollout_steps + 1, spec.num_envs, *spec.obs_shape)
        self.slots: dict[int, ObservationSlots] = {}  # by incarnation: the living actors' starts
        self.incarnations: dict[int, int] = {}  # actor index -> its current incarnation
        self.starts = 0
        self.failed_starts = [0] * num_workers  # deaths in a row without a rollout in between
        self.processes = [self._start(index) for index in range(num_workers)]

    def _start(self, index: int) -> Any:
        incarnation = self.starts
        self.starts += 1
        self.slots[incarnation] = ObservationSlots(self.context, self.slots_per_actor, self.slots_shape,
                                                   self.spec.obs_dtype)
        process = self.context.Process(
            target=_actor, name=f"rlkube-actor-{index}", daemon=True,
            args=(self.spec, index, self.board, self.slots[incarnation], incarnation, self.rollouts,
                  actor_seed(self.seed, incarnation), os.getpid()))
        self.incarnations[index] = incarnation
        process.start()
        return process

    def publish(self, params: Params, learner_step: int, learned: bool) -> None:
        """After the learner took in a rollout: its parameters if it learned, else only its step count."""
        # Actors that wait for weights wait for a new version after each rollout, so they always get one.
        changed = learned or self.pacing is ActorPacing.WAIT_FOR_WEIGHTS
        self.board.publish(params if changed else None, learner_step)

    def rollouts_to_learn(self) -> Iterator[Rollout]:
        """Rollouts as they arrive, without those too far behind the learner; restarts dead actors meanwhile."""
        while True:
            try:
                rollout = self.rollouts.get(timeout=RESTART_DELAY_S)
            except queue.Empty:
                self._restart_dead()
                continue
            if rollout.incarnation not in self.slots:
                continue  # sent by an actor that has died since: its slots went with it
            self.slots[rollout.incarnation].receive(rollout)
            self.failed_starts[rollout.worker] = 0
            self._restart_dead()
            rollout.policy_lag = self.board.version.value - rollout.version
            if self.pacing is ActorPacing.WAIT_FOR_WEIGHTS and rollout.policy_lag > MAX_POLICY_LAG:
                continue
            yield rollout

    def _restart_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if process.exitcode is not None:
                self.failed_starts[index] += 1
                if self.failed_starts[index] > FAILED_STARTS_ALLOWED:
                    raise RuntimeError(f"actor {index} keeps dying before it sends anything (exit code "
                                       f"{process.exitcode}); see its traceback above")
                self.on_message(f"actor {index} exited with code {process.exitcode}; restarting it")
                del self.slots[self.incarnations[index]]
                self.processes[index] = self._start(index)

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=5)
        self.rollouts.close()
        self.rollouts.join_thread()
