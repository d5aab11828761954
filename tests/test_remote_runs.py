"""Run directories in buckets, against real S3 and GCS servers on loopback (moto, fake-gcs-server).

A copy writes locally, syncs to its bucket after every checkpoint and evaluation and on SIGTERM, and a
fresh machine (a new pod, with an empty local cache) resumes from the newest complete remote checkpoint.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rlkube.rundir import layout, policy_file
from rlkube.storage import filesystems
from tests.conftest import rlkube_command, run_rlkube
from tests.storage_servers import gcs_server, s3_server

TRAIN = ["train", "--hparams", "dqn_cartpole", "--eval-episodes", "2", "--test-episodes", "1",
         "--hparam-override", "eval_every=1000,checkpoint_every=500,log_every=256"]


# make test runs a whole training against S3 (moto); test_storage.py covers both servers' sync per change, and
# make test-all runs these trainings against GCS (fake-gcs-server) too.
@pytest.fixture(params=["s3", pytest.param("gs", marks=pytest.mark.full)])
def bucket(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on a loopback server; the environment points rlkube at it."""
    server_context = s3_server if request.param == "s3" else gcs_server
    with server_context() as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        name = f"rlkube-{os.getpid()}-{time.monotonic_ns() % 10**8}"
        server.create_bucket(name)
        monkeypatch.setenv("RLKUBE_CACHE_DIR", str(tmp_path / "pod-1"))
        yield f"{request.param}://{name}"


def remote_files(url: str) -> list[str]:
    fs, root = filesystems.open_filesystem(url)
    return sorted(path[len(root):].lstrip("/") for path in fs.find(root))


def remote_checkpoints(url: str) -> list[int]:
    return sorted({int(m.group(1)) for f in remote_files(url) if (m := re.search(r"ckpt-(\d+)/", f))})


def complete_remote_checkpoints(url: str) -> list[int]:
    """Checkpoints whose COMPLETE marker is in the bucket: the ones a fresh machine may resume from."""
    return sorted(int(m.group(1)) for f in remote_files(url)
                  if (m := re.search(rf"ckpt-(\d+)/{layout.COMPLETE_MARKER}$", f)))


def test_a_run_in_a_bucket_ends_with_its_whole_directory_there(bucket: str) -> None:
    result = run_rlkube(*TRAIN, "--train-steps", "1000", "--output-dir", f"{bucket}/exp")
    assert result.returncode == 0, result.stderr
    files = remote_files(f"{bucket}/exp")
    for expected in ("copy-0/summary.json", "copy-0/metrics.jsonl", "copy-0/hparams.yaml",
                     f"copy-0/{layout.BEST_POLICY}"):
        assert expected in files
    assert any("events.out.tfevents" in f for f in files)
    assert remote_checkpoints(f"{bucket}/exp") == [500, 1000]
    assert not any(".tmp-" in f for f in files)


@pytest.mark.full  # per change: a whole run into the bucket, SIGTERM's checkpoint there, storage trouble
def test_sigkill_then_a_fresh_machine_resumes_from_the_bucket(bucket: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    remote = f"{bucket}/killed"
    process = subprocess.Popen(rlkube_command(*TRAIN, "--train-steps", "4000", "--output-dir", remote),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not complete_remote_checkpoints(remote) or max(complete_remote_checkpoints(remote)) < 1500:
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The newest checkpoint whose upload finished: one killed midway (no COMPLETE marker) is not resumed from.
    synced = max(complete_remote_checkpoints(remote))

    monkeypatch.setenv("RLKUBE_CACHE_DIR", str(tmp_path / "pod-2"))  # a new pod: nothing local
    resumed = run_rlkube(*TRAIN, "--train-steps", "4000", "--output-dir", remote)
    assert resumed.returncode == 0, resumed.stderr
    step = int(re.search(r"resumed from .* at step (\d+)", resumed.stderr).group(1))
    assert step >= synced  # lost at most one checkpoint interval
    summary = json.loads(filesystems.open_filesystem(f"{remote}/copy-0/summary.json")[0].cat_file(
        filesystems.open_filesystem(f"{remote}/copy-0/summary.json")[1]))
    assert summary["total_steps"] == 4000
    # The best policy in the bucket is the best evaluation's, though the new pod had only the checkpoint.
    evaluations = [json.loads(line) for line in remote_bytes(f"{remote}/copy-0/metrics.jsonl").splitlines()]
    best = tmp_path / "best.npz"
    best.write_bytes(remote_bytes(f"{remote}/copy-0/{layout.BEST_POLICY}"))
    _, kept = policy_file.read(best)
    assert kept["mean_return"] == max(evaluation["mean_return"] for evaluation in evaluations)


def remote_bytes(url: str) -> bytes:
    fs, path = filesystems.open_filesystem(url)
    return fs.cat_file(path)


def test_sigterm_leaves_a_complete_checkpoint_in_the_bucket(bucket: str) -> None:
    remote = f"{bucket}/stopped"
    process = subprocess.Popen(rlkube_command(*TRAIN, "--train-steps", "100000", "--output-dir", remote),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not remote_checkpoints(remote):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    stopped_at = int(re.search(r"stopped by signal \d+ at step (\d+)", stderr).group(1))
    assert max(remote_checkpoints(remote)) == stopped_at  # the stop saved where it stopped, and synced it
    assert f"copy-0/checkpoints/ckpt-{stopped_at}/state.pkl" in remote_files(remote)


@pytest.mark.full  # per change: a whole run into the bucket, SIGTERM's checkpoint there, storage trouble
def test_tensorboard_and_results_of_a_bucket_experiment(bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "rlkube.yaml").write_text(yaml.safe_dump({"local": {"output": f"{bucket}/runs"}}))
    assert run_rlkube("submit", *TRAIN[1:], "--train-steps", "1000", "--copies", "2", "--name", "cloud",
                      cwd=tmp_path).returncode == 0
    deadline = time.monotonic() + 180
    while json.loads(run_rlkube("status", "cloud", "-o", "json", cwd=tmp_path).stdout)["phase"] != "Succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    results = run_rlkube("results", "cloud", cwd=tmp_path)
    assert results.returncode == 0, results.stderr
    assert "eval return across 2 copies" in results.stdout

    server = subprocess.Popen(rlkube_command("tensorboard", "cloud"), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        url = None
        while url is None:
            line = server.stdout.readline()
            assert line, server.stderr.read()
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = found.group(0) if found else None
        with urllib.request.urlopen(f"{url}data/plugin/scalars/tags", timeout=60) as response:
            tags = json.loads(response.read())
        assert {"copy-0", "copy-1"} <= set(tags)
        assert "eval/mean_return" in tags["copy-1"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint"])
def test_storage_trouble_gets_one_line_and_loses_nothing_locally(case: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_CACHE_DIR", str(tmp_path / "cache"))
    with s3_server() as server:
        env = dict(server.env)
        if case == "unreachable endpoint":
            env = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}
        result = run_rlkube(*TRAIN, "--train-steps", "500", "--output-dir", "s3://no-such-bucket/x", env=env)
    # An endpoint out of reach may come back: its own exit code, which a pod's Job retries (exit 2 fails the copy).
    assert result.returncode == (75 if case == "unreachable endpoint" else 2), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    assert "s3://no-such-bucket" in lines[0]
    assert "Traceback" not in result.stderr
