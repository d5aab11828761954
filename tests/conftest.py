"""Shared helpers: run the real `rlkube` command in a subprocess, read TensorBoard event files."""

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.db_servers import PostgresServer, postgres_server, skip_without_postgres

REPO = Path(__file__).resolve().parents[1]


def tensorflow_version() -> str:
    """The installed TensorFlow's version, read without importing it."""
    for name in ("tensorflow-cpu", "tensorflow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return "none"


# XLA's persistent compilation cache, shared by every process the tests start: dozens of short runs compile the
# same learners (about 3 s each here), and a warm suite loads them instead. Honest: XLA keys each entry by the
# fingerprint of the program it compiles, so a test runs exactly the code it would have compiled. Keyed by
# TensorFlow's version besides; set before anything imports TensorFlow (it reads TF_XLA_FLAGS once).
XLA_CACHE = Path.home() / ".cache" / "rlkube" / f"xla-tf{tensorflow_version()}"
XLA_CACHE.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={XLA_CACHE}")


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


def assert_workers_learned_cartpole(run_dirs: list[Path]) -> None:
    """Copies of dqn_cartpole trained with --num-workers learned: one reached the set's 475, each beat random play.

    Asynchronous actors make a worker run irreproducible, and one run of this set (workers or not) can sit on its
    ~100 plateau past its 50k steps: CI once saw a best evaluation of 188. Two copies make this a check of the
    workers' path rather than of one run's luck; random play scores ~22.
    """
    bests = [max(json.loads(line)["mean_return"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())
             for run_dir in run_dirs]
    assert max(bests) >= 475, f"no copy reached the set's target; best evaluation of each: {bests}"
    assert min(bests) >= 110, f"a copy did not learn; best evaluation of each: {bests}"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_helm() -> str | None:
    """$RLKUBE_HELM, else the newest helm that tools/testcluster/build.sh cached, else helm on PATH."""
    if from_env := os.environ.get("RLKUBE_HELM"):
        return from_env
    testbin = Path(os.environ.get("RLKUBE_TESTBIN", Path.home() / ".cache" / "rlkube" / "testbin"))
    # helm-<version>.tmp/ is a build in progress (build.sh renames it into place when done).
    cached = [p for p in testbin.glob("helm-*/helm") if not p.parent.name.endswith(".tmp") and os.access(p, os.X_OK)]
    if cached:
        return str(max(cached, key=_version_key))
    return shutil.which("helm")


@pytest.fixture(scope="session")
def helm() -> str:
    binary = find_helm()
    if binary is None or not os.access(binary, os.X_OK):
        pytest.fail(f"no helm binary ({binary or 'none found'}): run tools/testcluster/build.sh (it installs helm "
                    f"into ~/.cache/rlkube/testbin), or point RLKUBE_HELM at one")
    return binary


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server with an empty database `rlkube` (about 1 s to start), stopped by pid afterwards."""
    skip_without_postgres()
    with postgres_server() as server:
        yield server
