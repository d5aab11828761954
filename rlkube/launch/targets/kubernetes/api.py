"""Talking to the API server: one client per kube context, one line for every failure, calls by object kind."""

import contextlib
import json
import os
import weakref
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from rlkube.errors import UserError
from rlkube.launch.render import Object

REQUEST_TIMEOUT = 15
# Who created an object, as the API server named them (request.userInfo.username): set on every object rlkube makes,
# and on its pods through their template. manifests/setup/admission-policy.yaml refuses a submitter's object that
# names anyone else, and lets only its creator (or an admin) delete it.
CREATOR_ANNOTATION = "rlkube.io/created-by"
# kind -> (API class's name, method suffix): create_namespaced_<suffix>, delete_namespaced_<suffix>, ... By name: the
# client builds an API class's models when it is first named, about a second of CPU for CoreV1Api alone, which a
# command that never calls it (rlkube doctor) should not pay.
KINDS: dict[str, tuple[str, str]] = {
    "ServiceAccount": ("CoreV1Api", "service_account"),
    "ConfigMap": ("CoreV1Api", "config_map"),
    "Service": ("CoreV1Api", "service"),
    "Job": ("BatchV1Api", "job"),
    "Deployment": ("AppsV1Api", "deployment"),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy"),
    "Pod": ("CoreV1Api", "pod"),
}


def reason(error: ApiException) -> str:
    """The API server's own message for a refused request."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return error.reason or str(error.status)


@contextlib.contextmanager
def api_errors(action: str, host: str = "") -> Iterator[None]:
    """Turn API and connection failures into one line that says what to check."""
    try:
        yield
    except ApiException as error:
        if error.status == 403:
            raise UserError(f"{action}: forbidden: {reason(error)}") from None
        if error.status == 401:
            raise UserError(f"{action}: the API server did not accept the credentials (401); "
                            f"check the kubeconfig's user") from None
        raise UserError(f"{action}: {reason(error)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise UserError(f"{action}: cannot reach the API server {host} ({type(error).__name__}); "
                        f"is the cluster up and the kube context right?") from None


def connect(context: str | None) -> client.ApiClient:
    try:
        # The client reads $KUBECONFIG once, at import; read it now (it may list several files, ':'-separated).
        api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"), context=context)
    except config.ConfigException as error:
        where = f"context '{context}'" if context else "the current context"
        raise UserError(f"cannot use {where} from the kubeconfig ({error}); set KUBECONFIG or pass "
                        f"--context") from None
    except OSError as error:
        raise UserError(f"cannot read the kubeconfig ({error.strerror}); set KUBECONFIG") from None
    # No silent retries: a timed-out log read is reopened by logs.py, anything else is reported at once.
    api.configuration.retries = False
    return api


# Custom resources rlkube makes: kind -> (group, version, plural). Their objects are dicts, not the client's models.
CUSTOM_KINDS: dict[str, tuple[str, str, str]] = {"RayJob": ("ray.io", "v1", "rayjobs")}


def call(api: client.ApiClient, kind: str, verb: str, *args: Any, **kwargs: Any) -> Any:
    """`verb`_namespaced_<kind>(*args), for built-in kinds and custom resources alike: create(namespace, body),
    delete(name, namespace), list(namespace)."""
    if kind in CUSTOM_KINDS:
        group, version, plural = CUSTOM_KINDS[kind]
        method = getattr(client.CustomObjectsApi(api), f"{verb}_namespaced_custom_object")
        if verb == "delete":  # (name, namespace) -> (group, version, namespace, plural, name)
            name, namespace = args
            return method(group, version, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        namespace, *rest = args
        return method(group, version, namespace, plural, *rest, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    class_name, suffix = KINDS[kind]
    method = getattr(getattr(client, class_name)(api), f"{verb}_namespaced_{suffix}")
    return method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)


_usernames: "weakref.WeakKeyDictionary[client.ApiClient, str]" = weakref.WeakKeyDictionary()


def whoami(api: client.ApiClient) -> str:
    """The user name the API server knows this client's credentials by (a SelfSubjectReview, asked once per client)."""
    if api not in _usernames:
        review = client.AuthenticationV1Api(api).create_self_subject_review({}, _request_timeout=REQUEST_TIMEOUT)
        _usernames[api] = review.status.user_info.username
    return _usernames[api]


def _with_creator(metadata: Object, username: str) -> Object:
    return {**metadata, "annotations": {**metadata.get("annotations", {}), CREATOR_ANNOTATION: username}}


def _with_template_creator(holder: Object, username: str) -> Object:
    """`holder` (a workload's spec, or a Ray group) with its pod template annotated with who creates it."""
    template = holder["template"]
    return {**holder, "template": {**template, "metadata": _with_creator(template.get("metadata", {}), username)}}


def with_creator(obj: Object, username: str) -> Object:
    """The object, and its pods' templates if it has any (a RayJob's submitter's, head group's and worker groups'),
    annotated with who creates it."""
    stamped = {**obj, "metadata": _with_creator(obj["metadata"], username)}
    spec = obj.get("spec", {})
    if "template" in spec:
        stamped["spec"] = _with_template_creator(spec, username)
    elif "rayClusterSpec" in spec:
        cluster = spec["rayClusterSpec"]
        stamped["spec"] = {
            **spec,
            "submitterPodTemplate": _with_template_creator({"template": spec["submitterPodTemplate"]},
                                                           username)["template"],
            "rayClusterSpec": {
                **cluster, "headGroupSpec": _with_template_creator(cluster["headGroupSpec"], username),
                "workerGroupSpecs": [_with_template_creator(group, username) for group in cluster["workerGroupSpecs"]]}}
    return stamped


def create(api: client.ApiClient, obj: Object, dry_run: bool = False) -> None:
    """Create (or with `dry_run`, validate) the object as this client's user, who is recorded as its creator."""
    extra = {"dry_run": "All"} if dry_run else {}
    call(api, obj["kind"], "create", obj["metadata"]["namespace"], with_creator(obj, whoami(api)), **extra)


def delete(api: client.ApiClient, kind: str, name: str, namespace: str) -> bool:
    """Delete one object; whether it was there."""
    try:
        call(api, kind, "delete", name, namespace, propagation_policy="Background")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def selector(name: str) -> str:
    """The label selector of every object and pod of an experiment."""
    return f"rlkube.io/experiment={name}"


def list_jobs(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Job]:
    return call(api, "Job", "list", namespace, label_selector=selector(name)).items


def list_ray_jobs(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    """The experiment's RayJobs; none where the cluster has no RayJob kind (KubeRay is not installed)."""
    try:
        return call(api, "RayJob", "list", namespace, label_selector=selector(name))["items"]
    except ApiException as error:
        if error.status == 404:
            return []
        raise


def list_pods(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector(name),
                                                     _request_timeout=REQUEST_TIMEOUT).items
