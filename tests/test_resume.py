"""Checkpoints are atomic and resume is exact, across SIGKILL at random moments and SIGTERM."""

import json
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from rlkube.rundir import checkpoint
from tests.conftest import rlkube_command, run_rlkube, scalar_steps

TRAIN = ["train", "--hparams", "dqn_cartpole", "--train-steps", "6000", "--eval-episodes", "2",
         "--test-episodes", "1", "--hparam-override", "eval_every=1500,checkpoint_every=500,log_every=256"]


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "copy-0" / "checkpoints").glob("ckpt-*"))


def final_weights(run: Path) -> list[np.ndarray]:
    state = checkpoint.load(checkpoint.latest(run / "copy-0" / "checkpoints"))
    return state["agent"]["online"] + state["agent"]["target"]


def wait_for_checkpoint_after(run: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if run.joinpath("copy-0", "checkpoints").exists() and max(checkpoint_steps(run), default=0) > step:
            return True
        time.sleep(0.02)
    return False


def test_sigkill_at_random_moments_then_rerun_resumes_exactly(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert run_rlkube(*TRAIN, "--output-dir", str(reference)).returncode == 0

    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    last_step = 0
    while kills < 3:
        process = subprocess.Popen([*rlkube_command(*TRAIN, "--output-dir", str(run))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_checkpoint_after(run, last_step, process):
            break
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        last_step = max(checkpoint_steps(run))
    assert kills >= 2, "the run finished before it could be killed twice"

    finished = run_rlkube(*TRAIN, "--output-dir", str(run))
    assert finished.returncode == 0, finished.stderr
    assert "resumed from" in finished.stderr
    summary = json.loads((run / "copy-0" / "summary.json").read_text())
    assert summary["total_steps"] == 6000

    for tag, steps in scalar_steps(run / "copy-0").items():
        assert len(steps) == len(set(steps)), f"{tag} has duplicated steps"
        assert steps == sorted(steps), f"{tag} goes back in time"
    evaluated = [json.loads(line)["step"] for line in (run / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    assert evaluated == [1500, 3000, 4500, 6000]

    # Exact: the same weights, bit for bit, as the run that was never interrupted.
    for resumed, uninterrupted in zip(final_weights(run), final_weights(reference), strict=True):
        np.testing.assert_array_equal(resumed, uninterrupted)
    assert scalar_steps(run / "copy-0") == scalar_steps(reference / "copy-0")


def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(rlkube_command(*TRAIN, "--output-dir", str(run)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_checkpoint_after(run, 0, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "checkpoint saved" in stderr
    assert "Traceback" not in stderr
    stopped_at = max(checkpoint_steps(run))
    assert 0 < stopped_at < 6000
    resumed = run_rlkube(*TRAIN, "--output-dir", str(run))
    assert f"at step {stopped_at}" in resumed.stderr


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint.save(tmp_path, 100, {"step": 100})

    def dies_midway(_state: object, handle: object, **_: object) -> None:
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pickle, "dump", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 200, {"step": 200})
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "ckpt-100"
    assert checkpoint.load(checkpoint.latest(tmp_path)) == {"step": 100}
    checkpoint.save(tmp_path, 300, {"step": 300})
    assert not list(tmp_path.glob(".tmp-*")), "leftovers of the killed save are cleaned up"


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {"step": step})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-3", "ckpt-4"]


def test_resuming_with_other_hparams_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    short = [*TRAIN[:4], "600", *TRAIN[5:]]
    assert run_rlkube(*short, "--output-dir", str(run)).returncode == 0
    changed = "eval_every=1500,checkpoint_every=500,log_every=256,lr=0.01"
    other = run_rlkube(*short[:-1], changed, "--output-dir", str(run))
    assert other.returncode == 2
    assert "holds a run with other hparams (lr: 0.0023 -> 0.01)" in other.stderr
