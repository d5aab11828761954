"""Shell completion (click's, for bash, zsh and fish) of the names the launch layer knows: experiments, sweeps,
cluster profiles, and a sweep's samplers and pruners. The train flags complete their own values (hparams sets,
hparam overrides, env ids: rlkube/run/options.py).

A completer runs on every Tab, so it reads only names (never a spec, never TensorFlow), and it stays silent when
its source cannot be read: a broken store or profile file is reported by the command itself, not by Tab.
"""

from collections.abc import Callable, Iterable

import click

from rlkube.errors import UserError


def _starting_with(incomplete: str, names: Callable[[], list[str]]) -> list[str]:
    try:
        return [name for name in names() if name.startswith(incomplete)]
    except UserError:
        return []


def experiment_names(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Submitted experiments, newest first."""
    from rlkube.launch import store  # noqa: PLC0415

    return _starting_with(incomplete, store.names)


def experiment_or_sweep_names(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Submitted experiments, newest first, then sweeps (`rlkube tensorboard` takes either)."""
    from rlkube.launch import store  # noqa: PLC0415

    return _starting_with(incomplete, lambda: [*store.names(), *store.sweep_names()])


def cluster_profiles(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """The shipped profiles and the user's (`rlkube clusters`)."""
    from rlkube.launch.clusters import load_profiles  # noqa: PLC0415

    return _starting_with(incomplete, lambda: list(load_profiles()))


def one_of(names: Iterable[str]) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    """A completer of a fixed list of names (a sweep's samplers, its pruners)."""
    listed = list(names)
    return lambda _ctx, _param, incomplete: [name for name in listed if name.startswith(incomplete)]
