"""Real object-storage servers on loopback for tests, no mocks: moto's S3 server and fake-gcs-server (GCS).

`s3_server()` runs `python -m moto.server` (moto[server], a test dependency); `gcs_server()` runs fake-gcs-server,
built from Go modules and cached outside the repository by tools/teststorage/build.sh (or $RLKUBE_FAKE_GCS_SERVER).
Each starts on a free port, waits until it answers, yields a `StorageServer`, and stops it afterwards.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tools" / "teststorage" / "build.sh"
START_TIMEOUT_S = 30.0
_REQUEST = re.compile(r'\\?"(GET|PUT|POST|DELETE|HEAD|PATCH) (\S+) HTTP/1\.[01]\\?"')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours the log lines of non-200 answers


@dataclass
class StorageServer:
    """A running server: `env` points rlkube.storage at it (with dummy credentials); `unset` lists
    variables to remove so that a developer's own cloud configuration cannot leak into a test."""

    scheme: str  # "s3" or "gs"
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    log_path: Path
    unset: tuple[str, ...] = field(default=())

    def url(self, bucket: str, path: str = "") -> str:
        return f"{self.scheme}://{bucket}/{path}".rstrip("/")

    def fresh_bucket(self, monkeypatch: pytest.MonkeyPatch) -> str:
        """A new bucket's name, with the environment pointing rlkube at this server (and nothing else)."""
        for name in self.unset:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        bucket = f"rlkube-{uuid.uuid4().hex[:12]}"
        self.create_bucket(bucket)
        return bucket

    def create_bucket(self, name: str) -> None:
        """Create a bucket with a plain, unsigned request (both servers accept those unless told otherwise)."""
        if self.scheme == "s3":
            request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        else:
            request = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test", method="POST",
                                             data=json.dumps({"name": name}).encode(),
                                             headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def requests(self, settle_s: float = 0.3) -> list[str]:
        """Every request the server has logged so far, as "METHOD /path?query" (after letting the log settle)."""
        time.sleep(settle_s)
        text = _ANSI.sub("", self.log_path.read_text(errors="replace"))
        return [f"{m.group(1)} {m.group(2)}" for m in _REQUEST.finditer(text)]

    @contextlib.contextmanager
    def enforcing_auth(self) -> Iterator[None]:
        """S3 only: moto checks every request's credentials against its IAM (none are known) while inside."""
        if self.scheme != "s3":
            raise NotImplementedError("fake-gcs-server does not check credentials")
        self._post_moto("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post_moto("/moto-api/reset-auth", b"inf")

    def _post_moto(self, path: str, data: bytes) -> None:
        # text/plain: with a form content type moto would find the body empty.
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


class ServerExited(RuntimeError):
    """The server process ended before it answered (e.g. its port was taken meanwhile)."""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except OSError:
        return False


@contextlib.contextmanager
def _serve(command: list[str], host: str, port: int, ready_path: str, env: dict[str, str] | None = None
           ) -> Iterator[tuple[str, Path]]:
    """Run `command` (listening on `host:port`) until the block ends; yields (endpoint, log file)."""
    endpoint = f"http://{host}:{port}"
    with tempfile.TemporaryDirectory(prefix="rlkube-storage-server-") as scratch:
        log_path = Path(scratch) / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(endpoint + ready_path):
                if process.poll() is not None:
                    raise ServerExited(f"{command[0]} exited with {process.returncode}: "
                                  f"{log_path.read_text(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{' '.join(command)} did not answer within {START_TIMEOUT_S:.0f} s")
                time.sleep(0.05)
            yield endpoint, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _serve_on_free_port(make_command: Callable[[int], list[str]], ready_path: str, host: str = "127.0.0.1"
                        ) -> Iterator[tuple[str, Path]]:
    """A free port can be taken between choosing it and binding it: try a few."""
    for attempt in range(3):
        port = _free_port(host)
        stack = contextlib.ExitStack()
        try:
            endpoint, log_path = stack.enter_context(_serve(make_command(port), host, port, ready_path))
        except ServerExited:
            if attempt == 2:
                raise
            continue
        with stack:
            yield endpoint, log_path
        return


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1") -> Iterator[StorageServer]:
    """moto's standalone S3-compatible server on `host` (loopback, or an address pods can reach)."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]

    with _serve_on_free_port(command, "/moto-api/", host) as (endpoint, log_path):
        env = {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        yield StorageServer("s3", endpoint, env, log_path, unset=("AWS_PROFILE", "AWS_SESSION_TOKEN"))


def fake_gcs_server_binary() -> str:
    """$RLKUBE_FAKE_GCS_SERVER, else the one tools/teststorage/build.sh caches (building it the first time)."""
    if from_env := os.environ.get("RLKUBE_FAKE_GCS_SERVER"):
        return from_env
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed (it needs Go and the Go module proxy):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def gcs_server(root: Path | None = None) -> Iterator[StorageServer]:
    """fake-gcs-server (plain HTTP) on 127.0.0.1, its objects in memory, or with `root` in files under it (for
    objects larger than memory would hold)."""
    binary = fake_gcs_server_binary()
    backend = ["-backend", "memory"] if root is None else ["-backend", "filesystem", "-filesystem-root", str(root)]

    def command(port: int) -> list[str]:
        return [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), *backend,
                "-external-url", f"http://127.0.0.1:{port}", "-log-level", "info"]

    with _serve_on_free_port(command, "/storage/v1/b") as (endpoint, log_path):
        env = {"STORAGE_EMULATOR_HOST": endpoint}
        yield StorageServer("gs", endpoint, env, log_path, unset=("GOOGLE_APPLICATION_CREDENTIALS",))
