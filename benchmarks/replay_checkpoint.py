"""Checkpoints of a dqn_pong-shaped replay memory: bytes and seconds, whole (format 2) against segmented (format 3).

    python benchmarks/replay_checkpoint.py [--sizes 100000,1000000] [--added 120000] [--bucket s3|gcs|none]

Fills a memory of 84x84 frames stacked 4 (dqn_pong's) with synthetic frames, one new frame a transition as in play,
to each size, then times to local disk and to a bucket server on loopback (as tests/storage_servers.py starts them:
moto's S3, whose objects live in memory, or fake-gcs-server with its objects on disk, for 1M transitions):

* before: the memory pickled whole into state.pkl (what every checkpoint of format 2 wrote);
* first: the first segmented checkpoint, which writes every chunk;
* periodic: the next, after `--added` more transitions (dqn_pong's checkpoint_every, one transition a step): only
  the chunks written since. A SIGTERM just before a periodic checkpoint costs the same; one just after, `after 1k`.

1M transitions need ~7.5 GB of memory: check `free -g` first.
"""

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlkube.chunked import ArrayChunks
from rlkube.rl.replay import ReplayMemory
from rlkube.rundir import checkpoint, layout
from rlkube.storage import sync

FRAME = (84, 84)
STACK = 4
WHOLE_UPLOAD_CAP_BYTES = 2 * 10**9


def fill(memory: ReplayMemory, count: int, rng: np.random.Generator, stack: np.ndarray) -> np.ndarray:
    """`count` transitions of one long game: each next stack shifts in a new frame."""
    for step in range(count):
        next_stack = np.concatenate([stack[..., 1:], rng.integers(0, 256, (*FRAME, 1), np.uint8)], axis=-1)
        memory.add(stack, step % 6, 0.0, next_stack, 0.99)
        stack = next_stack
    return stack


def whole(state: Any) -> Any:
    """The state as format 2 pickled it: every array whole."""
    if isinstance(state, dict):
        return {key: whole(value) for key, value in state.items()}
    return state.array if isinstance(state, ArrayChunks) else state


def pickle_whole(directory: Path, state: dict[str, Any]) -> int:
    """What checkpoint.save did before segments: the whole state in one fsynced pickle."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "state.pkl", "wb") as handle:
        pickle.dump(whole(state), handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def written_bytes(path: Path, before: set[str]) -> int:
    """Bytes a save wrote: its state file and marker, and the segments the checkpoint before did not list."""
    listing = layout.read_marker(path)
    return (sum(listing.files.values()) + (path / layout.COMPLETE_MARKER).stat().st_size
            + sum(size for name, size in listing.segments.items() if name not in before))


def bucket_remote(kind: str, work: Path) -> tuple[Any, str]:
    """A bucket on a loopback server: moto's S3 (objects in memory), or fake-gcs-server with its objects in files
    (a 1M-transition replay is ~7 GB: moto holds more than twice that in memory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for its test servers
    from tests.storage_servers import gcs_server, s3_server  # noqa: PLC0415  (test helpers: only when measuring)

    if kind == "gcs":
        (work / "gcs").mkdir()
    context = s3_server() if kind == "s3" else gcs_server(work / "gcs")
    server = context.__enter__()
    for name in server.unset:
        os.environ.pop(name, None)
    os.environ.update(server.env)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    return context, server.url(bucket, "copy-0")


def measure(size: int, added: int, work: Path, remote: str | None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    memory = ReplayMemory(size, (*FRAME, STACK), np.uint8, (), np.int64, seed=0, frame_axis=-1)
    stack = rng.integers(0, 256, (*FRAME, STACK), np.uint8)
    stack = fill(memory, size, rng, stack)
    copy = work / f"size-{size}"
    checkpoints = layout.checkpoints_dir(copy)
    rows = []

    def state() -> dict[str, Any]:
        return {"agent": {"memory": {"replay": memory.state_dict()}}}

    def row(kind: str, local_bytes: int, local_s: float, up: sync.SyncStats | None, up_s: float | None) -> None:
        rows.append({"transitions": size, "checkpoint": kind, "local_MB": round(local_bytes / 1e6, 1),
                     "local_s": round(local_s, 2), "bucket_MB": round(up.bytes_uploaded / 1e6, 1) if up else None,
                     "bucket_s": round(up_s, 2) if up else None})

    def upload(directory: Path) -> tuple[sync.SyncStats | None, float | None]:
        return timed(lambda: sync.sync_up(directory, remote)) if remote else (None, None)

    before = work / f"before-{size}"
    whole_checkpoint = layout.checkpoints_dir(before) / layout.checkpoint_name(1)
    size_bytes, seconds = timed(lambda: pickle_whole(whole_checkpoint, state()))
    whole_marker = layout.marker(1, layout.Listing({"state.pkl": size_bytes}), generation=0)
    (whole_checkpoint / layout.COMPLETE_MARKER).write_bytes(whole_marker)
    # One object that large would be held in the servers' memory whole (moto held 16.6 GB for a 7.1 GB pickle, and
    # was killed for it): above the cap, the whole pickle is timed to disk only.
    upload_before = remote and size_bytes <= WHOLE_UPLOAD_CAP_BYTES
    up, up_s = timed(lambda: sync.sync_up(before, f"{remote}-before")) if upload_before else (None, None)
    row("before (whole pickle)", size_bytes, seconds, up, up_s)
    shutil.rmtree(before)

    saved: set[str] = set()
    for step, kind, more in ((1, "first segmented", 0), (2, f"periodic (+{added:,})", added),
                             (3, "SIGTERM (+1,000)", 1000)):
        stack = fill(memory, more, rng, stack)
        path, seconds = timed(lambda step=step: checkpoint.save(checkpoints, step, state()))
        local_bytes = written_bytes(path, saved)
        saved = set(layout.read_marker(path).segments)
        row(kind, local_bytes, seconds, *upload(copy))
    shutil.rmtree(copy)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated memory sizes (transitions)")
    parser.add_argument("--added", type=int, default=120_000, help="transitions between periodic checkpoints")
    parser.add_argument("--bucket", choices=("s3", "gcs", "none"), default="s3",
                        help="the bucket server to sync to as well: moto (S3), fake-gcs-server on disk, or none")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replay-checkpoint-"))
    server, remote = (None, None) if args.bucket == "none" else bucket_remote(args.bucket, work)
    try:
        for size in (int(text) for text in args.sizes.split(",")):
            for result in measure(size, args.added, work, remote):
                print(json.dumps(result), flush=True)
    finally:
        if server:
            server.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"load_average_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
