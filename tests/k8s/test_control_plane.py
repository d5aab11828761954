"""Smoke tests of the loopback control plane itself, through the official `kubernetes` Python client.

They pin down what rlkube's Kubernetes tests rely on: Indexed Jobs on fake TPU nodes, the kwok pod conventions
(fail one index, hold a pod), logs and port-forward proxied by the API server, server-side dry-run, RBAC and quota.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from cluster import FAIL_INDEX_LABEL, HOLD_LABEL, TPU_LABELS, TestCluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
T = TypeVar("T")
IMAGE = "registry.invalid/rlkube:test"  # never pulled: kwok fakes the containers


def wait_for(probe: Callable[[], T | None], timeout: float = 30, what: str = "condition") -> T:
    """Poll `probe` every 0.1 s until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, *types: str) -> str | None:
    """The type of the first True condition of the Job among `types`, if any."""
    status = batch.read_namespaced_job_status(name, namespace).status
    for condition in status.conditions or []:
        if condition.type in types and condition.status == "True":
            return condition.type
    return None


def indexed_job(name: str, completions: int, *, labels: dict[str, str] | None = None, tpu: bool = False,
                **spec: Any) -> client.V1Job:
    container = client.V1Container(name="learner", image=IMAGE, command=["python", "-m", "rlkube"])
    pod_spec = client.V1PodSpec(restart_policy="Never", containers=[container])
    if tpu:
        container.resources = client.V1ResourceRequirements(limits={"google.com/tpu": "8"})
        pod_spec.node_selector = {k: TPU_LABELS[k] for k in ("cloud.google.com/gke-tpu-accelerator",
                                                             "cloud.google.com/gke-tpu-topology")}
        pod_spec.tolerations = [client.V1Toleration(key="google.com/tpu", operator="Exists", effect="NoSchedule")]
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            completion_mode="Indexed", completions=completions, parallelism=completions,
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod_spec),
            **spec,
        ),
    )


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items


def completion_index(pod: client.V1Pod) -> int:
    return int(pod.metadata.annotations["batch.kubernetes.io/job-completion-index"])


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def held_pod(core: client.CoreV1Api, namespace: str) -> str:
    """A Running pod that kwok keeps Running (rlkube.io/test-hold) until it is deleted."""
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="held", labels={HOLD_LABEL: "true"}),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(name="main", image=IMAGE)]),
    )
    core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: core.read_namespaced_pod("held", namespace).status.phase == "Running", what="pod Running")
    return "held"


def test_indexed_job_on_tpu_nodes_runs_one_pod_per_node_and_completes(
        cluster: TestCluster, core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(namespace, indexed_job("tpu", 5, tpu=True))

    assert wait_for(lambda: job_condition(batch, namespace, "tpu", "Complete", "Failed"), what="Job finished") \
        == "Complete"
    pods = job_pods(core, namespace, "tpu")
    assert sorted(completion_index(p) for p in pods) == [0, 1, 2, 3, 4]
    assert {p.status.phase for p in pods} == {"Succeeded"}
    assert all(p.spec.node_name in cluster.tpu_nodes for p in pods)
    assert len({p.spec.node_name for p in pods}) == 5, "8 TPU chips per node: one pod per node"
    terminated = [s.state.terminated for p in pods for s in p.status.container_statuses]
    assert [t.exit_code for t in terminated] == [0] * 5


def test_index_marked_to_fail_fails_while_the_other_indexes_succeed(
        core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str) -> None:
    job = indexed_job("flaky", 4, labels={FAIL_INDEX_LABEL: "2"}, backoff_limit_per_index=0, max_failed_indexes=3)
    batch.create_namespaced_job(namespace, job)

    assert wait_for(lambda: job_condition(batch, namespace, "flaky", "Complete", "Failed"), what="Job finished") \
        == "Failed"
    status = batch.read_namespaced_job_status("flaky", namespace).status
    assert status.failed_indexes == "2"
    assert status.completed_indexes == "0,1,3"
    assert (status.succeeded, status.failed) == (3, 1)
    by_index = {completion_index(p): p for p in job_pods(core, namespace, "flaky")}
    assert by_index[2].status.phase == "Failed"
    assert by_index[2].status.container_statuses[0].state.terminated.exit_code == 1
    assert {by_index[i].status.phase for i in (0, 1, 3)} == {"Succeeded"}


def test_held_pod_stays_running_until_deleted(core: client.CoreV1Api, namespace: str, held_pod: str) -> None:
    # A pod without the hold label, started after the held one was Running, finishes 1 s after it starts: once it
    # has, the held pod has outlived the time pods that are not held run.
    unheld = client.V1Pod(
        metadata=client.V1ObjectMeta(name="unheld"),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(name="main", image=IMAGE)]),
    )
    core.create_namespaced_pod(namespace, unheld)
    wait_for(lambda: core.read_namespaced_pod("unheld", namespace).status.phase == "Succeeded",
             what="the pod that is not held to finish")
    assert core.read_namespaced_pod(held_pod, namespace).status.phase == "Running"

    core.delete_namespaced_pod(held_pod, namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod(held_pod, namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, what="pod deleted")


def test_pod_logs_follow_streams_appended_lines_through_the_api_server(
        cluster: TestCluster, core: client.CoreV1Api, namespace: str, held_pod: str) -> None:
    first, second = (f"{namespace} step={step} return=10.0\n".encode() for step in (1, 2))
    cluster.write_pod_log(first.decode().rstrip("\n"))
    response = core.read_namespaced_pod_log(held_pod, namespace, container="main", follow=True,
                                            _preload_content=False, _request_timeout=(5, 10))
    chunks = response.stream(1024)  # a read that waits longer than 10 s raises instead of hanging
    text = b""
    try:
        while first not in text:
            text += next(chunks)
        cluster.write_pod_log(second.decode().rstrip("\n"))  # appended while the client is following
        while second not in text:
            text += next(chunks)
    finally:
        response.close()
    assert text.endswith(first + second)  # earlier tests of the session may have logged lines too


@pytest.fixture
def local_http_server(cluster: TestCluster) -> Iterator[str]:
    """An HTTP server on the address kwok forwards every pod port to; yields the body it serves."""
    body = f"tensorboard of {id(cluster)}".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        allow_reuse_address = True

    server = Server(cluster.port_forward_target, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield body.decode()
    server.shutdown()
    server.server_close()


def test_port_forward_through_the_api_server_reaches_the_local_server(
        core: client.CoreV1Api, namespace: str, held_pod: str, local_http_server: str) -> None:
    forward = portforward(core.connect_get_namespaced_pod_portforward, held_pod, namespace, ports="6006")
    try:
        sock = forward.socket(6006)
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while local_http_server.encode() not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    finally:
        forward.close()
    assert reply.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), reply
    assert reply.endswith(local_http_server.encode())


def test_server_side_dry_run_validates_without_persisting(batch: client.BatchV1Api, namespace: str) -> None:
    created = batch.create_namespaced_job(namespace, indexed_job("dry", 2, tpu=True), dry_run="All")
    assert created.metadata.name == "dry"
    assert created.spec.template.spec.tolerations[0].key == "google.com/tpu"  # defaulted and admitted
    assert batch.list_namespaced_job(namespace).items == []

    invalid = indexed_job("dry-invalid", 2)
    invalid.spec.template.spec.restart_policy = "Always"  # not allowed for Jobs
    with pytest.raises(ApiException) as excinfo:
        batch.create_namespaced_job(namespace, invalid, dry_run="All")
    assert excinfo.value.status == 422
    assert "restartPolicy" in excinfo.value.body


def test_user_with_only_a_namespaced_role_cannot_create_cluster_roles(
        cluster: TestCluster, api: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="experimenter"),
        rules=[client.V1PolicyRule(api_groups=["batch"], resources=["jobs"], verbs=["create", "get", "list"])],
    ))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="experimenter"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="experimenter"),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name="alice")],
    ))
    alice = cluster.api_client(cluster.user_kubeconfig("alice", groups=["rlkube-users"]))

    # What the Role grants works (RBAC caches are refreshed from watches, so allow a moment)...
    wait_for(lambda: client.BatchV1Api(alice).list_namespaced_job(namespace) is not None, what="Role in effect")
    client.BatchV1Api(alice).create_namespaced_job(namespace, indexed_job("allowed", 1), dry_run="All")
    # ... anything else is forbidden.
    with pytest.raises(ApiException) as excinfo:
        client.RbacAuthorizationV1Api(alice).create_cluster_role(client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=f"{namespace}-escalate"),
            rules=[client.V1PolicyRule(api_groups=["*"], resources=["*"], verbs=["*"])],
        ))
    assert excinfo.value.status == 403
    assert 'User "alice" cannot create resource "clusterroles"' in json.loads(excinfo.value.body)["message"]
    with pytest.raises(ApiException) as excinfo:
        client.BatchV1Api(alice).list_namespaced_job("default")
    assert excinfo.value.status == 403


def test_resource_quota_on_tpu_chips_rejects_pods_over_the_limit(
        core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="tpu"),
        spec=client.V1ResourceQuotaSpec(hard={"requests.google.com/tpu": "8"}),
    ))
    wait_for(lambda: core.read_namespaced_resource_quota_status("tpu", namespace).status.hard,
             what="quota status computed by the resourcequota controller")
    job = indexed_job("big", 1, tpu=True)
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="two-slices"), spec=job.spec.template.spec)
    pod.spec.containers[0].resources = client.V1ResourceRequirements(limits={"google.com/tpu": "16"})

    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert excinfo.value.status == 403
    assert "exceeded quota: tpu" in excinfo.value.body
