"""`--num-workers`: actor processes feed the learner, survive being killed, and the run resumes after SIGKILL."""

import json
import multiprocessing
import os
import queue
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkube.rl.networks import Params, param_leaves
from rlkube.rl.pacing import ActorPacing
from rlkube.rl.policies import Extras, Policy
from rlkube.run.workers import MAX_POLICY_LAG, ActorPool, ActorSpec, ObservationSlots, ParameterBoard, Rollout
from tests.conftest import assert_workers_learned_cartpole, rlkube_command, run_rlkube

WORKERS = ["--num-workers", "2", "--eval-episodes", "3", "--test-episodes", "1"]


def actor_pids(parent: int) -> list[int]:
    """The actor processes of a run: its spawned children (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    return [pid for pid in pids if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def wait_for(condition, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_rollout_gives_observe_the_final_observation_where_an_episode_ended() -> None:
    obs = np.arange(3 * 2, dtype=np.float32).reshape(3, 2, 1)  # T=2 steps of 2 envs, plus the last obs
    final = np.array([99.0], np.float32)
    rollout = Rollout(worker=1, version=4, first_env_index=2, obs=obs, actions=np.zeros((2, 2), np.int64),
                      rewards=np.ones((2, 2), np.float32), terminated=np.array([[False, True], [False, False]]),
                      truncated=np.zeros((2, 2), bool), extras={"value": np.full((2, 2), 0.5)},
                      final_obs={(0, 1): final})
    first = rollout.step(0)
    np.testing.assert_array_equal(first[0], obs[0])
    np.testing.assert_array_equal(first[3], [obs[1][0], final])  # env 1 ended: its reset obs is not next_obs
    np.testing.assert_array_equal(rollout.step(1)[3], obs[2])
    extras = rollout.step_extras(0)
    np.testing.assert_array_equal(extras["env_index"], [2, 3])
    np.testing.assert_array_equal(extras["value"], [0.5, 0.5])
    np.testing.assert_array_equal(extras["policy_lag"], [0, 0])  # until the learner takes it


def _read_board(board: ParameterBoard, results: multiprocessing.Queue) -> None:
    results.put(board.fetch_newer(0))


def test_parameter_board_hands_the_newest_parameters_to_another_process() -> None:
    context = multiprocessing.get_context("spawn")
    params = {"dense_0": {"kernel": np.zeros((2, 3), np.float32)}, "log_std": np.zeros(4, np.float32)}
    board = ParameterBoard(params, context)
    assert board.fetch_newer(board.version.value) is None
    newest = {"dense_0": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
              "log_std": np.full(4, 7.0, np.float32)}
    board.publish(newest, learner_step=1234)
    results = context.Queue()
    reader = context.Process(target=_read_board, args=(board, results))
    reader.start()
    version, received, step = results.get(timeout=60)
    reader.join()
    assert (version, step) == (2, 1234)
    for got, sent in zip(param_leaves(received), param_leaves(newest), strict=True):
        np.testing.assert_array_equal(got, sent)


def pixel_rollout(index: int) -> Rollout:
    obs = np.full((3, 1, 4, 4), index, np.uint8)
    return Rollout(worker=0, version=index, first_env_index=0, obs=obs, actions=np.zeros((2, 1), np.int64),
                   rewards=np.zeros((2, 1), np.float32), terminated=np.zeros((2, 1), bool),
                   truncated=np.zeros((2, 1), bool), extras={})


def _send_rollouts(slots: ObservationSlots, rollouts: multiprocessing.Queue, count: int) -> None:
    for index in range(count):
        rollout = pixel_rollout(index)
        assert slots.send(rollout, lambda: True)
        rollouts.put(rollout)


def test_observation_slots_carry_more_rollouts_than_they_hold_to_another_process() -> None:
    context = multiprocessing.get_context("spawn")
    slots = ObservationSlots(context, 2, (3, 1, 4, 4), np.uint8)
    rollouts = context.Queue()
    actor = context.Process(target=_send_rollouts, args=(slots, rollouts, 7))
    actor.start()
    for index in range(7):  # the actor can only go on as the learner frees slots
        rollout = rollouts.get(timeout=60)
        assert rollout.obs is None
        assert rollout.obs_slot in (0, 1)
        slots.receive(rollout)
        np.testing.assert_array_equal(rollout.obs, pixel_rollout(index).obs)
    actor.join(timeout=60)
    assert actor.exitcode == 0
    # With every slot taken and the learner gone, an actor gives up rather than wait forever.
    assert slots.send(pixel_rollout(0), lambda: True)
    assert slots.send(pixel_rollout(1), lambda: True)
    assert not slots.send(pixel_rollout(2), lambda: False)


class PushLeft(Policy):
    """Acts without a network or TensorFlow: what is under test is how actors keep pace, not how they act."""

    def __init__(self) -> None:
        self.params = {"bias": np.zeros(1, np.float32)}

    def act(self, obs: np.ndarray, explore: bool, step: int) -> tuple[np.ndarray, Extras]:
        del explore, step
        return np.zeros(len(obs), np.int64), {}


def next_rollout(rollouts: Iterator[Rollout], timeout: float = 60.0) -> Rollout:
    """The learner's next rollout: a failure, not a hang, when the actor sends none."""
    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"no rollout came within {timeout} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return next(rollouts)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def new_weights(version: int) -> Params:
    return {"bias": np.full(1, version, np.float32)}


@pytest.fixture(params=list(ActorPacing), ids=lambda pacing: pacing.name)
def one_actor(request: pytest.FixtureRequest) -> Iterator[ActorPool]:
    """One CartPole actor, paced by each mode, sending rollouts of 4 steps."""
    spec = ActorSpec("CartPole-v1", 1, "sync", (4,), np.float32, PushLeft(), rollout_steps=4, pacing=request.param)
    pool = ActorPool(spec, num_workers=1, seed=0)
    try:
        yield pool
    finally:
        pool.close()


def test_only_actors_that_wait_for_weights_pause_after_each_rollout(one_actor: ActorPool) -> None:
    rollouts = one_actor.rollouts_to_learn()
    assert next_rollout(rollouts).version == 1
    if one_actor.pacing is ActorPacing.WAIT_FOR_WEIGHTS:
        with pytest.raises(queue.Empty):
            one_actor.rollouts.get(timeout=1.0)
        one_actor.publish(new_weights(2), learner_step=4, learned=False)  # a new version whether it learned or not
        assert next_rollout(rollouts).version == 2
    else:
        # The actor acts on with the weights it has, and tags each rollout with their version.
        assert [next_rollout(rollouts).version for _ in range(3)] == [1, 1, 1]
        one_actor.publish(new_weights(2), learner_step=16, learned=False)
        assert one_actor.board.version.value == 1, "weights that learned nothing are not copied again"
        one_actor.publish(new_weights(2), learner_step=20, learned=True)
        assert wait_for(lambda: next_rollout(rollouts).version == 2), "the actor never took the new weights"


def test_rollouts_too_far_behind_are_dropped_only_when_actors_wait_for_weights(one_actor: ActorPool) -> None:
    assert wait_for(lambda: not one_actor.rollouts.empty(), timeout=60), "the actor sent nothing"
    for version in range(2, MAX_POLICY_LAG + 3):
        one_actor.publish(new_weights(version), learner_step=4 * version, learned=True)
    first_learned = next_rollout(one_actor.rollouts_to_learn())
    if one_actor.pacing is ActorPacing.WAIT_FOR_WEIGHTS:
        assert first_learned.version > 1  # the rollout MAX_POLICY_LAG + 1 versions behind was dropped
    else:  # streamed transitions feed a replay memory; a learner that never waits corrects for the lag itself
        assert first_learned.version == 1
    # The lag in learner updates (versions), as the learner's agent sees it on each step.
    assert first_learned.policy_lag == one_actor.board.version.value - first_learned.version
    assert first_learned.step_extras(0)["policy_lag"] == [first_learned.policy_lag]


@pytest.mark.learning
@pytest.mark.full
def test_two_workers_learn_cartpole(tmp_path: Path) -> None:
    result = run_rlkube("train", "--hparams", "dqn_cartpole", *WORKERS, "--copies", "2", "--output-dir",
                        str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr
    assert_workers_learned_cartpole([tmp_path / "copy-0", tmp_path / "copy-1"])


@pytest.mark.full  # learning with actors; per change, test_learning's impala_cartpole learns in process
@pytest.mark.learning
def test_impala_learns_cartpole_from_actors_that_never_wait_and_logs_their_lag(tmp_path: Path) -> None:
    """impala_cartpole with two actors: seed 0 passed 475 at 30k steps in-process and with workers; one run of
    asynchronous actors is not reproducible, so the check is that it clearly learned (random play scores ~22)."""
    result = run_rlkube("train", "--hparams", "impala_cartpole", *WORKERS, "--train-steps", "40000",
                        "--hparam-override", "eval_every=5000", "--output-dir", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    evaluations = (tmp_path / "copy-0" / "metrics.jsonl").read_text().splitlines()
    best = max(json.loads(line)["mean_return"] for line in evaluations)
    assert best >= 200, f"impala with workers did not learn: {evaluations}"
    accumulator = EventAccumulator(str(tmp_path / "copy-0"), size_guidance={"scalars": 0})
    accumulator.Reload()
    lags = [event.value for event in accumulator.Scalars("charts/policy_lag")]
    # Actors act on while the learner learns from another's rollout: most rollouts are some updates behind.
    assert max(lags) >= 1, f"no rollout was learned from behind the learner's weights: {lags}"
    assert all(lag >= 0 and lag == int(lag) for lag in lags)


def test_a_killed_actor_is_restarted_and_the_run_finishes(tmp_path: Path) -> None:
    process = subprocess.Popen(rlkube_command("train", "--hparams", "dqn_cartpole", "--train-steps", "12000",
                                              *WORKERS, "--output-dir", str(tmp_path)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "copy-0" / "metrics.jsonl"
    assert wait_for(lambda: len(actor_pids(process.pid)) == 2 and metrics.exists()), "no actors, or no progress"
    victim = actor_pids(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert "exited with code -9; restarting it" in stderr
    summary = json.loads((tmp_path / "copy-0" / "summary.json").read_text())
    assert summary["total_steps"] == 12000


def test_sigkill_of_the_whole_run_stops_its_actors_and_a_rerun_resumes(tmp_path: Path) -> None:
    train = ["train", "--hparams", "dqn_cartpole", "--train-steps", "12000", *WORKERS,
             "--hparam-override", "checkpoint_every=2000", "--output-dir", str(tmp_path)]
    process = subprocess.Popen(rlkube_command(*train), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "copy-0" / "checkpoints"
    assert wait_for(lambda: checkpoints.exists() and any(checkpoints.glob("ckpt-*"))), "no checkpoint was written"
    actors = actor_pids(process.pid)
    assert len(actors) == 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in actors), timeout=30), "actors outlived their learner"

    resumed = run_rlkube(*train)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    summary = json.loads((tmp_path / "copy-0" / "summary.json").read_text())
    assert summary["total_steps"] == 12000
