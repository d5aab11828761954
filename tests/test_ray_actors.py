"""`--actors ray`: the same numpy actors as Ray actors, paced as processes are, restarted by Ray with the newest
weights, and a run that trains, resumes and learns with them.

The pool's tests share one local Ray (starting one takes seconds); a pool joined to a Ray it did not start leaves it
running, and the module's fixture shuts it down. The CLI's runs start and stop a Ray of their own.
"""

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkube.rl.pacing import ActorPacing
from rlkube.run.ray_actors import RayActorPool, connect
from rlkube.run.workers import FAILED_STARTS_ALLOWED, ActorSpec
from tests.conftest import rlkube_command, run_rlkube
from tests.test_workers import PushLeft, new_weights, next_rollout, wait_for

RAY_WORKERS = ["--num-workers", "2", "--actors", "ray", "--eval-episodes", "3", "--test-episodes", "1"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    assert connect(num_workers=2), "a Ray was running in the test process already"
    try:
        yield
    finally:
        ray.shutdown()


def cartpole_actors(pacing: ActorPacing, num_workers: int, messages: list[str] | None = None) -> RayActorPool:
    spec = ActorSpec("CartPole-v1", 1, "sync", (4,), np.float32, PushLeft(), rollout_steps=4, pacing=pacing)
    return RayActorPool(spec, num_workers, seed=0, on_message=(messages.append if messages is not None else print))


@pytest.fixture(params=list(ActorPacing), ids=lambda pacing: pacing.name)
def one_actor(request: pytest.FixtureRequest, local_ray: None) -> Iterator[RayActorPool]:
    del local_ray
    pool = cartpole_actors(request.param, num_workers=1)
    try:
        yield pool
    finally:
        pool.close()


def test_only_ray_actors_that_wait_for_weights_pause_after_each_rollout(one_actor: RayActorPool) -> None:
    rollouts = one_actor.rollouts_to_learn()
    assert next_rollout(rollouts).version == 1
    if one_actor.pacing is ActorPacing.WAIT_FOR_WEIGHTS:
        assert not one_actor.calls, "the actor was asked for a rollout before the learner published new weights"
        one_actor.publish(new_weights(2), learner_step=4, learned=False)  # a new version whether it learned or not
        assert next_rollout(rollouts).version == 2
    else:
        # The actor acts on with the weights it has, and tags each rollout with their version.
        assert [next_rollout(rollouts).version for _ in range(3)] == [1, 1, 1]
        one_actor.publish(new_weights(2), learner_step=16, learned=False)
        assert one_actor.version == 1, "weights that learned nothing are not sent again"
        one_actor.publish(new_weights(2), learner_step=20, learned=True)
        assert wait_for(lambda: next_rollout(rollouts).version == 2), "the actor never took the new weights"


def test_a_killed_ray_actor_is_restarted_by_ray_with_the_newest_weights(local_ray: None) -> None:
    del local_ray
    messages: list[str] = []
    pool = cartpole_actors(ActorPacing.NEVER_WAIT, num_workers=2, messages=messages)
    try:
        rollouts = pool.rollouts_to_learn()
        next_rollout(rollouts)
        for version in (2, 3):
            pool.publish(new_weights(version), learner_step=4 * version, learned=True)
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)

        deadline = time.monotonic() + 120
        first_after_restart = next_rollout(rollouts)  # after the other actor's, and those actor 0 sent before it died
        while not (first_after_restart.worker == 0 and first_after_restart.incarnation >= len(pool.actors)):
            assert time.monotonic() < deadline, f"actor 0 sent nothing since it was killed: {messages}"
            first_after_restart = next_rollout(rollouts)
        assert first_after_restart.version == pool.version == 3, "the restarted actor acted with older weights"
        # Ray tells of the death (died), or only that the actor is restarting (unavailable), as its timing falls.
        assert any(message.startswith(("actor 0 died", "actor 0 is unavailable")) for message in messages), messages
        assert pool.pids()[0] != victim, "Ray did not start a new process for the actor"
        assert next_rollout(rollouts) is not None, "the actors stopped after the restart"
    finally:
        pool.close()
    assert ray.is_initialized(), "a pool that joined a running Ray shut it down"


def test_a_ray_actor_that_keeps_failing_stops_the_run_with_its_error(local_ray: None) -> None:
    del local_ray
    messages: list[str] = []
    spec = ActorSpec("NoSuchEnv-v0", 1, "sync", (4,), np.float32, PushLeft(), rollout_steps=4,
                     pacing=ActorPacing.NEVER_WAIT)
    pool = RayActorPool(spec, 1, seed=0, on_message=messages.append)
    try:
        with pytest.raises(RuntimeError, match="actor 0 keeps failing before it sends anything"):
            next_rollout(pool.rollouts_to_learn())
    finally:
        pool.close()
    assert len(messages) == FAILED_STARTS_ALLOWED
    assert all(message.startswith("actor 0 failed") and "NoSuchEnv" in message for message in messages), messages


def test_two_ray_actors_train_impala_and_log_their_policy_lag(tmp_path: Path) -> None:
    result = run_rlkube("train", "--hparams", "impala_cartpole", *RAY_WORKERS, "--train-steps", "3000",
                        "--output-dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Token authentication is enabled" not in result.stderr  # quiet for the Ray rlkube starts
    assert (tmp_path / "copy-0" / "metrics.jsonl").read_text().strip(), "no evaluation was written"
    accumulator = EventAccumulator(str(tmp_path / "copy-0"), size_guidance={"scalars": 0})
    accumulator.Reload()
    lags = [event.value for event in accumulator.Scalars("charts/policy_lag")]
    assert lags, "the policy lag was not logged"
    assert all(lag >= 0 and lag == int(lag) for lag in lags)
    assert json.loads((tmp_path / "copy-0" / "summary.json").read_text())["total_steps"] == 3000


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("address", "says"), [
    ("127.0.0.1:{port}", "--actors ray: nothing answers at RAY_ADDRESS=127.0.0.1:{port} ("),
    ("ray://127.0.0.1:{port}", "--actors ray: nothing answers at RAY_ADDRESS=ray://127.0.0.1:{port} ("),
    ("my-head-node", "--actors ray: RAY_ADDRESS=my-head-node is not host:port (or ray://host:port)"),
], ids=["host-port", "client-url", "no-port"])
def test_a_ray_address_that_nothing_answers_at_is_one_line_and_writes_nothing(address: str, says: str,
                                                                               tmp_path: Path) -> None:
    port = closed_port()
    result = run_rlkube("train", "--hparams", "impala_cartpole", *RAY_WORKERS, "--output-dir", str(tmp_path / "run"),
                        env={"RAY_ADDRESS": address.format(port=port)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {says.format(port=port)}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.full  # three trainings to a learning threshold: 30 s to 2 min each here
@pytest.mark.learning
@pytest.mark.parametrize(("hparams", "steps", "learned"), [
    ("dqn_cartpole", 50_000, 150), ("ppo_cartpole", 50_000, 200), ("impala_cartpole", 40_000, 200)])
def test_each_pacing_learns_cartpole_with_ray_actors(hparams: str, steps: int, learned: float, tmp_path: Path) -> None:
    """One agent per way actors keep pace (dqn streams, ppo waits for weights, impala never waits), each hparams set
    unchanged from its process runs. Asynchronous actors make one run irreproducible, so the bar is a clear sign of
    learning (random play scores ~22), not the set's target."""
    result = run_rlkube("train", "--hparams", hparams, *RAY_WORKERS, "--train-steps", str(steps),
                        "--hparam-override", "eval_every=5000", "--output-dir", str(tmp_path), timeout=1500)
    assert result.returncode == 0, result.stderr
    evaluations = (tmp_path / "copy-0" / "metrics.jsonl").read_text().splitlines()
    best = max(json.loads(line)["mean_return"] for line in evaluations)
    assert best >= learned, f"{hparams} with Ray actors did not learn: {evaluations}"


@pytest.mark.full  # ~50 s here for a path the transport leaves alone: per change, test_workers resumes processes
def test_sigkill_of_a_ray_run_takes_its_ray_along_and_a_rerun_resumes(tmp_path: Path) -> None:
    train = ["train", "--hparams", "dqn_cartpole", "--train-steps", "12000", *RAY_WORKERS,
             "--hparam-override", "checkpoint_every=2000", "--output-dir", str(tmp_path)]
    process = subprocess.Popen(rlkube_command(*train), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "copy-0" / "checkpoints"
    assert wait_for(lambda: checkpoints.exists() and any(checkpoints.glob("ckpt-*")), timeout=300), "no checkpoint"
    ray_processes = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert ray_processes, "the run started no Ray"
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Ray's processes share the fate of the driver that started them.
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in ray_processes), timeout=60), \
        "Ray outlived the run that started it"

    resumed = run_rlkube(*train, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert json.loads((tmp_path / "copy-0" / "summary.json").read_text())["total_steps"] == 12000
