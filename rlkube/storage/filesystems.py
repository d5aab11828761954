"""Bucket URLs (gs://, s3://) and their filesystems, through fsspec (gcsfs, s3fs); never TensorFlow's gfile.

Also where rlkube keeps things locally: its cache, and the local mirror a run directory in a bucket is worked on in.
"""

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from rlkube.errors import UserError, refuse_credentials

SCHEMES = ("gs", "s3")
# What GCS and S3 allow in a bucket's name (both lowercase only; capitals are let through for the placeholder
# BUCKET in the shipped profiles, which the cloud refuses itself).
_BUCKET_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")

# The variables a filesystem instance depends on: a change makes open_filesystem build a new one.
_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CA_BUNDLE")
_GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
_FILESYSTEMS: dict[tuple, Any] = {}


def is_remote(url: str) -> bool:
    """Whether `url` names a bucket location (gs://... or s3://...) rather than a local path."""
    return isinstance(url, str) and url.split("://", 1)[0] in SCHEMES and "://" in url


def cache_root() -> Path:
    """rlkube's local cache: $RLKUBE_CACHE_DIR, else ~/.cache/rlkube."""
    return Path(os.environ.get("RLKUBE_CACHE_DIR") or Path.home() / ".cache" / "rlkube").expanduser()


# Of a bucket URL, this many characters name its local mirror, for people; a digest of the whole URL keeps apart
# the URLs they would confuse (gs://b/a/b, gs://b/a_b and gs://b/a b read alike).
MIRROR_NAME_CHARACTERS = 80


def local_mirror(remote_url: str) -> Path:
    """Where a run directory in a bucket is worked on locally: <cache>/runs/<url with odd characters as _>-<digest
    of the url>, one directory per URL."""
    url = remote_url.rstrip("/")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url)[-MIRROR_NAME_CHARACTERS:]
    return cache_root() / "runs" / f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, key prefix) of a bucket URL; UserError for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        shown = f"{scheme}://" if sep else "a local path"
        raise UserError(f"unsupported storage URL {url} ({shown}); use gs://BUCKET/PATH or s3://BUCKET/PATH")
    refuse_credentials(url, "storage URL", "the credentials in the environment (AWS_ACCESS_KEY_ID, "
                       "GOOGLE_APPLICATION_CREDENTIALS) or the identity the pods run as")
    # Not stripped before the bucket: gs:///x names no bucket, rather than bucket x.
    bucket, _, key = rest.rstrip("/").partition("/")
    if not bucket:
        raise UserError(f"storage URL {url} names no bucket; use {scheme}://BUCKET/PATH")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise UserError(f"storage URL {url}: {bucket!r} is not a bucket name (letters, digits, '-', '_' and '.', "
                        f"a letter or digit at each end); use {scheme}://BUCKET/PATH")
    return scheme, bucket, key.strip("/")


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint the environment names, if any (else AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def gcs_emulator() -> str | None:
    """The GCS emulator the environment names, if any (else Google Cloud Storage itself)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host in ("", "default"):
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


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

            endpoint = s3_endpoint()
            return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {}, **common)
        # gcsfs.GCSFileSystem may be gcsfs's experimental subclass, which asks the gRPC storage-control API for
        # each bucket's layout (hierarchical or zonal); emulators do not serve that API. The core class speaks
        # only the JSON API, which serves every bucket's objects.
        from gcsfs.core import GCSFileSystem  # noqa: PLC0415

        # gcsfs honours STORAGE_EMULATOR_HOST by itself; it is passed explicitly to fix it for this instance.
        emulator = gcs_emulator()
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


def open_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for a bucket URL and the URL's path without its scheme ("bucket/key/prefix").

    S3 uses $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL when set (S3-compatible stores, test servers), GCS uses
    $STORAGE_EMULATOR_HOST when set (with anonymous credentials unless $GOOGLE_APPLICATION_CREDENTIALS names a
    key file). Instances are reused within a process as long as those variables are unchanged. A URL that is no
    bucket URL, or a missing fsspec package, is a UserError; what the library raises while building the
    filesystem (a broken key file, say) comes as it is: rlkube.storage.errors.translated makes it one line.
    """
    scheme, bucket, key = split_url(url)
    names = _S3_ENV if scheme == "s3" else _GCS_ENV
    cache_key = (os.getpid(), scheme, *(os.environ.get(name) for name in names))
    fs = _FILESYSTEMS.get(cache_key)
    if fs is None:
        fs = _FILESYSTEMS[cache_key] = _new_filesystem(scheme, url)
    return fs, f"{bucket}/{key}" if key else bucket


def filesystem_for(location: str | Path) -> tuple[Any, str]:
    """The fsspec filesystem and path for a run directory wherever it is: a bucket URL, or a local path."""
    if is_remote(str(location)):
        return open_filesystem(str(location))
    import fsspec  # noqa: PLC0415

    return fsspec.filesystem("file"), str(Path(location).absolute())
