"""The namespace's TensorBoard, deployed on demand and served here through a port-forward."""

import contextlib
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.render import TENSORBOARD_PORT, tensorboard_objects
from rlkube.launch.targets.kubernetes.api import api_errors, create
from rlkube.launch.targets.kubernetes.portforward import forward
from rlkube.launch.tensorboard import free_port

START_TIMEOUT = 120
# The image's TensorBoard reads event files through TensorFlow, whose 2.21 has no s3:// file system (tensorflow-io
# held it, and does not load with 2.21): over an s3:// logdir it would serve an empty page.
UNREADABLE_SCHEMES = ("s3://",)


def _tensorboard_pod(api: client.ApiClient, record: store.Record) -> str:
    """Deploy the namespace's TensorBoard unless it runs already; returns a running pod's name."""
    profile = get_profile(record.cluster)
    if not profile.pvc and profile.output.startswith(UNREADABLE_SCHEMES):
        raise UserError(f"the in-cluster TensorBoard cannot read {profile.output} (its TensorFlow has no s3:// file "
                        f"system); leave out --in-cluster to sync {record.name} from the bucket here")
    core = client.CoreV1Api(api)
    selector = "app.kubernetes.io/name=rlkube,app.kubernetes.io/component=tensorboard"
    for obj in tensorboard_objects(record.namespace, record.image, profile.pvc, profile.output,
                                   profile.node_selector, profile.tolerations):
        try:
            create(api, obj)
        except ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(record.namespace, label_selector=selector).items
        running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if running:
            return running[0].metadata.name
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
