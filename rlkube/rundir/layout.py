"""The run directory's layout and the one rule for a complete checkpoint; no other module spells a name in it.

An experiment's directory holds the summary across copies and one directory per copy:

    summary.json                  across copies (test-summary.json for --no-training)
    copies.json                   each copy's seed and hparam overrides, as `rlkube train --copies-file` reads them
    copy-<i>/
        hparams.yaml              the resolved hparams and the seed
        events.out.tfevents.*     TensorBoard's event files
        metrics.jsonl             one line per evaluation
        progress.json             how far training is (rlkube.rundir.progress_record)
        summary.json              the copy's final numbers (test-summary.json for --no-training)
        videos/                   --record-video's episodes
        train.log, exit-code      a local copy's output and exit status (the local target's)
        tracking.json             --track's run id in MLflow or W&B, so that a resume continues that run
        owner.json                who writes here (rlkube.storage.ownership): the experiment's id, the copy, the
                                  writer's generation, its co-writers (PBT's controller); where the copy's writers
                                  meet (its bucket, for a run in one), and never synced
        best/policy.npz           the acting weights of the best evaluation so far, with its step and return
                                  (rlkube.rundir.policy_file: arrays only; best/policy.pkl before format 4)
        checkpoints/
            ckpt-<step>/
                state.pkl         everything a resume needs but the segments (a pickle: rlkube.rundir.pickles)
                policy.npz        the acting weights at <step>, with the loop's counters and the logs' lengths:
                                  all that --no-training reads, so it unpickles nothing (from format 4)
                best-policy.npz   best/policy.npz as of <step>; none before the first evaluation (from format 4)
                COMPLETE          written last: its files and segments with their sizes, its format (FORMAT)
            segments/             array files (.npy) of replay chunks, shared by the checkpoints that list them:
                <key>.<start>-<stop>.v<version>.g<generation>-<token>.npy   rows start..stop of the state's array
                                  at `key` (dotted), as they were at that chunk's version (rlkube.chunked), written by
                                  that generation of the copy's writer; the token is the save's own
            .tmp-g<generation>-*  a save or a download in progress, by that generation of the copy's writer

A checkpoint is complete, on a disk and in a bucket alike, when its COMPLETE marker exists and lists files and
segments that all exist with the listed sizes (`is_complete`). A checkpoint lists the segments it wrote and those it
inherited from the one before; a segment no complete checkpoint lists is garbage. Saves, uploads, downloads and
PBT's copies all write the marker through `write_marker_last`, after the files and segments it lists.

The directory's format has a version (FORMAT), which each checkpoint's marker records with the rlkube that wrote
it: a checkpoint is what a later rlkube reads to continue a run. `checkpoint_format` tells a reader whether it can.

One writer at a time owns a copy's directory (rlkube.storage.ownership): each start of the copy is a new generation,
which the marker, the segments' names and the temporaries record, so that a writer removes only what its own or an
older generation wrote.
"""

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlkube import __version__
from rlkube.errors import UserError

COPY_PREFIX = "copy-"
COPIES_FILE = "copies.json"
HPARAMS_FILE = "hparams.yaml"
METRICS_FILE = "metrics.jsonl"
EVENTS_GLOB = "events.out.tfevents.*"
PROGRESS_FILE = "progress.json"
SUMMARY_FILE = "summary.json"
TEST_SUMMARY_FILE = "test-summary.json"
VIDEOS = "videos"
TRAIN_LOG = "train.log"
EXIT_FILE = "exit-code"
TRACKING_FILE = "tracking.json"
OWNER_FILE = "owner.json"
# Written by PBT into a member's directory beside the donor's checkpoint it copied there (rlkube.launch.pbt).
EXPLOIT_FILE = "exploit.json"
# The PBT controller's decision for each boundary, which a waiting member goes on with (rlkube.storage.pbt_decisions).
PBT_DECISION_PREFIX = "pbt-decision-"
PBT_DECISION_GLOB = f"{PBT_DECISION_PREFIX}*.json"
# The best evaluation's policy (rlkube.rundir.checkpoint.save_best): one file, so one rename replaces it.
BEST_POLICY = "best/policy.npz"
PICKLED_BEST_POLICY = "best/policy.pkl"  # formats 1-3: read only as rlkube.rundir.pickles allows
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "ckpt-"
STATE_FILE = "state.pkl"
# A checkpoint's policies as arrays (rlkube.rundir.policy_file), for --no-training: the last, and the best so far.
CHECKPOINT_POLICY = "policy.npz"
CHECKPOINT_BEST_POLICY = "best-policy.npz"
SEGMENTS = "segments"
COMPLETE_MARKER = "COMPLETE"
TEMPORARY_GLOB = ".tmp-*"

# The run directory's format. Bump it with any change that an older rlkube would misread, or that would make this
# one misread an older directory, and teach `rlkube.run` to upgrade the older one where that is cheap:
#   1  no version in the marker: each agent family's own state shape (DQN's flat lists, the continuous agents'
#      `variables`), upgraded on load (Agent.upgrade_state)
#   2  every agent's state in one named shape (rlkube.rl.agents.base.AgentState)
#   3  replay memories' big arrays in segments shared between checkpoints, not in state.pkl (formats 1-2 hold them
#      there whole, which the memories still load)
#   4  policies as arrays (rlkube.rundir.policy_file): best/policy.npz, and each checkpoint's policy.npz and
#      best-policy.npz, which --no-training reads instead of state.pkl. Formats 1-3 resume as before; their policies
#      are pickles (best/policy.pkl, state.pkl), which --no-training reads only as rlkube.rundir.pickles allows
#   5  one writer per copy: owner.json, and the writer's generation in markers, segment and temporary names (an older
#      rlkube would write beside the owner without asking it; a directory of formats 1-4 has no owner, and its first
#      writer takes it)
FORMAT = 5
OLDEST_FORMAT = 1  # the oldest this rlkube still resumes
ARRAY_POLICIES_FORMAT = 4  # the first format whose checkpoints hold their policies as arrays

_CHECKPOINT_FILE = re.compile(rf"^{CHECKPOINTS}/({CHECKPOINT_PREFIX}\d+)/(.+)$")
_SEGMENT_FILE = re.compile(rf"^{CHECKPOINTS}/{SEGMENTS}/([^/]+)$")
# Before format 4 a segment's name had no generation: an older generation's, as every name without one.
_SEGMENT_NAME = re.compile(r"^(.+)\.(\d+)-(\d+)\.v(\d+)\.(?:g(\d+)-)?[0-9a-f]+\.npy$")
_TEMPORARY_GENERATION = re.compile(r"^\.tmp-g(\d+)-")
BEFORE_GENERATIONS = -1  # the generation of whatever a format before 4 wrote


# -- an experiment and its copies ----------------------------------------------------------------------------------


def copy_name(index: int) -> str:
    """A copy's directory name, which also labels its lines in logs and tables: copy-<i>."""
    return f"{COPY_PREFIX}{index}"


def copy_dir(output_dir: Path, index: int) -> Path:
    return Path(output_dir) / copy_name(index)


def copy_url(output_url: str, index: int) -> str:
    """A copy's directory in a bucket (gs://..., s3://...)."""
    return f"{output_url.rstrip('/')}/{copy_name(index)}"


def summary_file(training: bool) -> str:
    """The final numbers of a training run, or of a test-only run (--no-training), which must not replace them."""
    return SUMMARY_FILE if training else TEST_SUMMARY_FILE


def pbt_decision_name(step: int) -> str:
    return f"{PBT_DECISION_PREFIX}{step}.json"


def pbt_decision_step(name: str) -> int | None:
    """The boundary step of a PBT decision's file name (pbt-decision-<step>.json); None for any other name."""
    step = name.removeprefix(PBT_DECISION_PREFIX).removesuffix(".json")
    return int(step) if name.startswith(PBT_DECISION_PREFIX) and name.endswith(".json") and step.isdigit() else None


def is_event_file(name: str) -> bool:
    return name.startswith(EVENTS_GLOB.removesuffix("*"))


def write_atomically(path: Path, text: str) -> None:
    """Replace a small file of the run directory so that a reader, or a kill, sees the old content or the new,
    never a torn file. The temporary name is hidden, so a sync never uploads it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


# -- checkpoints ---------------------------------------------------------------------------------------------------


def checkpoints_dir(copy: Path) -> Path:
    return copy / CHECKPOINTS


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint directory's name (ckpt-<step>); None for any other name."""
    suffix = name.removeprefix(CHECKPOINT_PREFIX)
    return int(suffix) if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def checkpoint_path(name: str, file: str) -> str:
    """A checkpoint's file as a path relative to its copy: checkpoints/ckpt-<step>/<file>."""
    return f"{CHECKPOINTS}/{name}/{file}"


def in_checkpoints(rel: str) -> bool:
    """Whether a path relative to a copy lies in its checkpoints directory."""
    return rel.startswith(f"{CHECKPOINTS}/")


def split_checkpoint_path(rel: str) -> tuple[str, str] | None:
    """(checkpoint name, file) of a path relative to a copy inside a checkpoint; None for any other path."""
    match = _CHECKPOINT_FILE.match(rel)
    return (match.group(1), match.group(2)) if match else None


def segments_dir(checkpoints: Path) -> Path:
    return checkpoints / SEGMENTS


def segment_path(name: str) -> str:
    """A segment as a path relative to its copy: checkpoints/segments/<name>."""
    return f"{CHECKPOINTS}/{SEGMENTS}/{name}"


def segment_of(rel: str) -> str | None:
    """The segment's name of a path relative to a copy; None for any other path."""
    match = _SEGMENT_FILE.match(rel)
    return match.group(1) if match else None


def segment_name(key: str, start: int, stop: int, version: int, token: str, generation: int = 0) -> str:
    return f"{key}.{start}-{stop}.v{version}.g{generation}-{token}.npy"


def segment_identity(name: str) -> tuple[str, int, int, int] | None:
    """(key, start, stop, version) of a segment's name: what its rows are, whichever save wrote them."""
    match = _SEGMENT_NAME.match(name)
    return (match.group(1), *map(int, match.group(2, 3, 4))) if match else None


def segment_generation(name: str) -> int | None:
    """The generation of the writer that wrote a segment; None for a name that is no segment's."""
    match = _SEGMENT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(5)) if match.group(5) is not None else BEFORE_GENERATIONS


def temporary_checkpoint(checkpoints: Path, label: str, generation: int) -> Path:
    """Where a checkpoint is assembled before it appears by one rename: hidden, so never synced or listed; named
    with its writer's generation, so that a newer writer's temporaries outlive an older one's clean-up."""
    return checkpoints / f".tmp-g{generation}-{label}-{os.getpid()}"


def leftover_temporaries(checkpoints: Path, generation: int) -> list[Path]:
    """The temporaries a save by `generation` may remove: its own generation's and older ones' (a killed save's or
    download's), never a newer writer's."""
    found = []
    for path in checkpoints.glob(TEMPORARY_GLOB):
        match = _TEMPORARY_GENERATION.match(path.name)
        if (int(match.group(1)) if match else BEFORE_GENERATIONS) <= generation:
            found.append(path)
    return sorted(found)


@dataclass(frozen=True)
class Listing:
    """What a marker lists, with sizes in bytes: the checkpoint's own files, and the segments it needs."""

    files: dict[str, int]
    segments: dict[str, int] = field(default_factory=dict)


def marker(step: int, listing: Listing, generation: int) -> bytes:
    """The COMPLETE marker's content: the step, each file and segment of the checkpoint with its size in bytes, the
    format and rlkube version that wrote it, and the generation of the copy's writer that did."""
    return json.dumps({"step": step, "files": listing.files, "segments": listing.segments, "format": FORMAT,
                       "rlkube": __version__, "generation": generation}).encode()


def marker_generation(data: bytes | str) -> int | None:
    """The generation of the writer that wrote a marker (BEFORE_GENERATIONS before format 4); None for anything
    that is not a marker."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        generation = json.loads(data).get("generation", BEFORE_GENERATIONS)
        return generation if isinstance(generation, int) else None
    return None


def _sizes(value: object) -> dict[str, int] | None:
    return value if isinstance(value, dict) and all(isinstance(size, int) for size in value.values()) else None


def parse_marker(data: bytes | str) -> Listing | None:
    """What a marker lists; None for anything that is not a marker. (Markers before format 3 list no segments.)"""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        written = json.loads(data)
        files, segments = _sizes(written["files"]), _sizes(written.get("segments", {}))
        if files is not None and segments is not None:
            return Listing(files, segments)
    return None


def write_marker_last(files: Iterable[str], write: Callable[[str], bool],
                      remove_marker: Callable[[], object] | None = None) -> bool:
    """Write a checkpoint's files so that no reader ever takes it for complete before they are all there: the
    marker it may already have is removed first (`remove_marker`), then each of `files` is written
    (`write(name)`), then the marker itself (`write(COMPLETE_MARKER)`). `write` returns False when it could not
    write a file because its source is gone (pruned meanwhile); the marker is then not written and this returns
    False: the checkpoint stays incomplete, never mixed."""
    if remove_marker is not None:
        remove_marker()
    return all(write(name) for name in files) and write(COMPLETE_MARKER)


def is_complete(sizes: Mapping[str, int], listed: Listing | None, segment_sizes: Mapping[str, int]) -> bool:
    """The one completeness rule: a marker (`listed`, parsed) that lists files, each of them among `sizes` (every
    file of the checkpoint by name, the marker's own included or not) with the listed size, and segments, each of
    them among `segment_sizes` (every segment of the copy by name) with the listed size."""
    return (listed is not None and bool(listed.files)
            and all(sizes.get(file) == size for file, size in listed.files.items())
            and all(segment_sizes.get(name) == size for name, size in listed.segments.items()))


def file_sizes(path: Path) -> dict[str, int]:
    """Every file in the directory at `path` by name, with its size; none where there is no directory."""
    sizes = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if entry.is_file():
                sizes[entry.name] = entry.stat().st_size
    return sizes


def read_marker(path: Path) -> Listing | None:
    """What the marker of the checkpoint at `path` lists; None without a readable marker."""
    try:
        return parse_marker((path / COMPLETE_MARKER).read_bytes())
    except OSError:
        return None


def checkpoint_format(path: Path) -> int:
    """The format of the complete checkpoint at `path`, if this rlkube reads it; otherwise one line that says which
    rlkube wrote it and what to do."""
    try:
        written = json.loads((path / COMPLETE_MARKER).read_bytes())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path / COMPLETE_MARKER} ({error}); train into a new --output-dir") from None
    version = written.get("format", 1)  # markers before versions had none
    if OLDEST_FORMAT <= version <= FORMAT:
        return version
    by = f"rlkube {written['rlkube']}" if "rlkube" in written else "another rlkube"
    readable = f"{OLDEST_FORMAT}-{FORMAT}" if OLDEST_FORMAT < FORMAT else f"{FORMAT}"
    advice = "upgrade rlkube" if version > FORMAT else "finish it with the rlkube that started it"
    raise UserError(f"{path} was written by {by} in run-directory format {version}, and this rlkube "
                    f"({__version__}) reads formats {readable}: {advice}, or train into a new --output-dir")


def complete_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in a copy's checkpoints directory, oldest first."""
    found = []
    segment_sizes = file_sizes(segments_dir(checkpoints))
    for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
        step = checkpoint_step(path.name)
        if step is not None and is_complete(file_sizes(path), read_marker(path), segment_sizes):
            found.append((step, path))
    return sorted(found)


def unlisted_segments(checkpoints: Path) -> list[Path]:
    """The segments in a copy's checkpoints directory that no complete checkpoint lists: garbage."""
    listed = {name for _, path in complete_checkpoints(checkpoints) for name in read_marker(path).segments}
    directory = segments_dir(checkpoints)
    return [directory / name for name in sorted(file_sizes(directory).keys() - listed)]


def unmarked_checkpoints(checkpoints: Path) -> list[Path]:
    """Checkpoints an rlkube older than the COMPLETE marker wrote: a state file and no marker at all."""
    return sorted(path for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*")
                  if checkpoint_step(path.name) is not None and (path / STATE_FILE).is_file()
                  and not (path / COMPLETE_MARKER).exists())
