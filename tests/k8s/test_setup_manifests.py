"""manifests/setup against a real API server, applied to a namespace labelled like rlkube's.

A submitter, bound to the rlkube-submitter Role through its group, can still do everything `rlkube submit`, `status`,
`logs`, `tensorboard` and `cancel` do, and every render of every example profile is admitted; admission-policy.yaml
refuses what the Role's verbs alone would allow, each refusal naming its rule: Services other than ClusterIP,
NetworkPolicies that open traffic or select others' pods, pods that reach unlisted Secrets, another experiment's
ServiceAccount, an API token or an unlisted registry, the runs volume other than one's own experiment's directory (or,
for the TensorBoard, read-only), Deployments other than the TensorBoard, objects that do not name their creator, and
deleting what rlkube did not make or someone else created.
"""

import dataclasses
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
from rlkube.launch.render import TENSORBOARD_NAME, Object, render, tensorboard_objects
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.base import target_for
from rlkube.launch.targets.kubernetes import api as kube
from rlkube.launch.targets.kubernetes.submit import delete_experiment
from rlkube.run.options import TrainOptions
from tests.rendered_examples import example_profiles, example_spec

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
SETUP = Path(__file__).resolve().parents[2] / "manifests" / "setup"
MANAGED = {"app.kubernetes.io/managed-by": "rlkube"}
IMAGE = "ghcr.io/rlkube/rlkube-cpu:test"  # a registry parameters.yaml lists; kwok never pulls it
TENSORBOARD_PODS = {"app.kubernetes.io/name": "rlkube", "app.kubernetes.io/component": "tensorboard"}


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
    """The test's namespace, set up as manifests/setup sets up `rlkube`: its labels, Role, RoleBinding, the admission
    policy's parameters, quota and limits, the trainers' NetworkPolicy and the runs PVC (left Pending: this cluster
    has no volume provisioner)."""
    (labels,) = (doc["metadata"]["labels"] for doc in setup_documents("namespace.yaml"))
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": labels}})
    for file in ("rbac.yaml", "parameters.yaml", "quota.yaml", "networkpolicy.yaml", "pvc.yaml"):
        for doc in setup_documents(file):
            create(api, doc, namespace)
    return namespace


def node_port_service(name: str, **spec: Any) -> dict[str, Any]:
    """A NodePort Service that alice makes as rlkube would."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": MANAGED, "annotations": created_by("alice")},
            "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def created_by(user: str) -> dict[str, str]:
    return {kube.CREATOR_ANNOTATION: user}


@pytest.fixture
def alice(cluster: TestCluster, rlkube_namespace: str) -> client.ApiClient:
    """A submitter: in the group that the RoleBinding names, with no other rights."""
    api = cluster.api_client(cluster.user_kubeconfig("alice", ["rlkube-submitters"]))

    core = client.CoreV1Api(api)
    # RBAC and each admission policy are loaded from watches, independently: wait until a probe of each is refused
    # (rlkube-experiment-owners passes what has no ServiceAccount of its own, so tests of it wait on their own).
    probes = {"cluster-ip-services": lambda: core.create_namespaced_service(
                  rlkube_namespace, node_port_service("probe"), dry_run="All"),
              "service-account-annotations": lambda: core.create_namespaced_service_account(rlkube_namespace, {
                  "metadata": {"name": "probe", "labels": MANAGED,
                               "annotations": {**created_by("alice"), "eks.amazonaws.com/role-arn": "probe"}}},
                  dry_run="All")}

    def refused_by(rule: str) -> bool:
        try:
            probes[rule]()
        except ApiException as error:
            return f"rule {rule}" in (error.body or "")
        return False

    for rule in probes:
        wait_for(lambda: refused_by(rule), what=f"the Role and admission rule {rule} in effect")  # noqa: B023
    return api


def test_a_submitter_may_create_only_cluster_ip_services(api: client.ApiClient, alice: client.ApiClient,
                                                         rlkube_namespace: str) -> None:
    core = client.CoreV1Api(alice)
    refused = {
        "NodePort": node_port_service("node-port"),
        "LoadBalancer": node_port_service("load-balancer", type="LoadBalancer"),
        "ExternalName": {"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "external-name", "labels": MANAGED,
                                      "annotations": created_by("alice")},
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
    allow_all = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "open", "labels": MANAGED, "annotations": created_by("alice")},
                 "spec": {"podSelector": {"matchLabels": TENSORBOARD_PODS}, "policyTypes": ["Ingress", "Egress"],
                          "ingress": [{}]}}
    egress = {**allow_all, "spec": {"podSelector": {"matchLabels": TENSORBOARD_PODS}, "policyTypes": ["Egress"],
                                    "egress": [{}]}}
    for policy in (allow_all, egress):
        message = refusal(lambda p=policy: create(alice, p, rlkube_namespace))
        assert "rule deny-only-network-policies: rlkube submitters may create only NetworkPolicies that deny" in message
    deny = {**allow_all, "spec": {"podSelector": {"matchLabels": TENSORBOARD_PODS},
                                  "policyTypes": ["Ingress", "Egress"]}}
    create(alice, deny, rlkube_namespace)


def test_a_submitter_may_delete_only_what_rlkube_made(api: client.ApiClient, alice: client.ApiClient,
                                                      rlkube_namespace: str) -> None:
    admins = client.CoreV1Api(api)
    core = client.CoreV1Api(alice)
    admins.create_namespaced_config_map(rlkube_namespace, {"metadata": {"name": "admins"}, "data": {"a": "b"}})
    core.create_namespaced_config_map(rlkube_namespace, {"metadata": {"name": "rlkubes", "labels": MANAGED,
                                                                      "annotations": created_by("alice")}})

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
                             namespace=rlkube_namespace, image=IMAGE, output="gs://bucket/runs",
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
    # tensorboard: its NetworkPolicy, Deployment and Service; the ReplicaSet that controls its pod, which must be the
    # Deployment's; then a port-forward to that pod (create over SPDY, get over WebSockets).
    for obj in tensorboard_objects(rlkube_namespace, IMAGE, "rlkube-runs", "/runs"):
        kube.create(alice, obj)
    apps = client.AppsV1Api(alice)
    (board,) = wait_for(lambda: core.list_namespaced_pod(
        rlkube_namespace, label_selector="app.kubernetes.io/component=tensorboard").items, what="TensorBoard's pod")
    (replica_set_owner,) = board.metadata.owner_references
    replica_set = apps.read_namespaced_replica_set(replica_set_owner.name, rlkube_namespace)
    assert [owner.uid for owner in replica_set.metadata.owner_references] == [
        apps.read_namespaced_deployment(TENSORBOARD_NAME, rlkube_namespace).metadata.uid]
    for verb in ("create", "get"):
        assert may(alice, rlkube_namespace, verb, "pods", "portforward"), verb
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
        assert not may(alice, rlkube_namespace, verb, "secrets"), verb
    assert "cannot get resource \"secrets\"" in refusal(
        lambda: client.CoreV1Api(alice).read_namespaced_secret("tracking", rlkube_namespace))
    assert "cannot list resource \"secrets\"" in refusal(
        lambda: client.CoreV1Api(alice).list_namespaced_secret(rlkube_namespace))
    assert not any(rule_names_secrets(doc) for doc in setup_documents("rbac.yaml"))


def may(api: client.ApiClient, namespace: str, verb: str, resource: str, subresource: str = "") -> bool:
    """Whether the user of `api` may, as the API server's authorizer answers them (core API group)."""
    review = client.AuthorizationV1Api(api).create_self_subject_access_review({"spec": {"resourceAttributes": {
        "namespace": namespace, "verb": verb, "resource": resource, "subresource": subresource}}})
    return review.status.allowed


def rule_names_secrets(doc: dict[str, Any]) -> bool:
    return any("secrets" in rule.get("resources", []) or "*" in rule.get("resources", [])
               for rule in doc.get("rules", []))


# -- what a submitter's pods may be, and whose experiment is whose ---------------------------------------------------

def experiment_objects(name: str, namespace: str) -> list[Object]:
    """What rlkube renders for an experiment of one copy on the runs PVC (a pod that kwok holds Running)."""
    profile = ClusterProfile(name="test", target="kubernetes", context="rlkube-test", namespace=namespace, image=IMAGE,
                             output="/runs", pvc="rlkube-runs", resources={"cpu": "1", "memory": "1Gi"},
                             labels={HOLD_LABEL: "true"}, retries_per_copy=0)
    return render(build_spec(profile, TrainOptions("dqn_cartpole"), 1, name=name), profile)


def alices_job(namespace: str, change: Callable[[dict[str, Any]], Any] | None = None) -> Object:
    """The Job of alice's experiment alice-run as rlkube creates it (naming her its creator), its pod spec changed."""
    job = kube.with_creator(experiment_objects("alice-run", namespace)[-1], "alice")
    if change:
        change(job["spec"]["template"]["spec"])
    return job


def trainer(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0]


def runs_mount(pod: dict[str, Any]) -> dict[str, Any]:
    """The first container's mount of the runs volume."""
    (mount,) = (mount for mount in trainer(pod)["volumeMounts"] if mount["name"] == "runs")
    return mount


def mount_runs_through_variable(pod: dict[str, Any]) -> None:
    """subPathExpr expands the pod's own variables, which a submitter sets."""
    trainer(pod)["env"].append({"name": "DIRECTORY", "value": "bob-run"})
    runs_mount(pod).pop("subPath")
    runs_mount(pod)["subPathExpr"] = "$(DIRECTORY)"


def attach_runs_as_device(pod: dict[str, Any]) -> None:
    trainer(pod)["volumeMounts"].remove(runs_mount(pod))
    trainer(pod)["volumeDevices"] = [{"name": "runs", "devicePath": "/dev/runs"}]


def refusal_once_in_effect(call: Callable[[], Any]) -> str:
    """The message of the refusal that `call` (a dry-run) gets once the policies have seen the latest ServiceAccounts
    and parameters, which they read from watches."""
    def refused() -> str | None:
        try:
            call()
        except ApiException as error:
            return json.loads(error.body)["message"]
        return None

    return wait_for(refused, what="the refusal")


@pytest.fixture
def bob(cluster: TestCluster, rlkube_namespace: str) -> client.ApiClient:
    """Another submitter, who has an experiment bob-run running in the namespace (made as rlkube makes it)."""
    api = cluster.api_client(cluster.user_kubeconfig("bob", ["rlkube-submitters"]))
    for obj in experiment_objects("bob-run", rlkube_namespace):
        kube.create(api, obj)
    return api


ESCAPES = {
    "envFrom a Secret": (lambda pod: trainer(pod).setdefault("envFrom", []).append({"secretRef": {"name": "tracking"}}),
                         "allowed-secrets"),
    "a secret volume": (lambda pod: pod["volumes"].append({"name": "s", "secret": {"secretName": "tracking"}}),
                        "allowed-secrets"),
    "secretKeyRef": (lambda pod: trainer(pod)["env"].append(
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "tracking", "key": "WANDB_API_KEY"}}}),
        "allowed-secrets"),
    "a projected Secret": (lambda pod: pod["volumes"].append(
        {"name": "p", "projected": {"sources": [{"secret": {"name": "tracking"}}]}}), "allowed-secrets"),
    "a projected token": (lambda pod: pod["volumes"].append(
        {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}),
        "no-service-account-token"),
    "the token mounted": (lambda pod: pod.update(automountServiceAccountToken=True), "no-service-account-token"),
    "the namespace's default ServiceAccount": (lambda pod: pod.update(serviceAccountName="default"),
                                               "own-service-account"),
    "a CSI volume": (lambda pod: pod["volumes"].append({"name": "c", "csi": {"driver": "secrets-store.csi.k8s.io"}}),
                     "allowed-volumes"),
    "an image from another registry": (lambda pod: trainer(pod).update(image="docker.io/someone/x:1"),
                                       "allowed-registries"),
    "an image from a look-alike repository": (lambda pod: trainer(pod).update(image="ghcr.io/rlkube-other/x:1"),
                                              "allowed-registries"),
    "the whole runs volume": (lambda pod: runs_mount(pod).pop("subPath"), "own-runs-directory"),
    "the whole runs volume read-only": (lambda pod: trainer(pod)["volumeMounts"].append(
        {"name": "runs", "mountPath": "/every-run", "readOnly": True}), "own-runs-directory"),
    "another experiment's directory": (lambda pod: runs_mount(pod).update(subPath="bob-run"), "own-runs-directory"),
    "a directory within one's own": (lambda pod: runs_mount(pod).update(subPath="alice-run/copy-0"),
                                     "own-runs-directory"),
    "a subPathExpr": (mount_runs_through_variable, "own-runs-directory"),
    "the runs volume as a raw device": (attach_runs_as_device, "own-runs-directory"),
}


@pytest.mark.parametrize("escape", ESCAPES)
def test_each_way_out_of_a_pod_spec_is_refused_naming_its_rule(alice: client.ApiClient, rlkube_namespace: str,
                                                               escape: str) -> None:
    change, rule = ESCAPES[escape]
    batch = client.BatchV1Api(alice)
    batch.create_namespaced_job(rlkube_namespace, alices_job(rlkube_namespace), dry_run="All")  # as rendered
    message = refusal(lambda: batch.create_namespaced_job(rlkube_namespace, alices_job(rlkube_namespace, change)))
    assert f"denied request: rule {rule}: " in message


def test_a_job_cannot_run_as_another_submitters_experiment(alice: client.ApiClient, bob: client.ApiClient,  # noqa: ARG001
                                                           rlkube_namespace: str) -> None:
    def as_bobs_experiment(pod: dict[str, Any]) -> None:  # its ServiceAccount, its label and its runs directory
        pod.update(serviceAccountName="bob-run")
        runs_mount(pod).update(subPath="bob-run")

    job = alices_job(rlkube_namespace, as_bobs_experiment)
    job["spec"]["template"]["metadata"]["labels"]["rlkube.io/experiment"] = "bob-run"
    batch = client.BatchV1Api(alice)
    message = refusal_once_in_effect(lambda: batch.create_namespaced_job(rlkube_namespace, job, dry_run="All"))
    assert "rule own-service-account: ServiceAccount bob-run is the experiment of bob, not yours" in message
    assert refusal(lambda: batch.create_namespaced_job(rlkube_namespace, job)) == message


def test_a_pod_runs_as_an_experiments_service_account_only_if_made_for_its_creator(
        api: client.ApiClient, bob: client.ApiClient, rlkube_namespace: str) -> None:  # noqa: ARG001
    """So a Job that names a ServiceAccount before its experiment exists gets no pod once someone else's does: the
    Job controller (not bound by the submitters' rules, like an admin) creates pods from its template."""
    (job,) = (obj for obj in experiment_objects("bob-run", rlkube_namespace) if obj["kind"] == "Job")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "squatter", "annotations": created_by("alice"), "labels": job["spec"]["template"][
               "metadata"]["labels"]},
           "spec": job["spec"]["template"]["spec"]}
    core = client.CoreV1Api(api)
    message = refusal_once_in_effect(lambda: core.create_namespaced_pod(rlkube_namespace, pod, dry_run="All"))
    assert "rule own-service-account: only pods that bob created run as the ServiceAccount of their experiment " \
           "bob-run" in message
    core.create_namespaced_pod(rlkube_namespace, {**pod, "metadata": {**pod["metadata"],
                                                                     "annotations": created_by("bob")}}, dry_run="All")


def test_what_a_submitter_creates_must_name_them_as_its_creator(alice: client.ApiClient,
                                                                rlkube_namespace: str) -> None:
    account, *_, job = experiment_objects("alice-run", rlkube_namespace)
    for unnamed in (account, kube.with_creator(account, "bob")):
        message = refusal(lambda obj=unnamed: create(alice, obj, rlkube_namespace))
        assert "rule created-by: what a submitter creates names them as its creator: annotation " \
               "rlkube.io/created-by must be alice (rlkube sets it)" in message
    job["metadata"]["annotations"] = created_by("alice")  # the Job's, not its pods'
    assert "rule created-by: the pods a submitter creates name them as their creator" in refusal(
        lambda: create(alice, job, rlkube_namespace))


def test_a_service_account_carries_only_the_listed_cloud_identities(alice: client.ApiClient,
                                                                    rlkube_namespace: str) -> None:
    account = kube.with_creator(experiment_objects("alice-run", rlkube_namespace)[0], "alice")
    account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] = "owner@PROJECT.iam.gserviceaccount.com"
    assert "rule service-account-annotations: " in refusal(lambda: create(alice, account, rlkube_namespace))
    account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] = \
        "rlkube-runner@PROJECT.iam.gserviceaccount.com"  # what the gke profiles name, and parameters.yaml lists
    create(alice, account, rlkube_namespace)


def test_a_deployment_can_only_be_the_tensorboard(alice: client.ApiClient, rlkube_namespace: str) -> None:
    def tensorboard(change: Callable[[dict[str, Any]], Any] | None = None) -> Object:
        deployment = kube.with_creator(tensorboard_objects(rlkube_namespace, IMAGE, "rlkube-runs", "/runs")[1],
                                       "alice")
        if change:
            change(deployment["spec"]["template"]["spec"])
        return deployment

    def mount_runs_read_write(pod: dict[str, Any]) -> None:
        pod["volumes"][1]["persistentVolumeClaim"].update(readOnly=False)
        runs_mount(pod).update(readOnly=False)

    apps = client.AppsV1Api(alice)
    apps.create_namespaced_deployment(rlkube_namespace, tensorboard(), dry_run="All")
    # Read-only, any directory of the runs volume is the TensorBoard's to read.
    apps.create_namespaced_deployment(rlkube_namespace, tensorboard(
        lambda pod: runs_mount(pod).update(subPath="bob-run")), dry_run="All")
    arbitrary = {
        "another command": lambda pod: trainer(pod).update(command=["sh", "-c", "cat /runs/*/copy-0/*"]),
        "a second container": lambda pod: pod["containers"].append({**trainer(pod), "name": "second"}),
        "the runs volume writable": lambda pod: pod["volumes"][1]["persistentVolumeClaim"].update(readOnly=False),
        "an experiment's ServiceAccount": lambda pod: pod.update(serviceAccountName="bob-run"),
    }
    for what, change in arbitrary.items():
        message = refusal(lambda c=change: apps.create_namespaced_deployment(rlkube_namespace, tensorboard(c)))
        assert "rule tensorboard-deployments: a submitter's Deployment can only be the in-cluster TensorBoard" in \
            message, what
    assert "rule own-runs-directory: a Deployment's pods mount volume claims only read-only" in refusal(
        lambda: apps.create_namespaced_deployment(rlkube_namespace, tensorboard(mount_runs_read_write)))


def network_policy(name: str, selector: dict[str, str], owner: client.V1ServiceAccount | None = None) -> Object:
    """A deny-all egress NetworkPolicy that alice makes."""
    metadata: dict[str, Any] = {"name": name, "annotations": created_by("alice"), "labels": MANAGED}
    if owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "ServiceAccount", "name": owner.metadata.name,
                                        "uid": owner.metadata.uid}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata,
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"]}}


def test_a_deny_only_network_policy_selects_only_the_submitters_own_experiment(
        alice: client.ApiClient, bob: client.ApiClient, rlkube_namespace: str) -> None:  # noqa: ARG001
    core = client.CoreV1Api(alice)
    networking = client.NetworkingV1Api(alice)
    assert "rule own-network-policies: a submitter's NetworkPolicy selects only the TensorBoard's pods or one " \
           "experiment's" in refusal(lambda: create(alice, network_policy("every-pod", {}), rlkube_namespace))
    bobs = core.read_namespaced_service_account("bob-run", rlkube_namespace)
    over_bobs = network_policy("over-bobs", {"rlkube.io/experiment": "bob-run"}, bobs)
    message = refusal_once_in_effect(lambda: networking.create_namespaced_network_policy(
        rlkube_namespace, over_bobs, dry_run="All"))
    assert "rule own-network-policies: experiment bob-run is bob's, not yours" in message

    kube.create(alice, experiment_objects("alice-run", rlkube_namespace)[0])
    alices = core.read_namespaced_service_account("alice-run", rlkube_namespace)
    create(alice, network_policy("over-alices", {"rlkube.io/experiment": "alice-run"}, alices), rlkube_namespace)
    # Submitters may delete the NetworkPolicies they made.
    networking.delete_namespaced_network_policy("over-alices", rlkube_namespace)


def test_only_the_creator_deletes_or_cancels_an_experiment(alice: client.ApiClient, bob: client.ApiClient,
                                                           rlkube_namespace: str) -> None:
    core = client.CoreV1Api(alice)
    (pod,) = wait_for(lambda: kube.list_pods(alice, rlkube_namespace, "bob-run"), what="bob's pod")
    message = refusal(lambda: delete_experiment(alice, "bob-run", rlkube_namespace))  # what `rlkube cancel` does
    assert "rule delete-own: only its creator or an admin may delete or cancel what rlkube made, and jobs bob-run " \
           "was created by bob" in message
    assert "was created by bob" in refusal(lambda: core.delete_namespaced_pod(pod.metadata.name, rlkube_namespace))
    assert kube.list_jobs(alice, rlkube_namespace, "bob-run")
    assert delete_experiment(bob, "bob-run", rlkube_namespace) == ["Job/bob-run", "ConfigMap/bob-run",
                                                                    "ServiceAccount/bob-run"]


@pytest.mark.usefixtures("as_alice")
def test_every_render_of_every_example_profile_is_admitted(api: client.ApiClient, alice: client.ApiClient,
                                                           rlkube_namespace: str) -> None:
    # The example profiles' Secret (kube-minio's env_from_secrets), allowed as an admin allows a profile's.
    client.CoreV1Api(api).patch_namespaced_config_map("rlkube-admission", rlkube_namespace,
                                                      {"data": {"secrets": "minio-credentials\n"}})
    with_secret = alices_job(rlkube_namespace, lambda pod: trainer(pod).update(
        envFrom=[{"secretRef": {"name": "minio-credentials"}}]))
    wait_for(lambda: admitted(lambda: client.BatchV1Api(alice).create_namespaced_job(
        rlkube_namespace, with_secret, dry_run="All")), what="the new parameters in effect")
    # A Ray profile's RayJobs are not submitted through the target yet: test_rayjob_admission.py admits them.
    for name, example in ((name, p) for name, p in example_profiles().items() if p.ray is None):
        profile = dataclasses.replace(example, context="rlkube-test", namespace=rlkube_namespace)
        spec = dataclasses.replace(example_spec(profile), image=profile.default_image)
        assert target_for(profile).dryrun(spec).startswith("dry run: the API server accepted"), name


def admitted(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ApiException:
        return False
    return True
