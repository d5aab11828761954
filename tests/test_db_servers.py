"""The PostgreSQL server of tests/db_servers.py: it serves, it stops cleanly, and Optuna keeps a study in it."""

import os
import socket
from pathlib import Path

import optuna
import psycopg
import pytest

from tests.db_servers import PostgresServer, postgres_server, skip_without_postgres


def _processes_working_in(directory: Path) -> list[int]:
    """Pids whose working directory is under `directory`: every PostgreSQL process works in its data directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd == directory or directory in cwd.parents:
            pids.append(int(entry.name))
    return pids


def _port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_keeps_a_table_across_connections(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE trials (number integer PRIMARY KEY, value double precision)")
        cursor.executemany("INSERT INTO trials VALUES (%s, %s)", [(0, 0.5), (1, 0.25)])

    with psycopg.connect(postgres.url) as connection:
        rows = connection.execute("SELECT number, value FROM trials ORDER BY number").fetchall()
    assert rows == [(0, 0.5), (1, 0.25)]


def test_leaving_the_server_ends_its_processes_closes_its_port_and_removes_its_files() -> None:
    skip_without_postgres()
    with postgres_server() as server:
        # A client still connected when the block ends must not hold the shutdown up.
        client = psycopg.connect(server.url)
        assert _port_accepts(server.port)
        assert server.pid in _processes_working_in(server.data_dir)

    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert _processes_working_in(server.data_dir) == []
    assert not _port_accepts(server.port)
    assert not server.data_dir.parent.exists()
    client.close()


def test_optuna_study_in_the_server_is_seen_by_a_second_load(postgres: PostgresServer) -> None:
    study = optuna.create_study(storage=postgres.url, study_name="s")
    study.optimize(lambda trial: (trial.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=3)

    loaded = optuna.load_study(study_name="s", storage=postgres.url)

    assert [trial.state for trial in loaded.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert loaded.best_value == study.best_value
