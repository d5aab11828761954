"""Atomic checkpoints: a checkpoint directory appears by one rename, only once it is complete.

A kill at any instant leaves either the previous checkpoints or the new one, never a partial one: the state and
then the COMPLETE marker (rlkube.rundir.layout's rule) are written and fsynced into a temporary directory, which is
renamed to `ckpt-<step>`. Leftover temporary directories from a killed save are removed on the next save.

The best evaluation's policy (`best/policy.pkl`) is one file, replaced by one rename the same way. A checkpoint
holds it too, so that a resume from before a kill rewrites the file the kill may have left ahead of it.
"""

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from rlkube.errors import UserError
from rlkube.rundir import layout

KEEP = 2


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint under `directory`, if any.

    A directory with checkpoints from before the COMPLETE marker, or whose newest checkpoint is of a format this
    rlkube does not read (layout.checkpoint_format), is refused rather than ignored: starting afresh there would
    overwrite the run's logs.
    """
    if unmarked := layout.unmarked_checkpoints(directory):
        raise UserError(f"{directory} holds checkpoints of an older rlkube ({unmarked[-1].name} has no "
                        f"{layout.COMPLETE_MARKER} marker); train into a new --output-dir, or finish this run "
                        f"with the rlkube version that started it")
    found = layout.complete_checkpoints(directory)
    if not found:
        return None
    layout.checkpoint_format(found[-1][1])
    return found[-1][1]


def has_checkpoint(copy_dir: Path) -> bool:
    """Whether the copy in `copy_dir` has a complete checkpoint to resume or test from."""
    return latest(layout.checkpoints_dir(copy_dir)) is not None


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> int:
    """Write a file through `write(handle)`, fsync it, and return its size."""
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as checkpoint `step`, then prune all but the newest few."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(layout.TEMPORARY_GLOB):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = layout.temporary_checkpoint(directory, str(step))
    temporary.mkdir()
    sizes: dict[str, int] = {}

    def write(name: str) -> bool:
        if name == layout.COMPLETE_MARKER:
            _write_synced(temporary / name, lambda handle: handle.write(layout.marker(step, sizes)))
        else:
            sizes[name] = _write_synced(temporary / name,
                                        lambda handle: pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL))
        return True

    layout.write_marker_last([layout.STATE_FILE], write)
    _fsync_dir(temporary)
    final = directory / layout.checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync_dir(directory)
    for _, old in layout.complete_checkpoints(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path) -> dict[str, Any]:
    """The state of the complete checkpoint at `path`, as saved; one line instead if this rlkube cannot read its
    format (layout.checkpoint_format says which it is)."""
    layout.checkpoint_format(path)
    with open(path / layout.STATE_FILE, "rb") as handle:
        return pickle.load(handle)


def save_best(copy_dir: Path, best: dict[str, Any]) -> None:
    """Replace the copy's best policy (its step, mean_return, std_return and acting params) in one rename."""
    path = copy_dir / layout.BEST_POLICY
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")  # hidden: never synced
    _write_synced(temporary, lambda handle: pickle.dump(best, handle, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def load_best(copy_dir: Path) -> dict[str, Any] | None:
    """The copy's best policy as save_best wrote it; None before its first evaluation."""
    path = copy_dir / layout.BEST_POLICY
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        return pickle.load(handle)
