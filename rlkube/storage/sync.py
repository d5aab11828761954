"""Syncing a copy's run directory with a bucket: sync_up, sync_down (incremental), pull_latest_checkpoint (resume).

A copy always works in a local directory; `sync_up` mirrors it to its bucket, `sync_down` mirrors a bucket's
copy into a local cache incrementally, and `pull_latest_checkpoint` fetches what a fresh machine needs to resume.

Rules shared by the writer and every reader:

* A checkpoint `checkpoints/ckpt-<step>/` counts only once it is complete by rlkube.rundir.layout's one rule, the
  same on a disk and in a bucket: its `COMPLETE` marker exists and every file the marker lists exists with the
  listed size. A local save writes the marker last before the checkpoint appears by one rename; the writer here
  uploads the checkpoint's files first and its marker last, and before it replaces a checkpoint that already has
  a marker, it deletes the marker (both through layout.write_marker_last); when it prunes one, it deletes the
  marker before the data. So a reader never sees a partial checkpoint as complete, whatever instant a sync dies
  at. (Each object PUT is atomic on S3 and GCS; the marker makes the rule hold for any number of files.) A
  download writes the marker last too, into a temporary directory that appears by one rename.
* A checkpoint's segments (`checkpoints/segments/`, shared between checkpoints: rlkube.rundir.checkpoint) are
  written once under a name of their own and never change: an upload or download sends only those the other side
  lacks, before the marker that lists them, and a segment that no complete checkpoint lists any more is deleted
  after the markers that listed it.
* Hidden files and directories are never synced: `checkpoints/.tmp-*` (a save in progress), partial downloads,
  and the sync manifest `.rlkube-sync.json`. Nor is the owner record (rlkube.storage.ownership), which the copy's
  writers read and write where they meet, in the bucket.
* A writer's sync first checks that it still holds the copy (`Writer.check`: a newer writer has not taken it over),
  and deletes only what it knows (the manifest's files: it uploaded them, or pulled them when it took the copy over)
  and what an older generation of the copy's writer wrote (as a checkpoint's marker and a segment's name record):
  never a newer writer's files; nor does it replace a newer writer's checkpoint. So after a takeover the newest
  writer prunes what older ones left.
* The manifest records, per file, which remote object (size and ETag or GCS generation) a local file (size and
  mtime in ns) is identical to, as established by the last upload or download. An unchanged file therefore costs
  nothing: a sync that finds nothing to do makes exactly one listing request and no transfer.
* Append-only logs (event files, metrics.jsonl, *.log) that grew remotely are fetched with one ranged read of the
  new bytes, plus a small overlap that must match the local tail (otherwise the remote file was truncated and
  regrown by a resume, and the whole file is fetched again).

Storage trouble the user can cause is one UserError line (rlkube.storage.errors). A failed sync changes nothing
locally except for files it already finished replacing atomically.
"""

import contextlib
import fnmatch
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rlkube.errors import UserError
from rlkube.rundir import layout
from rlkube.storage import errors
from rlkube.storage.filesystems import open_filesystem, split_url
from rlkube.storage.ownership import Writer

MANIFEST = ".rlkube-sync.json"
PART_PREFIX = ".rlkube-part-"
# Logs that only ever grow (or are truncated back by a resume): fetched incrementally.
APPEND_ONLY = (layout.EVENTS_GLOB, layout.METRICS_FILE, "*.log")
# What a resume reads besides the checkpoint: RunLog truncates the logs back to the checkpoint's lengths, and
# --track continues the tracker's run it names.
RESUME_FILES = (layout.EVENTS_GLOB, layout.METRICS_FILE, layout.HPARAMS_FILE, layout.TRACKING_FILE,
                layout.EXPLOIT_FILE, layout.PBT_DECISION_GLOB)
# Log files a resume deletes locally are deleted remotely too; other files a fresh machine never pulled
# (videos, summaries) stay in the bucket.
MIRRORED_DELETIONS = (layout.EVENTS_GLOB, layout.METRICS_FILE)
# Bytes re-read before the new tail of a grown log, to check the local copy is still a prefix of the remote one.
VERIFY_OVERLAP = 256
# Files up to this size are fetched with one GET into memory; larger ones stream to disk (a few more requests).
SMALL_FILE = 8 * 2**20

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class SyncStats:
    """What one sync moved."""

    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    files_deleted: int = 0


# -- remote side ---------------------------------------------------------------------------------------------------


@dataclass
class _RemoteFile:
    size: int
    version: str | None  # ETag (S3) or generation (GCS): changes whenever the object is written
    mtime_ns: int | None


def _timestamp_ns(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // timedelta(microseconds=1) * 1000
    return None


class _Remote:
    """One copy's directory in a bucket, with every call's errors translated for the user."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        scheme, _, _ = split_url(self.url)
        with errors.translated(self.url, opening=True):
            self.fs, self.root = open_filesystem(self.url)
        if scheme == "gs":
            errors.preflight_gcs(self.fs, self.url)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def listing(self) -> dict[str, _RemoteFile]:
        """Every object under the directory, by path relative to it: one recursive listing."""
        with errors.translated(self.url, listing=True):
            self.fs.invalidate_cache()
            found = self.fs.find(self.root, detail=True)
        files = {}
        for path, info in found.items():
            rel = path[len(self.root):].lstrip("/")
            if not rel or rel.endswith("/") or info.get("type", "file") != "file" or not path.startswith(self.root):
                continue
            version = info.get("generation") or info.get("ETag") or info.get("etag") or info.get("md5Hash")
            mtime = next((ns for key in ("LastModified", "mtime", "updated")
                          if (ns := _timestamp_ns(info.get(key))) is not None), None)
            files[rel] = _RemoteFile(int(info.get("size") or 0), str(version) if version else None, mtime)
        return files

    def put(self, local: Path, rel: str) -> None:
        with errors.translated(self.url):
            self.fs.put_file(str(local), self.path(rel))

    def read(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        with errors.translated(self.url):
            return self.fs.cat_file(self.path(rel), start=start, end=end)

    def get(self, rel: str, local: Path) -> None:
        with errors.translated(self.url):
            self.fs.get_file(self.path(rel), str(local))

    def delete(self, rels: list[str]) -> None:
        with errors.translated(self.url):
            if len(rels) == 1:
                self.fs.rm_file(self.path(rels[0]))
            elif rels:
                self.fs.rm([self.path(rel) for rel in rels])  # batched: one request per 1000 (S3) or 100 (GCS)


# -- local side ----------------------------------------------------------------------------------------------------


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _local_files(local_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every syncable file: no hidden paths, and of checkpoints only the complete ones'
    listed files and markers."""
    files: dict[str, tuple[int, int]] = {}
    checkpoints: dict[str, dict[str, tuple[int, int]]] = {}
    segments: dict[str, tuple[int, int]] = {}
    if not local_dir.is_dir():
        return files
    for directory, subdirectories, names in os.walk(local_dir):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in names:
            path = Path(directory) / name
            if name.startswith(".") or not path.is_file() or (stat := _stat(path)) is None:
                continue
            rel = path.relative_to(local_dir).as_posix()
            if rel == layout.OWNER_FILE:
                continue
            if not layout.in_checkpoints(rel):
                files[rel] = stat
            elif in_checkpoint := layout.split_checkpoint_path(rel):
                checkpoint, file = in_checkpoint
                checkpoints.setdefault(checkpoint, {})[file] = stat
            elif segment := layout.segment_of(rel):
                segments[segment] = stat
    segment_sizes = {name: stat[0] for name, stat in segments.items()}
    for checkpoint, found in checkpoints.items():
        listed = layout.read_marker(local_dir / layout.CHECKPOINTS / checkpoint)
        sizes = {file: stat[0] for file, stat in found.items()}
        if layout.COMPLETE_MARKER in found and layout.is_complete(sizes, listed, segment_sizes):
            for file in [*listed.files, layout.COMPLETE_MARKER]:
                files[layout.checkpoint_path(checkpoint, file)] = found[file]
            for name in listed.segments:
                files[layout.segment_path(name)] = segments[name]
    return files


class _Manifest:
    """Which local file (size, mtime_ns) is identical to which remote object (size, version); see the module doc."""

    def __init__(self, local_dir: Path, url: str) -> None:
        self.path = local_dir / MANIFEST
        self.url = url
        self.files: dict[str, dict[str, list]] = {}
        self.saved = ""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            self.saved = self.path.read_text()
            saved = json.loads(self.saved)
            if saved.get("remote") == url and isinstance(saved.get("files"), dict):
                self.files = {rel: entry for rel, entry in saved["files"].items()
                              if isinstance(entry, dict) and isinstance(entry.get("local"), list)
                              and isinstance(entry.get("remote"), list) and len(entry["remote"]) == 2}

    def in_sync(self, rel: str, local: tuple[int, int] | None, remote: _RemoteFile | None) -> bool:
        entry = self.files.get(rel)
        if not entry or local is None or remote is None or list(local) != entry["local"]:
            return False
        size, version = entry["remote"]
        if size != remote.size:
            return False
        if version is None:  # recorded at upload, before the store named the version: adopt it now
            entry["remote"] = [size, remote.version]
            return True
        return version == remote.version

    def record(self, rel: str, local: tuple[int, int] | None, remote_size: int, version: str | None) -> None:
        if local is not None:
            self.files[rel] = {"local": list(local), "remote": [remote_size, version]}

    def forget(self, rel: str) -> None:
        self.files.pop(rel, None)

    def save(self) -> None:
        """Write the manifest if it changed (atomically; a sync that changed nothing leaves it untouched)."""
        text = json.dumps({"remote": self.url, "files": self.files}, sort_keys=True)
        if text == self.saved or not self.path.parent.is_dir():
            return
        temporary = self.path.with_name(f"{MANIFEST}.{os.getpid()}")
        with contextlib.suppress(OSError):
            temporary.write_text(text)
            os.replace(temporary, self.path)
            self.saved = text


# -- sync up -------------------------------------------------------------------------------------------------------


def _checkpoints(rels: Iterable[str]) -> dict[str, list[str]]:
    """Checkpoint directory name -> the relative paths of its files (markers included) among `rels`."""
    found: dict[str, list[str]] = {}
    for rel in rels:
        if in_checkpoint := layout.split_checkpoint_path(rel):
            found.setdefault(in_checkpoint[0], []).append(rel)
    return found


def _marker_path(checkpoint: str) -> str:
    return layout.checkpoint_path(checkpoint, layout.COMPLETE_MARKER)


def _by_step(checkpoints: Iterable[str]) -> list[str]:
    return sorted(checkpoints, key=lambda name: layout.checkpoint_step(name) or 0)


def _upload_marker_last(local_dir: Path, name: str, changed: list[str], remote: _Remote, manifest: _Manifest,
                        stats: SyncStats, replacing: bool) -> bool:
    """Upload checkpoint `name`'s `changed` files and segments (paths relative to the copy), then its marker; a marker
    already `replacing` goes first, as the checkpoint is about to change. False when a file is gone since the scan
    (the marker is then not uploaded)."""

    def upload(rel: str) -> bool:
        return _upload(local_dir, _marker_path(name) if rel == layout.COMPLETE_MARKER else rel, remote, manifest,
                       stats)

    def remove_marker() -> None:
        remote.delete([_marker_path(name)])
        stats.files_deleted += 1

    return layout.write_marker_last(changed, upload, remove_marker if changed and replacing else None)


def sync_up(local_dir: Path, remote_url: str, writer: Writer | None = None) -> SyncStats:
    """Mirror a copy's run directory to `remote_url`, uploading only new or changed files; `writer`, the copy's
    writer, first checks that it still holds the copy (rlkube.storage.ownership.Superseded otherwise, with nothing
    written).

    A file is uploaded when the remote has none, or one of another size (a log that grew, or that a resume
    truncated), or when it changed since the last sync (per the manifest; without one, when the local file is
    newer than the remote object). Logs go up before checkpoints, so a checkpoint never becomes visible ahead of
    the logs it refers to; a complete local checkpoint becomes visible by its COMPLETE marker, uploaded last after
    the files it lists (an incomplete one is never uploaded). Remote checkpoints that no longer exist locally
    (pruned) are deleted, marker first, and so are remote event files and metrics.jsonl that a resume deleted
    locally, as far as this writer's generation may delete them (see the module's doc). Nothing local is modified
    except the manifest.
    """
    local_dir = Path(local_dir)
    remote = _Remote(remote_url)
    if writer is not None:
        writer.check()
    theirs = remote.listing()
    manifest = _Manifest(local_dir, remote.url)
    stats = SyncStats()
    generation = writer.generation if writer is not None else None
    try:
        _sync_up(local_dir, remote, theirs, manifest, stats, _Deletable(remote, set(manifest.files), generation))
    finally:
        manifest.save()
    return stats


def _upload(local_dir: Path, rel: str, remote: _Remote, manifest: _Manifest, stats: SyncStats) -> bool:
    """Upload one file; False when it is gone since the scan."""
    path = local_dir / rel
    before = _stat(path)
    if before is None:
        return False
    remote.put(path, rel)
    stats.files_uploaded += 1
    stats.bytes_uploaded += before[0]
    # Recorded only if the file did not change during the upload; otherwise the next sync uploads it again.
    if _stat(path) == before:
        manifest.record(rel, before, before[0], None)
    else:
        manifest.forget(rel)
    return True


def _needs_upload(rel: str, local: tuple[int, int], remote: dict[str, _RemoteFile], manifest: _Manifest) -> bool:
    theirs = remote.get(rel)
    if theirs is None or theirs.size != local[0]:
        return True
    if manifest.in_sync(rel, local, theirs):
        return False
    if rel in manifest.files:
        return True  # rewritten (same size) since the last sync, or replaced remotely by someone else
    # No record (a new machine, a lost manifest): trust timestamps. Object stores give whole seconds at worst,
    # truncated, so a local write after the upload still compares newer.
    newer = theirs.mtime_ns is None or local[1] > theirs.mtime_ns
    if not newer:
        manifest.record(rel, local, theirs.size, theirs.version)
    return newer


class _Deletable:
    """Which remote files a sync may delete: those it knows (`known`, the manifest's files before the sync), and
    those an older generation than the writer's own (`generation`; None: no writer, so none) wrote."""

    def __init__(self, remote: _Remote, known: set[str], generation: int | None) -> None:
        self.remote = remote
        self.known = known
        self.generation = generation
        self.marker_generations: dict[str, int | None] = {}

    def __call__(self, rels: Iterable[str]) -> list[str]:
        return [rel for rel in rels if rel in self.known or self._older(rel)]

    def _older(self, rel: str) -> bool:
        if self.generation is None:
            return False
        if segment := layout.segment_of(rel):
            written_by = layout.segment_generation(segment)
        elif in_checkpoint := layout.split_checkpoint_path(rel):
            written_by = self._marker_generation(in_checkpoint[0])
        else:
            written_by = None  # a log: its name says nothing of its writer
        return written_by is not None and written_by < self.generation

    def _marker_generation(self, checkpoint: str) -> int | None:
        """The generation of the remote checkpoint's writer, as its marker says (one read per checkpoint); None
        without a marker: the checkpoint may be a newer writer's, half uploaded."""
        if checkpoint not in self.marker_generations:
            try:
                marker = self.remote.read(_marker_path(checkpoint))
            except FileNotFoundError:
                marker = None
            self.marker_generations[checkpoint] = layout.marker_generation(marker) if marker is not None else None
        return self.marker_generations[checkpoint]


def _sync_up(local_dir: Path, remote: _Remote, theirs: dict[str, _RemoteFile], manifest: _Manifest,
             stats: SyncStats, deletable: _Deletable) -> None:
    ours = _local_files(local_dir)
    for rel in list(manifest.files):
        if rel not in ours:
            manifest.forget(rel)

    # 1. Everything but checkpoints.
    for rel, local in sorted(ours.items()):
        if not layout.in_checkpoints(rel) and _needs_upload(rel, local, theirs, manifest):
            _upload(local_dir, rel, remote, manifest, stats)

    # 2. Complete local checkpoints, oldest first: the files, then the local marker, which makes each visible.
    local_checkpoints = _checkpoints(ours)
    remote_checkpoints = _checkpoints(theirs)
    sent: set[str] = set()  # segments uploaded for an older checkpoint, which a newer one lists too
    for name in _by_step(local_checkpoints):
        marker = _marker_path(name)
        listed = layout.read_marker(local_dir / layout.CHECKPOINTS / name)
        segments = [layout.segment_path(segment) for segment in listed.segments] if listed else []
        changed = [rel for rel in [*segments, *sorted(local_checkpoints[name])]
                   if rel != marker and rel not in sent and _needs_upload(rel, ours[rel], theirs, manifest)]
        if not changed and not _needs_upload(marker, ours[marker], theirs, manifest):
            continue
        if marker in theirs and not deletable([marker]):
            continue  # a newer writer's checkpoint of this step: never replaced
        uploaded = _upload_marker_last(local_dir, name, changed, remote, manifest, stats, replacing=marker in theirs)
        sent.update(changed)
        if not uploaded:
            continue  # pruned since the scan: without its marker the remote copy never counts, and goes next sync
        # Files of this checkpoint that are not part of it any more.
        stale = deletable(rel for rel in remote_checkpoints.get(name, []) if rel not in local_checkpoints[name])
        remote.delete(stale)
        stats.files_deleted += len(stale)

    # 3. Deletions: pruned checkpoints (markers first, then data and the segments no kept checkpoint lists), then
    # logs a resume deleted.
    pruned = [name for name in remote_checkpoints if name not in local_checkpoints]
    # Which of them it may delete is decided before any marker goes: the markers say which generation wrote them.
    deleted = {name: deletable(remote_checkpoints[name]) for name in pruned}
    markers = [_marker_path(name) for name in pruned if _marker_path(name) in deleted[name]]
    remote.delete(markers)
    data = [rel for name in pruned for rel in deleted[name] if rel != _marker_path(name)]
    data += deletable(rel for rel in theirs if layout.segment_of(rel) and rel not in ours)
    remote.delete(data)
    logs = deletable(rel for rel in theirs if "/" not in rel and rel not in ours and _matches(rel, MIRRORED_DELETIONS))
    remote.delete(logs)
    stats.files_deleted += len(markers) + len(data) + len(logs)


# -- sync down -----------------------------------------------------------------------------------------------------


@dataclass
class _RemoteCheckpoint:
    """A complete remote checkpoint: its listed files and segments (paths relative to the copy) and its marker, as
    read."""

    files: list[str]
    segments: list[str]
    marker_path: str
    marker: bytes


def _complete_checkpoint(remote: _Remote, theirs: dict[str, _RemoteFile], name: str,
                         rels: list[str]) -> _RemoteCheckpoint | None:
    """Remote checkpoint `name` (its files `rels`, as listed), if complete by the layout's rule; reads its marker."""
    marker_path = _marker_path(name)
    if marker_path not in theirs:
        return None
    try:
        marker = remote.read(marker_path)
    except FileNotFoundError:
        return None  # deleted since the listing: being replaced or pruned
    listed = layout.parse_marker(marker)
    sizes = {rel.rsplit("/", 1)[1]: theirs[rel].size for rel in rels}
    segment_sizes = {segment: info.size for rel, info in theirs.items() if (segment := layout.segment_of(rel))}
    if len(marker) != theirs[marker_path].size or not layout.is_complete(sizes, listed, segment_sizes):
        return None  # rewritten since the listing, or its data is not all there (yet)
    return _RemoteCheckpoint([layout.checkpoint_path(name, file) for file in listed.files],
                             [layout.segment_path(segment) for segment in listed.segments], marker_path, marker)


def _make_local_dir(local_dir: Path, url: str) -> None:
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
        probe = local_dir / f"{PART_PREFIX}probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write {local_dir} to mirror {url} into ({error.strerror or error}); "
                        f"check that directory's permissions and free space, or set RLKUBE_CACHE_DIR") from None


def _part_path(target: Path) -> Path:
    return target.with_name(f"{PART_PREFIX}{target.name}-{os.getpid()}")


def _set_mtime(path: Path, remote: _RemoteFile) -> None:
    if remote.mtime_ns is not None:
        with contextlib.suppress(OSError):
            os.utime(path, ns=(remote.mtime_ns, remote.mtime_ns))


def _download(remote: _Remote, rel: str, theirs: _RemoteFile, target: Path, manifest: _Manifest | None,
              stats: SyncStats) -> bool:
    """Fetch a whole file into `target`, atomically (a partial file first, renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(target)
    try:
        if theirs.size <= SMALL_FILE:
            part.write_bytes(remote.read(rel))
        else:
            remote.get(rel, part)
        size = part.stat().st_size
        _set_mtime(part, theirs)
        os.replace(part, target)
    except FileNotFoundError:
        return False  # deleted remotely since the listing
    finally:
        part.unlink(missing_ok=True)
    stats.files_downloaded += 1
    stats.bytes_downloaded += size
    if manifest is not None and size == theirs.size:
        manifest.record(rel, _stat(target), theirs.size, theirs.version)
    return True


def _append(remote: _Remote, rel: str, theirs: _RemoteFile, target: Path, local_size: int, manifest: _Manifest,
            stats: SyncStats) -> bool:
    """Fetch only a grown log's new bytes (one ranged read); False when the local file is not a prefix any more."""
    overlap = min(VERIFY_OVERLAP, local_size)
    try:
        data = remote.read(rel, start=local_size - overlap, end=theirs.size)
    except FileNotFoundError:
        return True  # deleted remotely since the listing: nothing to do
    stats.bytes_downloaded += len(data)
    with open(target, "rb") as handle:
        handle.seek(local_size - overlap)
        tail = handle.read(overlap)
    if len(data) != theirs.size - local_size + overlap or data[:overlap] != tail:
        return False
    with open(target, "ab") as handle:
        handle.write(data[overlap:])
    _set_mtime(target, theirs)
    stats.files_downloaded += 1
    manifest.record(rel, _stat(target), theirs.size, theirs.version)
    return True


def _sync_file(remote: _Remote, rel: str, theirs: _RemoteFile, local_dir: Path, manifest: _Manifest,
               stats: SyncStats) -> None:
    target = local_dir / rel
    local = _stat(target)
    if manifest.in_sync(rel, local, theirs):
        return
    name = rel.rsplit("/", 1)[-1]
    if (local is not None and 0 < local[0] < theirs.size and _matches(name, APPEND_ONLY)
            and _append(remote, rel, theirs, target, local[0], manifest, stats)):
        return
    _download(remote, rel, theirs, target, manifest, stats)


def _sync_checkpoint(remote: _Remote, name: str, checkpoint: _RemoteCheckpoint, theirs: dict[str, _RemoteFile],
                     local_dir: Path, manifest: _Manifest, stats: SyncStats, generation: int) -> None:
    """Download a remote checkpoint unless the local one is identical; it appears locally by one rename, with
    its marker written last, after the segments it lists that are not here yet. `generation`: the local
    directory's writer's, which names the temporary directory."""
    rels = [*checkpoint.segments, *checkpoint.files, checkpoint.marker_path]
    if all(manifest.in_sync(rel, _stat(local_dir / rel), theirs[rel]) for rel in rels):
        return
    checkpoints = local_dir / layout.CHECKPOINTS
    temporary = layout.temporary_checkpoint(checkpoints, f"pull-{name}", generation)
    shutil.rmtree(temporary, ignore_errors=True)

    def download(rel: str) -> bool:
        if layout.segment_of(rel):  # named once for good: one that is here already is the same
            return manifest.in_sync(rel, _stat(local_dir / rel), theirs[rel]) or \
                _download(remote, rel, theirs[rel], local_dir / rel, manifest, stats)
        if rel != layout.COMPLETE_MARKER:
            return _download(remote, rel, theirs[rel], temporary / rel.rsplit("/", 1)[1], None, stats)
        marker = temporary / rel
        marker.write_bytes(checkpoint.marker)  # read already, to verify the checkpoint
        _set_mtime(marker, theirs[checkpoint.marker_path])
        stats.files_downloaded += 1
        stats.bytes_downloaded += len(checkpoint.marker)
        return True

    try:
        if not layout.write_marker_last([*checkpoint.segments, *checkpoint.files], download):
            return  # pruned or replaced while we read it: leave the local checkpoints as they were
        final = checkpoints / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(temporary, final)
        for rel in rels:
            manifest.record(rel, _stat(local_dir / rel), theirs[rel].size, theirs[rel].version)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def sync_down(remote_url: str, local_dir: Path, include: Callable[[str], bool] | None = None) -> SyncStats:
    """Mirror a copy's directory from `remote_url` into `local_dir` incrementally, keeping its layout.

    `include` gets each file's path relative to the copy ("metrics.jsonl", "checkpoints/ckpt-500/state.pkl") and
    selects what to mirror; by default everything. New files are downloaded whole; a grown append-only log
    (events, metrics.jsonl, *.log) gets only its new bytes by one ranged read; a file that shrank or changed is
    downloaded again. Only complete checkpoints are fetched, each appearing locally by one rename. Local files
    (among those selected) that no longer exist remotely are deleted, unless the remote directory is empty.
    A mirror has no writer of its own (its temporaries are generation 0's). Every file is replaced atomically, so a
    failure leaves each local file either as it was or complete.
    """
    local_dir = Path(local_dir)
    remote = _Remote(remote_url)
    theirs = remote.listing()
    _make_local_dir(local_dir, remote.url)
    manifest = _Manifest(local_dir, remote.url)
    stats = SyncStats()
    try:
        _sync_down(remote, theirs, local_dir, manifest, stats, include or (lambda _: True))
    finally:
        manifest.save()
    return stats


def _sync_down(remote: _Remote, theirs: dict[str, _RemoteFile], local_dir: Path, manifest: _Manifest,
               stats: SyncStats, include: Callable[[str], bool]) -> None:
    wanted = {rel: info for rel, info in theirs.items()
              if not layout.in_checkpoints(rel) and rel != layout.OWNER_FILE and include(rel)}
    for rel, info in sorted(wanted.items()):
        _sync_file(remote, rel, info, local_dir, manifest, stats)
    complete: dict[str, list[str]] = {}
    for name, rels in sorted(_checkpoints(theirs).items()):
        if not any(include(rel) for rel in rels if rel != _marker_path(name)) or _marker_path(name) not in theirs:
            continue
        if all(manifest.in_sync(rel, _stat(local_dir / rel), theirs[rel]) for rel in rels):
            complete[name] = rels  # already here: no need to read its marker again
        elif checkpoint := _complete_checkpoint(remote, theirs, name, rels):
            complete[name] = [*checkpoint.files, checkpoint.marker_path]  # (segments: see below)
            _sync_checkpoint(remote, name, checkpoint, theirs, local_dir, manifest, stats, generation=0)

    if not theirs:
        return  # nothing there (yet, or any more): never a reason to empty the local mirror
    mirrored = set(wanted) | {rel for rels in complete.values() for rel in rels}
    remote_checkpoints = _checkpoints(theirs)
    stale_checkpoints = set()
    for rel in _local_files(local_dir):
        if rel in mirrored or not include(rel):
            continue
        if in_checkpoint := layout.split_checkpoint_path(rel):
            if in_checkpoint[0] not in remote_checkpoints:  # pruned remotely (incomplete ones are left alone)
                stale_checkpoints.add(in_checkpoint[0])
            continue
        if layout.segment_of(rel):
            continue  # a segment goes with the last local checkpoint that lists it
        (local_dir / rel).unlink(missing_ok=True)
        manifest.forget(rel)
        stats.files_deleted += 1
    for name in sorted(stale_checkpoints):
        shutil.rmtree(local_dir / layout.CHECKPOINTS / name, ignore_errors=True)
        stats.files_deleted += 1
    for garbage in layout.unlisted_segments(local_dir / layout.CHECKPOINTS) if stale_checkpoints else []:
        garbage.unlink(missing_ok=True)


# -- resume --------------------------------------------------------------------------------------------------------


def pull_latest_checkpoint(remote_url: str, local_dir: Path, generation: int = 0) -> int | None:
    """Fetch the newest complete remote checkpoint and the files a resume reads, for a fresh machine (whose writer
    is of `generation`).

    Downloads `checkpoints/ckpt-<step>/` (appearing locally by one rename) plus hparams.yaml, metrics.jsonl and
    the event files (incrementally, as sync_down does); the resume then truncates the logs back to the lengths
    the checkpoint recorded. Returns the step of the newest complete remote checkpoint, or None when the remote
    has none. When `local_dir` already holds that step or a newer one, nothing is downloaded: the local
    directory is level with or ahead of the bucket and its logs must not be replaced.
    """
    local_dir = Path(local_dir)
    remote = _Remote(remote_url)
    theirs = remote.listing()
    remote_checkpoints = _checkpoints(theirs)
    newest = None
    for name in reversed(_by_step(remote_checkpoints)):
        if checkpoint := _complete_checkpoint(remote, theirs, name, remote_checkpoints[name]):
            newest = name, checkpoint
            break
    if newest is None:
        return None
    name, checkpoint = newest
    step = layout.checkpoint_step(name)
    local_checkpoints = layout.complete_checkpoints(layout.checkpoints_dir(local_dir))
    if any(local_step >= step for local_step, _ in local_checkpoints):
        return step
    _make_local_dir(local_dir, remote.url)
    manifest = _Manifest(local_dir, remote.url)
    stats = SyncStats()
    try:
        for rel, info in sorted(theirs.items()):
            if "/" not in rel and _matches(rel, RESUME_FILES):
                _sync_file(remote, rel, info, local_dir, manifest, stats)
        for rel in _local_files(local_dir):  # logs born after that checkpoint's upload, and deleted since
            if "/" not in rel and _matches(rel, MIRRORED_DELETIONS) and rel not in theirs:
                (local_dir / rel).unlink(missing_ok=True)
                manifest.forget(rel)
        _sync_checkpoint(remote, name, checkpoint, theirs, local_dir, manifest, stats, generation)
    finally:
        manifest.save()
    return step
