"""The train options, defined once, and the plan of an experiment's copies.

`TrainOptions` is what travels from the user to every copy: `rlkube train` and `rlkube submit` / `render` take
its fields as flags (each field declares its own in its metadata), and a submission turns it back into the
`rlkube train` arguments of every copy. A new option is one new field.

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

from rlkube.errors import UserError

if TYPE_CHECKING:
    from rlkube.rl.hparams import HParams


def _flag(name: str, help_text: str | None = None, **click_settings: Any) -> dict[str, Any]:
    """A field's command-line flag, as click.option takes it; the option's destination is the field's name."""
    return {"flag": name, "help": help_text, "click": click_settings}


@dataclass(frozen=True)
class TrainOptions:
    """The train options that `rlkube train` and `rlkube submit` share and a submission passes on to every copy."""

    hparams: str = field(metadata=_flag("--hparams", "Named hparams set, e.g. dqn_cartpole.", required=True))
    overrides: str = field(default="", metadata=_flag(
        "--hparam-override", 'Comma-separated key=value, e.g. "lr=1e-3,batch_size=64" (tuples: 64;64).'))
    env: str | None = field(default=None, metadata=_flag("--env", "Environment, replacing the set's."))
    train_steps: int | None = field(default=None, metadata=_flag(
        "--train-steps", "Environment steps, replacing the set's.", type=click.IntRange(min=1)))
    eval_episodes: int = field(default=10, metadata=_flag(
        "--eval-episodes", type=click.IntRange(min=0), show_default=True))
    test_episodes: int = field(default=10, metadata=_flag(
        "--test-episodes", type=click.IntRange(min=0), show_default=True))
    seed: int = field(default=0, metadata=_flag(
        "--seed", "Seed of copy 0; copy i gets seed+i.", type=int, show_default=True))
    record_video: bool = field(default=False, metadata=_flag(
        "--record-video", "Write mp4 and GIF of evaluation and test episodes.", is_flag=True))
    num_workers: int = field(default=0, metadata=_flag(
        "--num-workers", "Actor processes stepping their own envs while this process learns; 0 acts in-process.",
        type=click.IntRange(min=0), show_default=True))

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
        """Take the options out of a click command's keyword arguments, leaving the command's own."""
        return cls(**{option.name: kwargs.pop(option.name) for option in dataclasses.fields(cls)})

    def resolved_hparams(self) -> "HParams":
        """The named set with the overrides, then --env and --train-steps; a UserError for any bad input."""
        from rlkube.rl.envs import check_env_name  # noqa: PLC0415  (gymnasium: not for --help)
        from rlkube.rl.hparams import apply_overrides, get_hparams  # noqa: PLC0415

        hp = get_hparams(self.hparams, self.overrides)
        replacing = {"env": self.env, "train_steps": str(self.train_steps) if self.train_steps else None}
        hp = apply_overrides(hp, {key: value for key, value in replacing.items() if value is not None})
        check_env_name(hp.env)
        return hp


def with_train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a click command every TrainOptions flag; it receives them as one `options: TrainOptions` argument."""

    @functools.wraps(command)  # keeps the options declared below this decorator
    def with_options(**kwargs: Any) -> Any:
        return command(options=TrainOptions.from_click(kwargs), **kwargs)

    for option in reversed(dataclasses.fields(TrainOptions)):
        default = {} if option.default is dataclasses.MISSING else {"default": option.default}
        with_options = click.option(option.metadata["flag"], option.name, help=option.metadata["help"], **default,
                                    **option.metadata["click"])(with_options)
    return with_options


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
    """Copies are numbered 0..K-1 in order: copy i is DIR/copy-<i> and index i of an Indexed Job."""
    if not copies:
        raise UserError("an experiment needs at least one copy")
    indices = [copy.index for copy in copies]
    if indices != list(range(len(copies))):
        raise UserError(f"an experiment's copies are numbered 0, 1, 2, … in order, and these are {indices}")
    return copies


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
