"""Atomic checkpoints: a checkpoint directory appears by one rename, only once it is complete.

A kill at any instant leaves either the previous checkpoints or the new one, never a partial
one: the state is written and fsynced into `.tmp-*`, then renamed to `ckpt-<step>`. Leftover
temporary directories from a killed save are removed on the next save or load.
"""

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "state.pkl"
KEEP = 2


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob("ckpt-*"):
        suffix = path.name.removeprefix("ckpt-")
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint under `directory`, if any."""
    found = _checkpoints(directory)
    return found[-1][1] if found else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as checkpoint `step`, then prune all but the newest few."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = directory / f".tmp-{step}-{os.getpid()}"
    temporary.mkdir()
    with open(temporary / STATE_FILE, "wb") as handle:
        pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    final = directory / f"ckpt-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync_dir(directory)
    for _, old in _checkpoints(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path) -> dict[str, Any]:
    with open(path / STATE_FILE, "rb") as handle:
        return pickle.load(handle)
