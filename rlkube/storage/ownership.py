"""One writer per copy's directory: the owner record (layout.OWNER_FILE) says whose it is and which writer holds it.

The record names the experiment (its id: the name and the store that submitted it; None for a run trained by hand
with `rlkube train`), the copy, the writer's generation and token, and the co-writers the owner lets write there too
(the PBT controller, which copies donors' checkpoints and writes decisions into its members' directories). It lives
where the copy's writers meet: the copy's directory in its bucket for a run in one, else the local directory. It is
never synced: a local mirror's copy of it would be no one's.

* A writer of another experiment is refused in one line, before it writes anything (`refuse_other_experiment`,
  which `rlkube train` and a local submission ask first, and `claim`).
* Each start of the copy takes the directory over (`claim`): generation + 1, and a token of its own. So a
  replacement pod, or a restarted local copy, holds the directory, and the writer it replaces (a pod on a partitioned
  node, say) finds a newer record before its next checkpoint or sync (`Writer.check`) and stops without writing.
  Two writers that take over at once write the same generation; the record keeps one token, and the other stops.
* A directory without a record (an rlkube before format 4 wrote it) is taken by its first writer.

Between a check and the writes it guards a stale writer may still write for a moment; what it writes then is
limited by its generation: a save removes only its own or older generations' temporaries, and a sync deletes only
what it knows or an older generation wrote (rlkube.storage.sync).
"""

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.rundir import layout
from rlkube.storage import errors, filesystems

# The co-writer name of the PBT controller (rlkube.launch.pbt), which the members' records list.
PBT_CONTROLLER = "pbt-controller"


class Superseded(Exception):
    """A newer writer holds the copy's directory: this one stops without writing. The message is one line."""


@dataclass(frozen=True)
class OwnerRecord:
    experiment: str | None  # the experiment's id; None for a run trained by hand
    copy: int
    generation: int
    token: str
    co_writers: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"experiment": self.experiment, "copy": self.copy, "generation": self.generation,
                           "writer": self.token, "co_writers": list(self.co_writers), "format": layout.FORMAT,
                           "rlkube": __version__}, indent=2) + "\n"


def _owner_path(location: str | Path) -> tuple[Any, str]:
    """The filesystem and path of the record at `location`; storage trouble (a bucket's) as one line."""
    url = str(location)
    if not filesystems.is_remote(url):
        return filesystems.filesystem_for(location)[0], str(Path(location).absolute() / layout.OWNER_FILE)
    with errors.translated(url, opening=True):
        fs, root = filesystems.open_filesystem(url)
    if url.startswith("gs://"):
        errors.preflight_gcs(fs, url)
    return fs, f"{root}/{layout.OWNER_FILE}"


@contextlib.contextmanager
def _translated(location: str | Path) -> Iterator[None]:
    """A bucket's trouble as one line (rlkube.storage.errors); a local path's as it is."""
    if filesystems.is_remote(str(location)):
        with errors.translated(str(location)):
            yield
    else:
        yield


def _experiment_shown(experiment: str | None) -> str:
    return f"experiment {experiment}" if experiment else "a run trained by hand (rlkube train)"


def read_owner(location: str | Path) -> OwnerRecord | None:
    """The copy's owner record at `location` (its bucket URL or its local path); None where there is none yet. A
    record this rlkube cannot read is one line that says what to do."""
    fs, path = _owner_path(location)
    try:
        with _translated(location):
            data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        written = json.loads(data)
        if written.get("format", layout.FORMAT) > layout.FORMAT:
            raise UserError(f"{location} is owned by a newer rlkube ({written.get('rlkube', 'unknown')}, run-directory "
                            f"format {written['format']}); upgrade rlkube, or train into a new --output-dir")
        experiment, copy, generation = written["experiment"], written["copy"], written["generation"]
        co_writers = tuple(written.get("co_writers", ()))
        if (experiment is None or isinstance(experiment, str)) and type(copy) is int and type(generation) is int \
                and all(isinstance(name, str) for name in co_writers):
            return OwnerRecord(experiment, copy, generation, str(written["writer"]), co_writers)
    raise UserError(f"{location}/{layout.OWNER_FILE} is no owner record rlkube can read; train into a new --output-dir")


def _write_owner(location: str | Path, record: OwnerRecord) -> None:
    """Replace the record whole: a reader sees the old one or the new one."""
    fs, path = _owner_path(location)
    if filesystems.is_remote(str(location)):
        with _translated(location):
            fs.pipe_file(path, record.to_json().encode())  # an object appears whole
        return
    Path(location).mkdir(parents=True, exist_ok=True)
    layout.write_atomically(Path(path), record.to_json())


def refuse_other_experiment(location: str | Path, experiment: str | None, copy: int) -> OwnerRecord | None:
    """The copy's record, unless it names another experiment or another copy: then one line, and nothing written."""
    record = read_owner(location)
    if record is not None and (record.experiment, record.copy) != (experiment, copy):
        ours = f"{_experiment_shown(experiment)} (copy {copy})"
        raise UserError(f"{location} belongs to {_experiment_shown(record.experiment)} (copy {record.copy}), not to "
                        f"{ours}: one run directory has one writer; choose another --name or --output-dir")
    return record


@dataclass(frozen=True)
class Writer:
    """This process's hold on a copy's directory: the record it wrote when it took the directory over."""

    location: str  # where the record is: the copy's bucket URL, or its local path
    record: OwnerRecord
    inherited: bool  # the directory was this experiment's copy before (an earlier generation's): its pickles are its
    # own (never for a run trained by hand, which has no experiment id to prove it by)

    @property
    def generation(self) -> int:
        return self.record.generation

    def check(self) -> None:
        """Superseded if another writer has taken the directory over since: call it before each commit (a
        checkpoint, a sync) and before loading a pickled checkpoint, which must come from a directory this writer
        owns."""
        found = read_owner(self.location)
        if found == self.record:
            return
        if found is None or (found.experiment, found.copy) != (self.record.experiment, self.record.copy):
            now = "no one" if found is None else _experiment_shown(found.experiment)
            raise Superseded(f"{self.location} now belongs to {now}; this writer (generation {self.generation}) "
                             f"stops without writing")
        raise Superseded(f"{self.location} was taken over by another writer of copy {found.copy} (generation "
                         f"{found.generation}); this one (generation {self.generation}) stops without writing")


def claim(location: str | Path, experiment: str | None, copy: int, co_writers: tuple[str, ...] = ()) -> Writer:
    """Take the copy's directory over for this process: the next generation of its writer (the first, where there is
    no record). A directory of another experiment is refused first, in one line (refuse_other_experiment)."""
    previous = refuse_other_experiment(location, experiment, copy)
    generation = previous.generation + 1 if previous else 0
    record = OwnerRecord(experiment, copy, generation, f"{os.getpid()}-{secrets.token_hex(4)}", tuple(co_writers))
    _write_owner(location, record)
    return Writer(str(location), record, inherited=previous is not None and experiment is not None)


def owns(location: str | Path, experiment: str | None, copy: int) -> bool:
    """Whether the copy's directory at `location` is already this experiment's copy (its owner record says so), so
    that the pickles in it are its own writer's. A run trained by hand has no experiment id to prove it by."""
    record = read_owner(location)
    return experiment is not None and record is not None and (record.experiment, record.copy) == (experiment, copy)


def check_co_writer(location: str | Path, experiment: str | None, co_writer: str) -> None:
    """Before a co-writer of `experiment` writes into a copy's directory: the directory is the experiment's and its
    owner lets `co_writer` write there (or it has no owner yet); one line otherwise."""
    record = read_owner(location)
    if record is not None and (record.experiment != experiment or co_writer not in record.co_writers):
        raise UserError(f"{location} belongs to {_experiment_shown(record.experiment)}, which does not let "
                        f"{co_writer} of {_experiment_shown(experiment)} write there")
