"""The flags that several commands share, each declared once (SkyPilot's flags.py is the model).

`-o/--output` is a format wherever a command has it; a file or a directory that a command writes is
`--output-file` or `--output-dir`. A renamed flag keeps its old spelling for one release: hidden from --help,
and each use of it says the new name in one line on stderr.
"""

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from rlkube.cli.completion import cluster_profiles
from rlkube.errors import UserError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange without NaN and infinity: NaN compares false with every bound, so it passes any range."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def cluster_option(what_runs: str) -> Decorator:
    """--cluster: the profile that `what_runs` (e.g. "the trials run") on."""
    return click.option("--cluster", default="local", show_default=True, shell_complete=cluster_profiles,
                        help=f"Cluster profile {what_runs} on (rlkube clusters).")


def follow_option(help_text: str, *, by_default: bool = False) -> Decorator:
    """--follow: stream a log as it is written, until what writes it ends. `rlkube logs` follows by default, so
    there it is -f/--follow/--no-follow."""
    if by_default:
        return click.option("-f", "--follow/--no-follow", default=True, show_default=True, help=help_text)
    return click.option("--follow", is_flag=True, help=help_text)


def output_format_option(*formats: str) -> Decorator:
    """-o/--output: the format a command prints its answer in; the first is the default."""
    return click.option("-o", "--output", "output_format", type=click.Choice(formats), default=formats[0],
                        show_default=True, help="Output format.")


def output_file_option(help_text: str) -> Decorator:
    """--output-file FILE, which was -o/--output FILE (a format everywhere else)."""
    return renamed_option("--output-file", ("-o", "--output"), "output_file", help_text,
                          type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE")


def output_dir_option(help_text: str) -> Decorator:
    """--output-dir DIR, required, which was also -o DIR (a format everywhere else)."""
    return renamed_option("--output-dir", ("-o",), "output_dir", help_text, required=True,
                          type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR")


def renamed_option(new: str, old: tuple[str, ...], name: str, help_text: str, *, required: bool = False,
                   **settings: Any) -> Decorator:
    """The option `new`, which the command receives as `name`, still taken as `old` for one release."""
    old_name = f"{name}_old_spelling"
    old_spelling = "/".join(old)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)  # keeps the options declared below this decorator
        def with_old_spelling(**kwargs: Any) -> Any:
            ctx = click.get_current_context()
            given_old = ctx.get_parameter_source(old_name) is ParameterSource.COMMANDLINE
            value = kwargs.pop(old_name)
            if given_old:
                if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                    raise UserError(f"{old_spelling} is the old spelling of {new}; give {new} once")
                click.echo(f"note: {old_spelling} is now {new}; the old spelling goes in the next release", err=True)
                kwargs[name] = value
            if required and kwargs[name] is None:
                raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == name))
            return command(**kwargs)

        # click cannot hide one spelling of an option, so the old spelling is an option of its own.
        with_new = click.option(new, name, help=f"{help_text}  [required]" if required else help_text,
                                **settings)
        return with_new(click.option(*old, old_name, hidden=True, **settings)(
            with_old_spelling))

    return decorate
