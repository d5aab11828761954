"""Atomic checkpoints: a checkpoint directory appears by one rename, only once it is complete.

A kill at any instant leaves either the previous checkpoints or the new one, never a partial one: the state and
then the COMPLETE marker (rlkube.rundir.layout's rule) are written and fsynced into a temporary directory, which is
renamed to `ckpt-<step>`. Leftover temporary directories from a killed save are removed on the next save, as long
as an older generation of the copy's writer, or this one, left them: a newer writer's are its own
(rlkube.storage.ownership).

The state's `Chunks` (rlkube.chunked: a replay memory's arrays) go to segments, array files shared by checkpoints:
a save writes only the chunks whose version the newest complete checkpoint has not stored, lists those it keeps
from it, and pickles where each chunk is instead of the rows. So a periodic save writes about what the memory
gained since the last one, however big the memory. A segment no kept checkpoint lists is deleted with them.

The best evaluation's policy (`best/policy.npz`) is one file, replaced by one rename the same way. A checkpoint
holds it too, so that a resume from before a kill rewrites the file the kill may have left ahead of it.

A checkpoint's state is a pickle (the environment mid-episode, for exact resume), which runs code when it is loaded.
Its policies are also written as arrays (rlkube.rundir.policy_file), beside it: that is all --no-training reads.
"""

import os
import pickle
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rlkube.chunked import Chunks, StoredChunks
from rlkube.errors import UserError
from rlkube.rundir import layout, pickles, policy_file

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


class _Segments:
    """One save's segments: the chunks it keeps from the newest complete checkpoint, and those it writes anew."""

    def __init__(self, directory: Path, generation: int) -> None:
        self.generation = generation
        self.token = secrets.token_hex(4)  # the save's own: names never collide, not even with another copy's (PBT)
        newest = layout.complete_checkpoints(directory)[-1:]
        stored = layout.read_marker(newest[0][1]).segments if newest else {}
        self.stored = {identity: (name, size) for name, size in stored.items()
                       if (identity := layout.segment_identity(name)) is not None}
        self.listed: dict[str, int] = {}  # every segment the checkpoint needs, with its size
        self.new: dict[str, np.ndarray] = {}  # those to write, with their rows

    def pickled(self, value: Any, key: str = "") -> Any:
        """`value` with each `Chunks` in its nested dicts replaced by where its chunks are stored."""
        if isinstance(value, Chunks):
            return self._store(value, key)
        if isinstance(value, dict):
            return {name: self.pickled(item, f"{key}.{name}" if key else str(name)) for name, item in value.items()}
        return value

    def _store(self, chunks: Chunks, key: str) -> StoredChunks:
        files = []
        for index in range(chunks.count):
            start, stop = chunks.bounds(index)
            version = int(chunks.versions[index])
            if kept := self.stored.get((key, start, stop, version)):
                name, self.listed[name] = kept
            else:
                name = layout.segment_name(key, start, stop, version, self.token, self.generation)
                self.new[name] = chunks.chunk(index)
            files.append(name)
        return StoredChunks(chunks.rows, chunks.chunk_rows, chunks.versions, files)


@dataclass(frozen=True)
class Policies:
    """A checkpoint's policies as arrays and JSON: all that --no-training reads of it, so it unpickles nothing."""

    params: policy_file.Tree  # the acting params at the checkpoint's step
    metadata: dict[str, Any]  # what a test reports beside them (the runner's counters, the logs' lengths), JSON-able
    best: dict[str, Any] | None  # the best evaluation's policy so far, as save_best takes it; None before one


def _policy_files(policies: Policies | None) -> dict[str, tuple[policy_file.Tree, dict[str, Any]]]:
    """Each policy file a checkpoint holds, by name: its params and its metadata."""
    if policies is None:
        return {}
    files = {layout.CHECKPOINT_POLICY: (policies.params, policies.metadata)}
    if policies.best is not None:
        files[layout.CHECKPOINT_BEST_POLICY] = _best_file(policies.best)
    return files


def save(directory: Path, step: int, state: dict[str, Any], policies: Policies | None = None,
         generation: int = 0) -> Path:
    """Write `state` (and `policies`, as arrays) as checkpoint `step`, then prune all but the newest few (and the
    segments only they listed).

    The state's chunks are taken to descend from the newest complete checkpoint's, as a run's next save does.
    `generation` is the copy's writer's (rlkube.storage.ownership), recorded in the marker and in the names the save
    gives."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in layout.leftover_temporaries(directory, generation):
        shutil.rmtree(stale, ignore_errors=True)
    segments_dir = layout.segments_dir(directory)
    segments_dir.mkdir(exist_ok=True)
    segments = _Segments(directory, generation)
    pickled = segments.pickled(state)
    policy_files = _policy_files(policies)
    temporary = layout.temporary_checkpoint(directory, str(step), generation)
    temporary.mkdir()
    sizes: dict[str, int] = {}

    def write(name: str) -> bool:
        if name == layout.COMPLETE_MARKER:
            _fsync_dir(segments_dir)
            listing = layout.Listing(sizes, segments.listed)
            _write_synced(temporary / name, lambda handle: handle.write(layout.marker(step, listing, generation)))
        elif name == layout.STATE_FILE:
            sizes[name] = _write_synced(temporary / name,
                                        lambda handle: pickle.dump(pickled, handle, protocol=pickle.HIGHEST_PROTOCOL))
        elif name in policy_files:
            sizes[name] = _write_synced(temporary / name, lambda handle: policy_file.write(handle, *policy_files[name]))
        else:
            rows = segments.new[name]
            segments.listed[name] = _write_synced(segments_dir / name,
                                                  lambda handle: np.save(handle, rows, allow_pickle=False))
        return True

    layout.write_marker_last([*segments.new, *policy_files, layout.STATE_FILE], write)
    _fsync_dir(temporary)
    final = directory / layout.checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync_dir(directory)
    for _, old in layout.complete_checkpoints(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for garbage in layout.unlisted_segments(directory):  # the pruned checkpoints', and a killed save's
        garbage.unlink(missing_ok=True)
    return final


def _bind_segments(value: Any, segments_dir: Path) -> None:
    if isinstance(value, StoredChunks):
        value.directory = segments_dir
    elif isinstance(value, dict):
        for item in value.values():
            _bind_segments(item, segments_dir)


def load(path: Path) -> dict[str, Any]:
    """The state of the complete checkpoint at `path`, as saved, but for its chunks, which are `StoredChunks` read
    from their segments as the loading memory copies them; one line instead if this rlkube cannot read its format
    (layout.checkpoint_format says which it is)."""
    layout.checkpoint_format(path)
    with open(path / layout.STATE_FILE, "rb") as handle:
        state = pickle.load(handle)
    _bind_segments(state, layout.segments_dir(path.parent))
    return state


def policies_pickled(path: Path) -> bool:
    """Whether the complete checkpoint at `path` holds its policies only in its pickled state (formats 1-3)."""
    return layout.checkpoint_format(path) < layout.ARRAY_POLICIES_FORMAT


def load_policies(path: Path) -> Policies:
    """The policies of the complete checkpoint at `path`, from its array files alone (format 4 on: older ones hold
    them only in their pickled state, which `load` reads where rlkube.rundir.pickles allows)."""
    params, metadata = policy_file.read(path / layout.CHECKPOINT_POLICY)
    best_path = path / layout.CHECKPOINT_BEST_POLICY
    return Policies(params, metadata, _best_from_file(*policy_file.read(best_path)) if best_path.exists() else None)


def _best_file(best: dict[str, Any]) -> tuple[policy_file.Tree, dict[str, Any]]:
    """A best policy (its step, mean_return, std_return and acting params) as a policy file's params and metadata."""
    return best["params"], {key: value for key, value in best.items() if key != "params"}


def _best_from_file(params: policy_file.Tree, metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "params": params}


def save_best(copy_dir: Path, best: dict[str, Any]) -> None:
    """Replace the copy's best policy (its step, mean_return, std_return and acting params) in one rename.

    A run directory of format 3 or older, resumed, loses its pickled best policy here: the arrays replace it."""
    path = copy_dir / layout.BEST_POLICY
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")  # hidden: never synced
    _write_synced(temporary, lambda handle: policy_file.write(handle, *_best_file(best)))
    os.replace(temporary, path)
    (copy_dir / layout.PICKLED_BEST_POLICY).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def remove_best(copy_dir: Path) -> None:
    """Forget the copy's best policy: a run resumed from before its first evaluation has none."""
    for name in (layout.BEST_POLICY, layout.PICKLED_BEST_POLICY):
        (copy_dir / name).unlink(missing_ok=True)


def load_best(copy_dir: Path, allow_pickle: bool = False) -> dict[str, Any] | None:
    """The copy's best policy as save_best wrote it; None before its first evaluation. One that a run directory of
    format 3 or older holds is a pickle: it is read only as rlkube.rundir.pickles allows, saying so on stderr."""
    path = copy_dir / layout.BEST_POLICY
    if path.exists():
        return _best_from_file(*policy_file.read(path))
    pickled = copy_dir / layout.PICKLED_BEST_POLICY
    if not pickled.exists():
        return None
    if notice := pickles.pickle_notice(pickled, allow_pickle):
        print(notice, file=sys.stderr)
    with open(pickled, "rb") as handle:
        return pickle.load(handle)
