"""A real PostgreSQL server on loopback for tests, no mocks: the sweep keeps its Optuna study in one.

`postgres_server()` runs initdb into a scratch directory, starts `postgres` on 127.0.0.1 and a free port (its Unix
socket in the scratch directory too), creates the database `rlkube`, and yields a `PostgresServer`. Afterwards it
shuts the server down by its pid and removes the directory. The server comes from Debian's `postgresql` package,
which tools/testdb/build.sh installs as root.

PostgreSQL refuses to run as root. As root, therefore, the server runs as the `postgres` system user (the package
creates it), and that user owns the scratch directory. That is also why the directory is not pytest's tmp_path:
pytest makes /tmp/pytest-of-root readable by root alone.
"""

import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tools" / "testdb" / "build.sh"
DATABASE = "rlkube"
SUPERUSER = "rlkube"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3000


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgresql://rlkube@127.0.0.1:PORT/rlkube: trust authentication, so no password
    port: int
    pid: int  # the postmaster's
    data_dir: Path
    log_path: Path


class ServerExited(RuntimeError):
    """The server ended before it accepted a connection (e.g. its port was taken meanwhile)."""


@functools.cache
def postgres_bin_dir() -> Path | None:
    """The directory of initdb and postgres (tools/testdb/build.sh installs them as root); None if not installed."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed:\n{result.stderr[-LOG_TAIL_CHARS:]}")
    lines = result.stdout.strip().splitlines()
    return Path(lines[-1]) if lines else None


def skip_without_postgres() -> None:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed, and only root can install it (apt-get install postgresql)")


def _server_account() -> pwd.struct_passwd | None:
    """Whom the server runs as: None for this process's user; the `postgres` system user when this is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("PostgreSQL refuses to run as root, and there is no `postgres` user to run it as "
                           "(Debian's postgresql package creates it)") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def _run_as(account: pwd.struct_passwd | None) -> dict[str, object]:
    """Popen's arguments that drop root to `account`. Popen execs the program itself, so its pid is the server's."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _initdb(bin_dir: Path, data_dir: Path, account: pwd.struct_passwd | None) -> None:
    # --no-sync: a test's cluster is thrown away, and fsyncs are slow on a busy disk.
    command = [str(bin_dir / "initdb"), "--pgdata", str(data_dir), "--username", SUPERUSER, "--auth", "trust",
               "--encoding", "UTF8", "--locale", "C", "--no-sync"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120,
                            cwd=data_dir.parent, **_run_as(account))
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise RuntimeError(f"initdb failed with {result.returncode}:\n{output[-LOG_TAIL_CHARS:]}")


def _connect(port: int, dbname: str) -> psycopg.Connection:
    # autocommit: CREATE DATABASE cannot run inside a transaction.
    return psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname=dbname, connect_timeout=2,
                           autocommit=True)


def _wait_until_it_accepts(process: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            _connect(port, "postgres").close()
            return
        except psycopg.OperationalError as error:
            if process.poll() is not None:
                raise ServerExited(f"postgres exited with {process.returncode}:\n{_log_tail(log_path)}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections on 127.0.0.1:{port} within "
                                   f"{START_TIMEOUT_S:.0f} s (last: {str(error).strip()}); its log ends:\n"
                                   f"{_log_tail(log_path)}") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    # SIGINT is PostgreSQL's fast shutdown: it disconnects clients (a test's pooled SQLAlchemy connections would hold
    # off SIGTERM's smart shutdown for ever) and stops cleanly, checkpoint included.
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _serve(bin_dir: Path, scratch: Path, account: pwd.struct_passwd | None, port: int) -> Iterator[int]:
    """Run postgres on 127.0.0.1:`port` until the block ends; yields its pid."""
    data_dir = scratch / "data"
    log_path = scratch / "postgres.log"
    # Durability settings off: the data is thrown away after the test, and fsyncs are slow on a busy disk.
    command = [str(bin_dir / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port), "-k", str(scratch),
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=scratch, **_run_as(account))
    try:
        _wait_until_it_accepts(process, port, log_path)
        yield process.pid
    finally:
        _stop(process)


def _create_database(port: int) -> None:
    with _connect(port, "postgres") as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster with an empty database `rlkube`, served on 127.0.0.1 until the block ends."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError(f"PostgreSQL is not installed: run {BUILD_SCRIPT} as root")
    account = _server_account()
    scratch = Path(tempfile.mkdtemp(prefix="rlkube-postgres-"))
    try:
        if account is not None:
            os.chown(scratch, account.pw_uid, account.pw_gid)
        _initdb(bin_dir, scratch / "data", account)
        # A free port can be taken between choosing it and binding it: try a few.
        for attempt in range(3):
            port = _free_port()
            stack = contextlib.ExitStack()
            try:
                pid = stack.enter_context(_serve(bin_dir, scratch, account, port))
            except ServerExited:
                if attempt == 2:
                    raise
                continue
            with stack:
                _create_database(port)
                yield PostgresServer(url=f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}", port=port, pid=pid,
                                     data_dir=scratch / "data", log_path=scratch / "postgres.log")
            return
    finally:
        shutil.rmtree(scratch)
