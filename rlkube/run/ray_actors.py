"""`--actors ray`: the actors of rlkube.run.workers as Ray actors, on a Ray started here or at RAY_ADDRESS.

The acting is `workers.Actor`, unchanged; only the transport differs from the actor processes':

- Rollouts travel through Ray's object store: each is the return value of an actor's `collect` call, and the
  learner waits on whichever call finishes first.
- Weights are broadcast by version: the learner puts each new version into the object store once, and hands its
  reference to an actor with the actor's next call if the actor has not had that version yet.
- Pacing is the agent's, as with processes. An actor that waits for weights has one call under way, made after the
  learner published the weights that learned from its last rollout. Actors that stream transitions or never wait
  have `QUEUED_PER_WORKER` calls queued, so they act on while the learner learns; that bound holds the replay
  ratio as the processes' bounded queue does.
- Ray restarts an actor whose process died (`max_restarts`), calling its constructor again. The learner notices
  through the call that failed (or the empty answer of a restarted actor it had not heard die), and the actor's next
  call carries a fresh seed and the newest weights (while Ray is still restarting it, calls fail as unavailable
  and are asked again after a pause). A call that raised is treated the same way, with a fresh start.
- Resume is as with processes: checkpoints hold the learner; actors start anew with seeds from the run's step.

Ray is imported here only: a run without `--actors ray` never loads it. With RAY_ADDRESS set (a RayJob's driver, a
`ray start` cluster) the run connects to that Ray; otherwise it starts a small Ray of its own on this machine and
shuts it down at the end of the run, also when a stop signal or an error ends it. A process that is in a Ray
already keeps it, and only the run's actors go.
"""

import copy
import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError

from rlkube.errors import UserError, one_line
from rlkube.rl.networks import Params
from rlkube.rl.pacing import ActorPacing
from rlkube.run.signals import STOP_SIGNALS
from rlkube.run.workers import (
    FAILED_STARTS_ALLOWED,
    MAX_POLICY_LAG,
    QUEUED_PER_WORKER,
    Actor,
    ActorSpec,
    Rollout,
    actor_seed,
)

# Logical CPUs each actor asks for. A fraction, so that a local Ray fits N actors on few cores (actor processes
# share cores just the same); on a cluster it spreads actors over nodes by their CPUs.
ACTOR_CPUS = 0.25
# The object store of a Ray started here. Rollouts and weights are freed once the learner has taken them, so a
# few rollouts per actor are all it holds; Ray's default (30% of memory) would reserve shared memory for nothing.
LOCAL_OBJECT_STORE_BYTES = 300 * 2**20
# A restarted actor's process is new whatever ended the old one; -1 restarts without a limit, because preemptions
# count against max_restarts too (ray-project/ray#50640) and a long run on preemptible nodes must not run out.
# An actor that keeps dying before it sends anything is caught by FAILED_STARTS_ALLOWED instead.
MAX_RESTARTS = -1
# The logger of Ray's notice that a new local Ray uses token authentication.
RAY_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
# While Ray restarts an actor, calls to it fail as unavailable: they are asked again after a pause, without counting
# as failed starts, for as long as a restart may take on a loaded machine.
UNAVAILABLE_PAUSE_SECONDS = 0.2
UNAVAILABLE_SECONDS_ALLOWED = 120.0


class RayActor:
    """A Ray actor around one `workers.Actor`. Ray restarts a dead one by calling this constructor again with the
    same arguments; so the acting starts with the first call that brings a start (a seed), which the learner sends
    to every start, restarts included."""

    def __init__(self, spec: ActorSpec, index: int) -> None:
        self.spec, self.index = spec, index
        self.actor: Actor | None = None

    def pid(self) -> int:
        return os.getpid()

    def collect(self, start: tuple[int, int] | None, version: int | None, params: Params | None,
                learner_step: int) -> Rollout | None:
        """The next rollout: after (seed, incarnation) `start`, with weights `version` if given. None from an actor
        that Ray restarted and has had no start since."""
        if start is not None:
            if self.actor is not None:
                self.actor.close()
            seed, incarnation = start
            self.actor = Actor(self.spec, self.index, seed, incarnation)
        if self.actor is None:
            return None
        if params is not None:
            self.actor.take_weights(version, params)
        return self.actor.collect(learner_step)


class RayActorPool:
    """N Ray actors and the calls under way to them; the same `Actors` as workers.ActorPool."""

    def __init__(self, spec: ActorSpec, num_workers: int, seed: int, on_message: Callable[[str], None] = print) -> None:
        self.pacing = spec.pacing
        self.seed = seed
        self.on_message = on_message
        self.joined_ray = connect(num_workers)
        remote = ray.remote(num_cpus=ACTOR_CPUS, max_restarts=MAX_RESTARTS, max_task_retries=0)(RayActor)
        # Weights come with the first call of every start, so the policy goes to the constructor without them: Ray
        # keeps large constructor arguments in the object store, where a restart needs them still (ray#53727).
        weightless = copy.copy(spec.policy)
        weightless.params = {}
        self.actors = [remote.remote(dataclasses.replace(spec, policy=weightless), index)
                       for index in range(num_workers)]
        self.version = 1  # as a ParameterBoard's: the learner's first weights are version 1
        self.weights = ray.put(spec.policy.params)
        self.learner_step = 0
        self.sent_version = [0] * num_workers  # the newest weights each actor has been sent
        self.starts = 0
        self.failed_starts = [0] * num_workers  # failures in a row without a rollout in between
        self.unavailable_since: list[float | None] = [None] * num_workers  # since when Ray has been restarting it
        self.calls: dict[Any, int] = {}  # ObjectRef of a rollout under way -> the actor it is asked of
        for worker in range(num_workers):
            self._start(worker)

    def _start(self, worker: int) -> None:
        incarnation = self.starts
        self.starts += 1
        self.sent_version[worker] = 0
        self._call(worker, start=(actor_seed(self.seed, incarnation), incarnation))
        for _ in range(self._calls_per_actor() - 1):
            self._call(worker)

    def _calls_per_actor(self) -> int:
        return 1 if self.pacing is ActorPacing.WAIT_FOR_WEIGHTS else QUEUED_PER_WORKER

    def _call(self, worker: int, start: tuple[int, int] | None = None) -> None:
        newer = self.sent_version[worker] < self.version
        ref = self.actors[worker].collect.remote(start, self.version if newer else None,
                                                 self.weights if newer else None, self.learner_step)
        self.sent_version[worker] = self.version
        self.calls[ref] = worker

    def publish(self, params: Params, learner_step: int, learned: bool) -> None:
        """After the learner took in a rollout: its parameters if it learned, else only its step count."""
        self.learner_step = learner_step
        # Actors that wait for weights wait for a new version after each rollout, so they always get one.
        if learned or self.pacing is ActorPacing.WAIT_FOR_WEIGHTS:
            self.version += 1
            self.weights = ray.put(params)

    def rollouts_to_learn(self) -> Iterator[Rollout]:
        """Rollouts as they arrive, without those too far behind the learner; restarts failed actors meanwhile."""
        while True:
            # A call fails when its actor dies, so waiting for the next one to finish also hears of every death.
            ready, _ = ray.wait(list(self.calls), num_returns=1)
            worker = self.calls.pop(ready[0])
            try:
                rollout = ray.get(ready[0])
            except ActorUnavailableError as error:
                self._ask_again_once_restarted(worker, error)
                continue
            except RayActorError as error:
                self._restart(worker, f"died ({type(error).__name__}: {error})")
                continue
            except RayTaskError as error:  # acting raised: its traceback, and a fresh start in the same process
                self._restart(worker, f"failed:\n{error}")
                continue
            if rollout is None:
                self._restart(worker, "was restarted by Ray")
                continue
            self.failed_starts[worker] = 0
            self.unavailable_since[worker] = None
            rollout.policy_lag = self.version - rollout.version
            if self.pacing is not ActorPacing.WAIT_FOR_WEIGHTS:
                self._call(worker)  # the actor acts on while the learner learns from this rollout
                yield rollout
            elif rollout.policy_lag > MAX_POLICY_LAG:
                self._call(worker)
            else:
                yield rollout
                self._call(worker)  # with the weights the learner published after learning from it

    def _restart(self, worker: int, what_happened: str) -> None:
        """Start the actor anew, with a fresh seed and the newest weights; the calls still queued to it are dropped."""
        self.failed_starts[worker] += 1
        if self.failed_starts[worker] > FAILED_STARTS_ALLOWED:
            raise RuntimeError(f"actor {worker} keeps failing before it sends anything; last it {what_happened}")
        self.on_message(f"actor {worker} {what_happened}; restarting it")
        self._start_afresh(worker)

    def _ask_again_once_restarted(self, worker: int, error: ActorUnavailableError) -> None:
        """Start the actor anew after a pause: Ray is restarting its process."""
        since = self.unavailable_since[worker]
        if since is None:
            self.unavailable_since[worker] = time.monotonic()
            self.on_message(f"actor {worker} is unavailable ({error}); asking it again while Ray restarts it")
        elif time.monotonic() - since > UNAVAILABLE_SECONDS_ALLOWED:
            raise RuntimeError(f"actor {worker} has been unavailable for over {UNAVAILABLE_SECONDS_ALLOWED:.0f} s; "
                               f"last: {error}")
        time.sleep(UNAVAILABLE_PAUSE_SECONDS)
        self._start_afresh(worker)

    def _start_afresh(self, worker: int) -> None:
        """Drop the calls still queued to the actor and start it again."""
        self.calls = {ref: asked for ref, asked in self.calls.items() if asked != worker}
        self._start(worker)

    def pids(self) -> list[int]:
        """The actors' process ids, as Ray knows them."""
        return ray.get([actor.pid.remote() for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        if self.joined_ray:
            ray.shutdown()


def connect(num_workers: int) -> bool:
    """Join the Ray at RAY_ADDRESS, or start one on this machine with room for `num_workers` actors; False if this
    process is in a Ray already (a program that drives the runner itself), which is then left as it is."""
    if ray.is_initialized():
        return False
    # ray.init installs its own SIGTERM handler, which exits at once; the runner's note-and-checkpoint one stays.
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        if address := os.environ.get("RAY_ADDRESS"):
            try:
                ray.init(logging_level=logging.WARNING)
            except (ConnectionError, RayError) as error:
                reason = (str(error).splitlines() or [type(error).__name__])[0]
                raise UserError(f"--actors ray: cannot join the Ray at RAY_ADDRESS={one_line(address)} ({reason}); "
                                f"check the address and Ray's auth token, or unset RAY_ADDRESS to start a Ray "
                                f"for this run") from None
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local run reports nowhere
            # Ray turns token authentication on for a new local Ray and says so on every run; here that is no news.
            # (Setting RAY_AUTH_MODE instead would not do: Ray reads it once, when imported.)
            logging.getLogger(RAY_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
            # "local": a Ray of this run's own, never another one that `ray start` left on this machine.
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(num_workers * ACTOR_CPUS)),
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                     logging_level=logging.WARNING)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return True
