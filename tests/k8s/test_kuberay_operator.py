"""KubeRay's operator, built from its Go module (tools/testcluster/kuberay-crds.sh operator) and run beside the test
control plane as the controller-manager runs, makes a RayJob's Ray cluster and submitter from rlkube's templates in
a namespace under Pod Security `restricted`; rlkube reads it back and cancels it.

The pods land on kwok's nodes, which fake them (they run a second, then succeed): this proves what the API server,
Pod Security and the operator do with rlkube's RayJob, not that Ray runs. No cluster DNS runs here, so the operator
reaches dashboards through the API server (--use-kubernetes-proxy) and finds none.
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

pytestmark = [pytest.mark.xdist_group("k8s"), pytest.mark.full]
SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "testcluster" / "kuberay-crds.sh"
RLKUBE = [sys.executable, "-m", "rlkube"]


def _kuberay_paths() -> tuple[Path, Path]:
    """(the CRDs' directory, the operator binary), built the first time."""
    def run(*args: str) -> Path:
        result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, check=True, timeout=1800)
        return Path(result.stdout.strip().splitlines()[-1])

    return run(), run("operator")


@pytest.fixture(scope="module")
def kuberay(cluster: TestCluster, api: client.ApiClient) -> Iterator[None]:
    """KubeRay's CRDs and its operator (watching every namespace, as the admin), stopped by pid afterwards."""
    crds, operator = _kuberay_paths()
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        extensions.create_custom_resource_definition(crd)
    wait_for(lambda: all(any(c.type == "Established" and c.status == "True"
                             for c in extensions.read_custom_resource_definition(name).status.conditions or [])
                         for name in names), what="KubeRay's CRDs established")
    log_path = cluster.workdir / "logs" / "kuberay-operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(operator), "--enable-leader-election=false", "--metrics-addr", "127.0.0.1:0",
             "--health-probe-bind-address", "127.0.0.1:0", "--log-stdout-encoder", "console",
             # No cluster DNS here: the dashboard's Service name resolves nowhere on this host.
             "--use-kubernetes-proxy"],
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"Starting workers" in log_path.read_bytes() or process.poll() is not None,
                 timeout=60, what="KubeRay's operator starting its controllers")
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name in names:
            extensions.delete_custom_resource_definition(name)


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
