"""`rlkube pbt start / status / lineage / replay / resume / cancel`: population-based training on any cluster.

Thin: checks the flags and the mutations, then hands over to rlkube.launch.pbt's controller, which runs detached.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from rlkube.cli.flags import cluster_option, follow_option, output_file_option, output_format_option, renamed_option
from rlkube.cli.output import echo_ceiling, started, table
from rlkube.errors import UserError
from rlkube.run.options import TrainOptions, read_yaml, with_train_options_hiding_internal

CANCEL_WAIT_SECONDS = 120.0  # the controller cancels the members' experiment, each member given a minute


@click.group()
def pbt() -> None:
    """Population-based training: members exploit (copy the whole state of) better ones and explore hparams."""


def _perturb(_ctx: Any, _param: Any, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"write two factors, e.g. 0.8,1.2, not {value!r}") from None


_follow_controller = follow_option("Stream the controller's log until the run ends.")


@pbt.command()
@cluster_option("the members run")
@with_train_options_hiding_internal
@click.option("--population", type=int, default=8, show_default=True, help="Members, trained in parallel.")
@click.option("--interval", type=int, required=True, help="Environment steps per generation.")
@click.option("--mutate", "mutations", multiple=True, metavar="NAME=DIST",
              help="A mutated hparam: lr=log_uniform:1e-5:1e-2, gamma=choice:0.98,0.99, x=uniform:A:B, n=int:A:B.")
@click.option("--space", "space_file", type=click.Path(path_type=Path), default=None,
              help="Or a YAML space file, as rlkube sweep takes (hparam -> {uniform|log_uniform|int|choice: ...}).")
@click.option("--quantile", type=float, default=0.25, show_default=True,
              help="The bottom quantile exploits the top one.")
@click.option("--resample-prob", type=float, default=0.25, show_default=True,
              help="Chance that exploring resamples an hparam instead of perturbing it.")
@click.option("--perturb", default="0.8,1.2", show_default=True, callback=_perturb,
              help="The factors a perturbed number is multiplied by.")
@click.option("--ready-after", type=click.IntRange(min=0), default=0, show_default=True,
              help="No member is exploited before this step.")
@click.option("--metric", default="last:2", show_default=True,
              help="A member's score: final, best, or last:N (the mean of its last N evaluations).")
@click.option("--name", default=None, help="The run's name (default: <hparams>-pbt-<time>); its members' "
                                           "experiment has the same name.")
@click.option("--replace", is_flag=True, help="Replace an experiment of the same name.")
@_follow_controller
def start(options: TrainOptions, cluster: str, population: int, interval: int, mutations: tuple[str, ...],
          space_file: Path | None, quantile: float, resample_prob: float, perturb: tuple[float, ...],
          ready_after: int, metric: str, name: str | None, replace: bool, follow: bool) -> None:
    """Start a PBT run: its controller runs detached, a generation at a time."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from rlkube.launch.pbt.config import PBTConfig, parse_mutation  # noqa: PLC0415

    now = datetime.now(UTC)
    if name is None:
        name = f"{options.hparams.replace('_', '-')[:20]}-pbt-{now:%m%d-%H%M%S}"
    if bool(mutations) == bool(space_file):
        raise UserError("what does PBT mutate? give --mutate NAME=DIST (one or more) or --space FILE, not both")
    raw = dict(parse_mutation(text) for text in mutations) if mutations else read_yaml(
        space_file, "--space", "write hparam names mapped to distributions, e.g. lr: {log_uniform: [1e-5, 1e-2]}")
    config = PBTConfig(name, cluster, options, raw, population, interval, quantile, resample_prob,
                       perturb, ready_after, metric)  # type: ignore[arg-type]
    _start(config, f"--space {space_file}" if space_file else "--mutate", replace, follow)


def _start(config: Any, source: str, replace: bool, follow: bool) -> None:
    """Check everything, then write the run's config and start its controller."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.clusters import get_profile  # noqa: PLC0415
    from rlkube.launch.pbt import controller  # noqa: PLC0415
    from rlkube.launch.pbt.config import check_mutations, check_pbt_flags, initial_params  # noqa: PLC0415
    from rlkube.launch.spec import build_spec  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415
    from rlkube.run.options import CopyPlan  # noqa: PLC0415

    hp = config.train.resolved_hparams()
    space = check_mutations(config.mutations, hp, source)
    check_pbt_flags(config.name, config.population, config.interval, config.quantile, config.resample_prob,
                    config.perturb, config.metric, hp, config.train.num_workers)
    params = initial_params(config, space)
    copies = [CopyPlan(m, config.seed + m, overrides_of(params[m])) for m in range(config.population)]
    profile = get_profile(config.cluster)
    build_spec(profile, config.train, copies, name=config.name)  # every flag checked
    directory = controller.pbt_dir(config.name)
    if (directory / controller.CONFIG_FILE).exists():
        raise UserError(f"PBT run '{config.name}' exists already; choose another --name, or "
                        f"rlkube pbt resume {config.name}")
    if store.exists(config.name) and not replace:
        raise UserError(f"experiment '{config.name}' exists already (the members would be it); choose another "
                        f"--name, or --replace it")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / controller.CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    pid = controller.launch(config.name)
    echo_ceiling(profile, config.population)
    _started(config, pid, follow)


def _started(config: Any, pid: int, follow: bool) -> None:
    from rlkube.launch.pbt.controller import controller_process  # noqa: PLC0415

    name = config.name
    started(controller_process(name), pid,
            f"PBT {name}: {config.population} members of {config.train.hparams}, generations of {config.interval} "
            f"steps on {config.cluster}",
            [f"rlkube pbt status {name}", f"rlkube pbt lineage {name}", f"rlkube tensorboard {name}",
             f"rlkube pbt cancel {name}"], follow)


@pbt.command()
@click.argument("name")
@_follow_controller
def resume(name: str, follow: bool) -> None:
    """Start the run's controller again: it re-reads pbt.jsonl and adopts the members where they are."""
    from rlkube.launch.pbt import controller  # noqa: PLC0415

    config = controller.load_config(name)
    if pid := controller.controller_alive(name):
        raise UserError(f"PBT {name}'s controller is running (pid {pid}); rlkube pbt status {name}")
    _started(config, controller.launch(name), follow)


@pbt.command()
@click.argument("name")
@click.option("--name", "new_name", default=None, help="The replay's name (default: <name>-replay).")
@renamed_option("--wait", ("--follow",), "wait", "Stream the controller's log until the replay ends, then compare "
                "the replay with the original.", is_flag=True)
def replay(name: str, new_name: str | None, wait: bool) -> None:
    """Run the whole population again from its seeds: on a CPU, the same decisions and the same weights."""
    from rlkube.launch.pbt import controller  # noqa: PLC0415

    config = controller.load_config(name)
    replayed = dataclasses.replace(config, name=new_name or f"{name}-replay")
    _start(replayed, f"{name}'s mutations", replace=False, follow=wait)
    if wait:
        differences = controller.compare(name, replayed.name)
        if differences:
            raise UserError(f"replay {replayed.name} differs from {name}: " + "; ".join(differences))
        click.echo(f"replay {replayed.name} is identical to {name}: the same pbt.jsonl and every member's final "
                   f"state (weights, optimizer, memory, RNGs)")


@pbt.command()
@click.argument("name")
@output_format_option("table", "json")
def status(name: str, output_format: str) -> None:
    """Every member: step, current hparams, recent return, exploits so far."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.pbt import controller  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    config = controller.load_config(name)
    lineage = controller.read_lineage(name)
    params = controller.current_params(config, lineage)
    copies = {}
    if store.exists(name):
        record = store.get(name)
        copies = {c.copy: c for c in target_for(record).describe(record)}
    received = [sum(e["member"] == m for e in controller.exploits(lineage)) for m in range(config.population)]
    pid = controller.controller_alive(name)
    rows = [{"member": m, "phase": copies[m].phase if m in copies else "-",
             "step": copies[m].last_step if m in copies else None,
             "recent_return": copies[m].last_return if m in copies else None,
             "params": params[m], "exploited": received[m]} for m in range(config.population)]
    done = len(controller.generations(lineage))
    if output_format == "json":
        click.echo(json.dumps({"pbt": name, "controller": pid, "generations_done": done, "members": rows}, indent=2))
        return
    click.echo(f"{name}  {config.train.hparams} on {config.cluster}  controller "
               f"{'running (pid ' + str(pid) + ')' if pid else 'not running'}  generations done: {done}")
    shown = [["MEMBER", "PHASE", "STEP", "RECENT RETURN", "EXPLOITED", "HPARAMS"]]
    for row in rows:
        recent = row["recent_return"]
        shown.append([str(row["member"]), row["phase"], str(row["step"] if row["step"] is not None else "-"),
                      f"{recent:.1f}" if recent is not None else "-", str(row["exploited"]),
                      overrides_of(row["params"])])
    click.echo(table(shown))


@pbt.command()
@click.argument("name")
@output_file_option("Also draw the schedule of each mutated hparam along the ancestry (PNG).")
def lineage(name: str, output_file: Path | None) -> None:
    """The best member's ancestry and its hparam schedule over steps."""
    from rlkube.launch.pbt import controller  # noqa: PLC0415
    from rlkube.launch.sweep.space import overrides_of  # noqa: PLC0415

    config = controller.load_config(name)
    segments = controller.ancestry(config, controller.read_lineage(name))
    best = segments[-1]
    click.echo(f"{name}: member {best['member']} scores best ({best['score']:.1f} at step {best['to']}); "
               f"its ancestry:")
    click.echo(table([["STEPS", "MEMBER", "HPARAMS"]] + [
        [f"{segment['from']}-{segment['to']}", str(segment["member"]), overrides_of(segment["params"])]
        for segment in segments]))
    if output_file:
        controller.plot_schedule(segments, output_file, f"PBT {name}: member {best['member']}'s ancestry")
        click.echo(str(output_file))


@pbt.command()
@click.argument("name")
def cancel(name: str) -> None:
    """Stop the controller and the members (each checkpoints); `rlkube pbt resume` goes on from there."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.pbt import controller  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    controller.load_config(name)
    if pid := controller.controller_alive(name):
        if not controller.controller_process(name).stop(pid, CANCEL_WAIT_SECONDS):  # it cancels the members first
            raise UserError(f"PBT {name}'s controller (pid {pid}) did not stop within {CANCEL_WAIT_SECONDS:.0f} s; "
                            f"see its log")
    elif store.exists(name):
        record = store.get(name)
        target_for(record).cancel(record)
    click.echo(f"cancelled PBT {name}; rlkube pbt resume {name} goes on from the members' checkpoints")


def register(group: click.Group) -> None:
    group.add_command(pbt)
