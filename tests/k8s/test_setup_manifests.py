"""manifests/setup against a real API server, applied to a namespace labelled like rlkube's.

A submitter, bound to the rlkube-submitter Role through its group, can still do everything `rlkube submit`, `status`,
`logs`, `tensorboard` and `cancel` do; admission-policy.yaml refuses what the Role's verbs alone would allow:
Services other than ClusterIP, NetworkPolicies that open traffic, and deleting what rlkube did not make.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import HOLD_LABEL, TestCluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from test_control_plane import wait_for

from rlkube.launch import store
from rlkube.launch.clusters import Accelerator, ClusterProfile
from rlkube.launch.render import tensorboard_objects
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.base import target_for
from rlkube.run.options import TrainOptions

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
SETUP = Path(__file__).resolve().parents[2] / "manifests" / "setup"
MANAGED = {"app.kubernetes.io/managed-by": "rlkube"}


def setup_documents(file: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((SETUP / file).read_text()) if doc]


def create(api: client.ApiClient, doc: dict[str, Any], namespace: str | None = None) -> Any:
    """Create a manifest as the user of `api`, in `namespace` when it is namespaced."""
    resource = DynamicClient(api).resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    if namespace is not None:
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    return resource.create(body=doc, namespace=namespace)


def refusal(call: Callable[[], Any]) -> str:
    """The message of the 403 that `call` gets."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    return json.loads(refused.value.body)["message"]


@pytest.fixture(scope="module")
def admission_policy(api: client.ApiClient) -> Iterator[None]:
    """admission-policy.yaml's cluster-wide policy and binding, for this module's tests."""
    documents = setup_documents("admission-policy.yaml")
    for doc in documents:
        create(api, doc)
    yield
    for doc in reversed(documents):
        DynamicClient(api).resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).delete(
            name=doc["metadata"]["name"])


@pytest.fixture
def rlkube_namespace(api: client.ApiClient, namespace: str, admission_policy: None) -> str:  # noqa: ARG001
    """The test's namespace, set up as manifests/setup sets up `rlkube`: its labels, Role, RoleBinding, the
    trainers' NetworkPolicy and the runs PVC (left Pending: this cluster has no volume provisioner)."""
    (labels,) = (doc["metadata"]["labels"] for doc in setup_documents("namespace.yaml"))
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": labels}})
    for file in ("rbac.yaml", "networkpolicy.yaml", "pvc.yaml"):
        for doc in setup_documents(file):
            create(api, doc, namespace)
    return namespace


def node_port_service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}], **spec}}


@pytest.fixture
def alice(cluster: TestCluster, rlkube_namespace: str) -> client.ApiClient:
    """A submitter: in the group that the RoleBinding names, with no other rights."""
    api = cluster.api_client(cluster.user_kubeconfig("alice", ["rlkube-submitters"]))

    def policy_in_effect() -> bool:  # RBAC and admission policies are loaded from watches: allow a moment
        try:
            client.CoreV1Api(api).create_namespaced_service(rlkube_namespace, node_port_service("probe"),
                                                            dry_run="All")
        except ApiException as error:
            return "may create only ClusterIP" in (error.body or "")
        return False

    wait_for(policy_in_effect, what="the Role and the admission policy in effect")
    return api


def test_a_submitter_may_create_only_cluster_ip_services(api: client.ApiClient, alice: client.ApiClient,
                                                         rlkube_namespace: str) -> None:
    core = client.CoreV1Api(alice)
    refused = {
        "NodePort": node_port_service("node-port"),
        "LoadBalancer": node_port_service("load-balancer", type="LoadBalancer"),
        "ExternalName": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external-name"},
                         "spec": {"type": "ExternalName", "externalName": "example.com"}},
        "externalIPs": node_port_service("external-ips", type="ClusterIP", externalIPs=["203.0.113.7"]),
    }
    for kind, service in refused.items():
        message = refusal(lambda s=service: core.create_namespaced_service(rlkube_namespace, s))
        assert "may create only ClusterIP Services" in message, kind
    # What rlkube makes: the headless Service of a multi-host slice, the TensorBoard's ClusterIP Service.
    core.create_namespaced_service(rlkube_namespace, node_port_service("headless", type="ClusterIP", clusterIP="None"))
    core.create_namespaced_service(rlkube_namespace, node_port_service("cluster-ip", type="ClusterIP"))
    # A cluster admin may create NodePort Services anywhere, so the policy does not bind them.
    client.CoreV1Api(api).create_namespaced_service(rlkube_namespace, node_port_service("admins"), dry_run="All")


def test_a_submitter_may_create_only_network_policies_that_deny(alice: client.ApiClient,
                                                                rlkube_namespace: str) -> None:
    allow_all = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "open"},
                 "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]}}
    egress = {**allow_all, "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    for policy in (allow_all, egress):
        assert "only NetworkPolicies that deny" in refusal(lambda p=policy: create(alice, p, rlkube_namespace))
    deny = {**allow_all, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    create(alice, deny, rlkube_namespace)


def test_a_submitter_may_delete_only_what_rlkube_made(api: client.ApiClient, alice: client.ApiClient,
                                                      rlkube_namespace: str) -> None:
    admins = client.CoreV1Api(api)
    core = client.CoreV1Api(alice)
    admins.create_namespaced_config_map(rlkube_namespace, {"metadata": {"name": "admins"}, "data": {"a": "b"}})
    core.create_namespaced_config_map(rlkube_namespace, {"metadata": {"name": "rlkubes", "labels": MANAGED}})

    for delete in (lambda: core.delete_namespaced_config_map("admins", rlkube_namespace),
                   lambda: core.delete_namespaced_service_account("default", rlkube_namespace)):
        assert "may delete only what rlkube made" in refusal(delete)
    core.delete_namespaced_config_map("rlkubes", rlkube_namespace)
    # No deletecollection: one request would remove every pod its selector matches, whoever made them.
    assert 'cannot deletecollection resource "pods"' in refusal(
        lambda: core.delete_collection_namespaced_pod(rlkube_namespace, label_selector="rlkube.io/experiment=x"))
    assert admins.read_namespaced_config_map("admins", rlkube_namespace).data == {"a": "b"}
    assert admins.read_namespaced_service_account("default", rlkube_namespace)


@pytest.fixture
def as_alice(cluster: TestCluster, alice: client.ApiClient, tmp_path: Path,  # noqa: ARG001  (alice: in effect)
             monkeypatch: pytest.MonkeyPatch) -> None:
    """rlkube's own code (its Kubernetes target) talks to the cluster as alice, with an experiment store of its own."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.user_kubeconfig("alice", ["rlkube-submitters"])))
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))


@pytest.mark.usefixtures("as_alice")
def test_the_submitter_role_still_does_everything_rlkube_needs(alice: client.ApiClient,
                                                               rlkube_namespace: str) -> None:
    profile = ClusterProfile(name="test-tpu", target="kubernetes", provider="gke", context="rlkube-test",
                             namespace=rlkube_namespace, image="rlkube:test", output="gs://bucket/runs",
                             accelerator=Accelerator("tpu", "v5litepod-8"), resources={"cpu": "1", "memory": "1Gi"},
                             labels={HOLD_LABEL: "true"}, retries_per_copy=0)
    spec = build_spec(profile, TrainOptions("dqn_cartpole"), 2, name="alice-run")
    core = client.CoreV1Api(alice)
    selector = "rlkube.io/experiment=alice-run"

    # submit: a server-side dry-run of every object, then each created (Pod Security "restricted" admits the pods).
    target = target_for(profile)
    target.submit(spec)
    assert store.get("alice-run").backend["objects"] == ["ServiceAccount/alice-run", "ConfigMap/alice-run",
                                                         "Job/alice-run"]
    # status and logs
    wait_for(lambda: [c.phase for c in target.describe(store.get("alice-run"))] == ["Running"] * 2, what="Running")
    pods = core.list_namespaced_pod(rlkube_namespace, label_selector=selector).items
    core.read_namespaced_pod_log(pods[0].metadata.name, rlkube_namespace, tail_lines=5)
    # tensorboard: its NetworkPolicy, Deployment and Service, then a port-forward to its pod (create over SPDY,
    # get over WebSockets).
    for obj in tensorboard_objects(rlkube_namespace, "rlkube:test", "rlkube-runs", "/runs"):
        create(alice, obj, rlkube_namespace)
    for verb in ("create", "get"):
        review = client.AuthorizationV1Api(alice).create_self_subject_access_review({"spec": {
            "resourceAttributes": {"namespace": rlkube_namespace, "verb": verb, "resource": "pods",
                                   "subresource": "portforward"}}})
        assert review.status.allowed, verb
    # cancel: every object by name, then the pods one by one (the garbage collector may have been quicker).
    batch = client.BatchV1Api(alice)
    batch.delete_namespaced_job("alice-run", rlkube_namespace, propagation_policy="Background")
    core.delete_namespaced_config_map("alice-run", rlkube_namespace)
    core.delete_namespaced_service_account("alice-run", rlkube_namespace)
    for pod in pods:
        try:
            core.delete_namespaced_pod(pod.metadata.name, rlkube_namespace)
        except ApiException as error:
            if error.status != 404:
                raise
    wait_for(lambda: not core.list_namespaced_pod(rlkube_namespace, label_selector=selector).items
             and not batch.list_namespaced_job(rlkube_namespace, label_selector=selector).items,
             what="the experiment's Job and pods gone")


def test_a_submitter_may_read_no_secret(api: client.ApiClient, alice: client.ApiClient, rlkube_namespace: str) -> None:
    """The trackers' and buckets' credentials reach pods through envFrom (the profile's env_from_secrets); the
    shipped Role lets a submitter name a Secret in a pod, never read one."""
    client.CoreV1Api(api).create_namespaced_secret(rlkube_namespace, {
        "metadata": {"name": "tracking"}, "stringData": {"WANDB_API_KEY": "never-read"}})
    for verb in ("get", "list", "watch"):
        review = client.AuthorizationV1Api(alice).create_self_subject_access_review({"spec": {
            "resourceAttributes": {"namespace": rlkube_namespace, "verb": verb, "resource": "secrets"}}})
        assert not review.status.allowed, verb
    assert "cannot get resource \"secrets\"" in refusal(
        lambda: client.CoreV1Api(alice).read_namespaced_secret("tracking", rlkube_namespace))
    assert not any(rule_names_secrets(doc) for doc in setup_documents("rbac.yaml"))


def rule_names_secrets(doc: dict[str, Any]) -> bool:
    return any("secrets" in rule.get("resources", []) or "*" in rule.get("resources", [])
               for rule in doc.get("rules", []))
