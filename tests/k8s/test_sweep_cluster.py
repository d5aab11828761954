"""`rlkube sweep` on the real node: every trial is one Indexed Job labelled with its sweep, its copy writes to the S3
bucket, --parallel bounds the trials alive at once, a copy killed on the node is retried by its Job while the trial
runs on, a copy killed past its Job's backoff fails its trial and the trial is retried with the same params, and a
pruned trial's Job is deleted.

The sweep is driven as a user drives it: `rlkube sweep start` and `rlkube sweep status`, in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from rlkube.launch import store
from rlkube.launch.sweep import study as studies
from rlkube.launch.sweep.driver import RETRY_OF, default_storage, driver_alive, sweep_dir
from rlkube.launch.targets.kubernetes.status import job_states
from rlkube.storage import filesystems

# Every test under tests/k8s runs on one pytest-xdist worker (--dist loadgroup): one cluster, one real node.
pytestmark = pytest.mark.xdist_group("k8s")
RLKUBE = [sys.executable, "-m", "rlkube"]
SWEEP = "tune"
LABEL = "rlkube.io/sweep"
# lr 0.3 wrecks the policy at its first update (it then balances the pole for ~9 steps) while lr 1e-3 learns, so the
# Wilcoxon pruner stops a 0.3 trial once its evaluations are worse, step by step, than the best complete trial's
# (p < 0.1, about 9 evaluations in). It needs one complete trial, where the median pruner needs two, which 3 trials
# at 2 a time do not reliably give a running one. --sampler random with --seed 11 draws lr 1e-3 for fresh trials 0
# and 1 and lr 0.3 for the third fresh one, which starts once a slot frees. The budget leaves that trial room
# (it runs at ~6000 steps/s) for the driver, which reads every live trial from the cluster and the bucket each round.
SPACE = {"lr": {"choice": [0.3, 1e-3]}, "gae_lambda": {"choice": [0.8, 0.95]}}
TRAIN_STEPS, EVAL_EVERY = 60_000, 2000
SEED = 11
SWEEP_TIMEOUT_S = 600


class JobWatch:
    """A Kubernetes watch on the sweep's Jobs (label selector rlkube.io/sweep=<sweep>), in a thread for the whole
    sweep: the newest state of every Job it saw, the Jobs it saw deleted, and the most that were alive at once (a
    Job is alive until every copy, one index each, has ended)."""

    def __init__(self, api: client.ApiClient, namespace: str, sweep: str) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace, self.selector = namespace, f"{LABEL}={sweep}"
        self.jobs: dict[str, client.V1Job] = {}
        self.deleted: set[str] = set()
        self.most_alive = 0
        self.errors: list[str] = []
        self._present: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-watch", daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            listed = self.batch.list_namespaced_job(self.namespace, label_selector=self.selector)
            for job in listed.items:
                self._saw("ADDED", job)
            version = listed.metadata.resource_version
            while not self._stopping.is_set():
                # Short server-side timeouts, so the thread sees the stop; each resumes where the last ended.
                for event in watch.Watch().stream(self.batch.list_namespaced_job, self.namespace,
                                                  label_selector=self.selector, resource_version=version,
                                                  timeout_seconds=2):
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"the watch failed: {event['raw_object']}")
                    version = event["object"].metadata.resource_version
                    self._saw(event["type"], event["object"])
        except Exception as error:  # reported by the test: a watch that stopped early would prove nothing
            self.errors.append(f"{type(error).__name__}: {error}")

    def _saw(self, kind: str, job: client.V1Job) -> None:
        name = job.metadata.name
        self.jobs[name] = job
        if kind == "DELETED":
            self._present.discard(name)
            self.deleted.add(name)
        else:
            self._present.add(name)
        alive = [n for n in self._present if len(job_states([self.jobs[n]])) < self.jobs[n].spec.completions]
        self.most_alive = max(self.most_alive, len(alive))


def rlkube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RLKUBE, *args], capture_output=True, text=True, timeout=300, check=False)


def running_container(e2e: dict[str, Any], experiment: str, killed: set[str], timeout: float = 300) -> str:
    """The ID of a running container of the experiment (one copy) that is not among `killed`."""
    core = client.CoreV1Api(e2e["api"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(e2e["namespace"], label_selector=f"rlkube.io/experiment={experiment}").items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                container = (status.container_id or "").removeprefix("containerd://")
                if status.state.running and container and container not in killed:
                    return container
        time.sleep(0.2)
    raise AssertionError(f"no new container of {experiment} ran within {timeout:.0f} s")


def kill_main_process(container_id: str) -> None:
    """SIGKILL the container's main process on the node (this host): the one process of the container's cgroup whose
    parent is outside it. The container exits 137, as after an out-of-memory kill."""
    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    members = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and container_id in (entry / "cgroup").read_text():
                members.add(int(entry.name))
        except OSError:  # a process that ended while we looked
            continue
    (main,) = [pid for pid in members if parent(pid) not in members]
    os.kill(main, signal.SIGKILL)


def wait_for_driver_end(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while driver_alive(store.get_sweep(SWEEP)):
        log = (sweep_dir(SWEEP) / "driver.log").read_text()
        assert time.monotonic() < deadline, f"the sweep did not end within {timeout:.0f} s; driver log:\n{log}"
        time.sleep(1)


def sweep_trials() -> dict[int, dict[str, Any]]:
    """`rlkube sweep status -o json`'s trials, by number."""
    shown = rlkube("sweep", "status", SWEEP, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return {t["trial"]: t for t in json.loads(shown.stdout)["trials"]}


def table_rows(text: str) -> list[dict[str, str]]:
    """`rlkube sweep status`'s table (after its summary line) as one dict per row, cut at the header's columns."""
    header, *lines = text.splitlines()[1:]
    starts = [header.index(column) for column in header.split()]
    cut = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): line[a:b].strip() for a, b in cut} for line in lines]


@pytest.mark.full
def test_a_sweep_runs_trials_as_labelled_jobs_retries_a_killed_one_and_deletes_pruned_ones(
        e2e: dict[str, Any], pushed_image: str) -> None:
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    # `sweep start` takes no --image: the profile names the pushed image. Its Job retries a failed copy once.
    profiles["real-sweep"] = {**profiles["real"], "image": pushed_image, "retries_per_copy": 1}
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))
    Path("space.yaml").write_text(yaml.safe_dump(SPACE))
    started_at = time.monotonic()
    with JobWatch(e2e["api"], e2e["namespace"], SWEEP) as jobs:
        started = rlkube("sweep", "start", "--cluster", "real-sweep", "--hparams", "ppo_cartpole", "--train-steps",
                         str(TRAIN_STEPS), "--eval-episodes", "1", "--test-episodes", "0", "--hparam-override",
                         f"eval_every={EVAL_EVERY}", "--space", "space.yaml", "--trials", "3", "--parallel", "2",
                         "--seeds", "1", "--retries", "1", "--sampler", "random", "--seed", str(SEED), "--pruner",
                         "wilcoxon", "--poll", "0.5", "--name", SWEEP)
        assert started.returncode == 0, started.stderr
        try:
            # Trial 0's copy is killed on the node, and again in the pod its Job retries it in: past its backoff.
            # Trial 1's is killed once, which its Job retries.
            first = running_container(e2e, f"{SWEEP}-t0", set())
            kill_main_process(first)
            kill_main_process(running_container(e2e, f"{SWEEP}-t1", set()))
            retried = running_container(e2e, f"{SWEEP}-t0", {first})
            while_retried = {number: trial["state"] for number, trial in sweep_trials().items()}
            kill_main_process(retried)
            wait_for_driver_end(SWEEP_TIMEOUT_S)
        finally:
            if driver_alive(store.get_sweep(SWEEP)):  # stop what this test started, trials included
                rlkube("sweep", "cancel", SWEEP)
    took = time.monotonic() - started_at
    log = (sweep_dir(SWEEP) / "driver.log").read_text()
    trials = sweep_trials()
    print(f"sweep of {len(trials)} trials took {took:.0f} s; driver log:\n{log}")

    # Every trial was one Indexed Job named <sweep>-t<n>, labelled (its pods too), and at most 2 were alive at once.
    assert jobs.errors == []
    assert sorted(jobs.jobs) == sorted(f"{SWEEP}-t{n}" for n in trials), log
    for job in jobs.jobs.values():
        assert job.spec.completion_mode == "Indexed"
        assert job.spec.completions == 1
        assert job.metadata.labels[LABEL] == job.spec.template.metadata.labels[LABEL] == SWEEP
    assert jobs.most_alive == 2, log

    # While their Jobs retried the killed copies, trials 0 and 1 ran on (trial 1 to its end); trial 0 failed with the
    # reason once its retry was killed too, its Job was deleted, and its params ran again.
    assert while_retried == {0: "RUNNING", 1: "RUNNING"}, log
    assert jobs.jobs[f"{SWEEP}-t1"].status.failed == 1
    assert trials[1]["state"] in ("COMPLETE", "PRUNED"), log  # pruned only if a later trial completed first
    assert trials[0]["state"] == "FAIL", log
    assert trials[0]["reason"] == "copy-0 failed: Error", log
    assert f"{SWEEP}-t0" in jobs.deleted
    study, _config = studies.load(SWEEP, default_storage(SWEEP))
    (retry,) = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(RETRY_OF) == 0]
    assert retry.params == study.trials[0].params
    assert trials[retry.number]["params"] == trials[0]["params"]
    assert trials[retry.number]["state"] in ("COMPLETE", "PRUNED"), log

    # The lr 0.3 trial at least was pruned; each pruned trial stopped before its budget, its Job deleted with its
    # pods. The complete trials keep their Jobs, and their evaluations are in the bucket.
    pruned = [t for t in trials.values() if t["state"] == "PRUNED"]
    assert any("lr=0.3" in t["params"] for t in pruned), log
    remaining = {j.metadata.name for j in client.BatchV1Api(e2e["api"]).list_namespaced_job(
        e2e["namespace"], label_selector=f"{LABEL}={SWEEP}").items}
    pods = client.CoreV1Api(e2e["api"]).list_namespaced_pod(e2e["namespace"], label_selector=f"{LABEL}={SWEEP}").items
    for trial in pruned:
        assert trial["reason"].startswith("pruned at step ")
        assert 0 < trial["steps"] < TRAIN_STEPS
        assert trial["experiment"] in jobs.deleted
        assert trial["experiment"] not in remaining
        assert all(p.metadata.labels["rlkube.io/experiment"] != trial["experiment"] for p in pods)
    complete = [t for t in trials.values() if t["state"] == "COMPLETE"]
    assert complete, log  # a trial is pruned against a complete one
    assert remaining == {t["experiment"] for t in complete}
    for trial in complete:
        assert trial["steps"] == TRAIN_STEPS
        fs, path = filesystems.open_filesystem(f"{e2e['output']}/{trial['experiment']}/copy-0/metrics.jsonl")
        evaluations = [json.loads(line) for line in fs.cat(path).decode().splitlines()]
        assert [e["step"] for e in evaluations] == list(range(EVAL_EVERY, TRAIN_STEPS + 1, EVAL_EVERY))
        assert trial["value"] is not None

    # Status shows every trial, with its state, params and steps, as JSON and as the table.
    table = rlkube("sweep", "status", SWEEP)
    assert table.returncode == 0, table.stderr
    rows = {int(row["TRIAL"]): row for row in table_rows(table.stdout)}
    assert sorted(rows) == sorted(trials)
    for number, trial in trials.items():
        assert re.fullmatch(r"gae_lambda=0\.(8|95),lr=0\.(3|001)", trial["params"]), trial
        steps = "-" if trial["steps"] is None else str(trial["steps"])  # None: killed before its first progress line
        assert (rows[number]["STATE"], rows[number]["PARAMS"], rows[number]["STEPS"]) == (
            trial["state"], trial["params"], steps)


@pytest.mark.slow
def test_the_sweep_overhead_benchmark_runs_its_trials_on_the_real_node(e2e: dict[str, Any], pushed_image: str) -> None:
    """The harness of `benchmarks/sweep_overhead.py --cluster real-bench`: the benchmark needs the test cluster, its
    real node and the bucket, which exist only while these tests run. It is not a timed assert; it checks that the
    benchmark ran every trial on the node, and prints the benchmark's table:
    `pytest -m slow -s tests/k8s/test_sweep_cluster.py -k overhead` (options for the benchmark in
    RLKUBE_BENCHMARK_ARGS, e.g. "--trials 20")."""
    profiles_file = e2e["dir"] / "rlkube.yaml"  # the benchmark runs there, as the user's working directory
    profiles = yaml.safe_load(profiles_file.read_text())
    profiles["real-bench"] = {**profiles["real"], "image": pushed_image}
    profiles_file.write_text(yaml.safe_dump(profiles))
    options = os.environ.get("RLKUBE_BENCHMARK_ARGS", "").split()
    result = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "sweep_overhead.py"),
                             "--cluster", "real-bench", *options], capture_output=True, text=True, timeout=3600,
                            check=False)
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.search(r"^trials: \d+ \(.*complete", result.stdout, re.MULTILINE), result.stdout
    assert "first failure" not in result.stdout, result.stdout
