"""A RayJob that rlkube renders runs on the real node: KubeRay's operator makes its Ray cluster, the learner drives it
from the head, its actors act on the worker pods, and the run lands in the bucket.

What a RayJob needs beyond the real node of test_real_node.py, each brought up here only for these tests: KubeRay's
CRDs and its operator (tools/testcluster/kuberay-crds.sh; a host process of the test cluster, through the API server's
service proxy to each head), and cluster DNS (CoreDNS on the node's IP, tools/testcluster/coredns.sh), by which the
workers and the submitter find the head's headless Service. The objects are rlkube's own render of a profile with
`ray:`, created as they are, in a namespace that enforces Pod Security `restricted`; the image is the one
test_real_node.py's tests pull, which carries Ray with its dashboard.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import TestCluster
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.stream import stream
from node import RealNode
from test_rayjob_admission import kuberay_crds, kuberay_kinds
from test_real_node import complete_checkpoints, download, wait_for_checkpoint

from rlkube.launch.clusters import RayWorkers, get_profile
from rlkube.launch.render import render
from rlkube.launch.spec import build_spec
from rlkube.run.options import TrainOptions
from tests.conftest import scalar_steps

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = [pytest.mark.xdist_group("k8s"), pytest.mark.full]
TOOLS = Path(__file__).resolve().parents[2] / "tools" / "testcluster"
JOB_TIMEOUT_S = 1500
# IMPALA with two Ray actors, as tests/test_ray_actors.py trains it in one process: asynchronous actors make a run
# irreproducible, so the bar is a clear sign of learning (random play scores ~22), not the set's 475.
STEPS = 40_000
LEARNED = 200
EVERY = 5000
IMPALA = TrainOptions("impala_cartpole", num_workers=2, actors="ray", train_steps=STEPS, eval_episodes=5,
                      test_episodes=1, overrides=f"eval_every={EVERY},checkpoint_every={EVERY}")
# The learning run above took 16 s of training on the node: a run to interrupt lasts long enough for a pod to be
# deleted after its first checkpoint and replaced before it ends.
LONG_STEPS, LONG_EVERY = 400_000, 50_000
INTERRUPTED = dataclasses.replace(IMPALA, train_steps=LONG_STEPS,
                                  overrides=f"eval_every={LONG_EVERY},checkpoint_every=20000")
# Small pods for a small node: the head holds the learner (TensorFlow) beside Ray's GCS, raylet and dashboard.
HEAD = {"cpu": "250m", "memory": "3Gi"}
WORKERS = RayWorkers(workers=2, cpu="250m", memory="1536Mi")


def built(script: str, *args: str) -> Path:
    """What a tools/testcluster script built or fetched (a no-op once cached): the path it prints last."""
    result = subprocess.run(["bash", str(TOOLS / script), *args], stdout=subprocess.PIPE, text=True, check=False,
                            timeout=3600)
    assert result.returncode == 0, f"{script} {' '.join(args)} failed (its log is above)"
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kuberay(cluster: TestCluster, real_node: RealNode, api: client.ApiClient) -> Iterator[None]:
    """KubeRay's CRDs and operator, and cluster DNS on the node, for this module's tests."""
    real_node.serve_cluster_dns(built("coredns.sh"))
    with kuberay_kinds(api, *sorted(kuberay_crds().glob("*.yaml"))), \
            cluster.kuberay_operator(built("kuberay-crds.sh", "operator")):
        yield
        # Deleted namespaces take their RayJobs along once the operator has stopped each job and lifted its
        # finalizer: wait for that while it runs.
        deadline = time.monotonic() + 300
        while any(custom(api).list_cluster_custom_object("ray.io", "v1", plural)["items"]
                  for plural in ("rayjobs", "rayclusters")):
            assert time.monotonic() < deadline, "RayJobs or RayClusters outlived their namespaces"
            time.sleep(1)


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def submit_ray_job(e2e: dict[str, Any], image: str, name: str, train: TrainOptions = IMPALA) -> str:
    """Create rlkube's render of a one-copy experiment on profile `real` with `ray:` through the API; the RayJob's
    name."""
    profile = dataclasses.replace(get_profile("real"), name="real-ray", resources=HEAD, ray=WORKERS)
    objects = render(build_spec(profile, train, 1, name=name, image=image), profile)
    dynamic = DynamicClient(e2e["api"])
    for obj in objects:
        dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).create(body=obj,
                                                                                     namespace=e2e["namespace"])
    (ray_job,) = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "RayJob"]
    return ray_job


def ray_job_status(e2e: dict[str, Any], name: str) -> dict[str, Any]:
    return custom(e2e["api"]).get_namespaced_custom_object("ray.io", "v1", e2e["namespace"], "rayjobs",
                                                           name).get("status", {})


def wait_for_ray_job(e2e: dict[str, Any], name: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    """The RayJob's status once it has finished, successfully or not."""
    deadline = time.monotonic() + timeout
    while (status := ray_job_status(e2e, name)).get("jobDeploymentStatus") not in ("Complete", "Failed"):
        assert time.monotonic() < deadline, f"RayJob {name} did not finish: {status}"
        time.sleep(2)
    return status


def ray_pods(e2e: dict[str, Any], node_type: str) -> list[client.V1Pod]:
    """The running Ray pods of one type (head or worker) in the test's namespace."""
    pods = client.CoreV1Api(e2e["api"]).list_namespaced_pod(e2e["namespace"],
                                                           label_selector=f"ray.io/node-type={node_type}").items
    return [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]


def driver_log(e2e: dict[str, Any], name: str) -> str:
    """What the learner (the Ray job's driver) printed, as the submitter pods followed it."""
    core = client.CoreV1Api(e2e["api"])
    pods = core.list_namespaced_pod(e2e["namespace"], label_selector=f"batch.kubernetes.io/job-name={name}").items
    logs = []
    for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
        try:
            logs.append(core.read_namespaced_pod_log(pod.metadata.name, e2e["namespace"]))
        except client.ApiException as error:  # not started yet, or gone
            logs.append(f"<{pod.metadata.name}: {error.status}>")
    return "\n".join(logs)


def wait_for_driver_log(e2e: dict[str, Any], name: str, pattern: str, timeout: float = 600) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, driver_log(e2e, name))):
        assert time.monotonic() < deadline, f"the driver never logged {pattern!r}:\n{driver_log(e2e, name)[-3000:]}"
        time.sleep(2)
    return match


def evaluations(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_learned_impala(run_dir: Path, total: int = STEPS, every: int = EVERY) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == total
    evaluated = evaluations(run_dir)
    # One evaluation per `every` steps (at the first rollout batch past each multiple), none lost, none twice.
    steps = [e["step"] for e in evaluated]
    assert steps == sorted(set(steps)), steps
    assert len(steps) == total // every, steps
    best = max(e["mean_return"] for e in evaluated)
    assert best >= LEARNED, f"IMPALA on the RayJob did not learn CartPole: {evaluated}"
    # No step logged twice (a resumed learner would repeat the ones after its checkpoint), but for the episodes':
    # many of them end within one rollout batch, at one step.
    for tag, logged in scalar_steps(run_dir).items():
        if not tag.startswith("charts/episodic_"):
            assert len(logged) == len(set(logged)), f"{tag} logs some steps twice: {logged}"


def actors_in(e2e: dict[str, Any], pod: client.V1Pod) -> int:
    """How many rlkube actors' processes run in a Ray worker pod (Ray names each process after its actor)."""
    count = ("import os\n"
             "print(sum(b'RayActor' in open(f'/proc/{p}/cmdline', 'rb').read()\n"
             "          for p in os.listdir('/proc') if p.isdigit()))")
    output = stream(client.CoreV1Api(e2e["api"]).connect_get_namespaced_pod_exec, pod.metadata.name,
                    e2e["namespace"], container=pod.spec.containers[0].name, command=["python", "-c", count],
                    stderr=True, stdin=False, stdout=True, tty=False, _request_timeout=60)
    return int(output.strip().splitlines()[-1])


def test_a_rendered_rayjob_learns_impala_cartpole_with_its_actors_on_worker_pods(
        kuberay: None, e2e: dict[str, Any], real_node: RealNode, pushed_image: str) -> None:  # noqa: ARG001
    name = submit_ray_job(e2e, pushed_image, "learn")
    # Both worker pods run actors' processes while the job runs: the actors are on Ray's workers, not the head.
    deadline = time.monotonic() + 900
    while not (workers := ray_pods(e2e, "worker")) or len(workers) < WORKERS.workers or \
            sum(actors_in(e2e, pod) for pod in workers) < IMPALA.num_workers:
        assert time.monotonic() < deadline, f"no actors on the worker pods: {ray_job_status(e2e, name)}"
        time.sleep(3)
    status = wait_for_ray_job(e2e, name)
    log = driver_log(e2e, name)
    assert status["jobStatus"] == "SUCCEEDED", f"{status}\n{log[-3000:]}"
    assert f"test at step {STEPS}" in log, log[-3000:]
    run_dir = download(f"{e2e['output']}/learn/copy-0", e2e["dir"] / "learn")
    assert_learned_impala(run_dir)


def test_a_deleted_actor_pod_comes_back_and_the_run_goes_on(
        kuberay: None, e2e: dict[str, Any], pushed_image: str) -> None:  # noqa: ARG001
    name = submit_ray_job(e2e, pushed_image, "actors", INTERRUPTED)
    wait_for_checkpoint(f"{e2e['output']}/actors/copy-0", after=0, timeout=900)
    (deleted, *_) = [pod for pod in ray_pods(e2e, "worker") if actors_in(e2e, pod)]
    client.CoreV1Api(e2e["api"]).delete_namespaced_pod(deleted.metadata.name, e2e["namespace"])
    # KubeRay makes a new worker pod; rlkube's actor pool restarts the actors that died with the old one.
    deadline = time.monotonic() + 600
    while len([p for p in ray_pods(e2e, "worker") if p.metadata.name != deleted.metadata.name]) < WORKERS.workers:
        assert time.monotonic() < deadline, "KubeRay did not replace the deleted worker pod"
        time.sleep(2)
    wait_for_driver_log(e2e, name, r"actor \d (died|was restarted by Ray|is unavailable)")
    status = wait_for_ray_job(e2e, name)
    assert status["jobStatus"] == "SUCCEEDED", f"{status}\n{driver_log(e2e, name)[-3000:]}"
    assert_learned_impala(download(f"{e2e['output']}/actors/copy-0", e2e["dir"] / "actors"), LONG_STEPS, LONG_EVERY)


def test_a_deleted_head_pod_retries_the_copy_from_its_newest_complete_checkpoint(
        kuberay: None, e2e: dict[str, Any], pushed_image: str) -> None:  # noqa: ARG001
    name = submit_ray_job(e2e, pushed_image, "head", INTERRUPTED)
    copy_url = f"{e2e['output']}/head/copy-0"
    saved = wait_for_checkpoint(copy_url, after=0, timeout=900)
    (head,) = ray_pods(e2e, "head")
    client.CoreV1Api(e2e["api"]).delete_namespaced_pod(head.metadata.name, e2e["namespace"])
    # The learner went with its head; the copy runs again on a Ray head of its own and resumes.
    resumed = int(wait_for_driver_log(e2e, name, r"resumed from \S+ at step (\d+)", timeout=900).group(1))
    assert resumed >= saved
    assert resumed in complete_checkpoints(copy_url)
    status = wait_for_ray_job(e2e, name)
    print(f"RayJob {name} after its head pod was deleted: {status}")
    assert status["jobStatus"] == "SUCCEEDED", f"{status}\n{driver_log(e2e, name)[-3000:]}"
    assert_learned_impala(download(copy_url, e2e["dir"] / "head"), LONG_STEPS, LONG_EVERY)
