"""KubeRay's operator, built from its Go module (tools/testcluster/kuberay-crds.sh operator) and run beside the test
control plane as the controller-manager runs (TestCluster.kuberay_operator), makes a RayJob's Ray cluster and
submitter from rlkube's templates in a namespace under Pod Security `restricted`; rlkube reads it back and cancels it.

The pods land on kwok's nodes, which fake them (they run a second, then succeed): this proves what the API server,
Pod Security and the operator do with rlkube's RayJob, not that Ray runs (test_rayjob_real_node.py runs it).
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster import TestCluster
from conftest import RESTRICTED
from kubernetes import client
from test_control_plane import wait_for
from test_rayjob_admission import kuberay_crds, kuberay_kinds
from test_rayjob_real_node import built

pytestmark = [pytest.mark.xdist_group("k8s"), pytest.mark.full]
RLKUBE = [sys.executable, "-m", "rlkube"]


@pytest.fixture(scope="module")
def kuberay(cluster: TestCluster, api: client.ApiClient) -> Iterator[None]:
    """KubeRay's CRDs and its operator, without the real node: kwok's nodes take the pods."""
    with kuberay_kinds(api, *sorted(kuberay_crds().glob("*.yaml"))), \
            cluster.kuberay_operator(built("kuberay-crds.sh", "operator")):
        yield


def rlkube(*args: str, cwd: Path, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RLKUBE, *args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig), "RLKUBE_DATA_DIR": str(cwd / "data")})


@pytest.mark.usefixtures("kuberay")
def test_kuberay_makes_a_ray_jobs_pods_from_rlkubes_templates_under_pod_security_restricted(
        cluster: TestCluster, api: client.ApiClient, tmp_path: Path) -> None:
    namespace = f"rlkube-ray-{time.monotonic_ns() % 10**8}"
    cluster.create_namespace(namespace, labels=RESTRICTED)
    profile = {"target": "kubernetes", "context": cluster.context, "namespace": namespace, "image": "rlkube:test",
               "output": "gs://bucket/runs", "resources": {"cpu": "250m", "memory": "1Gi"}, "retries_per_copy": 0,
               "ray": {"workers": 2, "cpu": "250m", "memory": "1Gi", "num_cpus": 4}}
    (tmp_path / "rlkube.yaml").write_text(yaml.safe_dump({"kuberay": profile}))
    submitted = rlkube("submit", "--cluster", "kuberay", "--hparams", "impala_cartpole", "--num-workers", "8",
                       "--actors", "ray", "--name", "rayrun", cwd=tmp_path, kubeconfig=cluster.kubeconfig)
    assert submitted.returncode == 0, submitted.stderr
    core = client.CoreV1Api(api)
    seen: dict[str, client.V1Pod] = {}

    def every_part_made() -> bool:
        for pod in core.list_namespaced_pod(namespace, label_selector="rlkube.io/experiment=rayrun").items:
            seen.setdefault((pod.metadata.labels or {}).get("ray.io/node-type", "submitter"), pod)
        return {"head", "worker", "submitter"} <= set(seen)

    wait_for(every_part_made, timeout=120, what=f"a head, a worker and a submitter pod (seen: {sorted(seen)})")
    # Each was admitted under `restricted`, KubeRay's additions included: the workers' wait-gcs-ready init container
    # (with the worker container's security context) and the command KubeRay gives the submitter.
    worker, submitter = seen["worker"], seen["submitter"]
    (init,) = worker.spec.init_containers
    assert init.security_context.allow_privilege_escalation is False
    assert submitter.spec.containers[0].name == "submitter"
    assert "ray job submit" in " ".join(submitter.spec.containers[0].args)
    for pod in seen.values():
        assert pod.metadata.labels["rlkube.io/copy"] == "0"
        assert pod.spec.service_account_name == "rayrun"
        assert pod.spec.automount_service_account_token is False

    status = rlkube("status", "rayrun", cwd=tmp_path, kubeconfig=cluster.kubeconfig)
    assert status.returncode == 0, status.stderr
    cancelled = rlkube("cancel", "rayrun", cwd=tmp_path, kubeconfig=cluster.kubeconfig)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "RayJob/rayrun-copy-0" in cancelled.stdout
    # The operator's finalizer let the RayJob go; its Ray cluster, submitter Job and pods went with it.
    assert core.list_namespaced_pod(namespace, label_selector="rlkube.io/experiment=rayrun").items == []
    clusters = client.CustomObjectsApi(api).list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")
    assert clusters["items"] == []
