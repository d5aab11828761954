"""The local metadata store: every submitted experiment, in SQLite under the user's data directory.

It records what was submitted (resolved hparams, cluster, image, git commit, time) so `rlkube list`,
`status`, `logs`, `cancel` and `tensorboard` can find an experiment by name, even after its pods
are gone.
"""

import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkube import __version__
from rlkube.errors import UserError, unknown_name
from rlkube.launch.spec import ExperimentSpec

STORE_FILE = "experiments.db"
# The store's schema version, kept in SQLite's user_version. Bump it with any change to the tables below, and
# migrate the older version in _open_schema:
#   0  written before versions: the same tables as 1
#   1  experiments and sweeps, without experiments.creator
#   2  experiments.creator: who submitted (the cluster's user name, or this machine's); NULL for older rows
#   3  the store's own id (table `store`), which makes its experiments' ids unique across stores (given to older
#      stores on opening)
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    context TEXT,
    namespace TEXT NOT NULL,
    copies INTEGER NOT NULL,
    image TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    git_commit TEXT,
    created TEXT NOT NULL,
    spec TEXT NOT NULL,
    backend TEXT NOT NULL DEFAULT '{}',
    creator TEXT
)
"""
# The columns in Record's order.
COLUMNS = ("name, cluster, target, context, namespace, copies, image, output_dir, git_commit, created, creator, spec, "
           "backend")
# A sweep's study lives in its Optuna storage (the config too, so another machine can join it); this table
# keeps where that storage is and this machine's driver of it.
SWEEPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    storage TEXT NOT NULL,
    driver_id TEXT NOT NULL,
    driver_pid INTEGER,
    created TEXT NOT NULL
)
"""


# One row: the store's id, drawn once when the store is made (or upgraded to version 2). Two processes that make it
# at once insert one row between them.
STORE_SCHEMA = "CREATE TABLE IF NOT EXISTS store (only INTEGER PRIMARY KEY CHECK (only = 0), id TEXT NOT NULL)"


@dataclass(frozen=True)
class Record:
    name: str
    cluster: str
    target: str
    context: str | None
    namespace: str
    copies: int
    image: str
    output_dir: str
    git_commit: str | None
    created: str
    creator: str | None  # who submitted it; None if an rlkube before the store's version 2 did
    spec: ExperimentSpec
    backend: dict[str, Any]  # what the target needs to find its objects again (local: process ids)


def data_dir() -> Path:
    base = os.environ.get("RLKUBE_DATA_DIR") or Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) \
        / "rlkube"
    return Path(base)


# What to do about a store this rlkube cannot read.
_MOVE_ASIDE = "move it aside (rlkube then starts a new one), or set RLKUBE_DATA_DIR to another directory"


def _unreadable(path: Path, error: Exception) -> UserError:
    return UserError(f"{path} is not an experiment store rlkube can read ({error}); {_MOVE_ASIDE}")


def _columns(connection: sqlite3.Connection) -> set[str]:
    return {column for _, column, *_ in connection.execute("PRAGMA table_info(experiments)")}


def _open_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Make the tables, or check that the store's are of a version this rlkube reads (migrating an older one)."""
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(f"{path} was written by a newer rlkube (experiment store version {version}; rlkube "
                            f"{__version__} reads up to {SCHEMA_VERSION}): upgrade rlkube, or {_MOVE_ASIDE}")
        if version < SCHEMA_VERSION:  # a new store, or an older one to migrate: one of this version is read as is
            columns = _columns(connection)
            # Checked before anything is written, so that a store of another shape is left as it was found.
            missing = [column for column in COLUMNS.split(", ") if column != "creator" and column not in columns]
            if columns and missing:
                raise sqlite3.DatabaseError(f"no such column: {missing[0]}")
            if columns and "creator" not in columns:  # versions 0 and 1
                connection.execute("ALTER TABLE experiments ADD COLUMN creator TEXT")
            connection.execute(SCHEMA)
            connection.execute(SWEEPS_SCHEMA)
            connection.execute(STORE_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO store VALUES (0, ?)", (secrets.token_hex(4),))
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as error:
        raise _unreadable(path, error) from None


@contextmanager
def _connect(create: bool = False) -> Iterator[sqlite3.Connection]:
    """The store. Only a writer (`create`) makes it: a reader finds a store that does not exist yet empty, so that
    read-only commands and --dry-run leave no file behind."""
    directory = data_dir()
    path = directory / STORE_FILE
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path if create or path.exists() else ":memory:", timeout=10)
    except (OSError, sqlite3.Error) as error:
        raise UserError(f"cannot open the experiment store in {directory} ({error}); set RLKUBE_DATA_DIR") from None
    try:
        _open_schema(connection, path)
        with connection:
            yield connection
    except sqlite3.DatabaseError as error:  # tables of another shape: a store of another rlkube, or a damaged one
        raise _unreadable(path, error) from None
    finally:
        connection.close()


def experiment_id(name: str) -> str:
    """The id of this store's experiment `name`, which owns its copies' run directories (rlkube.storage.ownership):
    the same name submitted from another store (another machine, another RLKUBE_DATA_DIR) is another experiment."""
    with _connect(create=True) as db:
        (store_id,) = db.execute("SELECT id FROM store").fetchone()
    return f"{name}@{store_id}"


def _row(spec: ExperimentSpec, target: str, context: str | None, backend: dict[str, Any], creator: str | None) -> tuple:
    return (spec.name, spec.cluster, target, context, spec.namespace, len(spec.copies), spec.image, spec.output_dir,
            spec.provenance.git_commit, spec.provenance.created, creator, json.dumps(spec.to_dict()),
            json.dumps(backend))


def take_name(spec: ExperimentSpec, target: str, context: str | None, replace: bool, creator: str) -> None:
    """Record the experiment before its copies start, so that of two submissions of one name only one takes it
    (one INSERT: SQLite serialises them); `replace` takes it whatever holds it. Its backend comes with `save`."""
    with _connect(create=True) as db:
        try:
            db.execute(f"INSERT {'OR REPLACE ' if replace else ''}INTO experiments ({COLUMNS}) "
                       f"VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", _row(spec, target, context, {}, creator))
        except sqlite3.IntegrityError:
            raise UserError(f"experiment '{spec.name}' exists already; choose another --name, or --replace it") \
                from None


def save(spec: ExperimentSpec, target: str, context: str | None, backend: dict[str, Any], creator: str | None) -> None:
    with _connect(create=True) as db:
        db.execute(f"INSERT OR REPLACE INTO experiments ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   _row(spec, target, context, backend, creator))


def _record(row: tuple) -> Record:
    try:
        *head, spec, backend = row
        return Record(*head, spec=ExperimentSpec.from_dict(json.loads(spec)), backend=json.loads(backend))
    except (ValueError, TypeError, KeyError) as error:  # JSON errors are ValueErrors
        raise UserError(f"experiment '{row[0]}' in {data_dir() / STORE_FILE} is a record rlkube {__version__} "
                        f"cannot read ({type(error).__name__}: {error}); {_MOVE_ASIDE}") from None


def get(name: str) -> Record:
    with _connect() as db:
        row = db.execute(f"SELECT {COLUMNS} FROM experiments WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [n for (n,) in db.execute("SELECT name FROM experiments")]
            if not names:
                raise UserError(f"unknown experiment '{name}'; none submitted yet (rlkube submit ...)")
            raise unknown_name("experiment", name, names)
    return _record(row)


def get_or_latest(name: str | None) -> Record:
    """The experiment of that name; without one, the newest submitted (as `rlkube logs` alone means)."""
    if name is not None:
        return get(name)
    with _connect() as db:
        row = db.execute(f"SELECT {COLUMNS} FROM experiments ORDER BY created DESC, rowid DESC LIMIT 1").fetchone()
    if row is None:
        raise UserError("no experiments yet, so none to show; submit one first: rlkube submit --hparams dqn_cartpole")
    return _record(row)


def update_backend(name: str, backend: dict[str, Any]) -> None:
    with _connect() as db:
        db.execute("UPDATE experiments SET backend = ? WHERE name = ?", (json.dumps(backend), name))


def names() -> list[str]:
    """Every experiment's name, newest first, without reading the specs (shell completion asks on every Tab)."""
    with _connect() as db:
        return [name for (name,) in db.execute("SELECT name FROM experiments ORDER BY created DESC, rowid DESC")]


def all_records() -> list[Record]:
    with _connect() as db:
        return [_record(row) for row in db.execute(f"SELECT {COLUMNS} FROM experiments ORDER BY created DESC, name")]


def sweep_trials(sweep: str) -> list[Record]:
    """The experiments a sweep ran as its trials (<sweep>-t<n>), in trial order."""
    pattern = re.compile(rf"{re.escape(sweep)}-t(\d+)")
    found = [record for record in all_records() if pattern.fullmatch(record.name)]
    return sorted(found, key=lambda record: int(pattern.fullmatch(record.name).group(1)))


def exists(name: str) -> bool:
    with _connect() as db:
        return db.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone() is not None


def delete(name: str) -> None:
    with _connect() as db:
        db.execute("DELETE FROM experiments WHERE name = ?", (name,))


@dataclass(frozen=True)
class SweepRecord:
    name: str
    storage: str  # an Optuna storage URL, or the path of the sweep's journal file
    driver_id: str  # which of a study's trials this machine's driver owns
    driver_pid: int | None
    created: str


def save_sweep(sweep: SweepRecord) -> None:
    with _connect(create=True) as db:
        db.execute("INSERT OR REPLACE INTO sweeps VALUES (?,?,?,?,?)", (
            sweep.name, sweep.storage, sweep.driver_id, sweep.driver_pid, sweep.created))


def find_sweep(name: str) -> SweepRecord | None:
    with _connect() as db:
        row = db.execute("SELECT * FROM sweeps WHERE name = ?", (name,)).fetchone()
    try:
        return SweepRecord(*row) if row else None
    except TypeError as error:  # a row of another shape
        raise UserError(f"sweep '{name}' in {data_dir() / STORE_FILE} is a record rlkube {__version__} cannot read "
                        f"({error}); {_MOVE_ASIDE}") from None


def sweep_names() -> list[str]:
    with _connect() as db:
        return [name for (name,) in db.execute("SELECT name FROM sweeps ORDER BY created DESC")]


def get_sweep(name: str) -> SweepRecord:
    found = find_sweep(name)
    if found is None:
        started = sweep_names()
        if not started:
            raise UserError(f"unknown sweep '{name}'; none started here yet (rlkube sweep start ...), or name its "
                            f"--storage")
        raise unknown_name("sweep", name, started)
    return found
