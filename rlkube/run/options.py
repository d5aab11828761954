"""The train options, defined once, and the plan of an experiment's copies.

`TrainOptions` is what travels from the user to every copy: `rlkube train` and `rlkube submit` / `render` take
its fields as flags (each field declares its own in its metadata), and a submission turns it back into the
`rlkube train` arguments of every copy. A new option is one new field.

An hparams file (`--hparams-file`) is a named set plus overrides in YAML, as `rlkube sweep best` writes it and as
a user keeps their own sets outside the package. It is expanded into `hparams` and `overrides` when the flags are
read, so nothing downstream (spec, pods, store) ever sees the file.

`CopyPlan` is one copy: its index, its seed and its hparam overrides on top of the experiment's. `--seed S
--copies K` plans copy i with seed S+i; a sweep's trial or a PBT member is a copy with its own seed and overrides.

Imported by the CLI before any command runs, so nothing heavy at the top: the RL library loads inside functions.
"""

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rlkube.errors import UserError, one_line

if TYPE_CHECKING:
    from rlkube.rl.hparams import HParams


# What a pod learns from its environment, which the Kubernetes target sets (rlkube.launch.render) and a run reads
# (rlkube.run.tracking): its experiment and provenance, and where its tracker is (--track-uri travels this way, as
# the trackers' own variables, so that it is not part of the pod's arguments).
EXPERIMENT_ENV = "RLKUBE_EXPERIMENT"
# The experiment's id (its name and the store that submitted it), which owns the copies' directories
# (rlkube.storage.ownership); unset for a run trained by hand.
EXPERIMENT_ID_ENV = "RLKUBE_EXPERIMENT_ID"
CLUSTER_ENV = "RLKUBE_CLUSTER"
IMAGE_ENV = "RLKUBE_IMAGE"
GIT_COMMIT_ENV = "RLKUBE_GIT_COMMIT"
TRACKER_URI_ENV = {"mlflow": "MLFLOW_TRACKING_URI", "wandb": "WANDB_BASE_URL"}
# Seeds are what NumPy's legacy seeding and gymnasium's envs take everywhere: 0..2^32-1, copy i's seed+i included.
MAX_SEED = 2**32 - 1
# Copies are the indices of one Indexed Job (a PBT population, a trial's seeds): a typo such as 10000 would start
# that many pods.
MAX_COPIES = 1000
# Actor processes of one copy: above any one machine's cores, so more only contend; a typo such as 10000 would fork
# that many processes.
MAX_WORKERS = 1024


def _flag(name: str, help_text: str | None = None, *, internal: bool = False, **click_settings: Any) -> dict[str, Any]:
    """A field's command-line flag, as click.option takes it; the option's destination is the field's name. An
    internal flag is one that rlkube sets for the copies it starts itself, never the user."""
    return {"flag": name, "help": help_text, "internal": internal, "click": click_settings}


def _complete_hparams(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of --hparams: the registered sets (TensorFlow stays unimported)."""
    from rlkube.rl.hparams import hparams_registry  # noqa: PLC0415

    return [name for name in hparams_registry.names() if name.startswith(incomplete)]


def _complete_overrides(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of --hparam-override: the hparams of the set that --hparams names (before it on the line;
    else those every set has) as `name=`, then after the `=` a choice's or a bool's values."""
    from rlkube.rl.hparams import HParams, hparams_registry  # noqa: PLC0415

    set_name = ctx.params.get("hparams")
    domains = (type(hparams_registry[set_name]()) if set_name in hparams_registry else HParams).domains()
    done, comma, current = incomplete.rpartition(",")
    key, equals, value = current.partition("=")
    if not equals:
        return [f"{done}{comma}{name}=" for name in domains if name.startswith(key)]
    offered = domains[key].completions() if key in domains else ()
    return [f"{done}{comma}{key}={text}" for text in offered if text.startswith(value)]


def _complete_env(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of --env: every id a run accepts (`rlkube envs`)."""
    from rlkube.rl.envs import env_ids  # noqa: PLC0415

    return [name for name in env_ids() if name.startswith(incomplete)]


@dataclass(frozen=True)
class TrainOptions:
    """The train options that `rlkube train` and `rlkube submit` share and a submission passes on to every copy."""

    # Not required by click: --hparams-file may name the set instead (from_click checks that exactly one does).
    hparams: str = field(metadata=_flag("--hparams", "Named hparams set, e.g. dqn_cartpole (or give --hparams-file).",
                                        shell_complete=_complete_hparams))
    overrides: str = field(default="", metadata=_flag(
        "--hparam-override", 'Comma-separated key=value, e.g. "lr=1e-3,batch_size=64" (tuples: 64;64).',
        shell_complete=_complete_overrides))
    env: str | None = field(default=None, metadata=_flag("--env", "Environment, replacing the set's.",
                                                         shell_complete=_complete_env))
    train_steps: int | None = field(default=None, metadata=_flag(
        "--train-steps", "Environment steps, replacing the set's.", type=click.IntRange(min=1)))
    eval_episodes: int = field(default=10, metadata=_flag(
        "--eval-episodes", type=click.IntRange(min=0), show_default=True))
    test_episodes: int = field(default=10, metadata=_flag(
        "--test-episodes", type=click.IntRange(min=0), show_default=True))
    seed: int = field(default=0, metadata=_flag(
        "--seed", "Seed of copy 0; copy i gets seed+i.", type=click.IntRange(0, MAX_SEED), show_default=True))
    pbt_interval: int | None = field(default=None, metadata=_flag(
        "--pbt-interval", "At every multiple of this many steps, evaluate, checkpoint and wait for the PBT "
        "controller's decision (rlkube pbt sets it).", internal=True, type=click.IntRange(min=1)))
    # Unset by default, so that a submission's arguments stay as they were; the runner tests the best policy then.
    test_policy: str | None = field(default=None, metadata=_flag(
        "--test-policy", "Which policy the final test (and --no-training) runs: the best evaluation's weights, or the "
        "last ones.  [default: best]", type=click.Choice(["best", "last"])))
    record_video: bool = field(default=False, metadata=_flag(
        "--record-video", "Write mp4 and GIF of evaluation and test episodes.", is_flag=True))
    num_workers: int = field(default=0, metadata=_flag(
        "--num-workers", "Actors stepping their own envs while this process learns (see --actors); 0 acts in-process.",
        type=click.IntRange(min=0, max=MAX_WORKERS), show_default=True))
    # Unset by default, so that a submission's arguments stay as they were; the workers are processes then.
    actors: str | None = field(default=None, metadata=_flag(
        "--actors", "What the --num-workers actors are: processes here, or Ray actors on the Ray at $RAY_ADDRESS, "
        "else on one started here for the run (rlkube[ray]).  [default: processes]",
        type=click.Choice(["processes", "ray"])))
    # Experiment tracking (rlkube.run.tracking). Unset by default, so an untracked run's arguments stay as they were.
    track: str | None = field(default=None, metadata=_flag(
        "--track", "Also log hparams, scalars, provenance and videos to MLflow or W&B (rlkube[mlflow], rlkube[wandb]).",
        type=click.Choice(["mlflow", "wandb"])))
    track_project: str = field(default="", metadata=_flag(
        "--track-project", "MLflow experiment or W&B project.  [default: rlkube]", metavar="NAME"))
    track_group: str = field(default="", metadata=_flag(
        "--track-group", "Group of this run's copies; a sweep's trials: the sweep's name.  [default: the experiment's "
        "name]", metavar="NAME"))
    track_uri: str = field(default="", metadata=_flag(
        "--track-uri", "MLflow tracking URI or W&B server URL.  [default: $MLFLOW_TRACKING_URI or $WANDB_BASE_URL, "
        "else the library's]", metavar="URI"))

    def args(self) -> list[str]:
        """The `rlkube train` arguments that give these options back: every value that is set (None, "" and False
        are the unset values of the fields that have them, so they are left out)."""
        args: list[str] = []
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if value is None or value is False or value == "":
                continue
            args += [option.metadata["flag"]] if value is True else [option.metadata["flag"], str(value)]
        return args

    @classmethod
    def from_click(cls, kwargs: dict[str, Any]) -> "TrainOptions":
        """Take the options (and --hparams-file, expanded into hparams and overrides) out of a click command's
        keyword arguments, leaving the command's own."""
        options = {option.name: kwargs.pop(option.name) for option in dataclasses.fields(cls)}
        hparams_file: Path | None = kwargs.pop("hparams_file")
        if hparams_file is None:
            if options["hparams"] is None:
                raise UserError("which hparams? give --hparams SET (e.g. dqn_cartpole) or --hparams-file FILE")
            return cls(**options)
        if options["hparams"] is not None:
            raise UserError(f"--hparams {options['hparams']} and --hparams-file {hparams_file} both name the hparams "
                            f"set; give one of them")
        from rlkube.rl.hparams import parse_overrides  # noqa: PLC0415

        options["hparams"], file_overrides = read_hparams_file(hparams_file)
        merged = {**parse_overrides(file_overrides), **parse_overrides(options["overrides"])}  # --hparam-override wins
        options["overrides"] = ",".join(f"{key}={value}" for key, value in merged.items())
        return cls(**options)

    def check_tracking_flags(self) -> None:
        """--track-project, --track-group and --track-uri mean nothing without --track: one line, not a silent run."""
        given = [flag for flag, value in (("--track-project", self.track_project), ("--track-group", self.track_group),
                                          ("--track-uri", self.track_uri)) if value]
        if self.track is None and given:
            raise UserError(f"{given[0]} needs --track mlflow or --track wandb")
        for flag in given:
            value = getattr(self, flag.removeprefix("--").replace("-", "_"))
            if one_line(value) != value:  # it travels as a pod's argument or env, and names runs in a tracker's UI
                raise UserError(f"{flag} {value!r} holds a control character (a newline, a tab); "
                                f"write it on one line")

    def check_actors_flag(self) -> None:
        """--actors says what the --num-workers actors are: without workers it means nothing."""
        if self.actors is not None and not self.num_workers:
            raise UserError(f"--actors {self.actors} needs actors to run: add --num-workers N (N >= 1)")

    def resolved_hparams(self) -> "HParams":
        """The named set with the overrides, then --env and --train-steps; a UserError for any bad input."""
        from rlkube.rl.envs import check_env_name  # noqa: PLC0415  (gymnasium: not for --help)
        from rlkube.rl.hparams import apply_overrides, get_hparams  # noqa: PLC0415

        hp = get_hparams(self.hparams, self.overrides)
        replacing = {"env": self.env, "train_steps": str(self.train_steps) if self.train_steps else None}
        hp = apply_overrides(hp, {key: value for key, value in replacing.items() if value is not None})
        check_env_name(hp.env)
        return hp


def with_train_options(command: Callable[..., Any], *, hide_internal: bool = False) -> Callable[..., Any]:
    """Give a click command every TrainOptions flag; it receives them as one `options: TrainOptions` argument.
    With `hide_internal`, the internal flags are still taken but left out of its --help."""

    @functools.wraps(command)  # keeps the options declared below this decorator
    def with_options(**kwargs: Any) -> Any:
        return command(options=TrainOptions.from_click(kwargs), **kwargs)

    flags = [click.option(option.metadata["flag"], option.name, help=option.metadata["help"],
                          hidden=hide_internal and option.metadata["internal"],
                          **({} if option.default is dataclasses.MISSING else {"default": option.default}),
                          **option.metadata["click"])
             for option in dataclasses.fields(TrainOptions)]
    # Shown right after --hparams, which it replaces. Unchecked by click (no exists=True), so that
    # read_hparams_file says what is wrong with the file in one line.
    flags.insert(1, click.option(
        "--hparams-file", "hparams_file", type=click.Path(path_type=Path), default=None, metavar="FILE",
        help="Instead of --hparams: YAML with 'hparams: SET' and 'overrides: {lr: 0.0003, hidden_sizes: [64, 64]}' "
             "(rlkube sweep best writes one); --hparam-override applies on top."))
    return functools.reduce(lambda decorated, flag: flag(decorated), reversed(flags), with_options)


def with_train_options_hiding_internal(command: Callable[..., Any]) -> Callable[..., Any]:
    """with_train_options for the commands whose copies rlkube starts and paces itself (`sweep start`, `pbt
    start`): --pbt-interval is the PBT controller's to set for its members, so their --help leaves it out."""
    return with_train_options(command, hide_internal=True)


HPARAMS_FILE_KEYS = ("hparams", "overrides")


def hparams_file_text(hparams: str, overrides: dict[str, Any]) -> str:
    """An hparams file (see read_hparams_file) for the named set with these overrides (values of the hparams'
    own types: tuples are written as YAML lists)."""
    import yaml  # noqa: PLC0415  (only commands that read or write the file need it)

    plain = {key: list(value) if isinstance(value, tuple) else value for key, value in overrides.items()}
    body = yaml.safe_dump({"hparams": hparams, "overrides": plain}, sort_keys=False, default_flow_style=None)
    return f"# rlkube train --hparams-file THIS_FILE --output-dir DIR   (rlkube submit and render take it too)\n{body}"


def override_text(value: Any) -> str:
    """One override value in --hparam-override syntax: lists as 64;64, floats by repr so that they parse back to
    the same float."""
    if isinstance(value, list | tuple):
        return ";".join(override_text(item) for item in value) if value else "[]"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


def _yaml_problem(error: Exception) -> str:
    """A YAML error in one line: PyYAML's own message spans several."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark else problem


def read_yaml(path: Path, flag: str, shape: str) -> Any:
    """A YAML file the user named with `flag`; a UserError naming it, and `shape` (what it should hold), if it
    cannot be read or parsed."""
    import yaml  # noqa: PLC0415  (only commands that read such a file need it)

    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{flag} {path}: not a text file; {shape}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{flag} {path}: not YAML ({_yaml_problem(error)})") from None


def read_hparams_file(path: Path) -> tuple[str, str]:
    """The set name and the overrides (in --hparam-override syntax) of an hparams file, which reads

        hparams: ppo_cartpole
        overrides: {lr: 0.00031, hidden_sizes: [64, 64]}

    A UserError naming the file if it is not such a file. The override names and values are checked where every
    override is, when the hparams are resolved (TrainOptions.resolved_hparams).
    """
    shape = "write 'hparams: <set name>' and optionally 'overrides: {key: value, ...}'"
    data = read_yaml(path, "--hparams-file", shape)
    if not isinstance(data, dict):
        raise UserError(f"--hparams-file {path}: not a YAML mapping; {shape}")
    unknown = [str(key) for key in data if key not in HPARAMS_FILE_KEYS]
    if unknown:
        raise UserError(f"--hparams-file {path}: unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; {shape}")
    hparams, overrides = data.get("hparams"), data.get("overrides")
    if overrides is None:  # `overrides:` with every line under it commented out
        overrides = {}
    if not isinstance(hparams, str) or not hparams:
        raise UserError(f"--hparams-file {path}: no set name under 'hparams'; {shape}")
    if not isinstance(overrides, dict):
        raise UserError(f"--hparams-file {path}: 'overrides' is not a mapping; {shape}")
    pairs = []
    for key, value in overrides.items():
        pair = f"{key}={override_text(value)}"
        if "=" in str(key) or "," in pair:  # the separators of the override syntax would split it wrongly
            raise UserError(f"--hparams-file {path}: override {key!r}: {value!r} is no hparam's name and value "
                            f"(an hparam's name has no '=' or ',', nor its value a ',')")
        pairs.append(pair)
    return hparams, ",".join(pairs)


@dataclass(frozen=True)
class CopyPlan:
    """One copy of an experiment: DIR/copy-<index> (its Job index on Kubernetes), trained with its own seed and
    its own hparam overrides on top of the experiment's."""

    index: int
    seed: int
    overrides: str = ""


def default_copies(seed: int, count: int) -> list[CopyPlan]:
    """`--seed S --copies K`: copy i gets seed S+i and the experiment's hparams."""
    return [CopyPlan(index, seed + index) for index in range(count)]


def check_copies(copies: list[CopyPlan]) -> list[CopyPlan]:
    """Copies are numbered 0..K-1 in order: copy i is DIR/copy-<i> and index i of an Indexed Job. At most
    MAX_COPIES, each seed in 0..MAX_SEED."""
    if not copies:
        raise UserError("an experiment needs at least one copy")
    if len(copies) > MAX_COPIES:
        raise UserError(f"an experiment has at most {MAX_COPIES} copies, and this one has {len(copies)}")
    indices = [copy.index for copy in copies]
    if indices != list(range(len(copies))):
        raise UserError(f"an experiment's copies are numbered 0, 1, 2, … in order, and these are {indices}")
    for copy in copies:
        check_seed(copy)
    return copies


def check_seed(copy: CopyPlan) -> CopyPlan:
    """A UserError unless the copy's seed is in 0..MAX_SEED."""
    if not 0 <= copy.seed <= MAX_SEED:
        raise UserError(f"copy {copy.index}'s seed {copy.seed} is outside 0..{MAX_SEED} (copy i's seed is --seed + i); "
                        f"use a smaller --seed")
    return copy


def copy_hparams(hp: "HParams", copy: CopyPlan) -> "HParams":
    """The copy's hparams: the experiment's with the copy's own overrides on top; a UserError naming the copy."""
    from rlkube.rl.envs import check_env_name  # noqa: PLC0415
    from rlkube.rl.hparams import apply_overrides, parse_overrides  # noqa: PLC0415

    try:
        copy_hp = apply_overrides(hp, parse_overrides(copy.overrides))
        check_env_name(copy_hp.env)
    except UserError as error:
        raise UserError(f"copy {copy.index}: {error}") from None
    return copy_hp


def copies_json(copies: list[CopyPlan]) -> str:
    """The copies table as `--copies-file` reads it: a JSON list, one copy a line, for people who read it too."""
    return "[\n" + ",\n".join(f"  {json.dumps(dataclasses.asdict(copy))}" for copy in copies) + "\n]\n"


def _copy_from_row(row: Any) -> CopyPlan | None:
    if not isinstance(row, dict) or not {"index", "seed"} <= row.keys() <= {"index", "seed", "overrides"}:
        return None
    if type(row["index"]) is not int or type(row["seed"]) is not int or not isinstance(row.get("overrides", ""), str):
        return None
    return CopyPlan(**row)


def read_copies(path: Path) -> list[CopyPlan]:
    """The copies table written by copies_json; a UserError naming what is wrong with it."""
    try:
        rows = json.loads(path.read_text())
    except OSError as error:
        raise UserError(f"--copies-file {path}: cannot read it ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--copies-file {path}: not JSON ({error})") from None
    copies = [_copy_from_row(row) for row in rows] if isinstance(rows, list) else [None]
    if None in copies:
        raise UserError(f'--copies-file {path}: write a JSON list of {{"index": int, "seed": int, "overrides": str}}, '
                        f"one per copy")
    try:
        return check_copies(copies)
    except UserError as error:
        raise UserError(f"--copies-file {path}: {error}") from None
