"""How long `rlkube doctor --cluster P` takes against the loopback test control plane (tests/k8s/cluster.py), with
everything present, as tests/k8s/test_doctor.py sets it up; the issue's budget is 3 s.

Side by side: `rlkube --help` (the CLI's start-up, the floor of any command) and `rlkube submit --dry-run` to the same
profile (one server-side validated submission). The in-process time of the checks alone is printed too: the rest is
start-up and imports.

    python benchmarks/doctor_speed.py
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "k8s"))
sys.path.insert(0, str(REPO))

from cluster import TestCluster  # noqa: E402

from rlkube import __version__  # noqa: E402
from rlkube.launch.clusters import Accelerator, ClusterProfile  # noqa: E402
from rlkube.launch.oci import VERSION_LABEL  # noqa: E402
from tests import oci_registry  # noqa: E402
from tests.storage_servers import s3_server  # noqa: E402

RLKUBE = [sys.executable, "-m", "rlkube"]
REPEATS = 5
NAMESPACE = "bench-doctor"
SETUP = REPO / "manifests" / "setup"


def timed(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """The command's wall time and its CPU time (user and system): on a shared machine the first grows with the
    load, the second hardly."""
    started, cpu_before = time.perf_counter(), os.times()
    result = subprocess.run([*RLKUBE, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed, cpu_after = time.perf_counter() - started, os.times()
    if result.returncode != 0:
        raise SystemExit(f"rlkube {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    cpu = (cpu_after.children_user - cpu_before.children_user) + (cpu_after.children_system -
                                                                  cpu_before.children_system)
    return elapsed, cpu


def median_times(args: list[str], env: dict[str, str], cwd: str) -> dict[str, float]:
    runs = [timed(args, env, cwd) for _ in range(REPEATS)]
    return {"wall_s": statistics.median(wall for wall, _ in runs), "cpu_s": statistics.median(cpu for _, cpu in runs)}


def set_up(cluster: TestCluster, api: client.ApiClient, registry: str) -> None:
    """The namespace as manifests/setup makes `rlkube`, its parameters admitting `registry`, Kueue and a LocalQueue."""
    (labels,) = (doc["metadata"]["labels"] for doc in yaml.safe_load_all((SETUP / "namespace.yaml").read_text()))
    cluster.create_namespace(NAMESPACE, labels)
    dynamic = DynamicClient(api)
    for file in ("admission-policy.yaml", "rbac.yaml", "parameters.yaml", "quota.yaml", "networkpolicy.yaml"):
        for doc in filter(None, yaml.safe_load_all((SETUP / file).read_text())):
            resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            if resource.namespaced:
                doc["metadata"]["namespace"] = NAMESPACE
            if doc["kind"] == "ConfigMap":
                doc["data"]["registries"] += f"{registry}/rlkube\n"
            resource.create(body=doc, namespace=NAMESPACE if resource.namespaced else None)
    crds = Path(subprocess.run(["bash", str(REPO / "tools" / "testcluster" / "kueue-crds.sh")], capture_output=True,
                               text=True, check=True).stdout.strip())
    extensions = client.ApiextensionsV1Api(api)
    for path in crds.glob("*.yaml"):
        extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    deadline = time.monotonic() + 30
    while True:
        try:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "kueue.x-k8s.io", "v1beta1", NAMESPACE, "localqueues",
                {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "bench"},
                 "spec": {"clusterQueue": "bench"}})
            break
        except client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    from rlkube.launch.targets.kubernetes.doctor import cluster_checks  # noqa: PLC0415

    results: dict[str, dict[str, float]] = {}
    with (tempfile.TemporaryDirectory() as workdir, TestCluster() as cluster, oci_registry.serve(True) as registry,
          s3_server() as s3):
        registry.push("rlkube/rlkube-cpu", __version__, {VERSION_LABEL: __version__})
        s3.create_bucket("bench")
        set_up(cluster, cluster.api_client(), registry.address)
        profile = ClusterProfile(
            name="bench", target="kubernetes", provider="gke", context=cluster.context, namespace=NAMESPACE,
            image=f"{registry.address}/rlkube/rlkube-cpu:{{version}}", output="s3://bench/runs",
            resources={"cpu": "250m", "memory": "1Gi"}, accelerator=Accelerator("gpu", "nvidia-l4"), queue="bench")
        settings = {k: v for k, v in dataclasses.asdict(profile).items() if k != "name"}
        Path(workdir, "rlkube.yaml").write_text(yaml.safe_dump({"bench": settings}))
        env = {**os.environ, **s3.env, "KUBECONFIG": str(cluster.kubeconfig), "RLKUBE_DATA_DIR": f"{workdir}/data",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        os.environ.update({**s3.env, "KUBECONFIG": str(cluster.kubeconfig)})
        timed(["doctor", "--cluster", "bench"], env, workdir)  # all green, or this says what is not
        results["rlkube doctor --cluster"] = median_times(["doctor", "--cluster", "bench"], env, workdir)
        in_process = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            cluster_checks(profile, profile.default_image, False)
            in_process.append(time.perf_counter() - started)
        results["the checks in process"] = {"wall_s": statistics.median(in_process)}
        results["rlkube --help"] = median_times(["--help"], env, workdir)
        results["rlkube submit --dry-run"] = median_times(
            ["submit", "--cluster", "bench", "--hparams", "dqn_cartpole", "--dry-run"], env, workdir)
    load = os.getloadavg()[0]
    print(json.dumps({"load_average_1min": round(load, 1), "cpus": os.cpu_count(),
                      **{name: {k: round(v, 3) for k, v in times.items()} for name, times in results.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
