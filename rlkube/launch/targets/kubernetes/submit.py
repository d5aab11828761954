"""Creating an experiment's objects all or nothing, and deleting them again.

A submission is validated by a server-side dry-run of every object, then created in order; if any creation
fails, what was created is deleted again, so a failed submission leaves nothing behind.
"""

import contextlib
import time
from collections.abc import Callable

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube.errors import UserError
from rlkube.launch.render import Object
from rlkube.launch.targets.kubernetes.api import call, create, delete, list_pods, list_ray_jobs, reason, selector

# Beyond its pods' grace period, how long an experiment may take to be gone: the kubelet's report of a container it
# killed, and the objects' own deletion.
GONE_AFTER_GRACE_SECONDS = 30.0


def object_name(obj: Object) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def experiment_objects(api: client.ApiClient, name: str, namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of every object of the experiment that exists now, its pods aside."""
    found = [("RayJob", ray_job["metadata"]["name"]) for ray_job in list_ray_jobs(api, namespace, name)]
    for kind in ("Job", "Service", "ConfigMap", "ServiceAccount"):
        items = call(api, kind, "list", namespace, label_selector=selector(name)).items
        found += [(kind, item.metadata.name) for item in items]
    return found


def delete_experiment(api: client.ApiClient, name: str, namespace: str) -> list[str]:
    """Delete every object and pod of the experiment and wait until they are gone; returns the objects removed.

    A pod checkpoints on SIGTERM for up to its grace period (the profile's termination_grace_seconds), so that is
    waited out in full, and a little more. A RayJob's pods are left to KubeRay: it stops the Ray job first (the
    driver, the copy's learner, gets SIGTERM and checkpoints), then deletes the job's Ray cluster and submitter."""
    pods = list_pods(api, namespace, name)  # before the Jobs go, and the garbage collector deletes their pods
    objects = experiment_objects(api, name, namespace)
    removed = [f"{kind}/{obj}" for kind, obj in objects if delete(api, kind, obj, namespace)]
    if not any(kind == "RayJob" for kind, _ in objects):
        # One by one, by name: submitters may not deletecollection (manifests/setup/rbac.yaml).
        for pod in pods:
            delete(api, "Pod", pod.metadata.name, namespace)
    grace = max((pod.spec.termination_grace_period_seconds or 0 for pod in pods), default=0)
    timeout = grace + GONE_AFTER_GRACE_SECONDS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list_pods(api, namespace, name) and not experiment_objects(api, name, namespace):
            return removed
        time.sleep(0.2)
    raise UserError(f"objects of {name} are still terminating after {timeout:.0f} s (their pods' grace period and "
                    f"{GONE_AFTER_GRACE_SECONDS:.0f} s); check with: kubectl get all -n {namespace} "
                    f"-l {selector(name)}")


def validate(api: client.ApiClient, objects: list[Object], replacing: bool) -> None:
    """A server-side dry-run of every object; `replacing`: objects of the same name still exist, and will not."""
    for obj in objects:
        try:
            create(api, obj, dry_run=True)
        except ApiException as error:
            if replacing and error.status == 409:
                continue
            raise UserError(f"the API server rejected {object_name(obj)}: {reason(error)}") from None


def create_all(api: client.ApiClient, objects: list[Object], after_create: Callable[[Object], None] | None) -> None:
    """Create the objects in order; if one fails, delete those created before it and say so in one line."""
    created: list[Object] = []
    try:
        for obj in objects:
            create(api, obj)
            created.append(obj)
            if after_create:
                after_create(obj)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        failed = objects[len(created)]
        for obj in reversed(created):
            with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                delete(api, obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])
        why = reason(error) if isinstance(error, ApiException) else type(error).__name__
        raise UserError(f"creating {object_name(failed)} failed ({why}); "
                        f"removed the {len(created)} objects created before it, nothing is left") from None
