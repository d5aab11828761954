"""Reading an experiment back: each copy's phase from its Jobs (once pods are gone) and its newest pod, or from its
RayJob (KubeRay's status) and its submitter pod, which follows the driver's output."""

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube.launch import store
from rlkube.launch.targets.base import CopyStatus, age_seconds
from rlkube.launch.targets.kubernetes.api import REQUEST_TIMEOUT, list_jobs, list_pods, list_ray_jobs
from rlkube.rundir.progress_record import evaluations_in_log, last_progress


def _copy_of(pod: client.V1Pod) -> int:
    labels = pod.metadata.labels or {}
    if "rlkube.io/copy" in labels:
        return int(labels["rlkube.io/copy"])
    return int((pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index", 0))


def _indices(text: str | None) -> set[int]:
    """Parse a Job's "0-2,4" index list."""
    result: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        result.update(range(int(low), int(high or low) + 1))
    return result


def job_states(jobs: list[client.V1Job]) -> dict[int, str]:
    """Finished copies according to the experiment's Jobs (the truth once pods are gone)."""
    states: dict[int, str] = {}
    for job in jobs:
        labels = job.metadata.labels or {}
        status = job.status
        if "rlkube.io/copy" in labels:  # a multi-host slice: the whole Job is one copy
            copy = int(labels["rlkube.io/copy"])
            conditions = {c.type for c in status.conditions or [] if c.status == "True"}
            if "Complete" in conditions:
                states[copy] = "Succeeded"
            elif "Failed" in conditions:
                states[copy] = "Failed"
            continue
        states.update(dict.fromkeys(_indices(status.completed_indexes), "Succeeded"))
        states.update(dict.fromkeys(_indices(status.failed_indexes), "Failed"))
    return states


def pods_by_copy(api: client.ApiClient, record: store.Record) -> dict[int, list[client.V1Pod]]:
    """Each copy's pods, oldest first (a copy gets a new pod for each retry)."""
    grouped: dict[int, list[client.V1Pod]] = {}
    for pod in sorted(list_pods(api, record.namespace, record.name), key=lambda p: p.metadata.creation_timestamp):
        grouped.setdefault(_copy_of(pod), []).append(pod)
    return grouped


def _log_tail(api: client.ApiClient, pod: client.V1Pod, lines: int | None) -> str:
    try:
        return client.CoreV1Api(api).read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace,
                                                             tail_lines=lines, _request_timeout=REQUEST_TIMEOUT)
    except ApiException:
        return ""


def logged_evaluations(api: client.ApiClient, record: store.Record) -> dict[int, list[dict[str, float]]]:
    """Each copy's evaluations from its pods' logs, oldest pod first; a step evaluated again after a resume keeps
    its newest value, as metrics.jsonl does."""
    by_copy = pods_by_copy(api, record)
    evaluations = {}
    for index in range(record.copies):
        logs = [_log_tail(api, pod, None) for pod in by_copy.get(index, [])]
        by_step = {e["step"]: e for text in logs for e in evaluations_in_log(text)}
        evaluations[index] = [by_step[step] for step in sorted(by_step)]
    return evaluations


def _last_failure(pods: list[client.V1Pod]) -> str:
    """Why the newest pod that failed stopped: its container's termination reason (OOMKilled, Error), else the
    pod's own (Evicted); empty if none failed."""
    for pod in reversed(pods):
        if pod.status.phase != "Failed":
            continue
        for container in pod.status.container_statuses or []:
            terminated = container.state.terminated if container.state else None
            if terminated is not None and terminated.reason:
                return terminated.reason
        return pod.status.reason or "Failed"
    return ""


def runs_on_ray(record: store.Record) -> bool:
    """Whether the experiment's copies were submitted as RayJobs."""
    return any(name.startswith("RayJob/") for name in record.backend.get("objects", []))


def ray_role(pod: client.V1Pod) -> str:
    """A RayJob's pod's part: `head` or `worker` (KubeRay labels the Ray cluster's pods), else the `submitter`."""
    return (pod.metadata.labels or {}).get("ray.io/node-type", "submitter")


def ray_job_phase(status: dict[str, Any]) -> tuple[str, str]:
    """A copy's phase from its RayJob's status (KubeRay's jobDeploymentStatus and the Ray job's jobStatus), and why it
    failed if it did. A failed Ray job with retries left is `Retrying` (a new Ray cluster), so Pending here."""
    deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
    if deployment == "Complete":
        return ("Succeeded", "") if job == "SUCCEEDED" else ("Failed", f"Ray job {job or 'ended'}")
    if deployment in ("Failed", "ValidationFailed"):
        return "Failed", status.get("reason") or deployment
    if deployment == "Running" and job == "RUNNING":
        return "Running", ""
    return "Pending", ""


def ray_jobs_by_copy(api: client.ApiClient, record: store.Record) -> dict[int, dict[str, Any]]:
    return {int(ray_job["metadata"]["labels"]["rlkube.io/copy"]): ray_job
            for ray_job in list_ray_jobs(api, record.namespace, record.name)}


def _describe_ray(api: client.ApiClient, record: store.Record) -> list[CopyStatus]:
    ray_jobs = ray_jobs_by_copy(api, record)
    by_copy = pods_by_copy(api, record)
    copies = []
    for index in range(record.copies):
        pods = by_copy.get(index, [])
        heads = [pod for pod in pods if ray_role(pod) == "head"]
        submitters = [pod for pod in pods if ray_role(pod) == "submitter"]
        ray_job = ray_jobs.get(index)
        if ray_job is None:
            phase, failure, restarts = ("Cancelled" if record.backend.get("cancelled") else "Unknown"), "", 0
        else:
            status = ray_job.get("status") or {}
            phase, failure = ray_job_phase(status)
            restarts = status.get("failed") or 0  # Ray jobs failed and retried on a new Ray cluster
        step, ret = (None, None)
        if submitters and phase != "Pending":  # the submitter follows the driver's output
            step, ret = last_progress(_log_tail(api, submitters[-1], 50))
        if heads:
            node, created = heads[-1].spec.node_name or "", heads[-1].metadata.creation_timestamp.isoformat()
        else:
            node, created = "", ray_job["metadata"]["creationTimestamp"] if ray_job else record.created
        copies.append(CopyStatus(index, phase, restarts, node, age_seconds(created), step, ret, failure))
    return copies


def describe(api: client.ApiClient, record: store.Record) -> list[CopyStatus]:
    if runs_on_ray(record):
        return _describe_ray(api, record)
    jobs = list_jobs(api, record.namespace, record.name)
    finished = job_states(jobs)
    by_copy = pods_by_copy(api, record)
    copies = []
    for index in range(record.copies):
        pods = by_copy.get(index, [])
        latest = pods[-1] if pods else None
        if index in finished:
            phase = finished[index]
        elif not jobs:
            phase = "Cancelled" if record.backend.get("cancelled") else "Unknown"
        elif latest is None:
            phase = "Pending"
        elif latest.status.phase in ("Succeeded", "Failed"):
            # The pod ended, but only its Job knows whether the copy did: it retries a failed pod within
            # backoffLimitPerIndex (after a backoff of 10 s or more) and one it ignores (preemption). Until the Job
            # has counted the pod, the copy goes on; a sweep would otherwise fail a trial that is being retried.
            phase = "Pending" if latest.status.phase == "Failed" else "Running"
        else:
            phase = latest.status.phase or "Pending"
        restarts = max(len(pods) - 1, 0) + sum(
            c.restart_count for p in pods for c in (p.status.container_statuses or []))
        step, ret = last_progress(_log_tail(api, latest, 50)) if latest and phase != "Pending" else (None, None)
        age = age_seconds(latest.metadata.creation_timestamp.isoformat()) if latest else age_seconds(record.created)
        copies.append(CopyStatus(index, phase, restarts, (latest.spec.node_name or "") if latest else "",
                                 age, step, ret, _last_failure(pods)))
    return copies
