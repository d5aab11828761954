"""One writer per run directory (rlkube.storage.ownership): another experiment is refused before anything is written,
a takeover raises the generation and stops the writer it replaces, a writer removes only its own or older
generations' files, names are taken atomically in the store, and local mirrors never share a directory."""

import json
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.base import target_for
from rlkube.launch.targets.local import LocalTarget
from rlkube.run.options import EXPERIMENT_ID_ENV, TrainOptions
from rlkube.rundir import checkpoint, layout
from rlkube.storage import filesystems, ownership, sync
from tests.conftest import run_rlkube
from tests.storage_servers import StorageServer, gcs_server, s3_server


@pytest.fixture(scope="module", params=["s3", "gs"])
def server(request: pytest.FixtureRequest) -> Iterator[StorageServer]:
    with (s3_server if request.param == "s3" else gcs_server)() as running:
        yield running


@pytest.fixture
def bucket(server: StorageServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket; the environment points rlkube at its server, and the cache at the test's directory."""
    monkeypatch.setenv("RLKUBE_CACHE_DIR", str(tmp_path / "cache"))
    return server.url(server.fresh_bucket(monkeypatch))


def remote_tree(url: str) -> dict[str, bytes]:
    fs, root = filesystems.open_filesystem(url)
    return {path[len(root) + 1:]: fs.cat_file(path) for path in sorted(fs.find(root))}


def checkpoint_names(files: dict[str, bytes]) -> list[str]:
    return sorted({split[0] for rel in files if (split := layout.split_checkpoint_path(rel))})


# -- the owner record --------------------------------------------------------------------------------------------


def test_a_copy_is_taken_over_by_raising_the_generation_and_the_replaced_writer_stops(tmp_path: Path) -> None:
    first = ownership.claim(tmp_path, "exp@a1", 0)
    first.check()
    replacement = ownership.claim(tmp_path, "exp@a1", 0)
    assert (first.generation, replacement.generation) == (0, 1)
    replacement.check()
    with pytest.raises(ownership.Superseded, match=r"generation 1.*this one \(generation 0\) stops without writing"):
        first.check()


def test_two_writers_taking_over_at_once_leave_one_holding_the_copy(tmp_path: Path) -> None:
    ownership.claim(tmp_path, None, 0)
    one, other = ownership.claim(tmp_path, None, 0), ownership.claim(tmp_path, None, 0)
    other.check()
    with pytest.raises(ownership.Superseded):
        one.check()


@pytest.mark.parametrize(("owner", "writer"), [(("exp@a1", 0), ("exp@b2", 0)), (("exp@a1", 0), (None, 0)),
                                                ((None, 0), ("exp@a1", 0)), (("exp@a1", 1), ("exp@a1", 0))])
def test_another_experiment_or_copy_is_refused_in_one_line_before_anything_is_written(
        owner: tuple[str | None, int], writer: tuple[str | None, int], tmp_path: Path) -> None:
    ownership.claim(tmp_path, *owner)
    before = (tmp_path / layout.OWNER_FILE).read_bytes()
    with pytest.raises(UserError, match="one run directory has one writer") as refused:
        ownership.claim(tmp_path, *writer)
    assert "\n" not in str(refused.value)
    assert (tmp_path / layout.OWNER_FILE).read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == [layout.OWNER_FILE]


def test_a_directory_without_a_record_is_taken_by_its_first_writer(tmp_path: Path) -> None:
    checkpoint.save(tmp_path / layout.CHECKPOINTS, 100, {"weights": b"of a format-3 run"})
    assert ownership.claim(tmp_path, "exp@a1", 0).generation == 0


def test_the_pbt_controller_writes_only_where_the_owner_names_it(tmp_path: Path) -> None:
    member, other = tmp_path / "member", tmp_path / "other"
    ownership.claim(member, "pbt@a1", 0, (ownership.PBT_CONTROLLER,))
    ownership.claim(other, "pbt@a1", 1)
    ownership.check_co_writer(member, "pbt@a1", ownership.PBT_CONTROLLER)
    ownership.check_co_writer(tmp_path / "not-started", "pbt@a1", ownership.PBT_CONTROLLER)
    for location, experiment in ((other, "pbt@a1"), (member, "pbt@b2")):
        with pytest.raises(UserError, match=f"does not let {ownership.PBT_CONTROLLER}"):
            ownership.check_co_writer(location, experiment, ownership.PBT_CONTROLLER)


# -- what a writer removes -----------------------------------------------------------------------------------------


def test_a_save_removes_its_own_and_older_generations_temporaries_never_a_newer_writers(tmp_path: Path) -> None:
    checkpoints = tmp_path / layout.CHECKPOINTS
    checkpoints.mkdir()
    names = {".tmp-200-4242": "before generations", ".tmp-g0-200-4242": "older", ".tmp-g1-pull-ckpt-200-77": "own",
             ".tmp-g2-300-99": "newer"}
    for name in names:
        (checkpoints / name).mkdir()
        (checkpoints / name / layout.STATE_FILE).write_bytes(b"half a pickle")
    checkpoint.save(checkpoints, 300, {"weights": b"w"}, generation=1)
    assert sorted(path.name for path in checkpoints.glob(layout.TEMPORARY_GLOB)) == [".tmp-g2-300-99"]
    assert json.loads((checkpoints / "ckpt-300" / layout.COMPLETE_MARKER).read_text())["generation"] == 1


def test_a_stale_writer_after_a_takeover_writes_nothing_and_the_newest_prunes_what_older_ones_left(
        bucket: str, tmp_path: Path) -> None:
    remote = f"{bucket}/exp/copy-0"
    old_pod, new_pod = tmp_path / "old-pod", tmp_path / "new-pod"
    stale = ownership.claim(remote, "exp@a1", 0)
    for step in (100, 200):
        checkpoint.save(old_pod / layout.CHECKPOINTS, step, {"weights": os.urandom(1000)}, generation=stale.generation)
    sync.sync_up(old_pod, remote, stale)

    # The replacement takes over, resumes from ckpt-200 and goes on; its sync prunes the old generation's ckpt-100,
    # which it never pulled, as well as ckpt-200, which it did.
    writer = ownership.claim(remote, "exp@a1", 0)
    assert sync.pull_latest_checkpoint(remote, new_pod, writer.generation) == 200
    for step in (300, 400):
        checkpoint.save(new_pod / layout.CHECKPOINTS, step, {"weights": os.urandom(1000)}, generation=writer.generation)
    sync.sync_up(new_pod, remote, writer)
    assert checkpoint_names(remote_tree(remote)) == ["ckpt-300", "ckpt-400"]
    assert layout.OWNER_FILE not in {path.name for path in new_pod.iterdir()}  # never synced down

    # The old pod, partitioned meanwhile, checkpoints again: its sync stops before it writes anything.
    checkpoint.save(old_pod / layout.CHECKPOINTS, 300, {"weights": os.urandom(1000)}, generation=stale.generation)
    before = remote_tree(remote)
    with pytest.raises(ownership.Superseded, match="stops without writing"):
        sync.sync_up(old_pod, remote, stale)
    assert remote_tree(remote) == before
    # And a sync that slipped past its check (between the check and its writes) deletes or replaces no newer writer's
    # checkpoint: it knows only what it uploaded itself.
    sync.sync_up(old_pod, remote)
    after = remote_tree(remote)
    assert {rel: after[rel] for rel in before if layout.in_checkpoints(rel)} == \
        {rel: data for rel, data in before.items() if layout.in_checkpoints(rel)}


# -- experiments, stores and names -----------------------------------------------------------------------------------


def write_profiles(directory: Path, output: str) -> None:
    (directory / "rlkube.yaml").write_text(yaml.safe_dump({"here": {"target": "local", "output": output}}))


def test_the_same_name_from_two_stores_into_one_bucket_has_one_writer(
        bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_profiles(tmp_path, f"{bucket}/runs")
    ids = {}
    for data in ("laptop", "desktop"):
        monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / data))
        ids[data] = store.experiment_id("x")
    assert ids["laptop"] != ids["desktop"]
    # The laptop's experiment x runs: its copy holds its directory in the bucket.
    ownership.claim(f"{bucket}/runs/x/copy-0", ids["laptop"], 0)
    before = remote_tree(bucket)

    # The desktop's experiment x is refused in one line: nothing starts, nothing is written or recorded.
    spec = build_spec(get_profile("here"), TrainOptions(hparams="dqn_cartpole"), 1, name="x")
    with pytest.raises(UserError, match=f"belongs to experiment {ids['laptop']}") as refused:
        LocalTarget(get_profile("here")).submit(spec)
    assert "\n" not in str(refused.value)
    assert not store.exists("x")
    assert remote_tree(bucket) == before
    assert not (tmp_path / "cache").exists()

    # A copy of the desktop's experiment that started anyway (a pod) is refused as well, before TensorFlow loads.
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--output-dir", f"{bucket}/runs/x", "--copy-index", "0",
                        env={EXPERIMENT_ID_ENV: ids["desktop"]})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(f"error: {bucket}/runs/x/copy-0 belongs to experiment {ids['laptop']}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert remote_tree(bucket) == before


def test_two_simultaneous_local_submits_of_one_name_cannot_both_win(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    write_profiles(tmp_path, str(tmp_path / "runs"))
    started = []

    def start(_target: LocalTarget, spec: object, replacing: bool) -> tuple[object, dict]:  # noqa: ARG001
        started.append(threading.get_ident())
        return spec, {"pids": {"0": os.getpid()}, "started_by": threading.get_ident()}

    monkeypatch.setattr(LocalTarget, "_start", start)
    # Both pass the name check before either takes the name: the store alone decides.
    both_checked = threading.Barrier(2)
    take_name = store.take_name

    def take_name_together(*args: object) -> None:
        both_checked.wait(timeout=30)
        take_name(*args)

    monkeypatch.setattr(store, "take_name", take_name_together)
    spec = build_spec(get_profile("here"), TrainOptions(hparams="dqn_cartpole"), 1, name="x")
    outcomes: dict[int, str] = {}

    def submit() -> None:
        try:
            target_for(get_profile("here")).submit(spec)
            outcomes[threading.get_ident()] = "won"
        except UserError as error:
            outcomes[threading.get_ident()] = str(error)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [ident for ident, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert started == winners  # the loser started no copy
    assert [outcome for outcome in outcomes.values() if outcome != "won"] == [
        "experiment 'x' exists already; choose another --name, or --replace it"]
    assert store.get("x").backend["started_by"] == winners[0]  # and cancel stops the copies that run


def test_a_pickled_checkpoint_in_a_directory_this_writer_does_not_own_is_never_loaded(tmp_path: Path) -> None:
    copy = tmp_path / "run" / "copy-0"
    ran = tmp_path / "pickle-ran"

    class Planted:
        def __reduce__(self) -> tuple:
            return (Path.touch, (ran,))

    # Another experiment's copy, holding a checkpoint whose pickle runs code as it loads.
    ownership.claim(copy, "theirs@a1", 0)
    final = checkpoint.save(copy / layout.CHECKPOINTS, 100, {"weights": b"w"})
    (final / layout.STATE_FILE).write_bytes(pickle.dumps(Planted()))
    marker = json.loads((final / layout.COMPLETE_MARKER).read_text())
    marker["files"][layout.STATE_FILE] = (final / layout.STATE_FILE).stat().st_size
    (final / layout.COMPLETE_MARKER).write_text(json.dumps(marker))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    for args in (["--no-training"], []):
        result = run_rlkube("train", "--hparams", "dqn_cartpole", "--output-dir", str(tmp_path / "run"), *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (f"error: {copy} belongs to experiment theirs@a1 (copy 0), not to a run "
                                         f"trained by hand (rlkube train) (copy 0): one run directory has one "
                                         f"writer; choose another --name or --output-dir")
        assert not ran.exists()
        assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_bucket_urls_that_read_alike_have_local_mirrors_of_their_own(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_CACHE_DIR", str(tmp_path))
    urls = ["gs://b/a/b", "gs://b/a_b", "gs://b/a b", "s3://b/a/b"]
    mirrors = [filesystems.local_mirror(url) for url in urls]
    assert len(set(mirrors)) == len(urls)
    assert filesystems.local_mirror("gs://b/a/b/") == mirrors[0]
    assert all(mirror.parent == tmp_path / "runs" and mirror.name.startswith(("gs_b_a_b-", "s3_b_a_b-"))
               for mirror in mirrors)
