"""manifests/setup's admission policy holds a RayJob's pod templates (its submitter's, its head group's and every worker
group's) to the rules of a Job's pods, and refuses the RayJob fields through which KubeRay would make pods or Services
that no template shows; checked against a real API server with KubeRay's RayJob CRD (tools/testcluster/kuberay-crds.sh)
and no KubeRay operator: what is admitted is all this proves, not that a RayJob runs.
"""

import contextlib
import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from test_control_plane import wait_for
from test_setup_manifests import (  # noqa: F401  (fixtures)
    IMAGE,
    admission_policy,
    alice,
    bob,
    refusal,
    refusal_once_in_effect,
    rlkube_namespace,
)

from rlkube.launch.clusters import ClusterProfile, RayWorkers
from rlkube.launch.render import Object, render
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.kubernetes import api as kube
from rlkube.run.options import TrainOptions
from tests.rendered_examples import example_profiles, example_spec

pytestmark = pytest.mark.xdist_group("k8s")
KUBERAY_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "testcluster" / "kuberay-crds.sh"
RAY_TRAIN = TrainOptions("dqn_cartpole", num_workers=4, actors="ray")


def kuberay_crds() -> Path:
    """The directory of KubeRay's CRDs (tools/testcluster/kuberay-crds.sh; a no-op once cached)."""
    return Path(subprocess.run(["bash", str(KUBERAY_SCRIPT)], capture_output=True, text=True, check=True,
                               timeout=600).stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def kuberay_kinds(api: client.ApiClient, *crd_files: Path) -> Iterator[None]:
    """KubeRay's kinds from these CRD files, established, and gone again afterwards."""
    crds = [yaml.safe_load(path.read_text()) for path in crd_files]
    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        extensions.create_custom_resource_definition(crd)

    def established(name: str) -> bool:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    def gone(name: str) -> bool:
        try:
            extensions.read_custom_resource_definition(name)
        except client.ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    names = [crd["metadata"]["name"] for crd in crds]
    for name in names:
        wait_for(lambda name=name: established(name), what=f"the CRD {name} established")
    try:
        yield
    finally:
        for name in names:
            extensions.delete_custom_resource_definition(name)
        for name in names:
            wait_for(lambda name=name: gone(name), what=f"the CRD {name} deleted")


@pytest.fixture(scope="module")
def rayjob_crd(api: client.ApiClient) -> Iterator[None]:
    """KubeRay's RayJob kind (no operator: only the kind must exist)."""
    with kuberay_kinds(api, kuberay_crds() / "ray.io_rayjobs.yaml"):
        yield


@pytest.fixture
def ray_alice(rayjob_crd: None, alice: client.ApiClient, rlkube_namespace: str) -> client.ApiClient:  # noqa: ARG001, F811
    """alice, once the admission policies govern RayJobs: the API server learns a new kind's resource a moment after
    its CRD is established."""
    foreign = alices_ray_job(rlkube_namespace, lambda spec: head(spec)["containers"][0].update(image="docker.io/x:1"))
    refusal_once_in_effect(lambda: create_ray_job(alice, foreign))
    return alice


def create_ray_job(api: client.ApiClient, ray_job: Object, dry_run: bool = True) -> Any:
    resource = DynamicClient(api).resources.get(api_version="ray.io/v1", kind="RayJob")
    return resource.create(body=ray_job, namespace=ray_job["metadata"]["namespace"],
                           **({"dry_run": "All"} if dry_run else {}))


def ray_objects(name: str, namespace: str) -> list[Object]:
    """What rlkube renders for a Ray experiment of one copy on the runs PVC."""
    profile = ClusterProfile(name="test", target="kubernetes", context="rlkube-test", namespace=namespace, image=IMAGE,
                             output="/runs", pvc="rlkube-runs", resources={"cpu": "1", "memory": "1Gi"},
                             retries_per_copy=0, ray=RayWorkers(workers=2))
    return render(build_spec(profile, RAY_TRAIN, 1, name=name), profile)


def alices_ray_job(namespace: str, change: Callable[[dict[str, Any]], Any] | None = None) -> Object:
    """The RayJob of alice's experiment alice-ray as rlkube renders it, naming her its creator, then changed."""
    ray_job = kube.with_creator(ray_objects("alice-ray", namespace)[-1], "alice")
    if change:
        change(ray_job["spec"])
    return ray_job


def head(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]


def submitter(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["submitterPodTemplate"]["spec"]


def mount_the_whole_runs_volume(pod: dict[str, Any]) -> None:
    if not any(volume["name"] == "runs" for volume in pod["volumes"]):  # a worker has none
        pod["volumes"].append({"name": "runs", "persistentVolumeClaim": {"claimName": "rlkube-runs"}})
    pod["containers"][0]["volumeMounts"].append({"name": "runs", "mountPath": "/every-run", "readOnly": True})


POD_ESCAPES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "envFrom a Secret": (lambda pod: pod["containers"][0].setdefault("envFrom", []).append(
        {"secretRef": {"name": "tracking"}}), "allowed-secrets"),
    "an image from another registry": (lambda pod: pod["containers"][0].update(image="docker.io/someone/x:1"),
                                       "allowed-registries"),
    "a second container from another registry": (lambda pod: pod["containers"].append(
        {"name": "extra", "image": "docker.io/someone/x:1"}), "allowed-registries"),
    "the namespace's default ServiceAccount": (lambda pod: pod.update(serviceAccountName="default"),
                                               "own-service-account"),
    "the token mounted": (lambda pod: pod.update(automountServiceAccountToken=True), "no-service-account-token"),
    "a projected token": (lambda pod: pod["volumes"].append(
        {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}),
        "no-service-account-token"),
    "a CSI volume": (lambda pod: pod["volumes"].append({"name": "c", "csi": {"driver": "secrets-store.csi.k8s.io"}}),
                     "allowed-volumes"),
    "the whole runs volume": (mount_the_whole_runs_volume, "own-runs-directory"),
}


@pytest.mark.parametrize("group", [head, worker, submitter], ids=["head", "worker", "submitter"])
@pytest.mark.parametrize("escape", POD_ESCAPES)
def test_each_way_out_of_a_ray_pod_template_is_refused_naming_its_rule(
        ray_alice: client.ApiClient, rlkube_namespace: str, escape: str,  # noqa: F811
        group: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    change, rule = POD_ESCAPES[escape]
    create_ray_job(ray_alice, alices_ray_job(rlkube_namespace))  # as rendered
    escaped = alices_ray_job(rlkube_namespace, lambda spec: change(group(spec)))
    message = refusal(lambda: create_ray_job(ray_alice, escaped, dry_run=False))
    assert f"denied request: rule {rule}: " in message


def without_creator(spec: dict[str, Any]) -> None:
    del spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["metadata"]["annotations"]


SHAPE_ESCAPES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a worker group's pods without their creator": (without_creator, "created-by"),
    "someone else's Ray cluster": (lambda spec: (spec.pop("rayClusterSpec"), spec.update(
        clusterSelector={"ray.io/cluster": "bobs"})), "ray-jobs"),
    "a submitter pod of KubeRay's making": (lambda spec: spec.pop("submitterPodTemplate"), "ray-jobs"),
    "submission over HTTP (no pod to log the driver)": (lambda spec: (spec.pop("submitterPodTemplate"),
                                                                      spec.update(submissionMode="HTTPMode")),
                                                        "ray-jobs"),
    "a submitter sidecar in the head pod": (lambda spec: spec.update(submissionMode="SidecarMode"), "ray-jobs"),
    "the autoscaler": (lambda spec: spec["rayClusterSpec"].update(enableInTreeAutoscaling=True), "ray-jobs"),
    "a NodePort head Service": (lambda spec: spec["rayClusterSpec"]["headGroupSpec"].update(serviceType="NodePort"),
                                "ray-jobs"),
    "a Redis password from a Secret": (lambda spec: spec["rayClusterSpec"].update(gcsFaultToleranceOptions={
        "redisAddress": "redis:6379", "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}}),
        "ray-jobs"),
    "a runtime environment": (lambda spec: spec.update(runtimeEnvYAML="env_vars: {A: b}"), "ray-jobs"),
}


@pytest.mark.parametrize("escape", SHAPE_ESCAPES)
def test_a_ray_job_other_than_rlkubes_shape_is_refused_naming_its_rule(
        ray_alice: client.ApiClient, rlkube_namespace: str, escape: str) -> None:  # noqa: F811
    change, rule = SHAPE_ESCAPES[escape]
    message = refusal(lambda: create_ray_job(ray_alice, alices_ray_job(rlkube_namespace, change), dry_run=False))
    assert f"denied request: rule {rule}: " in message


def test_a_ray_job_cannot_run_as_another_submitters_experiment(
        ray_alice: client.ApiClient, bob: client.ApiClient, rlkube_namespace: str) -> None:  # noqa: ARG001, F811
    def as_bobs_experiment(spec: dict[str, Any]) -> None:  # a worker group as bob-run's ServiceAccount and label
        group = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
        group["spec"]["serviceAccountName"] = "bob-run"
        group["metadata"]["labels"]["rlkube.io/experiment"] = "bob-run"

    ray_job = alices_ray_job(rlkube_namespace, as_bobs_experiment)
    message = refusal_once_in_effect(lambda: create_ray_job(ray_alice, ray_job))
    assert "rule own-service-account: ServiceAccount bob-run is the experiment of bob, not yours" in message, message


def test_every_render_of_a_ray_example_profile_is_admitted(
        ray_alice: client.ApiClient, rlkube_namespace: str) -> None:  # noqa: F811
    examples = {name: profile for name, profile in example_profiles().items() if profile.ray is not None}
    assert examples
    for name, example in examples.items():
        profile = dataclasses.replace(example, context="rlkube-test", namespace=rlkube_namespace)
        spec = dataclasses.replace(example_spec(profile), image=profile.default_image)
        ray_jobs = [obj for obj in render(spec, profile) if obj["kind"] == "RayJob"]
        assert len(ray_jobs) == len(spec.copies), name
        for ray_job in ray_jobs:
            create_ray_job(ray_alice, kube.with_creator(ray_job, "alice"))
    # And one is created for real, as the submitter: the Role lets them, and the API server keeps every field.
    created = create_ray_job(ray_alice, alices_ray_job(rlkube_namespace), dry_run=False).to_dict()
    assert head(created["spec"])["automountServiceAccountToken"] is False
    assert created["spec"]["submissionMode"] == "K8sJobMode"
    assert submitter(created["spec"])["automountServiceAccountToken"] is False
