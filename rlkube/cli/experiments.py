"""`rlkube submit / render / status / list / logs / cancel / tensorboard / clusters`.

Thin: parse flags, build the spec, call the target (local processes or a Kubernetes cluster).
None of these import TensorFlow.
"""

import dataclasses
import functools
import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from rlkube.cli.completion import experiment_names, experiment_or_sweep_names
from rlkube.cli.flags import cluster_option, follow_option, output_format_option
from rlkube.cli.output import echo_ceiling, table
from rlkube.errors import UserError
from rlkube.run.options import MAX_COPIES, TrainOptions, with_train_options

if TYPE_CHECKING:
    from rlkube.launch.store import Record

DURATION = re.compile(r"(\d+)([smhd])")  # fullmatch: `$` lets a trailing newline in
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def submission_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What an experiment is and where it goes: shared by `submit` and `render`."""
    options = [
        cluster_option("the copies run"),
        with_train_options,
        click.option("--copies", type=click.IntRange(min=1, max=MAX_COPIES), default=1, show_default=True,
                     help="Independent seeds: the indices of one Indexed Job."),
        click.option("--name", default=None, help="Experiment name (default: <hparams>-<time>)."),
        click.option("--image", default=None, help="Container image (default: the profile's)."),
        click.option("--tpu", default=None, help="Single-host TPU type for a TPU profile, e.g. v5litepod-8, v4-8."),
        click.option("--context", default=None, help="kube context (default: the profile's, else current)."),
        click.option("-n", "--namespace", default=None, help="Namespace (default: the profile's)."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _spec_and_profile(options: TrainOptions, cluster: str, copies: int, name: str | None, image: str | None,
                      tpu: str | None, context: str | None, namespace: str | None) -> tuple[Any, Any]:
    from rlkube.launch.clusters import check_namespace, get_profile, with_accelerator  # noqa: PLC0415
    from rlkube.launch.spec import build_spec  # noqa: PLC0415
    from rlkube.launch.tpu import resolve_single_host  # noqa: PLC0415

    profile = get_profile(cluster)
    if tpu:
        if profile.accelerator is None or profile.accelerator.type != "tpu":
            raise UserError(f"--tpu needs a TPU profile, and cluster '{cluster}' has none (try --cluster gke-tpu)")
        profile = with_accelerator(profile, tpu)
    if profile.accelerator is not None and profile.accelerator.type == "tpu":
        # Refused here, where the user asks for a slice (by --tpu or in the profile), not in the renderer, which
        # still renders a multi-host slice for the Helm chart's parity tests.
        resolve_single_host(profile.accelerator.name)
    if namespace is not None:
        check_namespace(namespace, "-n/--namespace")
    if context == "":
        raise UserError("--context '' names no kube context; leave it out for the profile's (else the current one)")
    changes = {k: v for k, v in (("context", context), ("namespace", namespace)) if v}
    profile = dataclasses.replace(profile, **changes)
    return build_spec(profile, options, copies, name=name, image=image), profile


@click.command()
@submission_options
@output_format_option("yaml", "json")
@click.option("--format", "what", type=click.Choice(["manifests", "helm-values"]), default="manifests",
              show_default=True, help="Kubernetes objects, or values for the helm/rlkube chart.")
def render(output_format: str, what: str, **flags: Any) -> None:
    """Print the Kubernetes objects (or Helm values) an experiment would create; submit nothing."""
    from rlkube.launch.render import helm_values, render_values, to_yaml, values_to_yaml  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    spec, profile = _spec_and_profile(**flags)
    if not target_for(profile).renders_manifests:
        raise UserError(f"cluster '{profile.name}' runs local processes, which have no manifests; "
                        f"render for a Kubernetes profile, e.g. --cluster kube")
    echo_ceiling(profile, len(spec.copies), err=True)  # stdout stays the objects, for kubectl apply -f -
    values = helm_values(spec, profile)
    data: Any = values if what == "helm-values" else render_values(values)
    if output_format == "json":
        click.echo(json.dumps(data, indent=2))
    elif what == "helm-values":
        click.echo(values_to_yaml(data), nl=False)
    else:
        click.echo(to_yaml(data), nl=False)


@click.command()
@submission_options
@click.option("--dry-run", is_flag=True, help="Validate (server-side on Kubernetes) and create nothing.")
@follow_option("Stream every copy's logs after submitting.")
@click.option("--replace", is_flag=True, help="Cancel an experiment of the same name first.")
@click.option("--build", "build_target", type=click.Choice(["cpu", "gpu", "tpu"]), default=None,
              help="Build and push this image first, then submit it by digest.")
def submit(dry_run: bool, follow: bool, replace: bool, build_target: str | None, **flags: Any) -> None:
    """Submit an experiment: K copies on local processes or as one Indexed Job on a cluster."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    spec, profile = _spec_and_profile(**flags)
    target = target_for(profile)
    if not target.runs_images and spec.train.track:  # the copies run here: their tracker's client must be installed
        from rlkube.run.tracking import TrackingSettings  # noqa: PLC0415

        TrackingSettings.from_options(spec.train)
    if build_target:
        from rlkube.launch import images  # noqa: PLC0415

        if not target.runs_images:
            raise UserError("--build makes an image for a cluster; local copies run this checkout directly")
        image = images.build(build_target, images.default_registry(profile.default_image), True, images.repo_root(),
                             lambda line: click.echo(line, err=True))
        spec = dataclasses.replace(spec, image=image)
    if dry_run:
        echo_ceiling(profile, len(spec.copies), err=True)
        click.echo(target.dryrun(spec, replace=replace))
        return
    spec = target.submit(spec, replace=replace)
    click.echo(f"submitted {spec.name} to {profile.name}: {len(spec.copies)} "
               f"{'copy' if len(spec.copies) == 1 else 'copies'} of {spec.train.hparams}, output {spec.output_dir}")
    echo_ceiling(profile, len(spec.copies), err=False)
    click.echo(f"\nnext:\n  rlkube logs {spec.name}\n  rlkube status {spec.name}\n"
               f"  rlkube tensorboard {spec.name}\n  rlkube cancel {spec.name}")
    if follow:
        target.logs(store.get(spec.name), click.echo, follow=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _chosen(experiment: str | None) -> "Record":
    """The named experiment; without a name, the latest submitted, named on the first line so that the user sees
    which one a command acts on. That line goes to stderr, so `-o json` output stays parseable."""
    from rlkube.launch import store  # noqa: PLC0415

    record = store.get_or_latest(experiment)
    if experiment is None:
        click.echo(f"experiment: {record.name} (latest)", err=True)
    return record


@click.command()
@click.argument("experiment", required=False, shell_complete=experiment_names)
@output_format_option("table", "json")
def status(experiment: str | None, output_format: str) -> None:
    """Per-copy phase, restarts, node, age and the last reported step and return.

    Without EXPERIMENT: the latest submitted.
    """
    from rlkube.launch.targets.base import overall_phase, target_for  # noqa: PLC0415

    record = _chosen(experiment)
    copies = target_for(record).describe(record)
    if output_format == "json":
        click.echo(json.dumps({"experiment": record.name, "cluster": record.cluster,
                               "phase": overall_phase(copies), "copies": [dataclasses.asdict(c) for c in copies]},
                              indent=2))
        return
    click.echo(f"{record.name}  cluster {record.cluster}  {overall_phase(copies)}  {record.spec.train.hparams}")
    rows = [["COPY", "PHASE", "RESTARTS", "LAST FAILURE", "NODE", "AGE", "STEP", "RETURN"]]
    rows += [[f"copy-{c.copy}", c.phase, str(c.restarts), c.last_failure or "-", c.node or "-", _age(c.age_seconds),
              str(c.last_step) if c.last_step is not None else "-",
              f"{c.last_return:.2f}" if c.last_return is not None else "-"] for c in copies]
    click.echo(table(rows))


@click.command(name="list")
@output_format_option("table", "json")
@click.option("--mine", is_flag=True, help="Only the experiments you submitted (as each one's cluster knows you).")
def list_experiments(output_format: str, mine: bool) -> None:
    """Every submitted experiment, who submitted it, and its live state from its cluster."""
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.targets.base import overall_phase, target_for  # noqa: PLC0415

    records = store.all_records()
    if mine:
        records = _submitted_by_me(records)
    entries = []
    for record in records:
        try:
            phase = overall_phase(target_for(record).describe(record))
        except UserError as error:
            phase = f"unreachable ({error})"
        entries.append({"name": record.name, "cluster": record.cluster, "phase": phase,
                        "hparams": record.spec.train.hparams, "copies": record.copies, "image": record.image,
                        "git_commit": (record.git_commit or "")[:12], "created": record.created,
                        "creator": record.creator})
    if output_format == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo("none submitted by you; every experiment: rlkube list" if mine else
                   "no experiments yet; start one with: rlkube submit --hparams dqn_cartpole")
        return
    rows = [["NAME", "CLUSTER", "PHASE", "HPARAMS", "COPIES", "COMMIT", "CREATED", "SUBMITTED BY"]]
    rows += [[e["name"], e["cluster"], e["phase"], e["hparams"], str(e["copies"]), e["git_commit"] or "-",
              e["created"], e["creator"] or "-"] for e in entries]
    click.echo(table(rows))


def _submitted_by_me(records: list["Record"]) -> list["Record"]:
    """The records whose creator is who this machine's user is on the record's cluster (asked once per cluster). A
    cluster that cannot say is named on stderr, and its experiments left out."""
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    me: dict[tuple[str, str | None], str | None] = {}
    for record in records:
        where = (record.target, record.context)
        if where not in me:
            try:
                me[where] = target_for(record).whoami(record.context)
            except UserError as error:
                click.echo(f"left out the experiments on {record.cluster}: {error}", err=True)
                me[where] = None
    return [record for record in records if record.creator is not None and record.creator == me[(record.target,
                                                                                                   record.context)]]


def _seconds(duration: str | None) -> int | None:
    if duration is None:
        return None
    match = DURATION.fullmatch(duration)
    if not match:
        raise UserError(f"bad --since '{duration}'; write a number and a unit, e.g. 30s, 10m, 2h, 1d")
    return int(match.group(1)) * SECONDS[match.group(2)]


@click.command()
@click.argument("experiment", required=False, shell_complete=experiment_names)
@click.option("--copy", "copy_index", type=click.IntRange(min=0), default=None, help="Only this copy.")
@follow_option("Keep streaming until the experiment ends.", by_default=True)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Lines of history per copy.")
@click.option("--since", default=None, help="Only newer lines (Kubernetes), e.g. 10m.")
def logs(experiment: str | None, copy_index: int | None, follow: bool, tail: int | None, since: str | None) -> None:
    """Every copy's log, prefixed `copy-<i> |`, following until the experiment ends.

    Without EXPERIMENT: the latest submitted.
    """
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    record = _chosen(experiment)
    if copy_index is not None and copy_index >= record.copies:
        raise UserError(f"--copy {copy_index} is out of range; {record.name} has copies 0..{record.copies - 1}")
    target_for(record).logs(record, click.echo, copy=copy_index, follow=follow, tail=tail,
                            since_seconds=_seconds(since))


@click.command()
@click.argument("experiment", required=False, shell_complete=experiment_names)
@click.option("-y", "--yes", is_flag=True, help="Cancel the latest experiment without asking.")
def cancel(experiment: str | None, yes: bool) -> None:
    """Stop every copy (each checkpoints first) and remove the experiment's objects; results are kept.

    Without EXPERIMENT: the latest submitted, after a confirmation (-y skips it).
    """
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    record = _chosen(experiment)
    if experiment is None and not yes:
        # Guessing which experiment to stop is destructive, so it is confirmed; a script (no terminal to ask on)
        # is refused rather than left waiting for an answer.
        if not sys.stdin.isatty():
            raise UserError(f"cancel without a name means the latest experiment, {record.name}; confirm with -y, "
                            f"or name it: rlkube cancel {record.name}")
        copies = f"{record.copies} {'copy' if record.copies == 1 else 'copies'}"
        click.confirm(f"cancel {record.name} ({copies} on {record.cluster}, submitted {record.created})?",
                      abort=True, err=True)
    removed = target_for(record).cancel(record)
    click.echo(f"cancelled {record.name}: removed {', '.join(removed) if removed else 'nothing (it had ended)'}")
    click.echo(f"results stay in {record.output_dir}")


@click.command()
@click.argument("experiment", required=False, shell_complete=experiment_or_sweep_names)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=0, help="Local port (default: a free one).")
@click.option("--in-cluster", is_flag=True,
              help="The namespace's TensorBoard through a port-forward, even for runs in a bucket (gs:// only, and "
                   "only if that TensorBoard's pod may read the bucket).")
def tensorboard(experiment: str | None, port: int, in_cluster: bool) -> None:
    """Serve TensorBoard on an experiment at a URL on 127.0.0.1, until Ctrl-C.

    Without EXPERIMENT: the latest submitted. A sweep's name: every trial together, for the HParams dashboard.

    \b
    Where the event files are read from:
      local copies             their run directory
      a cluster's volume       the namespace's TensorBoard (deployed on first use), port-forwarded
      a bucket (gs://, s3://)  the bucket, synced here (only new bytes, every few seconds)

    For runs in a bucket the sync is the better way, and the default: it needs neither the cluster nor the
    experiment's pods (finished and deleted experiments work), only this machine's access to the bucket. The
    in-cluster TensorBoard would need the bucket's identity in its own pod, and cannot read s3:// at all.
    """
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    if experiment is not None and not store.exists(experiment) and store.find_sweep(experiment):
        _sweep_tensorboard(experiment, port, in_cluster)
        return
    record = _chosen(experiment)
    target_for(record).tensorboard(record, port, click.echo, in_cluster=in_cluster)


def _sweep_tensorboard(sweep: str, port: int, in_cluster: bool) -> None:
    from rlkube.launch import store  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415
    from rlkube.launch.tensorboard import over_experiments  # noqa: PLC0415
    from rlkube.storage.filesystems import is_remote  # noqa: PLC0415

    trials = store.sweep_trials(sweep)
    if not trials:
        raise UserError(f"sweep {sweep} has started no trial yet; rlkube sweep status {sweep}")
    first = trials[0]
    if in_cluster or (target_for(first).writes_to_cluster_volume and not is_remote(first.output_dir)):
        # The namespace's TensorBoard reads the whole volume, every trial included.
        target_for(first).tensorboard(first, port, click.echo, in_cluster=True)
        return
    over_experiments(trials, port, click.echo, f"sweep {sweep} ({len(trials)} trials)")


@click.command()
@click.argument("experiment", required=False, shell_complete=experiment_names)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also write learning curves (mean ± std band across copies) to this PNG.")
@output_format_option("table", "json")
def results(experiment: str | None, plot_path: str | None, output_format: str) -> None:
    """Final evaluation and test returns of every copy, and mean ± std across copies.

    Without EXPERIMENT: the latest submitted.
    """
    from pathlib import Path  # noqa: PLC0415

    from rlkube.launch.results import collect, final_returns, plot  # noqa: PLC0415
    from rlkube.rundir.across_copies import mean_and_std  # noqa: PLC0415

    record = _chosen(experiment)
    copies = collect(record)
    summary = {key: mean_and_std(values) if (values := final_returns(copies, key)) else None
               for key in ("eval_mean_return", "best_eval_mean_return", "test_mean_return")}
    if output_format == "json":
        click.echo(json.dumps({"experiment": record.name, "copies": copies, "across_copies": summary}, indent=2))
    else:
        rows = [["COPY", "STEPS", "LAST EVAL", "BEST EVAL (STEP)", "TEST RETURN (POLICY)"]]
        for copy in copies:
            done = copy["summary"]
            last = copy["evaluations"][-1] if copy["evaluations"] else None
            best = max(copy["evaluations"], key=lambda evaluation: evaluation["mean_return"], default=None)
            rows.append([f"copy-{copy['copy']}", str(done["total_steps"] if done else last["step"] if last else "-"),
                         _pm(done.get("eval_mean_return"), done.get("eval_std_return")) if done
                         else (_pm(last["mean_return"], last["std_return"]) + " (running)" if last else "-"),
                         f"{_pm(best['mean_return'], best['std_return'])} ({best['step']})" if best else "-",
                         f"{_pm(done.get('test_mean_return'), done.get('test_std_return'))} "
                         f"({done.get('test_policy', 'last')})" if done else "-"])
        click.echo(table(rows))
        for key, label in (("eval_mean_return", "last eval"), ("best_eval_mean_return", "best eval"),
                           ("test_mean_return", "test")):
            if summary[key]:
                n = len(final_returns(copies, key))
                click.echo(f"{label} return across {n} {'copy' if n == 1 else 'copies'}: "
                           f"{summary[key][0]:.2f} ± {summary[key][1]:.2f}")
    if plot_path:
        plot(record, copies, Path(plot_path))
        click.echo(f"learning curves: {plot_path}", err=True)


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std or 0.0:.2f}"


@click.command()
@click.option("--target", type=click.Choice(["cpu", "gpu", "tpu"]), default="cpu", show_default=True)
@click.option("--push", is_flag=True, help="Push to the registry, and print the image by digest.")
@click.option("--registry", default=None, help="e.g. us-docker.pkg.dev/PROJECT/rlkube (default: none, local tag).")
def build(target: str, push: bool, registry: str | None) -> None:
    """Build a container image from images/<target>.Dockerfile, tagged by the git commit."""
    from rlkube.launch import images  # noqa: PLC0415

    image = images.build(target, registry, push, images.repo_root(), lambda line: click.echo(line, err=True))
    click.echo(image)


@click.command()
def clusters() -> None:
    """The cluster profiles: shipped ones and yours (~/.config/rlkube/clusters.yaml, ./rlkube.yaml)."""
    from rlkube.launch.clusters import config_files, load_profiles  # noqa: PLC0415
    from rlkube.launch.targets.base import target_for  # noqa: PLC0415

    rows = [["NAME", "TARGET", "PROVIDER", "ACCELERATOR", "CONTEXT", "NAMESPACE", "OUTPUT"]]
    for profile in load_profiles().values():
        accelerator = profile.accelerator
        in_namespace = target_for(profile).renders_manifests
        rows.append([profile.name, profile.target, profile.provider if in_namespace else "-",
                     f"{accelerator.type} {accelerator.name}" if accelerator else "-",
                     profile.context or ("(current)" if in_namespace else "-"),
                     profile.namespace if in_namespace else "-", profile.output])
    click.echo(table(rows))
    click.echo(f"\noverride or add profiles in: {', '.join(str(p) for p in config_files())}", err=True)


COMMANDS = [submit, render, status, list_experiments, logs, cancel, tensorboard, results, build, clusters]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
