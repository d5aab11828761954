"""The run directory's one owner: the completeness rule, the progress record and lines, and old checkpoints."""

import io
import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.launch.targets.local import LocalTarget
from rlkube.run.progress import Progress
from rlkube.rundir import checkpoint, layout
from rlkube.rundir.progress_record import (
    ProgressRecord,
    evaluation_line,
    evaluations_in_log,
    last_progress,
    progress_line,
)
from tests.conftest import run_rlkube


@pytest.mark.parametrize(("sizes", "listed", "complete"), [
    ({"state.pkl": 10, "COMPLETE": 40}, {"state.pkl": 10}, True),
    ({"state.pkl": 10, "extra.bin": 3}, {"state.pkl": 10}, True),
    ({"state.pkl": 9}, {"state.pkl": 10}, False),  # a file of another size than listed
    ({}, {"state.pkl": 10}, False),  # a listed file missing
    ({"state.pkl": 10}, None, False),  # no marker
    ({"state.pkl": 10}, {}, False),  # a marker that lists nothing
])
def test_a_checkpoint_is_complete_when_its_marker_lists_files_present_at_their_sizes(
        sizes: dict[str, int], listed: dict[str, int] | None, complete: bool) -> None:
    assert layout.is_complete(sizes, None if listed is None else layout.Listing(listed), {}) is complete


def test_a_saved_checkpoint_carries_its_marker_and_a_damaged_one_does_not_count(tmp_path: Path) -> None:
    saved = checkpoint.save(tmp_path, 100, {"weights": os.urandom(1000)})
    assert saved == tmp_path / "ckpt-100"
    assert layout.read_marker(saved).files == {"state.pkl": (saved / "state.pkl").stat().st_size}
    checkpoint.save(tmp_path, 200, {"weights": os.urandom(1000)})
    with open(tmp_path / "ckpt-200" / "state.pkl", "ab") as handle:
        handle.write(b"a byte the marker does not know of")
    assert checkpoint.latest(tmp_path) == saved
    assert checkpoint.load(saved).keys() == {"weights"}
    assert layout.checkpoint_format(saved) == layout.FORMAT


@pytest.mark.parametrize(("present", "fails_at", "written"), [
    (False, None, ["a", "b", "COMPLETE"]),
    (True, None, ["-COMPLETE", "a", "b", "COMPLETE"]),  # a marker already there goes first
    (True, "b", ["-COMPLETE", "a"]),  # a file gone meanwhile: no marker, the checkpoint stays incomplete
])
def test_a_checkpoints_marker_is_removed_first_and_written_last(present: bool, fails_at: str | None,
                                                                written: list[str]) -> None:
    done: list[str] = []

    def write(name: str) -> bool:
        if name == fails_at:
            return False
        done.append(name)
        return True

    complete = layout.write_marker_last(["a", "b"], write, (lambda: done.append("-COMPLETE")) if present else None)
    assert (done, complete) == (written, fails_at is None)


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line_not_overwritten(tmp_path: Path) -> None:
    checkpoints = tmp_path / "copy-0" / "checkpoints"
    saved = checkpoint.save(checkpoints, 500, {"step": 500})
    marker = json.loads((saved / layout.COMPLETE_MARKER).read_text())
    (saved / layout.COMPLETE_MARKER).write_text(json.dumps({**marker, "format": layout.FORMAT + 1, "rlkube": "9.9"}))
    expected = (f"{saved} was written by rlkube 9.9 in run-directory format {layout.FORMAT + 1}, and this rlkube "
                f"({__version__}) reads formats {layout.OLDEST_FORMAT}-{layout.FORMAT}: upgrade rlkube, or train into "
                f"a new --output-dir")
    for read in (checkpoint.latest, lambda _: checkpoint.load(saved)):
        with pytest.raises(UserError) as refused:
            read(checkpoints)
        assert str(refused.value) == expected

    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--train-steps", "600", "--output-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {expected}"
    assert "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_checkpoints_of_an_older_rlkube_are_refused_in_one_line_not_overwritten(tmp_path: Path) -> None:
    old = tmp_path / "copy-0" / "checkpoints" / "ckpt-500"
    old.mkdir(parents=True)
    (old / "state.pkl").write_bytes(pickle.dumps({"step": 500}))
    with pytest.raises(UserError, match="no COMPLETE marker") as refused:
        checkpoint.latest(old.parent)
    assert "\n" not in str(refused.value)

    (tmp_path / "copy-0" / "metrics.jsonl").write_text('{"step": 500}\n')
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--train-steps", "600", "--output-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    assert "ckpt-500 has no COMPLETE marker" in lines[-1]
    assert "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_the_progress_record_is_kept_every_few_seconds_and_at_the_end(tmp_path: Path) -> None:
    progress = Progress(100, stream=io.StringIO(), live=False, copy_dir=tmp_path)
    assert ProgressRecord.read(tmp_path) is None
    progress.update(10, None, 1.5)
    first = ProgressRecord.read(tmp_path)
    assert (first.step, first.total_steps, first.recent_return, first.wall_seconds) == (10, 100, None, 1.5)
    progress.update(50, 12.5, 3.0)  # within RECORD_INTERVAL_S of the first: not written yet
    assert ProgressRecord.read(tmp_path) == first
    progress.close()  # a run stopped between records still leaves its newest step
    assert (ProgressRecord.read(tmp_path).step, ProgressRecord.read(tmp_path).recent_return) == (50, 12.5)
    progress.update(100, 20.0, 6.0)
    assert ProgressRecord.read(tmp_path).step == 100
    assert set(json.loads((tmp_path / "progress.json").read_text())) == {
        "step", "total_steps", "steps_per_second", "recent_return", "wall_seconds", "updated_at"}
    assert [path.name for path in tmp_path.iterdir()] == ["progress.json"]  # no temporary left behind


def test_the_local_targets_status_reads_the_progress_record(tmp_path: Path) -> None:
    record = SimpleNamespace(copies=1, output_dir=str(tmp_path), created="2026-01-01T00:00:00+00:00",
                             backend={"pids": {"0": 0}, "cancelled": False})
    copy = layout.copy_dir(tmp_path, 0)
    copy.mkdir()
    (copy / layout.TRAIN_LOG).write_text(f"{progress_line(300, 1000, 850.0, 21.0)}\n")
    (copy / layout.EXIT_FILE).write_text("0\n")
    ProgressRecord(700, 1000, 850.0, 35.5, 4.2, "2026-01-01T00:01:00+00:00").write(copy)
    status = LocalTarget().describe(record)
    assert [(c.phase, c.last_step, c.last_return) for c in status] == [("Succeeded", 700, 35.5)]


def test_pod_log_lines_are_parsed_with_the_format_they_are_written_in() -> None:
    log = "\n".join([
        "training dqn_cartpole on CartPole-v1",
        f"copy-0 | {progress_line(1200, 50000, 850.4, 35.0)}",
        f"copy-0 | {progress_line(1300, 50000, 851.0, None)}",  # no episode ended yet: no return to report
    ])
    assert progress_line(1200, 50000, 850.4, 35.0) == "step 1200/50000  850 SPS  return    35.00"
    assert last_progress(log) == (1200, 35.0)
    assert last_progress(log + "\n" + evaluation_line("eval", 5000, 181.2, 18.46)) == (5000, 181.2)
    assert evaluation_line("eval", 5000, 181.2, 18.46) == "eval at step 5000: return 181.20 ± 18.46"
    assert last_progress("resumed from ckpt-500 at step 500") == (None, None)
    # A sweep on a cluster's volume reads every evaluation from the pods' logs (the test's line is not one).
    logged = log + "\n" + "\n".join([evaluation_line("eval", 5000, 181.2, 18.456),
                                      evaluation_line("eval", 10000, -3.5, 0.0),
                                      evaluation_line("test", 10000, 499.0, 1.0)])
    assert evaluations_in_log(logged) == [{"step": 5000, "mean_return": 181.2, "std_return": 18.46},
                                          {"step": 10000, "mean_return": -3.5, "std_return": 0.0}]
