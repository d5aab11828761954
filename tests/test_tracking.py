"""--track mlflow|wandb: the tracker's run holds the hparams, TensorBoard's scalars, provenance and the files, and a
resume continues that run without logging a step twice.

MLflow runs against a real `mlflow server` (SQLite, a local artifact root) that the tests start on 127.0.0.1 and
stop by its process group; W&B runs offline, and its run file is read back record by record with W&B's own
protobuf messages.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkube.rl.hparams import to_dict
from rlkube.run.options import TrainOptions
from rlkube.rundir import layout
from tests.conftest import REPO, run_rlkube
from tests.test_cli import heavy_imports_after

OVERRIDES = "hidden_sizes=32;32,gradient_steps=8,eval_every=600,checkpoint_every=600,log_every=256"
FIRST_STEPS, RESUMED_STEPS = 1200, 1800


def tracked_train(run: Path, train_steps: int, *track: str, env: dict[str, str] | None = None) -> None:
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--hparam-override", OVERRIDES, "--train-steps",
                        str(train_steps), "--eval-episodes", "1", "--test-episodes", "1", "--record-video", *track,
                        "--output-dir", str(run), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tracking: " in result.stderr


def logged_hparams(train_steps: int) -> dict[str, Any]:
    """What the runner gives TensorBoard's HParams and the tracker: the resolved set and the seed."""
    options = TrainOptions(hparams="dqn_cartpole", overrides=OVERRIDES, train_steps=train_steps)
    return {**to_dict(options.resolved_hparams()), "seed": 0}


Row = tuple[str, int, float]  # (tag, step, value as TensorBoard's float32 keeps it)


def tensorboard_rows(copy: Path) -> Counter[Row]:
    accumulator = EventAccumulator(str(copy), size_guidance={"scalars": 0})
    accumulator.Reload()
    return Counter((tag, event.step, float(np.float32(event.value)))
                   for tag in accumulator.Tags()["scalars"] for event in accumulator.Scalars(tag))


def final_test_rows(rows: Counter[Row], step: int) -> Counter[Row]:
    """The test episode's scalars: logged after the last checkpoint, so a resume's rollback drops them from
    TensorBoard, while the tracker keeps what it was sent."""
    return Counter({row: count for row, count in rows.items() if row[0].startswith("test/") and row[1] == step})


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


# -- MLflow ----------------------------------------------------------------------------------------------------------

MLFLOW_BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "testmlflow" / "build.sh"
MLFLOW_START_TIMEOUT_S = 180.0  # its first start creates the SQLite schema: ~30 s on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def mlflow_server_executable() -> str:
    """The server's `mlflow`, from the virtualenv of its own that tools/testmlflow/build.sh caches (installing it the
    first time): the full mlflow package stays out of .venv (see the script)."""
    result = subprocess.run(["bash", str(MLFLOW_BUILD_SCRIPT)], capture_output=True, text=True, check=False,
                            timeout=900)
    if result.returncode != 0:
        pytest.fail(f"{MLFLOW_BUILD_SCRIPT} failed (it installs mlflow with pip):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1; yields its URL. It runs uvicorn and a job runner as its
    children, so it gets a process group of its own, which is stopped as a whole."""
    scratch = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [mlflow_server_executable(), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{scratch / 'mlflow.db'}",
               "--artifacts-destination", str(scratch / "artifacts")]
    log_path = scratch / "server.log"
    with open(log_path, "wb") as log:
        # TMPDIR: the server leaves its database's init lock file in the temporary directory; keep it in scratch.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer within {MLFLOW_START_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def mlflow_rows(client: Any, run_id: str) -> Counter[Row]:
    keys = client.get_run(run_id).data.metrics
    return Counter((key, metric.step, float(np.float32(metric.value)))
                   for key in keys for metric in client.get_metric_history(run_id, key))


@pytest.mark.full
def test_an_mlflow_run_holds_hparams_scalars_provenance_and_files_and_a_resume_continues_it(
        mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415  (the optional extra)

    run = tmp_path / "dqn-tracked"
    copy = run / "copy-0"
    # A pod's environment names its cluster and image (the Kubernetes target sets these).
    pod_env = {"RLKUBE_CLUSTER": "test-cluster", "RLKUBE_IMAGE": "registry.test/rlkube@sha256:" + "ab" * 32}
    track = ("--track", "mlflow", "--track-uri", mlflow_server, "--track-project", "tracking-test")
    tracked_train(run, FIRST_STEPS, *track, env=pod_env)

    client = MlflowClient(mlflow_server)
    run_id = json.loads((copy / "tracking.json").read_text())["run_id"]
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params == {key: str(value) for key, value in logged_hparams(FIRST_STEPS).items()}
    first_rows = tensorboard_rows(copy)
    assert {tag for tag, _, _ in first_rows} >= {"charts/episodic_return", "losses/td_loss", "eval/mean_return"}
    assert mlflow_rows(client, run_id) == first_rows
    tags = tracked.data.tags
    assert tags["mlflow.runName"] == "dqn-tracked-copy-0"
    assert {key: tags.get(f"rlkube.{key}") for key in ("experiment", "group", "copy", "seed", "output_dir",
                                                       "cluster", "image", "git_commit")} == {
        "experiment": "dqn-tracked", "group": "dqn-tracked", "copy": "copy-0", "seed": "0", "output_dir": str(copy),
        "cluster": "test-cluster", "image": pod_env["RLKUBE_IMAGE"], "git_commit": git_head()}
    videos = {Path(item.path).name for item in client.list_artifacts(run_id, "videos")}
    assert videos == {f"{name}.{suffix}" for name in ("eval-step600", f"eval-step{FIRST_STEPS}", "test")
                      for suffix in ("mp4", "gif")}
    summary = client.download_artifacts(run_id, "summary.json", str(tmp_path))
    assert Path(summary).read_bytes() == (copy / "summary.json").read_bytes()
    best = client.download_artifacts(run_id, layout.BEST_POLICY, str(tmp_path))
    assert Path(best).read_bytes() == (copy / layout.BEST_POLICY).read_bytes()

    tracked_train(run, RESUMED_STEPS, *track, env=pod_env)
    assert json.loads((copy / "tracking.json").read_text())["run_id"] == run_id
    experiment = client.get_experiment_by_name("tracking-test")
    assert [found.info.run_id for found in client.search_runs([experiment.experiment_id])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    # Every step once: what TensorBoard holds after the resume, and the first run's test, which it rolled back.
    assert mlflow_rows(client, run_id) == tensorboard_rows(copy) + final_test_rows(first_rows, FIRST_STEPS)
    assert max(step for _, step, _ in tensorboard_rows(copy)) == RESUMED_STEPS
    videos = {Path(item.path).name for item in client.list_artifacts(run_id, "videos")}
    assert f"eval-step{RESUMED_STEPS}.mp4" in videos


# -- W&B -------------------------------------------------------------------------------------------------------------

WANDB_BLOCK = 32 * 1024  # a .wandb file is LevelDB's log format: 32 KiB blocks of framed records
WANDB_HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version
RECORD_HEADER = struct.Struct("<IHB")  # checksum, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a .wandb run file, as W&B's own `Record` messages."""
    from wandb.proto.wandb_internal_pb2 import Record  # noqa: PLC0415  (the optional extra)

    data = path.read_bytes()
    assert WANDB_HEADER.unpack_from(data)[0] == b":W&B"
    position, fragments = WANDB_HEADER.size, b""
    while position + RECORD_HEADER.size <= len(data):
        left_in_block = WANDB_BLOCK - position % WANDB_BLOCK
        if left_in_block < RECORD_HEADER.size:  # a block's tail too short for a header is padding
            position += left_in_block
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, position)
        position += RECORD_HEADER.size
        if kind not in (FULL, FIRST, MIDDLE, LAST):  # zeros: the rest of the block is padding
            position += left_in_block - RECORD_HEADER.size
            continue
        fragments += data[position:position + length]
        position += length
        if kind in (FULL, LAST):
            yield Record.FromString(fragments)
            fragments = b""


def wandb_history(run_file: Path) -> tuple[Counter[Row], dict[str, Any], Any]:
    """A W&B run file's scalars against global_step, its config, and its run record."""
    rows: Counter[Row] = Counter()
    config: dict[str, Any] = {}
    run_record = None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            values = {item.key or ".".join(item.nested_key): json.loads(item.value_json)
                      for item in record.history.item}
            step = values.pop("global_step")
            rows.update((key, step, float(np.float32(value))) for key, value in values.items()
                        if not key.startswith("_"))
        elif kind in ("config", "run"):  # the run record holds the config given to wandb.init
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in updates})
            run_record = record.run if kind == "run" else run_record
    return rows, config, run_record


@pytest.mark.full
def test_a_wandb_offline_run_holds_the_history_and_a_resume_continues_it(tmp_path: Path) -> None:
    run = tmp_path / "dqn-tracked"
    copy = run / "copy-0"
    wandb_dir = tmp_path / "wandb-home"
    wandb_dir.mkdir()
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    tracked_train(run, FIRST_STEPS, "--track", "wandb", "--track-group", "a-sweep", env=env)
    run_id = json.loads((copy / "tracking.json").read_text())["run_id"]
    [first_dir] = (wandb_dir / "wandb").glob(f"offline-run-*-{run_id}")
    first_rows, config, run_record = wandb_history(first_dir / f"run-{run_id}.wandb")
    assert first_rows == tensorboard_rows(copy)
    hparams = logged_hparams(FIRST_STEPS)
    assert {key: config[key] for key in hparams} == hparams
    provenance = config["rlkube"]
    assert (provenance["experiment"], provenance["copy"], provenance["git_commit"]) == (
        "dqn-tracked", "copy-0", git_head())
    assert (run_record.run_group, run_record.display_name, run_record.project) == (
        "a-sweep", "dqn-tracked-copy-0", "rlkube")
    assert {path.name for path in (first_dir / "files" / "videos").iterdir()} >= {"test.mp4", "eval-step600.mp4"}
    assert (first_dir / "files" / "summary.json").read_bytes() == (copy / "summary.json").read_bytes()
    assert (first_dir / "files" / layout.BEST_POLICY).read_bytes() == (copy / layout.BEST_POLICY).read_bytes()

    tracked_train(run, RESUMED_STEPS, "--track", "wandb", "--track-group", "a-sweep", env=env)
    assert json.loads((copy / "tracking.json").read_text())["run_id"] == run_id
    [resumed_dir] = set((wandb_dir / "wandb").glob(f"offline-run-*-{run_id}")) - {first_dir}
    resumed_rows, _, _ = wandb_history(resumed_dir / f"run-{run_id}.wandb")  # `wandb sync` uploads both as one run
    assert min(step for _, step, _ in resumed_rows) > FIRST_STEPS
    assert first_rows + resumed_rows == tensorboard_rows(copy) + final_test_rows(first_rows, FIRST_STEPS)

    # As if the copy were killed after the tracker got its last steps but before its last checkpoint was written:
    # the resume trains those steps again and sends none of them twice.
    shutil.rmtree(copy / "checkpoints" / f"ckpt-{RESUMED_STEPS}")
    tracked_train(run, RESUMED_STEPS, "--track", "wandb", "--track-group", "a-sweep", env=env)
    assert json.loads((copy / "tracking.json").read_text())["sent_until"] == RESUMED_STEPS
    [third_dir] = set((wandb_dir / "wandb").glob(f"offline-run-*-{run_id}")) - {first_dir, resumed_dir}
    assert wandb_history(third_dir / f"run-{run_id}.wandb")[0] == Counter()


# -- the flags -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_that_is_not_installed_is_one_line_naming_its_extra(tracker: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # sys.modules[name] = None makes the import fail, as on a machine without the extra.
    args = ["train", "--hparams", "dqn_cartpole", "--track", tracker, "--output-dir", str(run)]
    code = (f"import sys\nsys.modules[{tracker!r}] = None\nfrom rlkube.cli.main import cli\n"
            f"try:\n    cli({args!r})\nexcept SystemExit as exit:\n"
            f"    print('exit', exit.code, 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stderr.strip().splitlines() == [
        f"error: --track {tracker} needs {tracker}, which is not installed: pip install 'rlkube[{tracker}]'"]
    assert result.stdout.strip() == "exit 2 False"
    assert not run.exists()


@pytest.mark.parametrize("command", [("train", "--output-dir", "run"), ("submit", "--cluster", "local"),
                                     ("submit", "--cluster", "kube", "--dry-run")])
def test_track_options_without_track_are_refused(command: tuple[str, ...], tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_rlkube(*command, "--hparams", "dqn_cartpole", "--track-group", "g", "--track-uri",
                        "http://127.0.0.1:1", cwd=tmp_path, env={"RLKUBE_DATA_DIR": str(data)}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --track-group needs --track mlflow or --track wandb"
    assert not (tmp_path / "run").exists()
    assert not data.exists() or not any(data.rglob("*.json"))  # nothing submitted


def test_refused_input_with_track_imports_no_tracker_and_no_tensorflow() -> None:
    assert heavy_imports_after("train", "--hparams", "nope", "--track", "mlflow", "--output-dir", "/tmp/x") == set()
    # The tracker's extra is found installed, and the run is still refused before anything heavy loads.
    assert heavy_imports_after("train", "--hparams", "dqn_cartpole", "--track", "wandb", "--no-training",
                               "--output-dir", "/tmp/rlkube-no-such-run") == set()
