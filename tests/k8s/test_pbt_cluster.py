"""`rlkube pbt` on the real node: the members are the pods of one Indexed Job, every exploit crosses through the S3
bucket (the donor's checkpoint copied there, the decision read from there by the waiting pods), and a member whose
container is killed mid-generation is restarted by its Job and resumes exactly, with the decisions it has had.

The run is driven as a user drives it: `rlkube pbt start`, `rlkube pbt status`, `rlkube logs`, in subprocesses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from test_sweep_cluster import kill_main_process, rlkube, running_container

from rlkube.launch.pbt import controller
from rlkube.rundir import layout
from rlkube.storage import filesystems

pytestmark = pytest.mark.xdist_group("k8s")
NAME = "pbt"
TRAIN_STEPS, INTERVAL, EVAL_EVERY = 3000, 1000, 500
RUN_TIMEOUT_S = 600


def wait_for_controller_end(timeout: float) -> str:
    log_path = controller.pbt_dir(NAME) / controller.LOG_FILE
    deadline = time.monotonic() + timeout
    while controller.controller_alive(NAME):
        assert time.monotonic() < deadline, f"the run did not end within {timeout:.0f} s:\n{log_path.read_text()}"
        time.sleep(1)
    return log_path.read_text()


@pytest.mark.full
def test_pbt_members_run_as_one_job_exploit_through_the_bucket_and_a_killed_one_resumes(
        e2e: dict[str, Any], pushed_image: str) -> None:
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    profiles["real-pbt"] = {**profiles["real"], "image": pushed_image, "retries_per_copy": 2,
                            "resources": {"cpu": "500m", "memory": "2Gi"}}
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))
    started = rlkube("pbt", "start", "--cluster", "real-pbt", "--hparams", "dqn_cartpole", "--train-steps",
                     str(TRAIN_STEPS), "--hparam-override",
                     f"eval_every={EVAL_EVERY},checkpoint_every={EVAL_EVERY},learning_starts=200", "--eval-episodes",
                     "2", "--test-episodes", "0", "--population", "2", "--quantile", "0.5", "--interval",
                     str(INTERVAL), "--mutate", "lr=log_uniform:1e-4:1e-2", "--name", NAME)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not controller.generations(controller.read_lineage(NAME)):
            assert time.monotonic() < deadline, (controller.pbt_dir(NAME) / controller.LOG_FILE).read_text()
            time.sleep(0.5)
        # Generation 0 is decided: a member is preempted in generation 1.
        kill_main_process(running_container(e2e, NAME, set()))
        log = wait_for_controller_end(RUN_TIMEOUT_S)
    finally:
        if controller.controller_alive(NAME):
            rlkube("pbt", "cancel", NAME)
    print(log)
    assert f"PBT {NAME} done" in log

    # One Indexed Job of two completions; one pod of it failed (the killed one) and was started again.
    job = client.BatchV1Api(e2e["api"]).read_namespaced_job(NAME, e2e["namespace"])
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == 2
    assert job.status.succeeded == 2
    assert job.status.failed == 1

    # Two boundaries, one exploit at each, through the bucket: the receiver's checkpoint was the donor's, beside the
    # exploit record and every member's decisions.
    lineage = controller.read_lineage(NAME)
    assert [line["generation"] for line in controller.generations(lineage)] == [0, 1, 2]
    exploits = controller.exploits(lineage)
    assert [(e["generation"], e["step"]) for e in exploits] == [(0, INTERVAL), (1, 2 * INTERVAL)]
    fs, root = filesystems.open_filesystem(f"{e2e['output']}/{NAME}")
    for exploit in exploits:
        record = json.loads(fs.cat(f"{root}/{layout.copy_name(exploit['member'])}/{layout.EXPLOIT_FILE}"))
        assert record["member"] == exploit["member"]
    for member in range(2):
        copy = f"{root}/{layout.copy_name(member)}"
        for step in (INTERVAL, 2 * INTERVAL):
            decision = json.loads(fs.cat(f"{copy}/pbt-decision-{step}.json"))
            assert decision["step"] == step
        # Every evaluation once, in order: the killed member resumed exactly, from its checkpoint in the bucket.
        metrics = fs.cat(f"{copy}/{layout.METRICS_FILE}").decode().splitlines()
        evaluations = [json.loads(line)["step"] for line in metrics]
        assert evaluations == list(range(EVAL_EVERY, TRAIN_STEPS + 1, EVAL_EVERY))
        assert json.loads(fs.cat(f"{copy}/{layout.SUMMARY_FILE}"))["total_steps"] == TRAIN_STEPS

    # The members say what they did: the exploited one took the donor's state, the killed one resumed.
    logs = rlkube("logs", NAME, "--no-follow")
    assert logs.returncode == 0, logs.stderr
    assert "took copy-" in logs.stdout
    status = rlkube("pbt", "status", NAME, "-o", "json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["generations_done"] == 3
    assert [m["phase"] for m in shown["members"]] == ["Succeeded", "Succeeded"]
    assert sum(m["exploited"] for m in shown["members"]) == 2
