"""Streaming copies' logs: one thread per copy, following each copy's pods across retries, reconnecting stalls. A
RayJob's copy streams all its pods at once: the submitter's (the driver's output), the Ray head's and each worker's."""

import contextlib
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.targets.kubernetes.api import REQUEST_TIMEOUT, api_errors, list_jobs
from rlkube.launch.targets.kubernetes.status import (
    job_states,
    pods_by_copy,
    ray_job_phase,
    ray_jobs_by_copy,
    ray_role,
    runs_on_ray,
)

# A followed log that says nothing for this long is reopened if its pod still runs (see _stream_pod).
FOLLOW_IDLE_SECONDS = 5


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
        pods = pods_by_copy(api, record).get(index, [])
        pending = [p for p in pods if p.metadata.name not in streamed]
        ready = [p for p in pending if p.status.phase in ("Running", "Succeeded", "Failed")]
        if ready:
            pod = ready[0]
            streamed.add(pod.metadata.name)
            _stream_pod(core, pod, lambda line: emit(f"copy-{index} | {line}"),
                        follow and pod.status.phase == "Running", tail, since_seconds, stop)
            continue
        if not follow:
            return
        jobs = list_jobs(api, record.namespace, record.name)
        if not jobs or (index in job_states(jobs) and not pending):
            return
        time.sleep(0.3)


def _ray_prefix(index: int, pod: client.V1Pod) -> str:
    """`copy-i` for the submitter's lines (the driver's, as a Job's pod's), the Ray pod's part for the others."""
    role = ray_role(pod)
    if role == "submitter":
        return f"copy-{index}"
    if role == "worker":
        return f"copy-{index} worker-{pod.metadata.name.rsplit('-', 1)[-1]}"
    return f"copy-{index} {role}"


def _stream_ray_copy(api: client.ApiClient, record: store.Record, index: int, emit: Callable[[str], None],
                     follow: bool, tail: int | None, since_seconds: int | None, stop: threading.Event) -> None:
    """Every pod of one copy's RayJob, each in a thread of its own, as it starts; with follow, until the RayJob has
    ended (or is gone) and every stream with it."""
    core = client.CoreV1Api(api)
    streams: dict[str, threading.Thread] = {}
    failures: list[ApiException] = []

    def stream_pod(pod: client.V1Pod, prefix: str) -> None:
        try:
            _stream_pod(core, pod, lambda line: emit(f"{prefix} | {line}"),
                        follow and pod.status.phase == "Running", tail, since_seconds, stop)
        except ApiException as error:
            if error.status != 404:  # a pod deleted meanwhile (a Ray cluster replaced) has nothing more to say
                failures.append(error)

    while not stop.is_set() and not failures:
        for pod in pods_by_copy(api, record).get(index, []):
            if pod.metadata.name in streams or pod.status.phase not in ("Running", "Succeeded", "Failed"):
                continue
            thread = threading.Thread(target=stream_pod, args=(pod, _ray_prefix(index, pod)), daemon=True)
            streams[pod.metadata.name] = thread
            thread.start()
        ray_job = ray_jobs_by_copy(api, record).get(index)
        ended = not follow or ray_job is None or \
            ray_job_phase(ray_job.get("status") or {})[0] in ("Succeeded", "Failed")
        if ended and not any(thread.is_alive() for thread in streams.values()):
            break
        time.sleep(0.3)
    if failures:
        raise failures[0]


def stream(api: client.ApiClient, record: store.Record, emit: Callable[[str], None], copy: int | None,
           follow: bool, tail: int | None, since_seconds: int | None) -> None:
    """Every copy's log (or one copy's) in a thread of its own, lines whole, until all end or Ctrl-C."""
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[UserError] = []

    def locked_emit(line: str) -> None:
        with lock:
            emit(line)

    def run(index: int) -> None:
        try:
            with api_errors(f"streaming logs of {record.name} copy {index}", api.configuration.host):
                stream_copy(api, record, index, locked_emit, follow, tail, since_seconds, stop)
        except UserError as error:
            errors.append(error)

    stream_copy = _stream_ray_copy if runs_on_ray(record) else _stream_copy
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
