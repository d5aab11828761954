"""rlkube end to end on a real node: the image is built and pushed, pods really train, preemption resumes from a bucket.

The node (tests/k8s/node.py) is a real kubelet with containerd and runc, joined to the loopback control plane beside the
kwok nodes. Its pods pull the cpu image that `rlkube build` made with a real Docker engine and pushed to a real
registry on 127.0.0.1, by digest, and write their run directories to a real S3 server (moto) that listens on the node's
address, where pods reach it through the bridge. Only the base image is a stand-in (see node.py: no container
registry can be reached here, so python:3.11-slim-bookworm is built from Debian's archive).

Every namespace here enforces Pod Security `restricted`, as manifests/setup/namespace.yaml does, so each pod that
starts shows that rlkube's pods pass it for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.stream import stream
from node import RealNode

from rlkube.rundir import layout
from rlkube.storage import filesystems
from tests.conftest import assert_workers_learned_cartpole, scalar_steps

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
RLKUBE = [sys.executable, "-m", "rlkube"]
JOB_TIMEOUT_S = 900


def rlkube(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RLKUBE, *args], capture_output=True, text=True, timeout=timeout, check=False)


def submit(name: str, image: str, *args: str) -> None:
    result = rlkube("submit", "--cluster", "real", "--image", image, "--name", name, *args)
    assert result.returncode == 0, result.stderr


def job_of(e2e: dict[str, Any], name: str) -> client.V1Job:
    return client.BatchV1Api(e2e["api"]).read_namespaced_job(name, e2e["namespace"])


def pods_of(e2e: dict[str, Any], name: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(e2e["api"]).list_namespaced_pod(e2e["namespace"],
                                                           label_selector=f"rlkube.io/experiment={name}").items
    return sorted(pods, key=lambda p: p.metadata.creation_timestamp)


def wait_for_job(e2e: dict[str, Any], name: str, timeout: float = JOB_TIMEOUT_S) -> client.V1Job:
    deadline = time.monotonic() + timeout
    while True:
        job = job_of(e2e, name)
        conditions = {c.type for c in job.status.conditions or [] if c.status == "True"}
        if conditions & {"Complete", "Failed"}:
            return job
        assert time.monotonic() < deadline, f"job {name} did not finish: {job.status}"
        time.sleep(1)


def pod_log(e2e: dict[str, Any], pod: client.V1Pod) -> str:
    return client.CoreV1Api(e2e["api"]).read_namespaced_pod_log(pod.metadata.name, e2e["namespace"])


def complete_checkpoints(url: str) -> list[int]:
    """Steps of the checkpoints in a copy's bucket directory that carry their COMPLETE marker."""
    fs, root = filesystems.open_filesystem(url)
    found = [path[len(root):].lstrip("/") for path in fs.find(root)]
    return sorted(int(m.group(1)) for f in found
                  if (m := re.fullmatch(rf"{layout.CHECKPOINTS}/ckpt-(\d+)/{layout.COMPLETE_MARKER}", f)))


def wait_for_checkpoint(url: str, after: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while not (steps := [s for s in complete_checkpoints(url) if s > after]):
        assert time.monotonic() < deadline, f"no complete checkpoint after step {after} in {url}"
        time.sleep(1)
    return steps[-1]


def download(url: str, target: Path) -> Path:
    fs, root = filesystems.open_filesystem(url)
    fs.get(root, str(target), recursive=True)
    return target


def assert_no_duplicated_steps(run_dir: Path) -> None:
    steps = scalar_steps(run_dir)
    assert steps, f"no TensorBoard scalars in {run_dir}"
    for tag, logged in steps.items():
        assert len(logged) == len(set(logged)), f"{tag} logs some steps twice: {logged}"


def test_smoke_two_copies_of_the_pushed_image_log_and_an_evicted_one_resumes_from_its_checkpoint(
        e2e: dict[str, Any], real_node: RealNode, pushed_image: str) -> None:
    """The per-change tier's real-node check: the built image, pushed and pulled by digest, runs two copies whose logs
    `rlkube logs` follows; one copy is evicted after its first complete checkpoint and its replacement resumes from
    it. The full tier's tests below train to a learning bar and preempt twice."""
    steps = 6000
    submit("smoke", pushed_image, "--hparams", "dqn_cartpole", "--copies", "2", "--train-steps", str(steps),
           "--eval-episodes", "1", "--test-episodes", "1",
           "--hparam-override", "checkpoint_every=1000,eval_every=3000,log_every=500")
    assert job_of(e2e, "smoke").spec.template.spec.containers[0].image == pushed_image  # by digest
    with subprocess.Popen([*RLKUBE, "logs", "smoke"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as following:
        saved = wait_for_checkpoint(f"{e2e['output']}/smoke/copy-0", after=0)
        (evicted,) = [p for p in pods_of(e2e, "smoke") if p.status.phase == "Running"
                      and p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0"]
        client.CoreV1Api(e2e["api"]).create_namespaced_pod_eviction(
            evicted.metadata.name, e2e["namespace"],
            client.V1Eviction(metadata=client.V1ObjectMeta(name=evicted.metadata.name, namespace=e2e["namespace"])))
        replacement = wait_for_replacement(e2e, "smoke", evicted)
        assert int(wait_for_log(e2e, replacement, r"resumed from \S+ at step (\d+)")) >= saved
        job = wait_for_job(e2e, "smoke")
        streamed, _ = following.communicate(timeout=120)
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}, job.status
    assert all(pod.spec.node_name == real_node.name for pod in pods_of(e2e, "smoke"))
    for copy in (0, 1):  # real container output from both copies, prefixed
        assert f"copy-{copy} | test at step {steps}" in streamed, streamed[-3000:]


@pytest.mark.full
def test_a_pushed_image_trains_two_copies_on_a_real_node_into_a_bucket(e2e: dict[str, Any],
                                                                         real_node: RealNode) -> None:
    with subprocess.Popen([*RLKUBE, "submit", "--cluster", "real", "--build", "cpu", "--hparams", "dqn_cartpole",
                           "--copies", "2", "--name", "learn", "--eval-episodes", "5", "--test-episodes", "5"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as submitting:
        _, err = submitting.communicate(timeout=1800)
    assert submitting.returncode == 0, err[-4000:]
    built = re.findall(rf"pushed ({re.escape(real_node.registry)}/rlkube-cpu@sha256:[0-9a-f]{{64}})", err)
    assert built, err[-2000:]
    job = job_of(e2e, "learn")
    assert job.spec.template.spec.containers[0].image == built[-1]  # by digest, exactly what was pushed
    with subprocess.Popen([*RLKUBE, "logs", "learn"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as following:
        job = wait_for_job(e2e, "learn")
        streamed, _ = following.communicate(timeout=120)
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}, job.status
    pods = pods_of(e2e, "learn")
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == real_node.name
        assert pod.spec.security_context.run_as_user == 1000
        assert pod.spec.security_context.run_as_non_root
        (state,) = pod.status.container_statuses
        assert state.state.terminated.exit_code == 0
        assert state.image_id.endswith(built[-1].split("@")[1])
    for copy in (0, 1):  # real container output, followed from both copies, prefixed
        lines = [line for line in streamed.splitlines() if line.startswith(f"copy-{copy} | ")]
        assert any("eval at step" in line for line in lines), streamed[-3000:]

    results = rlkube("results", "learn", "-o", "json")
    assert results.returncode == 0, results.stderr
    report = json.loads(results.stdout)
    assert [c["copy"] for c in report["copies"]] == [0, 1]
    for copy in report["copies"]:
        assert copy["summary"]["total_steps"] == 50_000
        best = max(e["mean_return"] for e in copy["evaluations"])
        assert best >= 200, f"copy {copy['copy']} did not learn CartPole: best eval {best}"  # random play: ~22
    mean, std = report["across_copies"]["eval_mean_return"]
    assert mean == pytest.approx(sum(c["summary"]["eval_mean_return"] for c in report["copies"]) / 2)
    assert std >= 0
    table = rlkube("results", "learn").stdout
    assert "eval return across 2 copies:" in table


@pytest.mark.full
def test_an_evicted_and_then_a_deleted_pod_resume_from_the_bucket_and_finish_exactly(
        e2e: dict[str, Any], pushed_image: str) -> None:
    steps = 24_000
    submit("preempt", pushed_image, "--hparams", "dqn_cartpole", "--train-steps", str(steps), "--eval-episodes", "2",
           "--test-episodes", "1", "--hparam-override", "checkpoint_every=2000,eval_every=2000,log_every=500")
    copy_url = f"{e2e['output']}/preempt/copy-0"
    core = client.CoreV1Api(e2e["api"])

    # 1. Preemption through the Eviction API: the pod gets DisruptionTarget, the Job ignores the failure.
    before_eviction = wait_for_checkpoint(copy_url, after=0)
    (first,) = [p for p in pods_of(e2e, "preempt") if p.status.phase == "Running"]
    core.create_namespaced_pod_eviction(first.metadata.name, e2e["namespace"], client.V1Eviction(
        metadata=client.V1ObjectMeta(name=first.metadata.name, namespace=e2e["namespace"])))
    second = wait_for_replacement(e2e, "preempt", first)
    first_resume = int(wait_for_log(e2e, second, r"resumed from \S+ at step (\d+)"))
    assert first_resume >= before_eviction  # the newest complete checkpoint: the one saved on SIGTERM, or later

    # 2. A pod deleted outright (a drain that bypasses the Eviction API): SIGTERM, a checkpoint, exit 143. Without
    #    DisruptionTarget the Job counts it against the copy's retries (retries_per_copy) - that is what it costs -
    #    and the replacement resumes from the checkpoint saved on SIGTERM: no step is lost.
    wait_for_checkpoint(copy_url, after=first_resume)
    core.delete_namespaced_pod(second.metadata.name, e2e["namespace"])
    third = wait_for_replacement(e2e, "preempt", second)
    second_resume = int(wait_for_log(e2e, third, r"resumed from \S+ at step (\d+)"))
    saved_on_sigterm = re.findall(r"stopped by signal 15 at step (\d+)", pod_log_if_kept(e2e, second))
    if saved_on_sigterm:  # the deleted pod's log, when the kubelet still has it
        assert second_resume == int(saved_on_sigterm[0])
    job = wait_for_job(e2e, "preempt")
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}, job.status
    assert (job.status.failed or 0) == 1  # the deletion only: the eviction did not count

    run_dir = download(copy_url, e2e["dir"] / "preempt-copy-0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == steps
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(2000, steps + 1, 2000))
    assert_no_duplicated_steps(run_dir)


def wait_for_replacement(e2e: dict[str, Any], name: str, gone: client.V1Pod, timeout: float = 300) -> client.V1Pod:
    """The pod the Job starts for the same index once `gone` has stopped, when it runs."""
    deadline = time.monotonic() + timeout
    while True:
        newer = [p for p in pods_of(e2e, name) if p.metadata.creation_timestamp > gone.metadata.creation_timestamp
                 and p.metadata.name != gone.metadata.name and p.status.phase in ("Running", "Succeeded")]
        if newer:
            return newer[0]
        assert time.monotonic() < deadline, f"no replacement for {gone.metadata.name}"
        time.sleep(0.5)


def wait_for_log(e2e: dict[str, Any], pod: client.V1Pod, pattern: str, timeout: float = 300) -> str:
    """The first group of `pattern` in a pod's log, once it appears."""
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, pod_log_if_kept(e2e, pod))):
        assert time.monotonic() < deadline, f"{pod.metadata.name} never logged {pattern!r}"
        time.sleep(1)
    return match.group(1)


def pod_log_if_kept(e2e: dict[str, Any], pod: client.V1Pod) -> str:
    try:
        return pod_log(e2e, pod)
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise


@pytest.mark.full
def test_cancel_leaves_a_complete_checkpoint_in_the_bucket_within_the_grace_period(
        e2e: dict[str, Any], pushed_image: str) -> None:
    # No periodic checkpoint before the cancel: the one in the bucket can only be the one saved on SIGTERM.
    submit("stop", pushed_image, "--hparams", "dqn_cartpole", "--train-steps", "1000000", "--eval-episodes", "1",
           "--hparam-override", "checkpoint_every=1000000,log_every=500")
    copy_url = f"{e2e['output']}/stop/copy-0"
    with subprocess.Popen([*RLKUBE, "logs", "stop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as following:
        deadline = time.monotonic() + 600
        while not (progress := json.loads(rlkube("status", "stop", "-o", "json").stdout)["copies"][0]
                   ).get("last_step"):
            assert time.monotonic() < deadline, progress
            time.sleep(1)
        assert complete_checkpoints(copy_url) == []
        started = time.monotonic()
        cancelled = rlkube("cancel", "stop")
        took = time.monotonic() - started
        streamed, _ = following.communicate(timeout=120)
    assert cancelled.returncode == 0, cancelled.stderr
    assert took < 60, f"cancel took {took:.0f} s, more than the grace period"
    saved = [int(m) for m in re.findall(r"stopped by signal 15 at step (\d+)", streamed)]
    assert saved, streamed[-3000:]
    assert complete_checkpoints(copy_url) == saved
    assert pods_of(e2e, "stop") == []


def runs_volume_profile(e2e: dict[str, Any], real_node: RealNode) -> Path:
    """A profile `real-pvc` that writes to a PVC rlkube-runs mounted at /runs; returns the volume's path here."""
    runs = real_node.host_path_volume(e2e["namespace"], "rlkube-runs")
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    profiles["real-pvc"] = {**profiles["real"], "output": "/runs", "pvc": "rlkube-runs"}
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))
    return runs


@pytest.mark.full
def test_in_cluster_tensorboard_serves_every_copy_from_the_runs_volume(
        e2e: dict[str, Any], real_node: RealNode, pushed_image: str) -> None:
    runs = runs_volume_profile(e2e, real_node)
    result = rlkube("submit", "--cluster", "real-pvc", "--image", pushed_image, "--name", "board", "--copies", "2",
                    "--hparams", "dqn_cartpole", "--train-steps", "3000", "--eval-episodes", "1",
                    "--test-episodes", "1", "--hparam-override", "eval_every=1000")
    assert result.returncode == 0, result.stderr
    job = wait_for_job(e2e, "board")
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}, job.status
    assert sorted(p.name for p in (runs / "board").iterdir()) == ["copy-0", "copy-1"]

    with subprocess.Popen([*RLKUBE, "tensorboard", "board", "--in-cluster"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as board:
        try:
            url = read_url(board, timeout=300)
            tags = fetch_json(f"{url}data/plugin/scalars/tags", timeout=120,
                              ready=lambda t: sum("eval/mean_return" in v for v in t.values()) >= 2)
        finally:
            board.terminate()
    runs_with_returns = sorted(run for run, run_tags in tags.items() if "eval/mean_return" in run_tags)
    assert runs_with_returns == ["board/copy-0", "board/copy-1"], tags


# Run in the trainer's container of experiment `probe`: what of the runs volume it can reach. Each attempt gives "ok"
# or the errno's name.
VOLUME_PROBE = """
import errno, json, os

def attempt(action):
    try:
        action()
    except OSError as error:
        return errno.errorcode[error.errno]
    return "ok"

def read(path):
    with open(path, "rb") as f:
        f.read()

def write(path):
    with open(path, "wb") as f:
        f.write(b"written by probe")

neighbour = "/runs/neighbour/copy-0/best/policy.pkl"
print(json.dumps({
    "listed at /runs": sorted(os.listdir("/runs")),
    "listed above its own directory": sorted(os.listdir("/runs/probe/..")),
    "read the neighbour's policy": attempt(lambda: read(neighbour)),
    "overwrite the neighbour's policy": attempt(lambda: write(neighbour)),
    "create the neighbour's directory": attempt(lambda: os.makedirs("/runs/neighbour/copy-0/best")),
    "write in its own directory": attempt(lambda: write("/runs/probe/probe.txt")),
    "mounted from": [line.split()[3] for line in open("/proc/self/mountinfo") if line.split()[4] == "/runs/probe"],
}))
"""


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.mark.full
def test_a_pod_on_the_runs_volume_can_neither_read_nor_write_another_experiments_directory(
        e2e: dict[str, Any], real_node: RealNode, pushed_image: str) -> None:
    """Experiment `neighbour`'s run directory is on the volume, written by the same uid as every rlkube pod; a pod of
    experiment `probe` mounts only /runs/probe (subPath probe): it sees nothing else of the volume, cannot read,
    overwrite or recreate the neighbour's files, and writes in its own directory."""
    runs = runs_volume_profile(e2e, real_node)
    best = runs / "neighbour" / "copy-0" / "best"
    best.mkdir(parents=True)
    (best / "policy.pkl").write_bytes(b"the neighbour's policy")
    for path in (runs / "neighbour", best.parent, best, best / "policy.pkl"):
        os.chown(path, 1000, 1000)
    neighbour_before = files_under(runs / "neighbour")

    result = rlkube("submit", "--cluster", "real-pvc", "--image", pushed_image, "--name", "probe", "--hparams",
                    "dqn_cartpole", "--train-steps", "1000000")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 300
    while not (running := [p for p in pods_of(e2e, "probe") if p.status.phase == "Running"]):
        assert time.monotonic() < deadline, [p.status.phase for p in pods_of(e2e, "probe")]
        time.sleep(1)
    output = stream(client.CoreV1Api(e2e["api"]).connect_get_namespaced_pod_exec, running[0].metadata.name,
                    e2e["namespace"], container="trainer", command=["python", "-c", VOLUME_PROBE], stderr=True,
                    stdin=False, stdout=True, tty=False, _request_timeout=120)
    reached = json.loads(output.strip().splitlines()[-1])
    (mounted_from,) = reached.pop("mounted from")  # the volume's root in the node's file system, as the node sees it
    assert mounted_from.endswith(f"/{runs.name}/probe"), output
    assert reached == {
        "listed at /runs": ["probe"],  # the mount point, in the read-only root file system
        "listed above its own directory": ["probe"],
        "read the neighbour's policy": "ENOENT",
        "overwrite the neighbour's policy": "ENOENT",
        "create the neighbour's directory": "EROFS",
        "write in its own directory": "ok",
    }, output
    assert files_under(runs / "neighbour") == neighbour_before
    assert (runs / "probe" / "probe.txt").read_bytes() == b"written by probe"
    # The trainer itself writes its run there, as --output-dir /runs/probe.
    deadline = time.monotonic() + 300
    while not (runs / "probe" / "copy-0").is_dir():
        assert time.monotonic() < deadline, sorted(p.name for p in (runs / "probe").iterdir())
        time.sleep(1)
    assert sorted(p.name for p in runs.iterdir()) == ["neighbour", "probe"]
    assert rlkube("cancel", "probe").returncode == 0


def read_url(process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if match := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
            return match.group(1)
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no URL from rlkube tensorboard: {''.join(seen)[-2000:]}")


def fetch_json(url: str, timeout: float, ready: Any) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                last = json.loads(response.read())
            if ready(last):
                return last
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} did not become ready: {last}")


@pytest.mark.full
def test_workers_share_memory_in_a_pod_and_learn(e2e: dict[str, Any], pushed_image: str) -> None:
    submit("workers", pushed_image, "--hparams", "dqn_cartpole", "--num-workers", "2", "--copies", "2",
           "--eval-episodes", "5", "--test-episodes", "1")
    job = wait_for_job(e2e, "workers")
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}, job.status
    pods = pods_of(e2e, "workers")
    assert len(pods) == 2
    for pod in pods:
        shm = next(v for v in pod.spec.volumes if v.name == "shm")
        assert shm.empty_dir.medium == "Memory"
    assert_workers_learned_cartpole([download(f"{e2e['output']}/workers/copy-{copy}", e2e["dir"] / f"workers-{copy}")
                                     for copy in (0, 1)])


@pytest.mark.full
def test_a_copy_over_its_memory_limit_is_oom_killed_retried_and_shown_while_the_others_finish(
        e2e: dict[str, Any], real_node: RealNode, pushed_image: str) -> None:
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    profiles["real-small"] = {**profiles["real"], "resources": {"cpu": "250m", "memory": "1536Mi"}}
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))
    result = rlkube("submit", "--cluster", "real-small", "--image", pushed_image, "--name", "oom", "--copies", "2",
                    "--hparams", "dqn_cartpole", "--train-steps", "20000", "--eval-episodes", "1",
                    "--test-episodes", "1")
    assert result.returncode == 0, result.stderr
    # Copy 1 runs out of memory: its in-memory /dev/shm, which counts against the pod's limit, is filled until the
    # pod is over it (as too many --num-workers slots would); the kernel's OOM killer then ends the trainer.
    filled: set[str] = set()
    for _attempt in range(2):  # the first pod and its retry (retries_per_copy: 1)
        pod = wait_for_running_copy(e2e, "oom", 1, filled)
        real_node.fill_shared_memory_in(pod, e2e["namespace"])
        filled.add(pod.metadata.name)
    job = wait_for_job(e2e, "oom")
    assert job.status.failed_indexes == "1", job.status
    assert job.status.completed_indexes == "0", job.status
    killed = [p for p in pods_of(e2e, "oom") if p.metadata.annotations["batch.kubernetes.io/job-completion-index"]
              == "1"]
    assert len(killed) == 2
    for pod in killed:
        assert pod.status.container_statuses[0].state.terminated.reason == "OOMKilled"
    table = rlkube("status", "oom").stdout.splitlines()
    (line,) = [row for row in table if row.startswith("copy-1")]
    assert "OOMKilled" in line
    (line,) = [row for row in table if row.startswith("copy-0")]
    assert "Succeeded" in line


def wait_for_running_copy(e2e: dict[str, Any], name: str, copy: int, seen: set[str], timeout: float = 300
                          ) -> client.V1Pod:
    """A running pod of copy `copy` that is not in `seen`."""
    deadline = time.monotonic() + timeout
    while True:
        for pod in pods_of(e2e, name):
            index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
            if index == str(copy) and pod.status.phase == "Running" and pod.metadata.name not in seen:
                return pod
        assert time.monotonic() < deadline, f"copy {copy} of {name} is not running"
        time.sleep(0.5)
