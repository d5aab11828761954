"""rlkube against a real control plane: submit, status, list, logs, cancel, rollback, RBAC, and whose pods TensorBoard
serves.

Pods are faked by kwok (no container runs): they land on fake TPU nodes, run for a second and succeed, unless
a profile's extra labels ask kwok to fail one index (rlkube.io/test-fail-index) or to hold pods Running
(rlkube.io/test-hold). Everything else, from validation and scheduling to the Job and Deployment controllers, logs
and port-forwarding through the API server, is the real Kubernetes. The in-cluster TensorBoard serving real runs,
which needs a real container, is tested on the real node (test_real_node.py).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import TestCluster
from kubernetes import client
from test_rayjob_admission import rayjob_crd  # noqa: F401  (a fixture)

from rlkube.errors import USER_ERROR_EXIT_CODE, UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.render import TENSORBOARD_NAME, render
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.kubernetes import submit as kube_submit
from rlkube.launch.targets.kubernetes.api import create
from rlkube.launch.targets.kubernetes.target import KubernetesTarget
from rlkube.launch.targets.kubernetes.tensorboard import _tensorboard_pod
from rlkube.run.options import TrainOptions

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
REPO = Path(__file__).resolve().parents[2]
RLKUBE = [sys.executable, "-m", "rlkube"]


def profiles(namespace: str) -> dict[str, Any]:
    tpu = {"target": "kubernetes", "provider": "gke", "context": "rlkube-test", "namespace": namespace,
           "image": "rlkube:test", "output": "gs://bucket/runs", "accelerator": {"type": "tpu", "name": "v5litepod-8"},
           "resources": {"cpu": "1", "memory": "1Gi"}, "retries_per_copy": 0}
    return {
        "test-tpu": tpu,
        "test-hold": {**tpu, "labels": {"rlkube.io/test-hold": "true"}},
        "test-fail": {**tpu, "labels": {"rlkube.io/test-fail-index": "2"}},
        "test-retry": {**tpu, "labels": {"rlkube.io/test-fail-index": "2"}, "retries_per_copy": 1},
        "test-ray": {**tpu, "accelerator": None, "ray": {"workers": 2, "cpu": 1, "memory": "1Gi"}},
    }


@pytest.fixture
def workdir(cluster: TestCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rlkube.yaml").write_text(yaml.safe_dump(profiles(namespace)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def rlkube(*args: str, kubeconfig: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
    return subprocess.run(RLKUBE + list(args), capture_output=True, text=True, env=env, timeout=timeout, check=False)


def status(name: str) -> dict[str, Any]:
    result = rlkube("status", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(name: str, phases: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (state := status(name))["phase"] not in phases:
        assert time.monotonic() < deadline, f"{name} stayed {state}"
        time.sleep(0.3)
    return state


def grant_submitter_role(api: client.ApiClient, namespace: str) -> None:
    """manifests/setup/rbac.yaml, as it is, in `namespace`: the group rlkube-submitters may do what rlkube needs."""
    for document in yaml.safe_load_all((REPO / "manifests" / "setup" / "rbac.yaml").read_text()):
        document["metadata"]["namespace"] = namespace
        if document["kind"] == "Role":
            client.RbacAuthorizationV1Api(api).create_namespaced_role(namespace, document)
        else:
            client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, document)


def experiment_objects(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    selector = f"rlkube.io/experiment={name}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    listed = [("Job", batch.list_namespaced_job), ("ConfigMap", core.list_namespaced_config_map),
              ("ServiceAccount", core.list_namespaced_service_account), ("Service", core.list_namespaced_service),
              ("Pod", core.list_namespaced_pod)]
    return [f"{kind}/{item.metadata.name}" for kind, lister in listed
            for item in lister(namespace, label_selector=selector).items]


@pytest.mark.usefixtures("workdir")
def test_five_copies_land_on_tpu_nodes_and_succeed(cluster: TestCluster, api: client.ApiClient,
                                                   namespace: str) -> None:
    submitted = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--copies", "5",
                       "--name", "tpu5")
    assert submitted.returncode == 0, submitted.stderr
    assert "rlkube logs tpu5" in submitted.stdout
    state = wait_for("tpu5", {"Succeeded", "Failed"})
    assert state["phase"] == "Succeeded"
    assert [c["phase"] for c in state["copies"]] == ["Succeeded"] * 5

    job = client.BatchV1Api(api).read_namespaced_job("tpu5", namespace)
    assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 5, 5)
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="rlkube.io/experiment=tpu5").items
    assert len(pods) == 5
    for pod in pods:
        assert pod.spec.node_name in cluster.tpu_nodes
        assert pod.spec.node_selector["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
        assert pod.spec.containers[0].resources.limits["google.com/tpu"] == "8"
    assert {c["node"] for c in state["copies"]} <= set(cluster.tpu_nodes)

    table = rlkube("status", "tpu5").stdout.splitlines()
    assert table[0].startswith("tpu5  cluster test-tpu  Succeeded")
    assert sum(line.startswith("copy-") and " Succeeded " in line for line in table) == 5
    listed = json.loads(rlkube("list", "-o", "json").stdout)
    assert [(e["name"], e["cluster"], e["phase"], e["copies"]) for e in listed] == [("tpu5", "test-tpu",
                                                                                     "Succeeded", 5)]


@pytest.mark.usefixtures("workdir")
def test_one_failing_copy_leaves_the_others_running_to_success() -> None:
    assert rlkube("submit", "--cluster", "test-fail", "--hparams", "dqn_cartpole", "--copies", "4",
                  "--name", "fail2").returncode == 0
    deadline = time.monotonic() + 60
    while True:
        state = status("fail2")
        if all(c["phase"] in ("Succeeded", "Failed") for c in state["copies"]):
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert [c["phase"] for c in state["copies"]] == ["Succeeded", "Succeeded", "Failed", "Succeeded"]
    assert state["phase"] == "Failed"


@pytest.mark.usefixtures("workdir")
def test_logs_stream_every_copy_with_prefixes_and_follow_new_lines(cluster: TestCluster) -> None:
    cluster.write_pod_log("step 100/1000  900 SPS  return    21.00")
    assert rlkube("submit", "--cluster", "test-hold", "--hparams", "dqn_cartpole", "--copies", "3",
                  "--name", "held").returncode == 0
    wait_for("held", {"Running"})
    follower = subprocess.Popen([*RLKUBE, "logs", "held"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while sum("step 100/1000" in line for line in lines) < 3:
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)
    cluster.write_pod_log("eval at step 2000: return 181.20 ± 18.46")
    while sum("eval at step 2000" in line for line in lines) < 3:
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)
    assert {line.split(" | ")[0] for line in lines if "eval at step 2000" in line} == {"copy-0", "copy-1", "copy-2"}
    state = status("held")
    assert [(c["last_step"], c["last_return"]) for c in state["copies"]] == [(2000, 181.2)] * 3

    assert rlkube("cancel", "held").returncode == 0
    follower.wait(timeout=30)  # the experiment ended, so following ends
    reader.join(timeout=5)


@pytest.mark.usefixtures("workdir")
def test_logs_follow_a_copy_across_its_retries(cluster: TestCluster) -> None:
    cluster.write_pod_log("retry-marker")
    assert rlkube("submit", "--cluster", "test-retry", "--hparams", "dqn_cartpole", "--copies", "3",
                  "--name", "retry").returncode == 0
    followed = rlkube("logs", "retry", "--copy", "2", timeout=90)
    assert followed.returncode == 0, followed.stderr
    # Copy 2 fails and is retried once: both of its pods' logs are streamed, in order.
    assert sum(line.startswith("copy-2 | ") and "retry-marker" in line for line in followed.stdout.splitlines()) == 2
    state = wait_for("retry", {"Failed"})
    assert state["copies"][2]["restarts"] == 1


@pytest.mark.parametrize(("exit_code", "pods_of_the_failing_copy"), [(USER_ERROR_EXIT_CODE, 1), (1, 2)])
@pytest.mark.usefixtures("workdir")
def test_a_user_error_fails_its_copy_at_once_where_other_failures_are_retried(
        api: client.ApiClient, namespace: str, exit_code: int, pods_of_the_failing_copy: int) -> None:
    """`rlkube train` exits 2 on a user error, which every retry would repeat: the Job fails that index without
    spending its retries (podFailurePolicy FailIndex), while another exit code is retried."""
    profile = {**profiles(namespace)["test-fail"], "retries_per_copy": 1}
    Path("rlkube.yaml").write_text(yaml.safe_dump({**profiles(namespace), "test-fail": profile}))
    objects = render(build_spec(get_profile("test-fail"), TrainOptions("dqn_cartpole"), 3, name="user-error"),
                     get_profile("test-fail"))
    for obj in objects:
        if obj["kind"] == "Job":  # kwok fails index 2 with this exit code
            obj["spec"]["template"]["metadata"]["annotations"] = {"rlkube.io/test-exit-code": str(exit_code)}
        create(api, obj)
    deadline = time.monotonic() + 60
    while not (job := client.BatchV1Api(api).read_namespaced_job("user-error", namespace)).status.conditions or not \
            {c.type for c in job.status.conditions if c.status == "True"} & {"Complete", "Failed"}:
        assert time.monotonic() < deadline, job.status
        time.sleep(0.3)
    assert (job.status.failed_indexes, job.status.completed_indexes) == ("2", "0,1")
    failing = [p for p in client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector="rlkube.io/experiment=user-error").items
        if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "2"]
    assert len(failing) == pods_of_the_failing_copy
    assert {p.status.container_statuses[0].state.terminated.exit_code for p in failing} == {exit_code}


@pytest.mark.parametrize(("grace_seconds", "cancelled"), [(8, True), (1, False)])
@pytest.mark.usefixtures("workdir")
def test_cancel_waits_out_the_pods_grace_period(api: client.ApiClient, namespace: str,
                                                monkeypatch: pytest.MonkeyPatch, grace_seconds: int,
                                                cancelled: bool) -> None:
    """Pods get the profile's termination_grace_seconds to checkpoint, and cancel waits that long for the experiment
    to be gone, and a margin more (here 1 s). A finalizer keeps the ConfigMap 4 s after its deletion."""
    profile = {**profiles(namespace)["test-hold"], "termination_grace_seconds": grace_seconds}
    Path("rlkube.yaml").write_text(yaml.safe_dump({**profiles(namespace), "test-hold": profile}))
    monkeypatch.setattr(kube_submit, "GONE_AFTER_GRACE_SECONDS", 1.0)
    assert rlkube("submit", "--cluster", "test-hold", "--hparams", "dqn_cartpole", "--name", "grace").returncode == 0
    wait_for("grace", {"Running"})
    core = client.CoreV1Api(api)
    core.patch_namespaced_config_map("grace", namespace, {"metadata": {"finalizers": ["rlkube.io/test-linger"]}})

    def release_after_4_seconds() -> None:
        time.sleep(4)
        core.patch_namespaced_config_map("grace", namespace, {"metadata": {"finalizers": None}})

    releaser = threading.Thread(target=release_after_4_seconds)
    releaser.start()
    try:
        if cancelled:
            assert "ConfigMap/grace" in KubernetesTarget().cancel(store.get("grace"))
            assert experiment_objects(api, namespace, "grace") == []
        else:
            with pytest.raises(UserError, match=r"objects of grace are still terminating after 2 s \(their pods' "
                                                r"grace period and 1 s\)"):
                KubernetesTarget().cancel(store.get("grace"))
    finally:
        releaser.join()


def test_tensorboard_serves_only_a_pod_of_rlkubes_deployment_not_one_that_carries_its_labels(
        cluster: TestCluster, api: client.ApiClient, namespace: str, workdir: Path) -> None:  # noqa: ARG001
    """A co-tenant may create a Deployment whose pods carry TensorBoard's labels, running first and listed first;
    `rlkube tensorboard`, as a submitter, port-forwards only to a pod that rlkube's Deployment controls."""
    grant_submitter_role(api, namespace)
    labels = {"app.kubernetes.io/name": "rlkube", "app.kubernetes.io/component": "tensorboard"}
    client.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": "a-look-alike"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {**labels, "look-alike": "true"}},
                 "template": {"metadata": {"labels": {**labels, "look-alike": "true"}},
                              "spec": {"containers": [{"name": "tensorboard", "image": "look-alike:latest"}]}}}})
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 60
    while not [p for p in core.list_namespaced_pod(namespace, label_selector="look-alike=true").items
               if p.status.phase == "Running"]:
        assert time.monotonic() < deadline, "the look-alike never ran"
        time.sleep(0.3)
    assert rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--name", "boarded").returncode == 0

    alice = cluster.api_client(cluster.user_kubeconfig("alice", ["rlkube-submitters"]))
    served = core.read_namespaced_pod(_tensorboard_pod(alice, store.get("boarded")), namespace)
    (owner,) = served.metadata.owner_references
    replica_set = client.AppsV1Api(api).read_namespaced_replica_set(owner.name, namespace)
    assert replica_set.metadata.uid == owner.uid
    deployment = client.AppsV1Api(api).read_namespaced_deployment(TENSORBOARD_NAME, namespace)
    assert [(o.kind, o.uid) for o in replica_set.metadata.owner_references] == [("Deployment",
                                                                                  deployment.metadata.uid)]
    assert served.spec.containers[0].command == ["tensorboard"]


@pytest.mark.usefixtures("workdir")
def test_cancel_removes_every_object(api: client.ApiClient, namespace: str) -> None:
    assert rlkube("submit", "--cluster", "test-hold", "--hparams", "dqn_cartpole", "--copies", "3",
                  "--name", "gone").returncode == 0
    wait_for("gone", {"Running"})
    assert experiment_objects(api, namespace, "gone")
    cancelled = rlkube("cancel", "gone")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "Job/gone" in cancelled.stdout
    assert experiment_objects(api, namespace, "gone") == []
    assert status("gone")["phase"] == "Cancelled"


@pytest.mark.usefixtures("workdir", "rayjob_crd")
def test_a_ray_profile_is_submitted_as_ray_jobs_and_cancelled_with_them(api: client.ApiClient, namespace: str) -> None:
    """The Target's part of RayJobs: dry run, all-or-nothing submission, a taken name, status and cancel. No KubeRay
    operator runs here, so the RayJobs stay Pending; tests/k8s/test_rayjob_real_node.py runs them."""
    submit = ["submit", "--cluster", "test-ray", "--hparams", "impala_cartpole", "--num-workers", "2", "--actors",
              "ray", "--copies", "2", "--name", "ray-exp"]
    dry = rlkube(*submit, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "RayJob/ray-exp-copy-1" in dry.stdout
    assert "nothing was created" in dry.stdout
    assert ray_jobs(api, namespace) == []
    submitted = rlkube(*submit)
    assert submitted.returncode == 0, submitted.stderr
    assert ray_jobs(api, namespace) == ["ray-exp-copy-0", "ray-exp-copy-1"]
    again = rlkube(*submit)
    assert again.returncode == 2
    assert "experiment 'ray-exp' exists in namespace" in again.stderr
    assert "RayJob/ray-exp-copy-0" in again.stderr
    state = status("ray-exp")
    assert [copy["phase"] for copy in state["copies"]] == ["Pending", "Pending"]
    cancelled = rlkube("cancel", "ray-exp")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "RayJob/ray-exp-copy-0" in cancelled.stdout
    assert ray_jobs(api, namespace) == []
    assert experiment_objects(api, namespace, "ray-exp") == []
    assert status("ray-exp")["phase"] == "Cancelled"


def ray_jobs(api: client.ApiClient, namespace: str) -> list[str]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")
    return sorted(item["metadata"]["name"] for item in listed["items"])


@pytest.mark.usefixtures("workdir")
def test_a_submission_failing_midway_leaves_nothing_behind(api: client.ApiClient, namespace: str) -> None:
    profile = get_profile("test-tpu")
    spec = build_spec(profile, TrainOptions("dqn_cartpole"), 2, name="midway")

    def forbid_jobs_after_the_config_map(obj: dict) -> None:
        if obj["kind"] == "ConfigMap":
            quota = {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}}
            client.CoreV1Api(api).create_namespaced_resource_quota(namespace, quota)
            # Admission enforces a quota only once the quota controller has filled in its status and the
            # apiserver's informer has seen that: wait until a dry-run Job is refused, not just for the status.
            probe = {"metadata": {"name": "quota-probe"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "probe", "image": "probe"}]}}}}

            def probe_refused() -> bool:
                try:
                    client.BatchV1Api(api).create_namespaced_job(namespace, probe, dry_run="All")
                except client.ApiException as refused:
                    if "exceeded quota" not in str(refused.body):
                        raise
                    return True
                return False

            deadline = time.monotonic() + 30
            while not probe_refused():
                assert time.monotonic() < deadline, "the no-jobs quota was never enforced"
                time.sleep(0.1)

    with pytest.raises(UserError, match=r"creating Job/midway failed .*exceeded quota.*nothing is left"):
        KubernetesTarget(profile, after_create=forbid_jobs_after_the_config_map).submit(spec)
    assert experiment_objects(api, namespace, "midway") == []


@pytest.mark.usefixtures("workdir")
def test_a_taken_name_needs_replace_and_dry_run_creates_nothing(api: client.ApiClient, namespace: str) -> None:
    dry = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--name", "twice", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "nothing was created" in dry.stdout
    assert experiment_objects(api, namespace, "twice") == []
    assert rlkube("submit", "--cluster", "test-hold", "--hparams", "dqn_cartpole", "--name", "twice").returncode == 0
    again = rlkube("submit", "--cluster", "test-hold", "--hparams", "dqn_cartpole", "--name", "twice")
    assert again.returncode == 2
    assert "experiment 'twice' exists in namespace" in again.stderr
    replaced = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--name", "twice", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert wait_for("twice", {"Succeeded"})["phase"] == "Succeeded"


def test_submitter_role_can_submit_follow_and_cancel_and_nothing_more(cluster: TestCluster, api: client.ApiClient,
                                                                     namespace: str, workdir: Path) -> None:
    grant_submitter_role(api, namespace)
    alice = cluster.user_kubeconfig("alice", ["rlkube-submitters"])
    bob = cluster.user_kubeconfig("bob")

    submitted = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--copies", "2",
                       "--name", "alice-run", kubeconfig=alice)
    assert submitted.returncode == 0, submitted.stderr
    assert rlkube("logs", "alice-run", kubeconfig=alice).returncode == 0
    assert rlkube("status", "alice-run", kubeconfig=alice).returncode == 0
    assert rlkube("cancel", "alice-run", kubeconfig=alice).returncode == 0
    assert experiment_objects(api, namespace, "alice-run") == []

    alice_api = cluster.api_client(alice)
    with pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(alice_api).list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(client.ApiException) as denied:
        client.RbacAuthorizationV1Api(alice_api).create_cluster_role({"metadata": {"name": "escalate"}})
    assert denied.value.status == 403
    elsewhere = rlkube("submit", "--cluster", "test-tpu", "-n", "default", "--hparams", "dqn_cartpole",
                       "--name", "alice-elsewhere", kubeconfig=alice)
    assert elsewhere.returncode == 2
    assert "forbidden" in elsewhere.stderr
    assert len(elsewhere.stderr.strip().splitlines()) == 1
    stranger = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--name", "bob-run",
                      kubeconfig=bob)
    assert stranger.returncode == 2
    assert "forbidden" in stranger.stderr
    assert experiment_objects(api, namespace, "bob-run") == []
    assert (workdir / "rlkube.yaml").exists()


@pytest.mark.usefixtures("workdir")
def test_rendered_pods_pass_pod_security_restricted(cluster: TestCluster, api: client.ApiClient) -> None:
    namespace = "rlkube-restricted"
    setup = yaml.safe_load((REPO / "manifests" / "setup" / "namespace.yaml").read_text())
    cluster.create_namespace(namespace, setup["metadata"]["labels"])
    try:
        submitted = rlkube("submit", "--cluster", "test-tpu", "-n", namespace, "--hparams", "dqn_cartpole",
                           "--copies", "2", "--name", "restricted")
        assert submitted.returncode == 0, submitted.stderr
        assert wait_for("restricted", {"Succeeded", "Failed"})["phase"] == "Succeeded"
    finally:
        client.CoreV1Api(api).delete_namespace(namespace)


@pytest.mark.parametrize(("kubeconfig_text", "message"), [
    (None, "cannot use context 'rlkube-test' from the kubeconfig"),
    ("unreachable", "cannot reach the API server https://127.0.0.1:9"),
])
@pytest.mark.usefixtures("workdir")
def test_bad_cluster_access_gets_one_clear_line(cluster: TestCluster, tmp_path: Path, kubeconfig_text: str | None,
                                                message: str) -> None:
    path = tmp_path / "kubeconfig"
    if kubeconfig_text == "unreachable":
        config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
        path.write_text(yaml.safe_dump(config))
    result = rlkube("submit", "--cluster", "test-tpu", "--hparams", "dqn_cartpole", "--name", "nowhere",
                    kubeconfig=path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
