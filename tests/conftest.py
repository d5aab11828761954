"""Shared helpers: run the real `rlkube` command in a subprocess, read TensorBoard event files."""

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def rlkube_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlkube", *args]


def run_rlkube(*args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(rlkube_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    """Every scalar tag's logged steps, across all event files in `run_dir`, in file order."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    steps: dict[str, list[int]] = defaultdict(list)
    for tag in accumulator.Tags()["scalars"]:
        steps[tag] = [event.step for event in accumulator.Scalars(tag)]
    return steps


@pytest.fixture
def quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
