"""rlkube doctor against a real API server: all green with everything present, then each piece missing in turn.

The namespace is set up as manifests/setup sets up `rlkube` (test_setup_manifests' fixtures), with Kueue's queue
CRDs (tools/testcluster/kueue-crds.sh) and a LocalQueue; the image is in an in-process OCI registry
(tests/oci_registry.py: no cloud registry can run here) and the bucket on moto's S3 server. The profile asks for an
L4 GPU on GKE, which the test cluster's fake GPU nodes carry. `--pods` runs its probe Job on a kwok node, which fakes
the pod: this checks that the Job is admitted, completes and is removed, not that a real pod can reach the bucket
(the real node's tier would).
"""

import dataclasses
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import TestCluster
from kubernetes import client
from test_control_plane import wait_for
from test_rayjob_admission import kuberay_crds, kuberay_kinds
from test_setup_manifests import admission_policy, rlkube_namespace  # noqa: F401  (fixtures)

from rlkube import __version__
from rlkube.launch import doctor
from rlkube.launch.clusters import Accelerator, ClusterProfile, RayWorkers
from rlkube.launch.oci import VERSION_LABEL
from rlkube.launch.targets.kubernetes.doctor import cluster_checks
from tests import oci_registry
from tests.conftest import run_rlkube
from tests.storage_servers import StorageServer, s3_server

pytestmark = pytest.mark.xdist_group("k8s")
KUEUE_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "testcluster" / "kueue-crds.sh"
QUEUE = "rlkube-queue"
REPOSITORY = "rlkube/rlkube-cpu"


@pytest.fixture(scope="module")
def kueue(api: client.ApiClient) -> Iterator[tuple[str, str]]:
    """Kueue's LocalQueue and ClusterQueue kinds (no Kueue controller: only the kinds must exist); their group and a
    version the API server serves."""
    directory = Path(subprocess.run(["bash", str(KUEUE_SCRIPT)], capture_output=True, text=True, check=True,
                                    timeout=600).stdout.strip().splitlines()[-1])
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        return all(any(c.type == "Established" and c.status == "True"
                       for c in extensions.read_custom_resource_definition(name).status.conditions or [])
                   for name in names)

    wait_for(established, what="Kueue's CRDs established")
    yield "kueue.x-k8s.io", "v1beta1"
    for name in names:
        extensions.delete_custom_resource_definition(name)


@pytest.fixture(scope="module")
def registry() -> Iterator[oci_registry.FakeRegistry]:
    with oci_registry.serve(token_required=True) as running:
        running.push(REPOSITORY, __version__, {VERSION_LABEL: __version__})
        running.push(REPOSITORY, "old", {VERSION_LABEL: "0.0.1"})
        yield running


@pytest.fixture(scope="module")
def s3() -> Iterator[StorageServer]:
    with s3_server() as server:
        yield server


@pytest.fixture
def setup(cluster: TestCluster, api: client.ApiClient, rlkube_namespace: str,  # noqa: F811  (the fixture)
          kueue: tuple[str, str], registry: oci_registry.FakeRegistry, s3: StorageServer,
          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Everything present: the namespace set up, its parameters admitting the registry, a LocalQueue, a bucket; the
    environment pointing at the cluster and the bucket; a profile `doctor` in ./rlkube.yaml."""
    namespace = rlkube_namespace
    core = client.CoreV1Api(api)
    parameters = core.read_namespaced_config_map("rlkube-admission", namespace)
    core.patch_namespaced_config_map("rlkube-admission", namespace, {"data": {
        "registries": f"{parameters.data['registries']}{registry.address}/rlkube\n"}})
    group, version = kueue
    client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, namespace, "localqueues", {
        "apiVersion": f"{group}/{version}", "kind": "LocalQueue", "metadata": {"name": QUEUE},
        "spec": {"clusterQueue": "rlkube"}})
    bucket = f"rlkube-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    for name, value in {**s3.env, "KUBECONFIG": str(cluster.kubeconfig)}.items():
        monkeypatch.setenv(name, value)
    profile = ClusterProfile(
        name="doctor", target="kubernetes", provider="gke", context=cluster.context, namespace=namespace,
        image=f"{registry.address}/{REPOSITORY}:{{version}}", output=f"s3://{bucket}/runs",
        resources={"cpu": "250m", "memory": "1Gi"}, accelerator=Accelerator("gpu", "nvidia-l4"), queue=QUEUE,
        termination_grace_seconds=1)
    settings = {key: value for key, value in dataclasses.asdict(profile).items() if key != "name"}
    (tmp_path / "rlkube.yaml").write_text(yaml.safe_dump({"doctor": settings}))
    monkeypatch.chdir(tmp_path)
    return {"namespace": namespace, "profile": profile, "registry": registry, "bucket": bucket}


def states(checks: list[doctor.Check]) -> dict[str, str]:
    return {check.name: check.state for check in checks}


@pytest.mark.usefixtures("setup")
def test_everything_present_is_all_green() -> None:
    result = run_rlkube("doctor", "--cluster", "doctor", timeout=60)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["ok", name] for name in ("api-server", "namespace", "access", "role", "admission", "parameters",
                                  "network-policy", "queue", "accelerators", "image", "image-version", "bucket")
    ], result.stdout
    assert lines[-1] == "12 ok, 0 warnings, 0 failed: ready to submit"


def test_a_submitter_sees_no_failure_and_is_told_what_only_an_admin_can_read(
        cluster: TestCluster, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.user_kubeconfig("alice", ["rlkube-submitters"])))
    checks = wait_for(lambda: (found := cluster_checks(setup["profile"], setup["profile"].default_image, False))
                      and states(found)["admission"] == doctor.OK and found, what="the Role and policy in effect")
    assert {name for name, state in states(checks).items() if state != doctor.OK} == {
        "namespace", "queue", "accelerators"}, checks
    assert all(check.state == doctor.WARN for check in checks if check.state != doctor.OK)
    by_name = {check.name: check for check in checks}
    assert by_name["admission"].line == "in effect: it refused a dry-run ConfigMap without rlkube's labels"
    assert "autoscaler" in by_name["accelerators"].fix


def test_a_submitter_is_told_when_the_admission_policy_is_not_in_effect(
        cluster: TestCluster, api: client.ApiClient, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A submitter cannot read the policies: a dry-run ConfigMap without rlkube's labels, admitted, says so."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.user_kubeconfig("alice", ["rlkube-submitters"])))
    admission = client.AdmissionregistrationV1Api(api)
    admission.delete_validating_admission_policy_binding("rlkube-submitters")
    try:
        def admission_check() -> doctor.Check | None:
            checks = cluster_checks(setup["profile"], setup["profile"].default_image, False)
            (check,) = (check for check in checks if check.name == "admission")
            return check if check.state == doctor.FAIL else None

        check = wait_for(admission_check, what="the binding's removal in effect")
    finally:
        restore_binding(api, "rlkube-submitters")
    assert check.line == "not in effect: a dry-run ConfigMap without rlkube's labels was admitted"
    assert check.fix == "kubectl apply -f manifests/setup/admission-policy.yaml (an admin)"


def _delete(kind: str, name: str) -> Callable[[client.ApiClient, str], Any]:
    def remove(api: client.ApiClient, namespace: str) -> None:
        apis = {"Role": client.RbacAuthorizationV1Api(api).delete_namespaced_role,
                "ConfigMap": client.CoreV1Api(api).delete_namespaced_config_map,
                "NetworkPolicy": client.NetworkingV1Api(api).delete_namespaced_network_policy,
                "PersistentVolumeClaim": client.CoreV1Api(api).delete_namespaced_persistent_volume_claim}
        apis[kind](name, namespace)
    return remove


def _unlabel(api: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": None}}})


def _unbind(api: client.ApiClient, _namespace: str) -> None:
    client.AdmissionregistrationV1Api(api).delete_validating_admission_policy_binding("rlkube-allowed")


# (what is missing, how to take it away (cluster) or change the profile, the failing check, its line, its fix)
MISSING = [
    pytest.param(_unlabel, {}, "namespace", "lacks pod-security.kubernetes.io/enforce=restricted",
                 "kubectl label namespace", id="pod-security-label"),
    pytest.param(None, {"namespace": "rlkube-nowhere"}, "namespace", "rlkube-nowhere does not exist",
                 "kubectl apply -f manifests/setup/namespace.yaml", id="namespace"),
    pytest.param(_delete("Role", "rlkube-submitter"), {}, "role", "no Role rlkube-submitter",
                 "rbac.yaml", id="role"),
    pytest.param(_unbind, {}, "admission", "missing ValidatingAdmissionPolicy or binding rlkube-allowed",
                 "kubectl apply -f manifests/setup/admission-policy.yaml", id="admission-policy"),
    pytest.param(_delete("ConfigMap", "rlkube-admission"), {}, "parameters", "no the ConfigMap rlkube-admission",
                 "manifests/setup/parameters.yaml", id="admission-parameters"),
    pytest.param(_delete("NetworkPolicy", "rlkube-trainers"), {}, "network-policy", "no NetworkPolicy rlkube-trainers",
                 "networkpolicy.yaml", id="network-policy"),
    pytest.param(_delete("PersistentVolumeClaim", "rlkube-runs"), {"output": "/runs", "pvc": "rlkube-runs"},
                 "runs-volume", "PersistentVolumeClaim rlkube-runs", "pvc.yaml", id="runs-volume"),
    pytest.param(None, {"queue": "nope"}, "queue", "no LocalQueue nope", "fix the profile's queue", id="queue"),
    pytest.param(None, {"image": "{registry}/" + REPOSITORY + ":missing"}, "image", "is not in its registry",
                 "push it: rlkube build --target cpu --push", id="image"),
    pytest.param(None, {"image": "{registry}/" + REPOSITORY + ":old"}, "image-version",
                 f"the image is rlkube 0.0.1, this CLI is {__version__}", "pip install rlkube==0.0.1", id="version"),
    pytest.param(None, {"output": "s3://rlkube-no-such-bucket/runs"}, "bucket", "does not exist",
                 "grant your credentials list, write and delete", id="bucket"),
    pytest.param(None, {"resources": {"cpu": "500", "memory": "1Gi"}}, "render", "lower the profile's resources to fit",
                 "fix the profile", id="requests-no-node-fits"),
    pytest.param(None, {"context": "nowhere"}, "api-server", "cannot use context 'nowhere'",
                 "fix the kubeconfig or the profile's context", id="kube-context"),
]


@pytest.mark.parametrize(("take_away", "changes", "name", "line", "fix"), MISSING)
def test_each_missing_piece_fails_its_check_with_the_fix(
        api: client.ApiClient, setup: dict[str, Any], take_away: Callable[[client.ApiClient, str], Any] | None,
        changes: dict[str, Any], name: str, line: str, fix: str) -> None:
    changes = {key: value.format(registry=setup["registry"].address) if isinstance(value, str) else value
               for key, value in changes.items()}
    profile = dataclasses.replace(setup["profile"], **changes)
    try:
        if take_away is not None:
            take_away(api, setup["namespace"])
        checks = cluster_checks(profile, profile.default_image, False)
    finally:
        if take_away is _unbind:
            restore_binding(api)
    (check,) = (check for check in checks if check.name == name)
    assert check.state == doctor.FAIL, checks
    assert line in check.line
    assert fix in check.fix
    if name not in ("namespace", "api-server"):  # those two take the namespace's or every other check with them
        assert [c for c in checks if c.state != doctor.OK] == [check]
    assert doctor.exit_code(checks) == 1


def restore_binding(api: client.ApiClient, name: str = "rlkube-allowed") -> None:
    setup_file = Path(__file__).resolve().parents[2] / "manifests" / "setup" / "admission-policy.yaml"
    (binding,) = (doc for doc in yaml.safe_load_all(setup_file.read_text())
                  if doc["kind"] == "ValidatingAdmissionPolicyBinding" and doc["metadata"]["name"] == name)
    client.AdmissionregistrationV1Api(api).create_validating_admission_policy_binding(binding)


def test_a_ray_profile_needs_kuberay_and_is_probed_through_its_learners_pod(api: client.ApiClient,
                                                                             setup: dict[str, Any]) -> None:
    profile = dataclasses.replace(setup["profile"], ray=RayWorkers(workers=2))
    checks = cluster_checks(profile, profile.default_image, False)
    (check,) = (check for check in checks if check.name == "kuberay")
    assert check.state == doctor.FAIL
    assert check.line == "the profile runs copies as RayJobs, and KubeRay is not installed (the cluster serves no " \
                         "ray.io API)"
    assert "install the KubeRay operator" in check.fix
    assert [c for c in checks if c.state != doctor.OK] == [check]  # the render of a Ray profile's probe included
    with kuberay_kinds(api, kuberay_crds() / "ray.io_rayjobs.yaml"):
        checks = cluster_checks(profile, profile.default_image, False)
    assert states(checks)["kuberay"] == doctor.OK


def test_no_node_with_the_profiles_accelerator_is_a_warning_that_the_autoscaler_may_make_one(
        setup: dict[str, Any]) -> None:
    profile = dataclasses.replace(setup["profile"], accelerator=Accelerator("gpu", "nvidia-h100-80gb"))
    checks = cluster_checks(profile, profile.default_image, False)
    (check,) = (check for check in checks if check.name == "accelerators")
    assert check.state == doctor.WARN
    assert check.line == "no node carries cloud.google.com/gke-accelerator=nvidia-h100-80gb"
    assert "autoscaler" in check.fix
    assert doctor.exit_code(checks) == 0


def test_pods_runs_a_probe_job_as_the_profile_and_removes_it(api: client.ApiClient, setup: dict[str, Any]) -> None:
    checks = cluster_checks(setup["profile"], setup["profile"].default_image, True)
    (check,) = (check for check in checks if check.name == "pods")
    assert check.state == doctor.OK, checks
    managed = "app.kubernetes.io/managed-by=rlkube"
    assert client.BatchV1Api(api).list_namespaced_job(setup["namespace"], label_selector=managed).items == []
    assert client.CoreV1Api(api).list_namespaced_service_account(setup["namespace"],
                                                                 label_selector=managed).items == []


@pytest.mark.full
def test_pods_reach_the_bucket_with_the_profiles_identity_on_a_real_node(e2e: dict[str, Any],
                                                                          pushed_image: str) -> None:
    """The real node's tier: the probe Job's pod really runs, with the profile's Secret, and writes to the bucket.
    The e2e namespace is not set up as manifests/setup makes one, so only the lines --pods adds are asserted."""
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    profiles["real"]["image"] = pushed_image
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))
    result = run_rlkube("doctor", "--cluster", "real", "--pods", timeout=600)
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[:-1]}
    assert lines["pods"].startswith("ok"), result.stdout + result.stderr
    assert lines["bucket"].startswith("ok"), result.stdout
    assert lines["image-version"].startswith("ok"), result.stdout
    managed = "app.kubernetes.io/managed-by=rlkube"
    assert client.BatchV1Api(e2e["api"]).list_namespaced_job(e2e["namespace"], label_selector=managed).items == []
