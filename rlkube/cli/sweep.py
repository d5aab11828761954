"""`rlkube sweep start / status / best / plot / resume / cancel / confirm`: hyperparameter search over experiments.

Thin: checks the flags and the space, then hands over to rlkube.launch.sweep (which imports Optuna, so only
these commands load it; `rlkube --help` does not).
"""

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from rlkube.cli.completion import one_of
from rlkube.cli.flags import (
    FiniteFloatRange,
    cluster_option,
    follow_option,
    output_dir_option,
    output_file_option,
    output_format_option,
)
from rlkube.cli.output import echo_ceiling, started, table
from rlkube.errors import UserError
from rlkube.launch.sweep.methods import PRUNERS, SAMPLERS
from rlkube.run.options import TrainOptions, with_train_options_hiding_internal

DEFAULT_TRIALS, DEFAULT_PARALLEL, DEFAULT_SEEDS = 20, 2, 3
CANCEL_WAIT_SECONDS = 120.0  # the driver cancels its live trials, each given a minute to checkpoint


@click.group()
def sweep() -> None:
    """Hyperparameter search (Optuna underneath): each trial is an experiment of K seeds on any cluster."""


def _storage_option(command: Any) -> Any:
    return click.option("--storage", default=None, metavar="URL",
                        help="The study's Optuna storage, e.g. postgresql://user@host/db (default: a journal file "
                             "beside the sweep's driver log, or what the sweep was started with).")(command)


def _open(name: str, storage: str | None) -> tuple[Any, Any, Any]:
    """The sweep's local record (None if it was started elsewhere), its study and its config."""
    from rlkube.launch import store  # noqa: PLC0415

    record = store.find_sweep(name)
    if record is None and storage is None:
        store.get_sweep(name)  # raises the one-line "unknown sweep" error
    from rlkube.launch.sweep import study as studies  # noqa: PLC0415  (Optuna: only for a sweep there is)
    study, config = studies.load(name, storage or record.storage)
    return record, study, config


_follow_driver = follow_option("Stream the driver's log until the sweep ends.")


@sweep.command()
@cluster_option("the trials run")
@with_train_options_hiding_internal
@click.option("--space", "space_file", type=click.Path(path_type=Path), default=None,
              help="YAML: hparam -> {uniform|log_uniform|int|choice: ...} (default: the agent's default space).")
@click.option("--trials", type=int, default=DEFAULT_TRIALS, show_default=True, help="Trials in all.")
@click.option("--parallel", type=int, default=DEFAULT_PARALLEL, show_default=True,
              help="Most trials (experiments) running at once.")
@click.option("--seeds", type=int, default=DEFAULT_SEEDS, show_default=True,
              help="Copies per trial, one seed each; a trial's value is their mean.")
@click.option("--sampler", default=SAMPLERS.default(), show_default=True, help=SAMPLERS.help_text(),
              shell_complete=one_of(SAMPLERS))
@click.option("--pruner", default=PRUNERS.default(), show_default=True, help=PRUNERS.help_text(),
              shell_complete=one_of(PRUNERS))
@click.option("--objective", default="last:3", show_default=True,
              help="Each seed's value: final (last evaluation), best, or last:N (mean of its last N evaluations).")
@click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
              help="Times a failed trial is run again with the same params.")
@click.option("--poll", "poll_seconds", type=FiniteFloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between the driver's reads of the trials' progress.")
@click.option("--name", default=None, help="Sweep name (default: <hparams>-sweep-<time>); trials are <name>-t<n>.")
@_storage_option
@_follow_driver
def start(options: TrainOptions, cluster: str, space_file: Path | None, trials: int, parallel: int, seeds: int,
          sampler: str, pruner: str, objective: str, retries: int, poll_seconds: float, name: str | None,
          storage: str | None, follow: bool) -> None:
    """Start a sweep: its driver runs detached, submitting trials and pruning them as their evaluations land."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.clusters import get_profile  # noqa: PLC0415
    from rlkube.launch.spec import build_spec  # noqa: PLC0415
    from rlkube.launch.sweep.config import SweepConfig, check_sweep_flags  # noqa: PLC0415
    from rlkube.launch.sweep.space import default_space, read_space, space_to_yaml  # noqa: PLC0415

    now = datetime.now(UTC)
    if name is None:
        name = f"{options.hparams.replace('_', '-')[:14]}-sw-{now:%m%d-%H%M%S}"
    check_sweep_flags(name, sampler, pruner, objective, trials, parallel, seeds)
    hp = options.resolved_hparams()
    space = read_space(space_file, hp) if space_file else default_space(hp)
    profile = get_profile(cluster)
    config = SweepConfig(name, cluster, options, space_to_yaml(space), trials, parallel, seeds, sampler, pruner,
                         objective, retries, poll_seconds)
    build_spec(profile, options, config.trial_copies(""), name=config.trial_name(trials))  # every flag checked
    from rlkube.launch.sweep import study as studies  # noqa: PLC0415  (Optuna: only once the flags are good)
    from rlkube.launch.sweep.driver import default_storage, launch  # noqa: PLC0415

    studies.sampler_for(config, space)  # a sampler's own needs (grid: choices; gp: PyTorch) checked now
    if store.find_sweep(name):
        raise UserError(f"sweep '{name}' exists already; choose another --name, or rlkube sweep resume {name}")
    where = storage or default_storage(name)
    studies.create(config, where)
    record = launch(store.SweepRecord(name, where, uuid.uuid4().hex[:12], None, now.isoformat(timespec="seconds")))
    echo_ceiling(profile, trials * seeds, scope=f"its {trials} trials together: ")
    _started(record, config, follow)


def _started(record: Any, config: Any, follow: bool) -> None:
    from rlkube.launch.sweep.driver import driver_process  # noqa: PLC0415

    name = record.name
    started(driver_process(name), record.driver_pid,
            f"sweep {name}: {config.trials} trials of {config.train.hparams} x {config.seeds} seeds, "
            f"{config.parallel} at a time on {config.cluster}",
            [f"rlkube sweep status {name}", f"rlkube sweep best {name}", f"rlkube tensorboard {name}",
             f"rlkube sweep cancel {name}"], follow)


@sweep.command()
@click.argument("name")
@_storage_option
@_follow_driver
def resume(name: str, storage: str | None, follow: bool) -> None:
    """Start the sweep's driver again: it adopts the live trials by name and runs the rest; no trial twice.

    With --storage, a sweep started on another machine: this machine's driver joins it and shares its trials.
    """
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.sweep.driver import driver_alive, launch  # noqa: PLC0415

    record, _study, config = _open(name, storage)
    if record is not None and driver_alive(record):
        raise UserError(f"sweep {name}'s driver is running (pid {record.driver_pid}); rlkube sweep status {name}")
    if record is None:
        record = store.SweepRecord(name, storage, uuid.uuid4().hex[:12], None,
                                   datetime.now(UTC).isoformat(timespec="seconds"))
    _started(launch(record), config, follow)


def _value_text(trial: Any) -> str:
    from optuna.trial import TrialState  # noqa: PLC0415

    from rlkube.launch.sweep.driver import STD, VALUES  # noqa: PLC0415

    if trial.state == TrialState.COMPLETE:
        return f"{trial.value:.2f} ± {trial.user_attrs.get(STD, 0.0):.2f} ({len(trial.user_attrs.get(VALUES, []))})"
    if trial.intermediate_values:
        step = max(trial.intermediate_values)
        return f"{trial.intermediate_values[step]:.2f} @ {step}"
    return "-"


def _trial_rows(trials: list[Any], config: Any) -> list[dict[str, Any]]:
    from rlkube.launch.sweep.driver import REASON, STD, STEPS, VALUES  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415

    return [{"trial": trial.number, "state": trial.state.name, "params": overrides_of(trial.params),
             "value": trial.value, "std": trial.user_attrs.get(STD), "values": trial.user_attrs.get(VALUES),
             "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
             "steps": trial.user_attrs.get(STEPS), "reason": trial.user_attrs.get(REASON, ""),
             "experiment": config.trial_name(trial.number)}
            for trial in trials]


@sweep.command()
@click.argument("name")
@_storage_option
@output_format_option("table", "json")
def status(name: str, storage: str | None, output_format: str) -> None:
    """Every trial: state, params, value (mean ± std over seeds), steps every seed reached, and why it ended."""
    record, study, config = _open(name, storage)
    from rlkube.launch.sweep.driver import counted, driver_alive  # noqa: PLC0415
    driver = "running" if record is not None and driver_alive(record) else "not running"
    # Read once: with a driver running, a second read could hold another trial.
    trials = counted(study.get_trials(deepcopy=False))
    rows = _trial_rows(trials, config)
    if output_format == "json":
        click.echo(json.dumps({"sweep": name, "driver": driver, "config": config.to_dict(), "trials": rows},
                              indent=2, default=str))
        return
    states = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in states.items()) or "no trials yet"
    click.echo(f"{name}  {config.train.hparams} on {config.cluster}  driver {driver}  {counts}  "
               f"(of {config.trials}; {config.seeds} seeds each, objective {config.objective})")
    rows_shown = [["TRIAL", "STATE", "VALUE", "STEPS", "PARAMS", "NOTE"]]
    for row, trial in zip(rows, trials, strict=True):
        rows_shown.append([str(row["trial"]), row["state"], _value_text(trial),
                      str(row["steps"]) if row["steps"] is not None else "-", row["params"], row["reason"] or "-"])
    click.echo(table(rows_shown))


def _best(study: Any, name: str) -> Any:
    from optuna.trial import TrialState  # noqa: PLC0415

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"sweep {name} has no complete trial yet; rlkube sweep status {name}")
    return max(complete, key=lambda t: t.value)


@sweep.command()
@click.argument("name")
@_storage_option
@output_file_option("Where to write the hparams file (default: ./<name>-best.yaml).")
def best(name: str, storage: str | None, output_file: Path | None) -> None:
    """The best trial's params: as an --hparam-override string, and as an hparams file that train/submit run."""
    from rlkube.launch.sweep.driver import STD, VALUES  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415
    from rlkube.rl.hparams import parse_overrides  # noqa: PLC0415
    from rlkube.run.options import hparams_file_text  # noqa: PLC0415

    _record, study, config = _open(name, storage)
    trial = _best(study, name)
    overrides = overrides_of(trial.params)
    # What the trials ran: the sweep's overrides, --env and --train-steps, then the trial's params.
    fixed = {key: str(value) for key, value in (("env", config.train.env), ("train_steps", config.train.train_steps))
             if value is not None}
    merged = {**parse_overrides(config.train.overrides), **fixed, **parse_overrides(overrides)}
    hp = TrainOptions(config.train.hparams, ",".join(f"{k}={v}" for k, v in merged.items())).resolved_hparams()
    path = output_file or Path(f"{name}-best.yaml")
    try:
        path.write_text(hparams_file_text(config.train.hparams, {key: getattr(hp, key) for key in merged}))
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror}); choose another --output-file") from None
    values = ", ".join(f"{v:.2f}" for v in trial.user_attrs.get(VALUES, []))
    click.echo(f"best: trial {trial.number}, {trial.value:.2f} ± {trial.user_attrs.get(STD, 0.0):.2f} "
               f"(seeds: {values})")
    click.echo(f"--hparams {config.train.hparams} --hparam-override {overrides}")
    click.echo(f"hparams file: {path}   (rlkube train --hparams-file {path} --output-dir DIR)")


@sweep.command()
@click.argument("name")
@_storage_option
@output_dir_option("Where to write the PNGs.")
def plot(name: str, storage: str | None, output_dir: Path) -> None:
    """PNGs: the optimisation history, the params' importances and parallel coordinates."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import warnings  # noqa: PLC0415

    import matplotlib.pyplot as plt  # noqa: PLC0415
    from optuna.visualization import matplotlib as optuna_plots  # noqa: PLC0415

    _record, study, _config = _open(name, storage)
    _best(study, name)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {output_dir} ({error.strerror}); choose another --output-dir") from None
    plots = {"history.png": optuna_plots.plot_optimization_history,
             "importances.png": optuna_plots.plot_param_importances,
             "parallel-coordinates.png": optuna_plots.plot_parallel_coordinate}
    for filename, draw in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental, every time
            try:
                axes = draw(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances need two complete trials
                click.echo(f"skipped {filename}: {error}", err=True)
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        figure.savefig(output_dir / filename, dpi=110)
        plt.close(figure)
        click.echo(str(output_dir / filename))


@sweep.command()
@click.argument("name")
@_storage_option
def cancel(name: str, storage: str | None) -> None:
    """Stop the driver and cancel every live trial (each checkpoints); the study and results are kept."""
    from rlkube.launch.sweep.driver import cancel_orphans, driver_alive, driver_process  # noqa: PLC0415

    record, study, _config = _open(name, storage)
    if record is not None and driver_alive(record):
        if not driver_process(name).stop(record.driver_pid, CANCEL_WAIT_SECONDS):  # it cancels its live trials first
            raise UserError(f"sweep {name}'s driver (pid {record.driver_pid}) did not stop within "
                            f"{CANCEL_WAIT_SECONDS:.0f} s; see its log")
        click.echo(f"cancelled sweep {name}: its driver stopped its live trials")
        return
    cancelled = cancel_orphans(study, record.driver_id if record else "")
    click.echo(f"cancelled sweep {name}: {', '.join(cancelled) if cancelled else 'no live trials'}")


@sweep.command()
@click.argument("name")
@_storage_option
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="Fresh seeds.")
def confirm(name: str, storage: str | None, seeds: int) -> None:
    """Run the best params again on fresh seeds, wait, and say whether the result holds up."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.clusters import get_profile  # noqa: PLC0415
    from rlkube.launch.spec import build_spec  # noqa: PLC0415
    from rlkube.launch.sweep.config import copy_value  # noqa: PLC0415
    from rlkube.launch.sweep.driver import STD  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415
    from rlkube.rundir.across_copies import mean_and_std  # noqa: PLC0415

    _record, study, config = _open(name, storage)
    trial = _best(study, name)
    experiment = f"{name}-confirm"
    if not store.exists(experiment):
        # Seeds the sweep never used: its trials ran seed .. seed+K-1.
        copies = config.trial_copies(overrides_of(trial.params), first_seed=config.train.seed + config.seeds,
                                     seeds=seeds)
        spec = build_spec(get_profile(config.cluster), config.train, copies, name=experiment)
        target_for(get_profile(config.cluster)).submit(spec)
        click.echo(f"submitted {experiment}: trial {trial.number}'s params on {seeds} fresh seeds", err=True)
    record = store.get(experiment)
    target = target_for(record)
    while any(c.phase in ("Running", "Pending") for c in target.describe(record)):
        time.sleep(config.poll_seconds)
    phases = {c.phase for c in target.describe(record)}
    if phases != {"Succeeded"}:
        raise UserError(f"{experiment} ended {', '.join(sorted(phases))}; rlkube logs {experiment}")
    evaluations = target.evaluations(record)
    values = [copy_value(evaluations.get(k, []), config.objective) for k in range(record.copies)]
    if None in values:
        raise UserError(f"{experiment} has a copy without evaluations; rlkube results {experiment}")
    mean, std = mean_and_std(values)
    sweep_std = trial.user_attrs.get(STD, 0.0)
    # It holds up if the fresh seeds land within one standard deviation (the larger of the two) of the sweep's value.
    holds = mean >= trial.value - max(std, sweep_std, 0.01 * abs(trial.value))
    click.echo(f"confirm {name}: trial {trial.number} scored {trial.value:.2f} ± {sweep_std:.2f} over "
               f"{config.seeds} seeds in the sweep; on {seeds} fresh seeds {mean:.2f} ± {std:.2f}: "
               f"{'holds up' if holds else 'does not hold up'}")


def register(group: click.Group) -> None:
    group.add_command(sweep)
