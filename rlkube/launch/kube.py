"""The Kubernetes target, through the official client: submit all or nothing, status, logs, cancel, TensorBoard.

A submission is validated by a server-side dry-run of every object, then created in order; if any
creation fails, what was created is deleted again, so a failed submission leaves nothing behind.
"""

import contextlib
import json
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

from rlkube.core.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import ClusterProfile, get_profile
from rlkube.launch.render import TENSORBOARD_PORT, Object, render, tensorboard_objects
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.targets import CopyStatus, age_seconds, free_port, last_progress

REQUEST_TIMEOUT = 15
# A followed log that says nothing for this long is reopened if its pod still runs (see _stream_pod).
FOLLOW_IDLE_SECONDS = 5
GONE_TIMEOUT = 60.0
# kind -> (API class, method suffix): create_namespaced_<suffix>, delete_namespaced_<suffix>, ...
KINDS: dict[str, tuple[type, str]] = {
    "ServiceAccount": (client.CoreV1Api, "service_account"),
    "ConfigMap": (client.CoreV1Api, "config_map"),
    "Service": (client.CoreV1Api, "service"),
    "Job": (client.BatchV1Api, "job"),
    "Deployment": (client.AppsV1Api, "deployment"),
    "NetworkPolicy": (client.NetworkingV1Api, "network_policy"),
    "Pod": (client.CoreV1Api, "pod"),
}


def _reason(error: ApiException) -> str:
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
            raise UserError(f"{action}: forbidden: {_reason(error)}") from None
        if error.status == 401:
            raise UserError(f"{action}: the API server did not accept the credentials (401); "
                            f"check the kubeconfig's user") from None
        raise UserError(f"{action}: {_reason(error)}") from None
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
    # No silent retries: a timed-out log read is reopened by _stream_pod, anything else is reported at once.
    api.configuration.retries = False
    return api


def _call(api: client.ApiClient, kind: str, verb: str, *args: Any, **kwargs: Any) -> Any:
    cls, suffix = KINDS[kind]
    return getattr(cls(api), f"{verb}_namespaced_{suffix}")(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)


def _create(api: client.ApiClient, obj: Object, dry_run: bool = False) -> None:
    extra = {"dry_run": "All"} if dry_run else {}
    _call(api, obj["kind"], "create", obj["metadata"]["namespace"], obj, **extra)


def _delete(api: client.ApiClient, kind: str, name: str, namespace: str) -> bool:
    try:
        _call(api, kind, "delete", name, namespace, propagation_policy="Background")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _selector(name: str) -> str:
    return f"rlkube.io/experiment={name}"


def _experiment_objects(api: client.ApiClient, name: str, namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of every object of the experiment that exists now."""
    found = []
    for kind in ("Job", "Service", "ConfigMap", "ServiceAccount"):
        items = _call(api, kind, "list", namespace, label_selector=_selector(name)).items
        found += [(kind, item.metadata.name) for item in items]
    return found


def _delete_experiment(api: client.ApiClient, name: str, namespace: str) -> list[str]:
    removed = [f"{kind}/{obj}" for kind, obj in _experiment_objects(api, name, namespace)
               if _delete(api, kind, obj, namespace)]
    core = client.CoreV1Api(api)
    # One by one, by name: submitters may not deletecollection (manifests/setup/rbac.yaml).
    for pod in core.list_namespaced_pod(namespace, label_selector=_selector(name),
                                        _request_timeout=REQUEST_TIMEOUT).items:
        _delete(api, "Pod", pod.metadata.name, namespace)
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=_selector(name)).items
        if not pods and not _experiment_objects(api, name, namespace):
            return removed
        time.sleep(0.2)
    raise UserError(f"objects of {name} are still terminating after {GONE_TIMEOUT:.0f} s; "
                    f"check with: kubectl get all -n {namespace} -l {_selector(name)}")


def submit(spec: ExperimentSpec, profile: ClusterProfile, dry_run: bool = False, replace: bool = False,
           after_create: Callable[[Object], None] | None = None) -> list[str]:
    """Create the experiment's objects, all or nothing. Returns "Kind/name" of each.

    `after_create` is called after each object is created (tests use it to change the cluster midway).
    """
    objects = render(spec, profile)
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    api = connect(profile.context)
    host = api.configuration.host
    with api_errors(f"submitting {spec.name} to {profile.name}", host):
        existing = _experiment_objects(api, spec.name, spec.namespace)
        if existing and not replace:
            shown = ", ".join(f"{k}/{n}" for k, n in existing[:3])
            raise UserError(f"experiment '{spec.name}' exists in namespace {spec.namespace} ({shown}); "
                            f"choose another --name, or --replace it")
        if existing and not dry_run:
            _delete_experiment(api, spec.name, spec.namespace)
        for obj in objects:
            try:
                _create(api, obj, dry_run=True)
            except ApiException as error:
                if existing and error.status == 409:
                    continue  # --replace --dry-run: the old objects are still there
                raise UserError(f"the API server rejected {obj['kind']}/{obj['metadata']['name']}: "
                                f"{_reason(error)}") from None
        if dry_run:
            return names
        created: list[Object] = []
        try:
            for obj in objects:
                _create(api, obj)
                created.append(obj)
                if after_create:
                    after_create(obj)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            failed = objects[len(created)]
            for obj in reversed(created):
                with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                    _delete(api, obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])
            reason = _reason(error) if isinstance(error, ApiException) else type(error).__name__
            raise UserError(f"creating {failed['kind']}/{failed['metadata']['name']} failed ({reason}); "
                            f"removed the {len(created)} objects created before it, nothing is left") from None
    store.save(spec, "kubernetes", profile.context, {"objects": names, "cancelled": False})
    return names


# -- reading an experiment back -------------------------------------------------------------------


def _record_api(record: store.Record) -> client.ApiClient:
    return connect(record.context)


def _copy_of(pod: client.V1Pod) -> int:
    labels = pod.metadata.labels or {}
    if "rlkube.io/copy" in labels:
        return int(labels["rlkube.io/copy"])
    return int((pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index", 0))


def _indices(text: str | None) -> set[int]:
    """Parse a Job's "0-2,4" index list."""
    result: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        result.update(range(int(low), int(high or low) + 1))
    return result


def _job_states(api: client.ApiClient, record: store.Record) -> dict[int, str]:
    """Finished copies according to their Jobs (the truth once pods are gone)."""
    states: dict[int, str] = {}
    for job in _call(api, "Job", "list", record.namespace, label_selector=_selector(record.name)).items:
        labels = job.metadata.labels or {}
        status = job.status
        if "rlkube.io/copy" in labels:  # a multi-host slice: the whole Job is one copy
            copy = int(labels["rlkube.io/copy"])
            conditions = {c.type for c in status.conditions or [] if c.status == "True"}
            if "Complete" in conditions:
                states[copy] = "Succeeded"
            elif "Failed" in conditions:
                states[copy] = "Failed"
            continue
        states.update(dict.fromkeys(_indices(status.completed_indexes), "Succeeded"))
        states.update(dict.fromkeys(_indices(status.failed_indexes), "Failed"))
    return states


def _pods_by_copy(api: client.ApiClient, record: store.Record) -> dict[int, list[client.V1Pod]]:
    pods = client.CoreV1Api(api).list_namespaced_pod(record.namespace, label_selector=_selector(record.name),
                                                    _request_timeout=REQUEST_TIMEOUT).items
    grouped: dict[int, list[client.V1Pod]] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
        grouped.setdefault(_copy_of(pod), []).append(pod)
    return grouped


def _log_tail(api: client.ApiClient, pod: client.V1Pod, lines: int) -> str:
    try:
        return client.CoreV1Api(api).read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace,
                                                             tail_lines=lines, _request_timeout=REQUEST_TIMEOUT)
    except ApiException:
        return ""


def status(record: store.Record) -> list[CopyStatus]:
    api = _record_api(record)
    with api_errors(f"reading {record.name}", api.configuration.host):
        finished = _job_states(api, record)
        by_copy = _pods_by_copy(api, record)
        jobs_exist = bool(_call(api, "Job", "list", record.namespace, label_selector=_selector(record.name)).items)
        copies = []
        for index in range(record.copies):
            pods = by_copy.get(index, [])
            latest = pods[-1] if pods else None
            if index in finished:
                phase = finished[index]
            elif not jobs_exist:
                phase = "Cancelled" if record.backend.get("cancelled") else "Unknown"
            elif latest is None:
                phase = "Pending"
            else:
                phase = latest.status.phase or "Pending"
            restarts = max(len(pods) - 1, 0) + sum(
                c.restart_count for p in pods for c in (p.status.container_statuses or []))
            step, ret = last_progress(_log_tail(api, latest, 50)) if latest and phase != "Pending" else (None, None)
            age = age_seconds(latest.metadata.creation_timestamp.isoformat()) if latest else age_seconds(
                record.created)
            copies.append(CopyStatus(index, phase, restarts, (latest.spec.node_name or "") if latest else "",
                                     age, step, ret, _last_failure(pods)))
    return copies


def _last_failure(pods: list[client.V1Pod]) -> str:
    """Why the newest pod that failed stopped: its container's termination reason (OOMKilled, Error), else the
    pod's own (Evicted); empty if none failed."""
    for pod in reversed(pods):
        if pod.status.phase != "Failed":
            continue
        for container in pod.status.container_statuses or []:
            terminated = container.state.terminated if container.state else None
            if terminated is not None and terminated.reason:
                return terminated.reason
        return pod.status.reason or "Failed"
    return ""


def _pod_finished(core: client.CoreV1Api, pod: client.V1Pod) -> bool:
    try:
        current = core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return current.status.phase in ("Succeeded", "Failed") or current.metadata.deletion_timestamp is not None


def _stamp(text: str) -> tuple[str, int]:
    """An RFC 3339 timestamp as (seconds part, nanoseconds), comparable whatever its fraction's width."""
    seconds, _, fraction = text.rstrip("Z").partition(".")
    return seconds, int(fraction.ljust(9, "0")[:9] or 0)


def _shut_when_finished(core: client.CoreV1Api, pod: client.V1Pod, response: Any, stop: threading.Event,
                        done: threading.Event) -> None:
    """Shut a followed stream once its pod has finished or is gone, so following ends with the pod."""

    def watch() -> None:
        while not stop.wait(1.0) and not done.is_set():
            with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                if _pod_finished(core, pod):
                    time.sleep(1.0)  # let the last lines through
                    break
        # close() would wait for the blocked read; shutdown() ends it (urllib3 >= 2.3).
        with contextlib.suppress(Exception):
            response.shutdown()

    threading.Thread(target=watch, daemon=True).start()


def _stream_pod(core: client.CoreV1Api, pod: client.V1Pod, emit: Callable[[str], None], follow: bool,
                tail: int | None, since_seconds: int | None, stop: threading.Event) -> None:
    """One pod's log. A followed stream is read with a timeout and reopened while the pod runs.

    A kubelet ends the stream when the container stops, but a connection can also stall (a lost node, a
    proxy in between): reconnecting from the last line's timestamp, and skipping what was already shown,
    keeps `logs` from hanging and from repeating lines.
    """
    last: tuple[tuple[str, int], str] | None = None  # (timestamp, line) of the last line shown
    while not stop.is_set():
        options: dict[str, Any] = {"follow": follow, "timestamps": True}
        if last is not None:
            shown_at = datetime.fromisoformat(last[0][0]).replace(tzinfo=UTC)
            options["since_seconds"] = max(1, math.ceil((datetime.now(UTC) - shown_at).total_seconds()) + 1)
        else:
            options.update({k: v for k, v in (("tail_lines", tail), ("since_seconds", since_seconds)) if v})
        done = threading.Event()
        try:
            response = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, _preload_content=False,
                                                    _request_timeout=(REQUEST_TIMEOUT, FOLLOW_IDLE_SECONDS),
                                                    **options)
            if follow:
                _shut_when_finished(core, pod, response, stop, done)
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    stamp, _, text = raw.decode(errors="replace").partition(" ")
                    if last is not None and (_stamp(stamp), text) <= last:
                        continue
                    emit(text)
                    last = (_stamp(stamp), text)
                if stop.is_set():
                    return
            if buffer:
                emit(buffer.decode(errors="replace").partition(" ")[2])
            return
        except (urllib3.exceptions.HTTPError, OSError):
            if not follow or _pod_finished(core, pod):
                return
        finally:
            done.set()


def _stream_copy(api: client.ApiClient, record: store.Record, index: int, emit: Callable[[str], None],
                 follow: bool, tail: int | None, since_seconds: int | None, stop: threading.Event) -> None:
    """One copy's log; with follow, waiting for its pod and following it across retries until the copy ends."""
    core = client.CoreV1Api(api)
    streamed: set[str] = set()
    while not stop.is_set():
        pods = _pods_by_copy(api, record).get(index, [])
        pending = [p for p in pods if p.metadata.name not in streamed]
        ready = [p for p in pending if p.status.phase in ("Running", "Succeeded", "Failed")]
        if ready:
            pod = ready[0]
            streamed.add(pod.metadata.name)
            _stream_pod(core, pod, lambda line: emit(f"copy-{index} | {line}"),
                        follow and pod.status.phase == "Running", tail, since_seconds, stop)
            continue
        if not follow or (index in _job_states(api, record) and not pending):
            return
        if not _call(api, "Job", "list", record.namespace, label_selector=_selector(record.name)).items:
            return
        time.sleep(0.3)


def logs(record: store.Record, emit: Callable[[str], None], copy: int | None = None, follow: bool = True,
         tail: int | None = None, since_seconds: int | None = None) -> None:
    api = _record_api(record)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[UserError] = []

    def locked_emit(line: str) -> None:
        with lock:
            emit(line)

    def run(index: int) -> None:
        try:
            with api_errors(f"streaming logs of {record.name} copy {index}", api.configuration.host):
                _stream_copy(api, record, index, locked_emit, follow, tail, since_seconds, stop)
        except UserError as error:
            errors.append(error)

    indices = [copy] if copy is not None else list(range(record.copies))
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in indices]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
    if errors:
        raise errors[0]


def cancel(record: store.Record) -> list[str]:
    api = _record_api(record)
    with api_errors(f"cancelling {record.name}", api.configuration.host):
        removed = _delete_experiment(api, record.name, record.namespace)
    store.update_backend(record.name, {**record.backend, "cancelled": True})
    return removed


# -- TensorBoard through a port-forward ------------------------------------------------------------


def _tensorboard_pod(api: client.ApiClient, record: store.Record) -> str:
    """Deploy the namespace's TensorBoard unless it runs already; returns a running pod's name."""
    profile = get_profile(record.cluster)
    core = client.CoreV1Api(api)
    selector = "app.kubernetes.io/name=rlkube,app.kubernetes.io/component=tensorboard"
    for obj in tensorboard_objects(record.namespace, record.image, profile.pvc, profile.output,
                                   profile.node_selector, profile.tolerations):
        try:
            _create(api, obj)
        except ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(record.namespace, label_selector=selector).items
        running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if running:
            return running[0].metadata.name
        time.sleep(0.3)
    raise UserError(f"TensorBoard did not start within 120 s; check: kubectl -n {record.namespace} get pods "
                    f"-l {selector}")


def _pipe(left: socket.socket, right: socket.socket) -> None:
    sockets = [left, right]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 1.0)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (right if sock is left else left).sendall(data)
    except OSError:
        return
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def forward(api: client.ApiClient, namespace: str, pod: str, remote_port: int, local_port: int,
            ready: Callable[[int], None], stop: threading.Event) -> None:
    """Serve 127.0.0.1:local_port, each connection tunnelled to the pod's port through the API server."""
    core = client.CoreV1Api(api)
    with socket.create_server(("127.0.0.1", local_port)) as server:
        server.settimeout(0.5)
        ready(server.getsockname()[1])
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            tunnel = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                                 ports=str(remote_port))
            threading.Thread(target=_pipe, args=(connection, tunnel.socket(remote_port)), daemon=True).start()


def tensorboard(record: store.Record, port: int, emit: Callable[[str], None],
                stop: threading.Event | None = None) -> None:
    api = _record_api(record)
    stop = stop or threading.Event()
    with api_errors(f"opening TensorBoard for {record.name}", api.configuration.host):
        pod = _tensorboard_pod(api, record)

    def announce(bound: int) -> None:
        emit(f"TensorBoard for {record.name} (pod {pod}): http://127.0.0.1:{bound}/   (Ctrl-C to stop)")

    with contextlib.suppress(KeyboardInterrupt):
        forward(api, record.namespace, pod, TENSORBOARD_PORT, port or free_port(), announce, stop)
