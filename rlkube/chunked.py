"""Arrays in chunks of rows that remember when each chunk last changed, so that a checkpoint writes only the chunks
written since the one before it.

The replay memories (rlkube.rl.replay) mark the rows they write and hand their big arrays to their state as `Chunks`;
a checkpoint (rlkube.rundir.checkpoint) writes each chunk whose version it has not stored yet as an array file (a
segment) and hands them back to a resume as `StoredChunks`. It sits below both so that neither imports the other.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# 4096 rows of 84x84 frames are 29 MB: a periodic checkpoint rewrites at most a chunk at each end of what was added.
MAX_CHUNK_ROWS = 4096
# A smaller array is split as finely (in chunks of a power of two rows), so that a small memory spans many chunks,
# but into no chunks smaller than this: each is a file, and a file costs a write and an fsync (or a PUT) of its own.
CHUNKS_PER_ARRAY = 64
MIN_CHUNK_ROWS = 256


def chunk_rows_for(capacity: int) -> int:
    """The rows per chunk of an array of `capacity` rows."""
    return min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, 1 << (max(capacity // CHUNKS_PER_ARRAY, 1).bit_length() - 1)))


class Chunks(ABC):
    """The first `rows` rows of an array, chunk `i` holding rows [i * chunk_rows, (i + 1) * chunk_rows), with
    `versions[i]` the count of writes when the chunk last changed (equal versions: the same rows)."""

    rows: int
    chunk_rows: int
    versions: np.ndarray

    def __len__(self) -> int:
        return self.rows

    def bounds(self, index: int) -> tuple[int, int]:
        """Chunk `index`'s first row and the row after its last."""
        return index * self.chunk_rows, min((index + 1) * self.chunk_rows, self.rows)

    @property
    def count(self) -> int:
        return -(-self.rows // self.chunk_rows)

    @abstractmethod
    def chunk(self, index: int) -> np.ndarray:
        """Chunk `index`'s rows."""


@dataclass(eq=False)
class ArrayChunks(Chunks):
    """Chunks of an array in memory (`array` is its first `rows` rows: a view, not a copy)."""

    array: np.ndarray
    versions: np.ndarray
    chunk_rows: int

    @property
    def rows(self) -> int:
        return len(self.array)

    def chunk(self, index: int) -> np.ndarray:
        start, stop = self.bounds(index)
        return self.array[start:stop]


@dataclass(eq=False)
class StoredChunks(Chunks):
    """Chunks of an array as a checkpoint stored them: chunk `i` in the array file `files[i]` of `directory`, which
    the checkpoint's reader sets (the files are shared by the checkpoints of a copy, wherever it is)."""

    rows: int
    chunk_rows: int
    versions: np.ndarray
    files: list[str]
    directory: Path | None = field(default=None, compare=False)

    def chunk(self, index: int) -> np.ndarray:
        # Mapped, not read: the rows are copied once, into the memory that loads them. Never unpickled.
        return np.load(self.directory / self.files[index], mmap_mode="r", allow_pickle=False)


def copy_rows(source: Chunks | np.ndarray, target: np.ndarray) -> int:
    """Copy `source`'s rows to the start of `target`, a chunk at a time so that a stored array is never whole in
    memory besides `target`; returns how many. A plain array is how checkpoints before chunks (formats 1-2) hold it."""
    if isinstance(source, np.ndarray):
        target[: len(source)] = source
        return len(source)
    for index in range(source.count):
        start, stop = source.bounds(index)
        target[start:stop] = source.chunk(index)
    return source.rows


class ChunkVersions:
    """Which chunk of an array's rows changed when: `mark(row)` on every write counts it, and sets the row's chunk's
    version to that count."""

    def __init__(self, rows: int, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self.versions = np.zeros(-(-rows // chunk_rows), np.int64)
        self.writes = 0

    def mark(self, row: int) -> None:
        self.writes += 1
        self.versions[row // self.chunk_rows] = self.writes

    def grow(self, rows: int) -> None:
        """The array grew to `rows` rows: its new chunks were never written."""
        extra = -(-rows // self.chunk_rows) - len(self.versions)
        self.versions = np.concatenate([self.versions, np.zeros(extra, np.int64)])

    def chunks(self, array: np.ndarray, rows: int) -> ArrayChunks:
        """`array`'s first `rows` rows with the versions of their chunks, for a state."""
        return ArrayChunks(array[:rows], self.versions[: -(-rows // self.chunk_rows)].copy(), self.chunk_rows)

    def restore(self, source: Chunks | np.ndarray) -> None:
        """The versions of the rows just loaded from `source`. Rows from a plain array (an older checkpoint's, which
        stored no chunks to keep) or from chunks of another size get version 0: the next checkpoint writes them all."""
        self.versions[:] = 0
        if isinstance(source, Chunks) and source.chunk_rows == self.chunk_rows:
            self.versions[: len(source.versions)] = source.versions
        self.writes = int(self.versions.max(initial=0))
