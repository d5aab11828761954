"""The namespace's TensorBoard, deployed on demand and served here through a port-forward.

Only a pod of rlkube's own Deployment is served: one whose ReplicaSet that Deployment controls, by uid. A label is
no identity: anyone who may create Deployments in the namespace can give a pod of theirs TensorBoard's labels.
"""

import contextlib
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.render import TENSORBOARD_NAME, TENSORBOARD_PORT, tensorboard_objects
from rlkube.launch.targets.kubernetes.api import api_errors, create
from rlkube.launch.targets.kubernetes.portforward import forward
from rlkube.launch.tensorboard import free_port

START_TIMEOUT = 120
# The image's TensorBoard reads event files through TensorFlow, whose 2.21 has no s3:// file system (tensorflow-io
# held it, and does not load with 2.21): over an s3:// logdir it would serve an empty page.
UNREADABLE_SCHEMES = ("s3://",)


def _controller(metadata: client.V1ObjectMeta, kind: str) -> tuple[str, str] | None:
    """(name, uid) of the object of `kind` that controls this one, if one does."""
    for owner in metadata.owner_references or []:
        if owner.controller and owner.kind == kind:
            return owner.name, owner.uid
    return None


def _running_pods_of(api: client.ApiClient, namespace: str, deployment: client.V1Deployment,
                     selector: str) -> list[str]:
    """The running pods that `deployment` made (through its ReplicaSets, matched by uid), by name."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ours = (deployment.metadata.name, deployment.metadata.uid)
    replica_sets: dict[tuple[str, str], bool] = {}  # (name, uid) -> whether the deployment controls it
    running = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        owner = _controller(pod.metadata, "ReplicaSet")
        if pod.status.phase != "Running" or pod.metadata.deletion_timestamp or owner is None:
            continue
        if owner not in replica_sets:
            try:
                replica_set = apps.read_namespaced_replica_set(owner[0], namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
                replica_set = None  # gone, with what it controlled
            replica_sets[owner] = replica_set is not None and replica_set.metadata.uid == owner[1] and \
                _controller(replica_set.metadata, "Deployment") == ours
        if replica_sets[owner]:
            running.append(pod.metadata.name)
    return running


def _tensorboard_pod(api: client.ApiClient, record: store.Record) -> str:
    """Deploy the namespace's TensorBoard unless it runs already; returns the name of a running pod of it."""
    profile = get_profile(record.cluster)
    if not profile.pvc and profile.output.startswith(UNREADABLE_SCHEMES):
        raise UserError(f"the in-cluster TensorBoard cannot read {profile.output} (its TensorFlow has no s3:// file "
                        f"system); leave out --in-cluster to sync {record.name} from the bucket here")
    selector = "app.kubernetes.io/name=rlkube,app.kubernetes.io/component=tensorboard"
    for obj in tensorboard_objects(record.namespace, record.image, profile.pvc, profile.output,
                                   profile.node_selector, profile.tolerations):
        try:
            create(api, obj)
        except ApiException as error:
            if error.status != 409:
                raise
    deployment = client.AppsV1Api(api).read_namespaced_deployment(TENSORBOARD_NAME, record.namespace)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if running := _running_pods_of(api, record.namespace, deployment, selector):
            return running[0]
        time.sleep(0.3)
    raise UserError(f"TensorBoard did not start within {START_TIMEOUT} s; check: kubectl -n {record.namespace} "
                    f"get pods -l {selector}")


def serve(api: client.ApiClient, record: store.Record, port: int, emit: Callable[[str], None]) -> None:
    """Until interrupted."""
    with api_errors(f"opening TensorBoard for {record.name}", api.configuration.host):
        pod = _tensorboard_pod(api, record)

    def announce(bound: int) -> None:
        emit(f"TensorBoard for {record.name} (pod {pod}): http://127.0.0.1:{bound}/   (Ctrl-C to stop)")

    with contextlib.suppress(KeyboardInterrupt):
        forward(api, record.namespace, pod, TENSORBOARD_PORT, port or free_port(), announce)
