"""Run directories in buckets (gs://, s3://), through fsspec (gcsfs, s3fs); never TensorFlow's gfile.

A copy always works in a local directory; `sync_up` mirrors it to its bucket, `sync_down` mirrors a bucket's
copy into a local cache incrementally, and `pull_latest_checkpoint` fetches what a fresh machine needs to resume.

Rules shared by the writer and every reader:

* A checkpoint `checkpoints/ckpt-<step>/` counts remotely only once its `COMPLETE` marker exists and every file the
  marker lists exists with the listed size. The writer uploads the checkpoint's files first and the marker last;
  before it replaces a checkpoint that already has a marker, it deletes the marker; when it prunes one, it deletes
  the marker before the data. So a reader never sees a partial checkpoint as complete, whatever instant a sync
  dies at. (Each object PUT is atomic on S3 and GCS; the marker makes the rule hold for any number of files.)
* Hidden files and directories are never synced: `checkpoints/.tmp-*` (a save in progress), partial downloads,
  and the sync manifest `.rlkube-sync.json`.
* The manifest records, per file, which remote object (size and ETag or GCS generation) a local file (size and
  mtime in ns) is identical to, as established by the last upload or download. An unchanged file therefore costs
  nothing: a sync that finds nothing to do makes exactly one listing request and no transfer.
* Append-only logs (event files, metrics.jsonl, *.log) that grew remotely are fetched with one ranged read of the
  new bytes, plus a small overlap that must match the local tail (otherwise the remote file was truncated and
  regrown by a resume, and the whole file is fetched again).

Errors the user can cause (bad credentials, missing bucket, unreachable endpoint, unsupported scheme) raise
UserError with one line naming the URL and what to check. A failed sync changes nothing locally except for
files it already finished replacing atomically.
"""

import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rlkube.errors import UserError

SCHEMES = ("gs", "s3")
CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
MANIFEST = ".rlkube-sync.json"
PART_PREFIX = ".rlkube-part-"
# Logs that only ever grow (or are truncated back by a resume): fetched incrementally.
APPEND_ONLY = ("events.out.tfevents.*", "metrics.jsonl", "*.log")
# What a resume reads besides the checkpoint: RunLog truncates the logs back to the checkpoint's lengths.
RESUME_FILES = ("events.out.tfevents.*", "metrics.jsonl", "hparams.yaml")
# Log files a resume deletes locally are deleted remotely too; other files a fresh machine never pulled
# (videos, summaries) stay in the bucket.
MIRRORED_DELETIONS = ("events.out.tfevents.*", "metrics.jsonl")
# Bytes re-read before the new tail of a grown log, to check the local copy is still a prefix of the remote one.
VERIFY_OVERLAP = 256
# Files up to this size are fetched with one GET into memory; larger ones stream to disk (a few more requests).
SMALL_FILE = 8 * 2**20
PREFLIGHT_ATTEMPTS = 3
PREFLIGHT_TIMEOUT_S = 10.0

_CHECKPOINT_DIR = re.compile(r"^checkpoints/(ckpt-(\d+))/(.+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class SyncStats:
    """What one sync moved."""

    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    files_deleted: int = 0


# -- URLs and filesystems ----------------------------------------------------------------------------------------


def is_remote(url: str) -> bool:
    """Whether `url` names a bucket location (gs://... or s3://...) rather than a local path."""
    return isinstance(url, str) and url.split("://", 1)[0] in SCHEMES and "://" in url


def cache_root() -> Path:
    """rlkube's local cache: $RLKUBE_CACHE_DIR, else ~/.cache/rlkube."""
    return Path(os.environ.get("RLKUBE_CACHE_DIR") or Path.home() / ".cache" / "rlkube").expanduser()


def local_mirror(remote_url: str) -> Path:
    """Where a run directory in a bucket is worked on locally: <cache>/runs/<url with odd characters as _>."""
    return cache_root() / "runs" / re.sub(r"[^A-Za-z0-9._-]+", "_", remote_url.rstrip("/"))


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, key prefix) of a bucket URL; UserError for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        shown = f"{scheme}://" if sep else "a local path"
        raise UserError(f"unsupported storage URL {url} ({shown}); use gs://BUCKET/PATH or s3://BUCKET/PATH")
    bucket, _, key = rest.strip("/").partition("/")
    if not bucket:
        raise UserError(f"storage URL {url} names no bucket; use {scheme}://BUCKET/PATH")
    return scheme, bucket, key.strip("/")


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _gcs_emulator() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host in ("", "default"):
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


# The variables a filesystem instance depends on: a change makes open_filesystem build a new one.
_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CA_BUNDLE")
_GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
_FILESYSTEMS: dict[tuple, Any] = {}
_CHECKED: set[tuple] = set()


def _quiet_gcsfs_logger() -> None:
    # gcsfs logs every exhausted retry with a traceback (through logging's last-resort handler when the
    # application configured none); rlkube reports storage trouble itself, as one line.
    logger = logging.getLogger("gcsfs")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _new_filesystem(scheme: str, url: str) -> Any:
    """A fresh fsspec filesystem for `scheme`, configured from the environment, with listing caches off."""
    _quiet_gcsfs_logger()
    # Listings are never cached (use_listings_cache=False): every sync must see the bucket as it is now.
    common = {"use_listings_cache": False, "skip_instance_cache": True}
    try:
        if scheme == "s3":
            import s3fs  # noqa: PLC0415  (only bucket users pay for the import)

            endpoint = _s3_endpoint()
            return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {}, **common)
        # gcsfs.GCSFileSystem may be gcsfs's experimental subclass, which asks the gRPC storage-control API for
        # each bucket's layout (hierarchical or zonal); emulators do not serve that API. The core class speaks
        # only the JSON API, which serves every bucket's objects.
        from gcsfs.core import GCSFileSystem  # noqa: PLC0415

        # gcsfs honours STORAGE_EMULATOR_HOST by itself; it is passed explicitly to fix it for this instance.
        emulator = _gcs_emulator()
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            token = "google_default"  # fail on a broken key file instead of falling back to anonymous
        elif emulator:
            token = "anon"  # an emulator takes no credentials; looking for them would wait on a metadata server
        else:
            token = None  # gcsfs's chain: application-default credentials, gcloud, GCE metadata, anonymous
        return GCSFileSystem(token=token, endpoint_url=emulator, **common)
    except ImportError as error:
        raise UserError(f"{url} needs the Python package {error.name or scheme + 'fs'}; "
                        f"pip install {'s3fs' if scheme == 's3' else 'gcsfs'}") from None
    except Exception as error:
        translated = _user_error(url, error)
        where = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if translated is error and scheme == "gs" and where:
            translated = UserError(f"{url}: cannot use the Google credentials in GOOGLE_APPLICATION_CREDENTIALS="
                                   f"{where} ({_reason(error)}); fix that file, or unset the variable")
        raise translated from None


def open_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for a bucket URL and the URL's path without its scheme ("bucket/key/prefix").

    S3 uses $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL when set (S3-compatible stores, test servers), GCS uses
    $STORAGE_EMULATOR_HOST when set (with anonymous credentials unless $GOOGLE_APPLICATION_CREDENTIALS names a
    key file). Instances are reused within a process as long as those variables are unchanged.
    """
    scheme, bucket, key = _split(url)
    names = _S3_ENV if scheme == "s3" else _GCS_ENV
    cache_key = (os.getpid(), scheme, *(os.environ.get(name) for name in names))
    fs = _FILESYSTEMS.get(cache_key)
    if fs is None:
        fs = _FILESYSTEMS[cache_key] = _new_filesystem(scheme, url)
    return fs, f"{bucket}/{key}" if key else bucket


# -- errors --------------------------------------------------------------------------------------------------------


def _endpoint(scheme: str) -> str:
    if scheme == "s3":
        return _s3_endpoint() or "AWS S3"
    return _gcs_emulator() or "Google Cloud Storage"


def _one_line(text: object, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _reason(error: BaseException) -> str:
    """A short reason for `error`: the innermost OS-level one for connection trouble, else its message."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "reason", None) or getattr(current, "os_error", None)
        if isinstance(inner, OSError) and inner.strerror:
            return _one_line(inner.strerror, 100)
        if isinstance(current, OSError) and current.strerror and not isinstance(current, FileNotFoundError):
            return _one_line(current.strerror, 100)
        current = current.__cause__ or current.__context__
    first = error.args[0] if error.args and isinstance(error.args[0], str) else error
    return _one_line(first, 100)


def _credentials_hint(scheme: str) -> str:
    if scheme == "s3":
        return "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the machine's IAM role"
    return "GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login` or the machine's service account"


def _error_names(error: BaseException) -> set[str]:
    """Class names of `error` and of the errors it was raised from (libraries wrap each other's errors)."""
    names: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names |= {cls.__name__ for cls in type(current).__mro__}
        current = current.__cause__ or current.__context__
    return names


_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError",
                "ClientConnectorError", "ServerTimeoutError", "ServerDisconnectedError", "ConnectionRefusedError",
                "ConnectionResetError", "gaierror", "URLError", "TimeoutError", "timeout"}
_NO_ACCESS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "InvalidConfigError",
              "ProfileNotFound", "DefaultCredentialsError", "RefreshError", "NonRetryableError", "PermissionError"}


def _user_error(url: str, error: BaseException, listing: bool = False) -> Exception:
    """UserError for trouble the user can fix; otherwise `error` itself (a bug or a server fault)."""
    scheme, bucket, _ = _split(url)
    names = _error_names(error)
    code = getattr(error, "code", None)
    if "DefaultCredentialsError" in names:
        where = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if where:
            return UserError(f"{url}: cannot use the Google credentials in GOOGLE_APPLICATION_CREDENTIALS={where} "
                             f"({_reason(error)}); fix that file, or unset the variable")
        return UserError(f"{url}: no Google credentials found; set GOOGLE_APPLICATION_CREDENTIALS or run "
                         f"`gcloud auth application-default login`")
    if names & _NO_ACCESS or code in (401, 403) or str(error).startswith("Forbidden"):
        return UserError(f"{url}: access denied ({_reason(error)}); check the credentials "
                         f"({_credentials_hint(scheme)}) and that they may list, read and write bucket {bucket}")
    if (isinstance(error, FileNotFoundError) and listing) or "NoSuchBucket" in names:
        return UserError(f"{url}: bucket {bucket} does not exist at {_endpoint(scheme)}; "
                         f"check the bucket name in the URL, or create the bucket first")
    if names & _UNREACHABLE or isinstance(error, ConnectionError):
        variable = "AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL" if scheme == "s3" else "STORAGE_EMULATOR_HOST"
        return UserError(f"{url}: cannot reach {_endpoint(scheme)} ({_reason(error)}); "
                         f"check the network and, if set, {variable}")
    if names & {"InvalidBucketName", "ParamValidationError"}:
        return UserError(f"{url}: {bucket} is not a valid bucket name; check the URL")
    return error if isinstance(error, Exception) else RuntimeError(str(error))


@contextlib.contextmanager
def _translated(url: str, listing: bool = False) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        translated = _user_error(url, error, listing)
        if translated is error:
            raise
        raise translated from None


def _http_reason(error: urllib.error.HTTPError) -> str:
    reason = error.read()[:2000].decode(errors="replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        reason = json.loads(reason)["error"]["message"]
    return reason or str(error.reason)


def _preflight_gcs(fs: Any, url: str, bucket: str, prefix: str) -> None:
    """One quick listing request without gcsfs's retries (about a minute on a dead endpoint), once per process.

    Classifies the answer itself: 404 missing bucket, 401/403 credentials, no connection unreachable.
    """
    query = urllib.parse.urlencode({"maxResults": 1, "prefix": prefix})
    request_url = f"{fs.base}b/{urllib.parse.quote(bucket, safe='')}/o?{query}"
    headers: dict[str, str] = {}
    with _translated(url):
        fs.credentials.apply(headers)  # refreshes a token first: bad credentials fail here
    for attempt in range(PREFLIGHT_ATTEMPTS):
        try:
            with urllib.request.urlopen(urllib.request.Request(request_url, headers=headers),
                                        timeout=PREFLIGHT_TIMEOUT_S):
                return
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise _user_error(url, FileNotFoundError(bucket), listing=True) from None
            if error.code in (401, 403):
                raise UserError(f"{url}: access denied (HTTP {error.code}: {_one_line(_http_reason(error), 100)}); "
                                f"check the credentials ({_credentials_hint('gs')}) and that they may list, read "
                                f"and write bucket {bucket}") from None
            if error.code == 400:
                raise UserError(f"{url}: the storage service rejects bucket {bucket} (HTTP 400: "
                                f"{_one_line(_http_reason(error), 100)}); check the bucket name in the URL") from None
            return  # anything else (a 5xx): let gcsfs's own retries deal with it
        except (urllib.error.URLError, OSError) as error:
            if attempt == PREFLIGHT_ATTEMPTS - 1:
                raise _user_error(url, error) from None
            time.sleep(0.25 * (attempt + 1))


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
        self.scheme, self.bucket, self.prefix = _split(self.url)
        self.fs, self.root = open_filesystem(self.url)
        check = (os.getpid(), id(self.fs), self.bucket)
        if self.scheme == "gs" and check not in _CHECKED:
            _preflight_gcs(self.fs, self.url, self.bucket, f"{self.prefix}/" if self.prefix else "")
            _CHECKED.add(check)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def listing(self) -> dict[str, _RemoteFile]:
        """Every object under the directory, by path relative to it: one recursive listing."""
        with _translated(self.url, listing=True):
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
        with _translated(self.url):
            self.fs.put_file(str(local), self.path(rel))

    def write(self, rel: str, data: bytes) -> None:
        with _translated(self.url):
            self.fs.pipe_file(self.path(rel), data)

    def read(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        with _translated(self.url):
            return self.fs.cat_file(self.path(rel), start=start, end=end)

    def get(self, rel: str, local: Path) -> None:
        with _translated(self.url):
            self.fs.get_file(self.path(rel), str(local))

    def delete(self, rels: list[str]) -> None:
        with _translated(self.url):
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
    """(size, mtime_ns) of every syncable file: no hidden paths, and checkpoints only once complete locally."""
    files: dict[str, tuple[int, int]] = {}
    if not local_dir.is_dir():
        return files
    for directory, subdirectories, names in os.walk(local_dir):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(directory) / name
            rel = path.relative_to(local_dir).as_posix()
            if rel.startswith(f"{CHECKPOINTS}/"):
                match = _CHECKPOINT_DIR.match(rel)
                if not match or match.group(3) == COMPLETE_MARKER:
                    continue
                if not (local_dir / CHECKPOINTS / match.group(1) / "state.pkl").is_file():
                    continue  # not a complete checkpoint (checkpoint.py renames it into place whole)
            if (stat := _stat(path)) is not None and path.is_file():
                files[rel] = stat
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


def _checkpoints(rels: Any) -> dict[str, list[str]]:
    """Checkpoint directory name -> the relative paths of its files (markers included) among `rels`."""
    found: dict[str, list[str]] = {}
    for rel in rels:
        if match := _CHECKPOINT_DIR.match(rel):
            found.setdefault(match.group(1), []).append(rel)
    return found


def sync_up(local_dir: Path, remote_url: str) -> SyncStats:
    """Mirror a copy's run directory to `remote_url`, uploading only new or changed files.

    A file is uploaded when the remote has none, or one of another size (a log that grew, or that a resume
    truncated), or when it changed since the last sync (per the manifest; without one, when the local file is
    newer than the remote object). Logs go up before checkpoints, so a checkpoint never becomes visible ahead of
    the logs it refers to; a checkpoint becomes visible by its COMPLETE marker, written last. Remote checkpoints
    that no longer exist locally (pruned) are deleted, marker first, and so are remote event files and
    metrics.jsonl that a resume deleted locally. Nothing local is modified except the manifest.
    """
    local_dir = Path(local_dir)
    remote = _Remote(remote_url)
    theirs = remote.listing()
    manifest = _Manifest(local_dir, remote.url)
    stats = SyncStats()
    try:
        _sync_up(local_dir, remote, theirs, manifest, stats)
    finally:
        manifest.save()
    return stats


def _upload(local_dir: Path, rel: str, remote: _Remote, manifest: _Manifest, stats: SyncStats) -> int:
    path = local_dir / rel
    before = _stat(path)
    if before is None:
        return 0  # gone since the scan
    remote.put(path, rel)
    stats.files_uploaded += 1
    stats.bytes_uploaded += before[0]
    # Recorded only if the file did not change during the upload; otherwise the next sync uploads it again.
    if _stat(path) == before:
        manifest.record(rel, before, before[0], None)
    else:
        manifest.forget(rel)
    return before[0]


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


def _sync_up(local_dir: Path, remote: _Remote, theirs: dict[str, _RemoteFile], manifest: _Manifest,
             stats: SyncStats) -> None:
    ours = _local_files(local_dir)
    for rel in list(manifest.files):
        if rel not in ours:
            manifest.forget(rel)

    # 1. Everything but checkpoints.
    for rel, local in sorted(ours.items()):
        if not _CHECKPOINT_DIR.match(rel) and _needs_upload(rel, local, theirs, manifest):
            _upload(local_dir, rel, remote, manifest, stats)

    # 2. Complete local checkpoints, oldest first; each becomes visible by its marker, written last.
    local_checkpoints = _checkpoints(ours)
    remote_checkpoints = _checkpoints(theirs)
    for name in sorted(local_checkpoints, key=lambda n: int(n.removeprefix("ckpt-"))):
        marker = f"{CHECKPOINTS}/{name}/{COMPLETE_MARKER}"
        changed = [rel for rel in sorted(local_checkpoints[name]) if _needs_upload(rel, ours[rel], theirs, manifest)]
        if not changed and marker in theirs:
            continue
        if changed and marker in theirs:
            remote.delete([marker])  # it is about to change: incomplete until the new marker is written
            stats.files_deleted += 1
        sizes = {}
        for rel in sorted(local_checkpoints[name]):
            size = _upload(local_dir, rel, remote, manifest, stats) if rel in changed else ours[rel][0]
            sizes[rel.rsplit("/", 1)[1]] = size
        remote.write(marker, json.dumps({"step": int(name.removeprefix("ckpt-")), "files": sizes}).encode())
        stats.files_uploaded += 1
        # Files of this checkpoint that are not part of it any more.
        stale = [rel for rel in remote_checkpoints.get(name, [])
                 if rel != marker and rel not in local_checkpoints[name]]
        remote.delete(stale)
        stats.files_deleted += len(stale)

    # 3. Deletions: pruned checkpoints (markers first, then data), then logs a resume deleted.
    pruned = [name for name in remote_checkpoints if name not in local_checkpoints]
    markers = [f"{CHECKPOINTS}/{name}/{COMPLETE_MARKER}" for name in pruned
               if f"{CHECKPOINTS}/{name}/{COMPLETE_MARKER}" in theirs]
    remote.delete(markers)
    data = [rel for name in pruned for rel in remote_checkpoints[name] if not rel.endswith(f"/{COMPLETE_MARKER}")]
    remote.delete(data)
    logs = [rel for rel in theirs if "/" not in rel and rel not in ours and _matches(rel, MIRRORED_DELETIONS)]
    remote.delete(logs)
    stats.files_deleted += len(markers) + len(data) + len(logs)


# -- sync down -----------------------------------------------------------------------------------------------------


def _complete_checkpoints(remote: _Remote, theirs: dict[str, _RemoteFile],
                          names: list[str] | None = None) -> dict[str, list[str]]:
    """The remote checkpoints (among `names`) whose marker exists and lists files present with their sizes."""
    complete = {}
    for name in _checkpoints(theirs):
        marker = f"{CHECKPOINTS}/{name}/{COMPLETE_MARKER}"
        if (names is not None and name not in names) or marker not in theirs:
            continue
        try:
            listed = json.loads(remote.read(marker))["files"]
        except FileNotFoundError:
            continue  # deleted since the listing: being replaced or pruned
        except (ValueError, KeyError, TypeError):
            continue
        files = [f"{CHECKPOINTS}/{name}/{file}" for file in listed]
        if files and all(rel in theirs and theirs[rel].size == size
                         for rel, size in zip(files, listed.values(), strict=True)):
            complete[name] = files
    return complete


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


def _sync_checkpoint(remote: _Remote, name: str, rels: list[str], theirs: dict[str, _RemoteFile], local_dir: Path,
                     manifest: _Manifest, stats: SyncStats) -> None:
    """Download a remote checkpoint unless the local one is identical; it appears locally by one rename."""
    if all(manifest.in_sync(rel, _stat(local_dir / rel), theirs[rel]) for rel in rels):
        return
    checkpoints = local_dir / CHECKPOINTS
    temporary = checkpoints / f".tmp-pull-{name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        downloaded = []
        for rel in rels:
            if not _download(remote, rel, theirs[rel], temporary / rel.rsplit("/", 1)[1], None, stats):
                return  # pruned or replaced while we read it: leave the local checkpoints as they were
            downloaded.append(rel)
        final = checkpoints / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(temporary, final)
        for rel in downloaded:
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
    Every file is replaced atomically, so a failure leaves each local file either as it was or complete.
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
    wanted = {rel: info for rel, info in theirs.items() if not rel.startswith(f"{CHECKPOINTS}/") and include(rel)}
    for rel, info in sorted(wanted.items()):
        _sync_file(remote, rel, info, local_dir, manifest, stats)
    complete: dict[str, list[str]] = {}
    for name, rels in sorted(_checkpoints(theirs).items()):
        data = [rel for rel in rels if not rel.endswith(f"/{COMPLETE_MARKER}")]
        if not any(include(rel) for rel in data) or f"{CHECKPOINTS}/{name}/{COMPLETE_MARKER}" not in theirs:
            continue
        if data and all(manifest.in_sync(rel, _stat(local_dir / rel), theirs[rel]) for rel in data):
            complete[name] = data  # already here: no need to read its marker again
        elif verified := _complete_checkpoints(remote, theirs, [name]):
            complete[name] = verified[name]
            _sync_checkpoint(remote, name, verified[name], theirs, local_dir, manifest, stats)

    if not theirs:
        return  # nothing there (yet, or any more): never a reason to empty the local mirror
    mirrored = set(wanted) | {rel for rels in complete.values() for rel in rels}
    remote_checkpoints = _checkpoints(theirs)
    stale_checkpoints = set()
    for rel in _local_files(local_dir):
        if rel in mirrored or not include(rel):
            continue
        if match := _CHECKPOINT_DIR.match(rel):
            if match.group(1) not in remote_checkpoints:  # pruned remotely (incomplete ones are left alone)
                stale_checkpoints.add(match.group(1))
            continue
        (local_dir / rel).unlink(missing_ok=True)
        manifest.forget(rel)
        stats.files_deleted += 1
    for name in sorted(stale_checkpoints):
        shutil.rmtree(local_dir / CHECKPOINTS / name, ignore_errors=True)
        stats.files_deleted += 1


# -- resume --------------------------------------------------------------------------------------------------------


def _local_checkpoint_steps(local_dir: Path) -> list[int]:
    steps = []
    for path in (local_dir / CHECKPOINTS).glob("ckpt-*"):
        suffix = path.name.removeprefix("ckpt-")
        if suffix.isdigit() and (path / "state.pkl").is_file():
            steps.append(int(suffix))
    return steps


def pull_latest_checkpoint(remote_url: str, local_dir: Path) -> int | None:
    """Fetch the newest complete remote checkpoint and the files a resume reads, for a fresh machine.

    Downloads `checkpoints/ckpt-<step>/` (appearing locally by one rename) plus hparams.yaml, metrics.jsonl and
    the event files (incrementally, as sync_down does); the resume then truncates the logs back to the lengths
    the checkpoint recorded. Returns the step of the newest complete remote checkpoint, or None when the remote
    has none. When `local_dir` already holds that step or a newer one, nothing is downloaded: the local
    directory is level with or ahead of the bucket and its logs must not be replaced.
    """
    local_dir = Path(local_dir)
    remote = _Remote(remote_url)
    theirs = remote.listing()
    by_step = sorted(_checkpoints(theirs), key=lambda n: int(n.removeprefix("ckpt-")), reverse=True)
    newest = None
    for name in by_step:
        if complete := _complete_checkpoints(remote, theirs, [name]):
            newest = name, complete[name]
            break
    if newest is None:
        return None
    name, rels = newest
    step = int(name.removeprefix("ckpt-"))
    if any(local_step >= step for local_step in _local_checkpoint_steps(local_dir)):
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
        _sync_checkpoint(remote, name, rels, theirs, local_dir, manifest, stats)
    finally:
        manifest.save()
    return step


__all__ = ["SyncStats", "cache_root", "is_remote", "local_mirror", "open_filesystem", "pull_latest_checkpoint",
           "sync_down", "sync_up"]
