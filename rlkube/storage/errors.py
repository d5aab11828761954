"""Storage trouble the user can fix, as one UserError line naming the URL and what to check.

Bad credentials, a missing bucket or an invalid bucket name become UserError, an unreachable endpoint TransientError
(a UserError that a pod retries); anything else (a bug, a server fault) is raised as it is. fsspec's libraries wrap each other's errors, so errors are
classified by the class names along their chain (botocore, aiohttp, google-auth, urllib) rather than by importing
them. (A URL that is no bucket URL at all is already a UserError in rlkube.storage.filesystems.)
"""

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from rlkube.errors import TransientError, UserError
from rlkube.storage.filesystems import gcs_emulator, s3_endpoint, split_url

PREFLIGHT_ATTEMPTS = 3
PREFLIGHT_TIMEOUT_S = 10.0
# (pid, filesystem, bucket) already checked by preflight_gcs.
_CHECKED: set[tuple] = set()


def _endpoint(scheme: str) -> str:
    if scheme == "s3":
        return s3_endpoint() or "AWS S3"
    return gcs_emulator() or "Google Cloud Storage"


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


def user_error(url: str, error: BaseException, listing: bool = False, opening: bool = False) -> Exception:
    """UserError for trouble the user can fix; otherwise `error` itself (a bug or a server fault).

    `listing`: the error came from listing the URL, so a missing file means a missing bucket. `opening`: it came
    from building the URL's filesystem, so on GCS with a key file named, the key file is what failed.
    """
    scheme, bucket, _ = split_url(url)
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
        return TransientError(f"{url}: cannot reach {_endpoint(scheme)} ({_reason(error)}); "
                         f"check the network and, if set, {variable}")
    if names & {"InvalidBucketName", "ParamValidationError"}:
        return UserError(f"{url}: {bucket} is not a valid bucket name; check the URL")
    where = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if opening and scheme == "gs" and where:
        return UserError(f"{url}: cannot use the Google credentials in GOOGLE_APPLICATION_CREDENTIALS={where} "
                         f"({_reason(error)}); fix that file, or unset the variable")
    return error if isinstance(error, Exception) else RuntimeError(str(error))


@contextlib.contextmanager
def translated(url: str, listing: bool = False, opening: bool = False) -> Iterator[None]:
    """Raise what the block raises as `user_error` classifies it (see there for the flags)."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        classified = user_error(url, error, listing, opening)
        if classified is error:
            raise
        raise classified from None


def _http_reason(error: urllib.error.HTTPError) -> str:
    reason = error.read()[:2000].decode(errors="replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        reason = json.loads(reason)["error"]["message"]
    return reason or str(error.reason)


def preflight_gcs(fs: Any, url: str) -> None:
    """One quick listing request without gcsfs's retries (about a minute on a dead endpoint), once per process
    and bucket, before the first real request to a gs:// URL.

    Classifies the answer itself: 404 missing bucket, 401/403 credentials, no connection unreachable.
    """
    _, bucket, key = split_url(url)
    check = (os.getpid(), id(fs), bucket)
    if check in _CHECKED:
        return
    _preflight_request(fs, url, bucket, f"{key}/" if key else "")
    _CHECKED.add(check)


def _preflight_request(fs: Any, url: str, bucket: str, prefix: str) -> None:
    query = urllib.parse.urlencode({"maxResults": 1, "prefix": prefix})
    request_url = f"{fs.base}b/{urllib.parse.quote(bucket, safe='')}/o?{query}"
    headers: dict[str, str] = {}
    with translated(url):
        fs.credentials.apply(headers)  # refreshes a token first: bad credentials fail here
    for attempt in range(PREFLIGHT_ATTEMPTS):
        try:
            with urllib.request.urlopen(urllib.request.Request(request_url, headers=headers),
                                        timeout=PREFLIGHT_TIMEOUT_S):
                return
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise user_error(url, FileNotFoundError(bucket), listing=True) from None
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
                raise user_error(url, error) from None
            time.sleep(0.25 * (attempt + 1))
