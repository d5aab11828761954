"""A RayJob copy's phase, as `rlkube status` shows it, from KubeRay's status fields (v1.5: jobDeploymentStatus for the
RayJob, jobStatus for the Ray job); the RayJob's life on a real operator is tests/k8s/test_rayjob_real_node.py's."""

import pytest

from rlkube.launch.targets.kubernetes.status import ray_job_phase


@pytest.mark.parametrize(("status", "expected"), [
    pytest.param({}, ("Pending", ""), id="new, no status yet"),
    pytest.param({"jobDeploymentStatus": "Initializing", "jobStatus": ""}, ("Pending", ""), id="cluster starting"),
    pytest.param({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, ("Pending", ""), id="driver not started"),
    pytest.param({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, ("Running", ""), id="running"),
    pytest.param({"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "failed": 1}, ("Pending", ""),
                 id="failed, retried on a new cluster"),
    pytest.param({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, ("Succeeded", ""), id="succeeded"),
    pytest.param({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, ("Failed", "Ray job STOPPED"),
                 id="stopped"),
    pytest.param({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"},
                 ("Failed", "AppFailed"), id="failed, no retries left"),
    pytest.param({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, ("Failed", "DeadlineExceeded"),
                 id="past its deadline"),
    pytest.param({"jobDeploymentStatus": "ValidationFailed"}, ("Failed", "ValidationFailed"), id="invalid"),
])
def test_a_ray_jobs_status_gives_its_copys_phase_and_why_it_failed(status: dict, expected: tuple[str, str]) -> None:
    assert ray_job_phase(status) == expected
