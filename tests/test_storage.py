"""rlkube.storage against real S3 and GCS servers on loopback (moto, fake-gcs-server): sync up, sync down,
resume from a bucket, and what a user sees when storage is misconfigured."""

import contextlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rlkube.errors import UserError
from rlkube.rl.replay import ReplayMemory
from rlkube.rundir import checkpoint, layout
from rlkube.storage import filesystems, sync
from tests.storage_servers import StorageServer, gcs_server, s3_server

EVENTS = "events.out.tfevents.1700000000.pod-0.1.0"
LATER_EVENTS = "events.out.tfevents.1700000500.pod-0.1.0"


@pytest.fixture(scope="module", params=["s3", "gs"])
def server(request: pytest.FixtureRequest) -> Iterator[StorageServer]:
    with (s3_server if request.param == "s3" else gcs_server)() as running:
        yield running


@pytest.fixture
def remote(server: StorageServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy's directory in a fresh bucket; the environment points rlkube at the server."""
    return server.url(server.fresh_bucket(monkeypatch), "exp/copy-0")


def make_copy(directory: Path) -> Path:
    """A copy's run directory as the runner leaves it, mid-save of its second checkpoint."""
    directory.mkdir(parents=True)
    (directory / "hparams.yaml").write_text("hparams:\n  env: CartPole-v1\n  lr: 0.001\nseed: 0\n")
    (directory / EVENTS).write_bytes(b"\x18\x00\x00\x00\x00\x00\x00\x00" + os.urandom(1500))
    (directory / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "mean_return": s / 10}) + "\n" for s in (50, 100)))
    (directory / "summary.json").write_text(json.dumps({"total_steps": 100, "eval_mean_return": 10.0}))
    (directory / "train.log").write_text("training dqn_cartpole on CartPole-v1\neval at step 100: return 10.00\n")
    (directory / "videos").mkdir()
    (directory / "videos" / "eval-step100.gif").write_bytes(os.urandom(3000))
    checkpoint.save(directory / "checkpoints", 100, {"weights": os.urandom(4000), "logs": {EVENTS: 1508}})
    in_progress = directory / "checkpoints" / ".tmp-200-4242"
    in_progress.mkdir()
    (in_progress / "state.pkl").write_bytes(b"half a pickle")
    return directory


def tree(directory: Path) -> dict[str, bytes]:
    """The run files under `directory` (not hidden ones: temporaries, the sync manifest)."""
    return {path.relative_to(directory).as_posix(): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`, hidden ones included, with its mtime."""
    return {str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(directory.rglob("*")) if path.is_file()}


def remote_tree(url: str) -> dict[str, bytes]:
    fs, root = filesystems.open_filesystem(url)
    return {path[len(root) + 1:]: fs.cat_file(path) for path in sorted(fs.find(root))}


def write_remote(url: str, rel: str, data: bytes) -> None:
    fs, root = filesystems.open_filesystem(url)
    fs.pipe_file(f"{root}/{rel}", data)


def expected_remote(directory: Path) -> set[str]:
    files = {rel for rel in tree(directory) if "/.tmp-" not in rel}
    return files | {f"{rel.rsplit('/', 1)[0]}/COMPLETE" for rel in files if rel.endswith("/state.pkl")}


def test_sync_up_then_down_round_trips_a_copy_directory(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    up = sync.sync_up(copy, remote)
    uploaded = remote_tree(remote)
    assert set(uploaded) == expected_remote(copy)
    assert not any(".tmp-" in rel for rel in uploaded)
    assert json.loads(uploaded["checkpoints/ckpt-100/COMPLETE"])["files"] == {
        "state.pkl": (copy / "checkpoints/ckpt-100/state.pkl").stat().st_size}
    run_files = {rel: data for rel, data in tree(copy).items() if ".tmp-" not in rel}
    assert up.files_uploaded == len(run_files)  # the checkpoint's local marker among them
    assert up.bytes_uploaded == sum(map(len, run_files.values()))

    mirror = tmp_path / "mirror" / "copy-0"
    down = sync.sync_down(remote, mirror)
    assert tree(mirror) == run_files
    assert (down.files_downloaded, down.bytes_downloaded) == (len(run_files), sum(map(len, run_files.values())))
    assert checkpoint.latest(mirror / "checkpoints") == mirror / "checkpoints" / "ckpt-100"
    assert pickle.loads((mirror / "checkpoints/ckpt-100/state.pkl").read_bytes())["logs"] == {EVENTS: 1508}


def test_a_big_checkpoint_round_trips(remote: str, tmp_path: Path) -> None:
    """Above 5 MiB gcsfs uploads in a resumable session; above sync.SMALL_FILE downloads stream to disk."""
    copy = make_copy(tmp_path / "copy-0")
    checkpoint.save(copy / "checkpoints", 200, {"replay": os.urandom(sync.SMALL_FILE + 2**20)})
    sync.sync_up(copy, remote)
    pod = tmp_path / "new-pod"
    assert sync.pull_latest_checkpoint(remote, pod) == 200
    state = "checkpoints/ckpt-200/state.pkl"
    assert (pod / state).read_bytes() == (copy / state).read_bytes()


def save_memory(copy: Path, step: int, memory: ReplayMemory) -> Path:
    return checkpoint.save(copy / "checkpoints", step, {"agent": {"memory": {"replay": memory.state_dict()}}})


def segment_rels(listing: dict[str, bytes] | set[str]) -> set[str]:
    return {rel for rel in listing if layout.segment_of(rel)}


def test_segments_go_up_once_before_the_markers_that_list_them_and_down_with_them(
        server: StorageServer, remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    memory = ReplayMemory(4 * 256, (3,), np.float32, (), np.int64, seed=0)
    for step in range(600):
        memory.add(np.full(3, step), step % 2, 1.0, np.full(3, step + 1), 0.99)
    first = save_memory(copy, 200, memory)
    up = sync.sync_up(copy, remote)
    first_segments = {layout.segment_path(name) for name in layout.read_marker(first).segments}
    assert segment_rels(remote_tree(remote)) == first_segments
    for step in range(600, 700):  # into the third chunk only
        memory.add(np.full(3, step), step % 2, 1.0, np.full(3, step + 1), 0.99)
    second = save_memory(copy, 300, memory)
    second_segments = {layout.segment_path(name) for name in layout.read_marker(second).segments}
    new = second_segments - first_segments
    assert len(new) == 5  # the chunk's slots of action, reward, discount, obs and next_obs
    before = len(server.requests())
    up = sync.sync_up(copy, remote)
    assert up.files_uploaded == len(new) + 2  # not the segments it kept: its state and marker only besides
    if server.scheme == "s3":  # moto logs each request with its key, in order
        puts = [line.rsplit("/", 1)[1] for line in server.requests()[before:] if line.startswith("PUT")]
        assert puts[-1] == "COMPLETE"
        assert set(puts[:len(new)]) == {rel.rsplit("/", 1)[1] for rel in new}
    # ckpt-100 (no segments) is pruned; the segments only ckpt-200 and ckpt-300 list stay.
    assert segment_rels(remote_tree(remote)) == first_segments | second_segments

    pod = tmp_path / "new-pod"
    assert sync.pull_latest_checkpoint(remote, pod) == 300
    resumed = ReplayMemory(4 * 256, (3,), np.float32, (), np.int64, seed=0)
    resumed.load_state_dict(checkpoint.load(checkpoint.latest(pod / "checkpoints"))["agent"]["memory"]["replay"])
    np.testing.assert_array_equal(resumed.observations.obs, memory.observations.obs)
    assert segment_rels(tree(pod)) == second_segments

    mirror = tmp_path / "mirror"
    sync.sync_down(remote, mirror)
    assert segment_rels(tree(mirror)) == first_segments | second_segments
    third = save_memory(copy, 400, memory)  # nothing new: keeps every segment of ckpt-300, and ckpt-200 goes
    sync.sync_up(copy, remote)
    assert layout.read_marker(third).segments == layout.read_marker(second).segments
    assert segment_rels(remote_tree(remote)) == second_segments
    sync.sync_down(remote, mirror)
    assert segment_rels(tree(mirror)) == second_segments
    assert checkpoint.latest(mirror / "checkpoints") == mirror / "checkpoints" / "ckpt-400"


def test_nothing_moves_when_nothing_changed_and_a_sync_costs_one_listing(
        server: StorageServer, remote: str, tmp_path: Path) -> None:
    copy, mirror = make_copy(tmp_path / "copy-0"), tmp_path / "mirror"
    sync.sync_up(copy, remote)
    sync.sync_down(remote, mirror)

    before = len(server.requests())
    assert sync.sync_up(copy, remote) == sync.SyncStats()
    after_up = len(server.requests())
    assert sync.sync_down(remote, mirror) == sync.SyncStats()
    after_down = len(server.requests())
    assert (after_up - before, after_down - after_up) == (1, 1), server.requests()[before:]


def test_an_appended_log_moves_only_its_new_bytes(remote: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    copy, mirror = make_copy(tmp_path / "copy-0"), tmp_path / "mirror"
    sync.sync_up(copy, remote)
    sync.sync_down(remote, mirror)
    old_size = (copy / EVENTS).stat().st_size
    new_bytes = os.urandom(700)
    with open(copy / EVENTS, "ab") as handle:
        handle.write(new_bytes)

    # An object store cannot append: the grown file is uploaded whole, and nothing else is.
    up = sync.sync_up(copy, remote)
    assert (up.files_uploaded, up.bytes_uploaded) == (1, old_size + len(new_bytes))

    fs, _ = filesystems.open_filesystem(remote)
    reads = []
    cat_file = fs.cat_file

    def recording_cat_file(path: str, start: int | None = None, end: int | None = None, **kwargs: object) -> bytes:
        data = cat_file(path, start=start, end=end, **kwargs)
        reads.append((path.rsplit("/", 1)[1], start, end, len(data)))
        return data

    monkeypatch.setattr(fs, "cat_file", recording_cat_file)
    down = sync.sync_down(remote, mirror)
    overlap = sync.VERIFY_OVERLAP
    # One ranged read: the new bytes, plus the overlap that proves the local file is still a prefix.
    assert reads == [(EVENTS, old_size - overlap, old_size + len(new_bytes), len(new_bytes) + overlap)]
    assert (down.files_downloaded, down.bytes_downloaded) == (1, len(new_bytes) + overlap)
    assert (mirror / EVENTS).read_bytes() == (copy / EVENTS).read_bytes()


def test_a_truncated_log_replaces_the_remote_one_and_the_mirrored_one(remote: str, tmp_path: Path) -> None:
    copy, mirror = make_copy(tmp_path / "copy-0"), tmp_path / "mirror"
    sync.sync_up(copy, remote)
    sync.sync_down(remote, mirror)
    mirrored_size = (mirror / EVENTS).stat().st_size

    # A resume truncates a log back to its checkpoint's length, then writes past the old length before the
    # next sync: bigger than the mirror's copy, but that copy is no prefix of it any more, so it is refetched whole.
    with open(copy / EVENTS, "r+b") as handle:
        handle.truncate(900)
    with open(copy / EVENTS, "ab") as handle:
        handle.write(os.urandom(2000))
    assert sync.sync_up(copy, remote).files_uploaded == 1
    down = sync.sync_down(remote, mirror)
    assert (mirror / EVENTS).read_bytes() == (copy / EVENTS).read_bytes()
    grown = (copy / EVENTS).stat().st_size
    assert down.bytes_downloaded == (grown - mirrored_size + sync.VERIFY_OVERLAP) + grown  # tried, then whole

    # Truncated and not regrown: smaller than the remote and mirrored copies, which are replaced.
    with open(copy / EVENTS, "r+b") as handle:
        handle.truncate(900)
    with open(copy / "metrics.jsonl", "r+b") as handle:
        handle.truncate(len(json.dumps({"step": 50, "mean_return": 5.0})) + 1)
    up = sync.sync_up(copy, remote)
    assert up.files_uploaded == 2
    assert remote_tree(remote)[EVENTS] == (copy / EVENTS).read_bytes()
    down = sync.sync_down(remote, mirror)
    assert (down.files_downloaded, down.bytes_downloaded) == (2, 900 + (copy / "metrics.jsonl").stat().st_size)
    assert tree(mirror)[EVENTS] == (copy / EVENTS).read_bytes()
    assert tree(mirror)["metrics.jsonl"] == (copy / "metrics.jsonl").read_bytes()


def test_a_same_size_rewrite_is_noticed_both_ways(remote: str, tmp_path: Path) -> None:
    copy, mirror = make_copy(tmp_path / "copy-0"), tmp_path / "mirror"
    sync.sync_up(copy, remote)
    sync.sync_down(remote, mirror)
    summary = (copy / "summary.json").read_text()
    (copy / "summary.json").write_text(summary.replace("10.0", "12.5"))
    assert len(summary) == len((copy / "summary.json").read_text())

    assert sync.sync_up(copy, remote).files_uploaded == 1
    assert sync.sync_down(remote, mirror).files_downloaded == 1
    assert (mirror / "summary.json").read_text() == (copy / "summary.json").read_text()


def test_pruned_checkpoints_are_deleted_remotely(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    checkpoint.save(copy / "checkpoints", 200, {"weights": os.urandom(4000)})
    sync.sync_up(copy, remote)
    checkpoint.save(copy / "checkpoints", 300, {"weights": os.urandom(4000)})  # keeps 200 and 300
    assert not (copy / "checkpoints" / "ckpt-100").exists()

    stats = sync.sync_up(copy, remote)
    checkpoints = sorted(rel for rel in remote_tree(remote) if rel.startswith("checkpoints/"))
    assert checkpoints == ["checkpoints/ckpt-200/COMPLETE", "checkpoints/ckpt-200/state.pkl",
                           "checkpoints/ckpt-300/COMPLETE", "checkpoints/ckpt-300/state.pkl"]
    assert stats.files_deleted == 2  # ckpt-100's marker and state


def test_temporary_and_incomplete_checkpoints_are_never_uploaded(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    (copy / "checkpoints" / "ckpt-400").mkdir()  # no state.pkl: not a checkpoint (checkpoint.py never leaves one)
    (copy / "checkpoints" / "ckpt-400" / "notes.txt").write_text("?")
    sync.sync_up(copy, remote)
    assert {rel for rel in remote_tree(remote) if rel.startswith("checkpoints/")} == {
        "checkpoints/ckpt-100/state.pkl", "checkpoints/ckpt-100/COMPLETE"}


def test_a_local_checkpoint_that_its_marker_does_not_describe_is_never_uploaded(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    checkpoint.save(copy / "checkpoints", 200, {"weights": os.urandom(4000)})
    with open(copy / "checkpoints" / "ckpt-200" / "state.pkl", "ab") as handle:
        handle.write(b"bytes the marker does not list")
    sync.sync_up(copy, remote)
    assert {rel for rel in remote_tree(remote) if rel.startswith("checkpoints/")} == {
        "checkpoints/ckpt-100/state.pkl", "checkpoints/ckpt-100/COMPLETE"}


def test_a_checkpoint_is_marked_complete_only_after_its_data(server: StorageServer, remote: str,
                                                             tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    sync.sync_up(copy, remote)
    checkpoint.save(copy / "checkpoints", 100, {"weights": os.urandom(5000)})  # step 100 saved again, bigger
    sync.sync_up(copy, remote)
    if server.scheme == "s3":  # moto logs each request with its key
        key = f"/{remote.removeprefix('s3://')}/checkpoints/ckpt-100/"
        writes = [line.split()[0] + " " + line.rsplit("/", 1)[1] for line in server.requests()
                  if key in line and line.startswith(("PUT", "DELETE"))]
        assert writes == ["PUT state.pkl", "PUT COMPLETE", "DELETE COMPLETE", "PUT state.pkl", "PUT COMPLETE"]
    else:  # GCS names objects in request bodies; their generations are their write order
        fs, root = filesystems.open_filesystem(remote)
        found = fs.find(f"{root}/checkpoints/ckpt-100", detail=True)
        generation = {path.rsplit("/", 1)[1]: int(info["generation"]) for path, info in found.items()}
        assert generation["state.pkl"] < generation["COMPLETE"]
    assert json.loads(remote_tree(remote)["checkpoints/ckpt-100/COMPLETE"])["files"]["state.pkl"] == (
        copy / "checkpoints/ckpt-100/state.pkl").stat().st_size


def test_pull_fetches_the_newest_checkpoint_and_only_what_a_resume_reads(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    checkpoint.save(copy / "checkpoints", 200, {"weights": os.urandom(4000)})
    sync.sync_up(copy, remote)

    pod = tmp_path / "new-pod" / "copy-0"
    assert sync.pull_latest_checkpoint(remote, pod) == 200
    assert set(tree(pod)) == {"hparams.yaml", EVENTS, "metrics.jsonl", "checkpoints/ckpt-200/state.pkl",
                              "checkpoints/ckpt-200/COMPLETE"}
    assert checkpoint.latest(pod / "checkpoints") == pod / "checkpoints" / "ckpt-200"
    for rel, data in tree(pod).items():
        assert data == (copy / rel).read_bytes()
    # Pulled files are recorded as in sync: the new pod's first sync uploads nothing it did not change.
    assert sync.sync_up(pod, remote).files_uploaded == 0


def test_pull_with_nothing_or_something_newer_here_downloads_nothing(remote: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    assert sync.pull_latest_checkpoint(remote, empty) is None
    assert not empty.exists()

    copy = make_copy(tmp_path / "copy-0")
    sync.sync_up(copy, remote)
    checkpoint.save(copy / "checkpoints", 200, {"weights": b"newer, not synced yet"})
    with open(copy / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 200}\n')
    before = snapshot(copy)
    assert sync.pull_latest_checkpoint(remote, copy) == 100
    assert snapshot(copy) == before


def test_an_incomplete_remote_checkpoint_is_ignored(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    sync.sync_up(copy, remote)
    # A sync that died after ckpt-200's data but before its marker, and one that died replacing ckpt-300's data.
    write_remote(remote, "checkpoints/ckpt-200/state.pkl", b"complete data, but no marker")
    write_remote(remote, "checkpoints/ckpt-300/state.pkl", b"not what the marker says")
    write_remote(remote, "checkpoints/ckpt-300/COMPLETE", json.dumps({"files": {"state.pkl": 99999}}).encode())

    pod = tmp_path / "new-pod"
    assert sync.pull_latest_checkpoint(remote, pod) == 100
    assert [p.name for p in (pod / "checkpoints").iterdir()] == ["ckpt-100"]
    mirror = tmp_path / "mirror"
    sync.sync_down(remote, mirror)
    assert sorted(p.name for p in (mirror / "checkpoints").iterdir()) == ["ckpt-100"]


def test_logs_a_resume_deleted_go_remotely_but_files_never_pulled_stay(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    (copy / LATER_EVENTS).write_bytes(os.urandom(300))  # born after ckpt-100
    sync.sync_up(copy, remote)

    pod = tmp_path / "new-pod"
    sync.pull_latest_checkpoint(remote, pod)
    (pod / LATER_EVENTS).unlink()  # what RunLog's roll back does with a log the checkpoint does not know
    stats = sync.sync_up(pod, remote)
    remaining = set(remote_tree(remote))
    assert LATER_EVENTS not in remaining
    kept = {"summary.json", "train.log", "videos/eval-step100.gif", EVENTS, "checkpoints/ckpt-100/COMPLETE"}
    assert kept <= remaining
    assert stats.files_deleted == 1

    mirror = tmp_path / "mirror"  # a TensorBoard mirror made before the resume forgets the log too
    (mirror / LATER_EVENTS).parent.mkdir(parents=True)
    (mirror / LATER_EVENTS).write_bytes(b"stale")
    sync.sync_down(remote, mirror, include=lambda rel: "events.out.tfevents." in rel)
    assert set(tree(mirror)) == {EVENTS}


def test_include_selects_what_sync_down_mirrors(remote: str, tmp_path: Path) -> None:
    copy = make_copy(tmp_path / "copy-0")
    sync.sync_up(copy, remote)
    mirror = tmp_path / "mirror"
    sync.sync_down(remote, mirror, include=lambda rel: rel.endswith(("summary.json", "metrics.jsonl")))
    assert set(tree(mirror)) == {"summary.json", "metrics.jsonl"}


def test_an_empty_or_missing_remote_directory_syncs_to_nothing(remote: str, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "summary.json").parent.mkdir(parents=True)
    (mirror / "summary.json").write_text("{}")
    assert sync.sync_down(remote, mirror) == sync.SyncStats()
    assert set(tree(mirror)) == {"summary.json"}  # an empty remote never empties a mirror


# -- trouble -------------------------------------------------------------------------------------------------------


def _service_account_file(path: Path, token_uri: str) -> Path:
    """A well-formed service-account key whose token endpoint refuses it."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "rlkube-test", "private_key_id": "0", "private_key": pem,
        "client_email": "trainer@rlkube-test.iam.gserviceaccount.com", "client_id": "0", "token_uri": token_uri}))
    return path


@pytest.mark.parametrize("case", ["bad credentials", "missing bucket", "unreachable endpoint"])
def test_storage_trouble_is_one_line_and_leaves_local_files_alone(
        case: str, server: StorageServer, remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy, mirror, pod = make_copy(tmp_path / "copy-0"), tmp_path / "mirror", tmp_path / "new-pod"
    sync.sync_up(copy, remote)
    sync.sync_down(remote, mirror)
    with open(copy / EVENTS, "ab") as handle:
        handle.write(b"more")  # something to upload
    before = snapshot(copy), snapshot(mirror)

    url, expected = remote, ""
    with contextlib.ExitStack() as stack:
        if case == "bad credentials":
            expected = "access denied"
            if server.scheme == "s3":
                stack.enter_context(server.enforcing_auth())  # moto's IAM knows no keys: ours is refused
            else:
                key_file = _service_account_file(tmp_path / "key.json", f"{server.endpoint}/token")
                monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        elif case == "missing bucket":
            url, expected = remote.replace(remote.split("/")[2], "rlkube-no-such-bucket"), "does not exist"
        else:
            expected = "cannot reach"
            dead = "http://127.0.0.1:9"  # discard port: nothing listens
            for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST"):
                if name in server.env:
                    monkeypatch.setenv(name, dead)
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's default retries would take ~6 s per call
        for call in (lambda: sync.sync_up(copy, url), lambda: sync.sync_down(url, mirror),
                     lambda: sync.pull_latest_checkpoint(url, pod)):
            with pytest.raises(UserError) as raised:
                call()
            message = str(raised.value)
            assert "\n" not in message
            assert message.startswith(url)
            assert expected in message
    assert (snapshot(copy), snapshot(mirror)) == before
    assert not pod.exists()


def test_unsupported_urls_are_user_errors() -> None:
    assert filesystems.is_remote("gs://bucket/run")
    assert filesystems.is_remote("s3://bucket")
    assert not filesystems.is_remote("/data/runs")
    assert not filesystems.is_remote("hdfs://nn/runs")
    for url in ("hdfs://nn/runs", "az://container/runs", "s3://"):
        with pytest.raises(UserError, match="storage URL"):
            filesystems.open_filesystem(url)
    with pytest.raises(UserError, match=r"unsupported storage URL hdfs://nn/runs"):
        sync.sync_up(Path("."), "hdfs://nn/runs")
