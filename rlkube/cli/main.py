"""`rlkube`: the command line. Commands that do not train never import TensorFlow."""

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from rlkube import __version__
from rlkube.errors import SUPERSEDED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError, UserErrors, one_line
from rlkube.rl.hparams import HParams
from rlkube.run.options import (
    EXPERIMENT_ID_ENV,
    MAX_COPIES,
    CopyPlan,
    TrainOptions,
    check_copies,
    check_seed,
    copy_hparams,
    default_copies,
    read_copies,
    with_train_options,
)
from rlkube.rundir.layout import COPIES_FILE


@contextmanager
def _mistakes_as_lines() -> Iterator[None]:
    """The user's mistakes as one line each on stderr, then exit 2: rlkube's (UserError) and click's usage errors,
    which click itself prints as usage, a hint and the error on four lines. Input quoted in a message is escaped,
    so that a newline in it cannot make a second line."""
    try:
        yield
    except UserError as error:
        for mistake in error.mistakes if isinstance(error, UserErrors) else [str(error)]:
            click.echo(f"error: {one_line(mistake)}", err=True)
        sys.exit(error.exit_code)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "rlkube"
        click.echo(f"error: {one_line(error.format_message())} (see {command} --help)", err=True)
        sys.exit(USER_ERROR_EXIT_CODE)


class CleanErrors(click.Group):
    """Turn the user's mistakes into one line on stderr and exit 2; never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _mistakes_as_lines():  # the group's own options: `rlkube --bogus`
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from rlkube.launch.clusters import take_notes  # noqa: PLC0415

        take_notes()  # a command's notes are its own: none left by an earlier call in this process
        try:
            with _mistakes_as_lines():  # the command's name, its options and what it does
                result = super().invoke(ctx)
        finally:
            notes = take_notes()  # shown only when the command succeeds, and never carried over to the next
        for note in notes:
            click.echo(note, err=True)
        return result


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rlkube")
def cli() -> None:
    """Reinforcement-learning experiments in TensorFlow 2, from a laptop to Kubernetes."""


def _output_location(output_dir: str) -> tuple[str | None, Path]:
    """--output-dir as (bucket URL or None, where the run works here): a bucket's local mirror, or the directory."""
    from rlkube.storage.filesystems import local_mirror, split_url  # noqa: PLC0415

    if "://" not in output_dir:
        return None, _writable_output_dir(Path(output_dir))
    split_url(output_dir)  # a UserError for a scheme other than gs:// and s3://, or a URL without a bucket
    remote = output_dir.rstrip("/")
    return remote, local_mirror(remote)


def _writable_output_dir(path: Path) -> Path:
    """Check that `path` could be created and written, leaving nothing behind."""
    import tempfile  # noqa: PLC0415

    path = path.expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--output-dir {path}: {existing} is a file, not a directory; choose another path")
    try:
        # os.access says yes to root even on a read-only filesystem, so really try.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"--output-dir {path}: cannot write in {existing} ({error.strerror}); "
                        f"choose a directory you can write") from None
    return path


def _check_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--render needs a display, and none is set (DISPLAY is empty); "
                        "use --record-video to save mp4 and GIF files instead")


@cli.command()
@with_train_options
@click.option("--training/--no-training", default=True, show_default=True,
              help="--no-training restores the latest checkpoint and only tests, weights frozen.")
@click.option("--allow-pickle", is_flag=True,
              help="Let --no-training read a run directory of format 3 or older, whose policies are pickles: a "
                   "pickle runs code when it is loaded, so only for runs you trust.")
@click.option("--copies", type=click.IntRange(min=1, max=MAX_COPIES), default=1, show_default=True,
              help="Independent seeds, each in DIR/copy-<i>/.")
@click.option("--render", is_flag=True, help="Show evaluation episodes in a window.")
@click.option("--output-dir", required=True,
              help="Run directory, local or gs://… / s3://…; an existing one is resumed exactly.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu", "tpu"]), default="auto", show_default=True,
              help="Where the learner runs; actors always act on the CPU.")
@click.option("--copy-index", type=click.IntRange(min=0), default=None, envvar="JOB_COMPLETION_INDEX",
              help="Run only copy I (seed+I or its --copies-file row, in DIR/copy-I); an Indexed Job's pods get it "
                   "from JOB_COMPLETION_INDEX.")
@click.option("--copies-file", default=None,
              help=f"Each copy's seed and hparam overrides, replacing --copies and seed+i (the {COPIES_FILE} that "
                   f"rlkube submit writes).")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's C++ info and warning lines, start-up ones included (TF_CPP_MIN_LOG_LEVEL=0).")
def train(options: TrainOptions, training: bool, allow_pickle: bool, copies: int, render: bool, output_dir: str,
          device: str, copy_index: int | None, copies_file: str | None, verbose: bool) -> None:
    """Train one experiment in this process (what a container runs)."""
    if verbose:  # before TensorFlow loads, here and in the copies' processes, which inherit it
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    # Every check of the user's input runs before TensorFlow is imported, which takes seconds.
    hp = options.resolved_hparams()
    from rlkube.run.tracking import TrackingSettings  # noqa: PLC0415

    tracking = TrackingSettings.from_options(options)
    options.check_actors_flag()
    if options.actors == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UserError("--actors ray needs Ray, which is not installed: pip install 'rlkube[ray]'")
        _check_ray_address_reachable(os.environ.get("RAY_ADDRESS", ""))
    planned = _planned_copies(options.seed, copies, copies_file, copy_index)
    # Every copy's own overrides are checked before anything is written, and each env built once, against its agent.
    copies_hparams = [copy_hparams(hp, copy) for copy in planned]
    remote, output_dir = _output_location(output_dir)
    if render:
        _check_display()
    from rlkube.rl.envs import check_env_fits  # noqa: PLC0415  (gymnasium: not for --help)

    for copy_hp in {copy_hp.env: copy_hp for copy_hp in copies_hparams}.values():
        check_env_fits(copy_hp)
    experiment_id = os.environ.get(EXPERIMENT_ID_ENV) or None
    if not training and not remote:
        _check_testable(output_dir, planned, allow_pickle, experiment_id)
    if not remote:
        _check_resumable(output_dir, planned, copies_hparams, options.pbt_interval)
    _refuse_other_experiments(remote, output_dir, planned, experiment_id)

    from rlkube.run.experiment import train_copy, train_experiment  # noqa: PLC0415  (imports TensorFlow)
    from rlkube.run.runner import RunOptions  # noqa: PLC0415
    from rlkube.run.signals import StopRequested  # noqa: PLC0415
    from rlkube.storage.ownership import Superseded  # noqa: PLC0415

    which = f"copy {copy_index}" if copy_index is not None else f"copies: {len(planned)}"
    where = f"{remote} (working in {output_dir})" if remote else output_dir
    click.echo(f"training {options.hparams} on {hp.env} -> {where}  ({which})", err=True)
    click.echo(f"TensorBoard logdir: {remote or output_dir}   (tensorboard --logdir {output_dir})", err=True)
    # Each copy's seed is its own (CopyPlan.seed), set where the copy starts.
    run_options = RunOptions(eval_episodes=options.eval_episodes, test_episodes=options.test_episodes,
                             training=training, render=render, record_video=options.record_video, device=device,
                             num_workers=options.num_workers, actors=options.actors or "processes",
                             tracking=tracking,
                             pbt_interval=options.pbt_interval, test_policy=options.test_policy or "best",
                             allow_pickle=allow_pickle, experiment_id=experiment_id)
    try:
        if copy_index is None:
            result = train_experiment(hp, output_dir, planned, run_options, remote)
        else:
            result = train_copy(hp, output_dir, planned[0], run_options, remote)
    except StopRequested as stop:
        click.echo(f"stopped by signal {stop.signum} at step {stop.step}; checkpoint saved. Run the same command "
                   "to resume.", err=True)
        sys.exit(128 + stop.signum)
    except Superseded as superseded:
        click.echo(f"stopped: {superseded}", err=True)
        sys.exit(SUPERSEDED_EXIT_CODE)
    _print_result(result, hp.target_return)
    click.echo(f"\nnext:\n  tensorboard --logdir {output_dir}\n"
               f"  rlkube train --hparams {options.hparams} --output-dir {remote or output_dir} --no-training "
               f"--record-video", err=True)


def _check_resumable(output_dir: Path, planned: list[CopyPlan], copies_hparams: list[HParams],
                     pbt_interval: int | None) -> None:
    """A local copy's refusals on resume, before TensorFlow loads: checkpoints of a format this rlkube cannot read,
    and other hparams than the copy holds (the runner checks both again; a PBT member's hparams are the
    controller's, which only the runner knows)."""
    from rlkube.run.resume import check_same_hparams  # noqa: PLC0415
    from rlkube.rundir import checkpoint, layout  # noqa: PLC0415

    for copy, copy_hp in zip(planned, copies_hparams, strict=True):
        copy_dir = layout.copy_dir(output_dir, copy.index)
        checkpoint.latest(layout.checkpoints_dir(copy_dir))
        if not pbt_interval:
            check_same_hparams(copy_dir, copy_hp)


def _check_testable(output_dir: Path, planned: list[CopyPlan], allow_pickle: bool, experiment_id: str | None) -> None:
    """--no-training's refusals, before TensorFlow loads: a copy without a checkpoint, or one whose policies are
    pickles, in a directory that is not already this experiment's copy, without --allow-pickle (the runner checks
    again, and says what it reads)."""
    from rlkube.rundir import checkpoint, layout, pickles  # noqa: PLC0415
    from rlkube.storage import ownership  # noqa: PLC0415

    for copy in planned:
        latest = checkpoint.latest(layout.checkpoints_dir(layout.copy_dir(output_dir, copy.index)))
        if latest is None:
            raise UserError(f"--no-training needs a checkpoint, and {layout.copy_dir(output_dir, copy.index)} has "
                            f"none; train first or point --output-dir at a trained run")
        if checkpoint.policies_pickled(latest):
            directory = layout.copy_dir(output_dir, copy.index)
            pickles.pickle_notice(latest / layout.STATE_FILE, allow_pickle,
                                  owned=ownership.owns(directory, experiment_id, copy.index))


def _refuse_other_experiments(remote: str | None, output_dir: Path, planned: list[CopyPlan],
                              experiment_id: str | None) -> None:
    """One line, before anything is written or TensorFlow imported, if a copy's directory is another experiment's
    (rlkube.storage.ownership); each copy's runner then takes its directory over."""
    from rlkube.rundir.layout import copy_dir, copy_url  # noqa: PLC0415
    from rlkube.storage.ownership import refuse_other_experiment  # noqa: PLC0415

    for copy in planned:
        location = copy_url(remote, copy.index) if remote else copy_dir(output_dir, copy.index)
        refuse_other_experiment(location, experiment_id, copy.index)


def _check_ray_address_reachable(address: str) -> None:
    """A Ray at RAY_ADDRESS that nothing answers at is refused before the run writes anything (joining it happens in
    the run, after its directory exists). "auto", "local" and an unset address start or find a Ray themselves."""
    if address in ("", "auto", "local"):
        return
    import socket  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    where = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = where.hostname, where.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise UserError(f"--actors ray: RAY_ADDRESS={one_line(address)} is not host:port (or ray://host:port); "
                        f"unset it to start a Ray for this run")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise UserError(f"--actors ray: nothing answers at RAY_ADDRESS={one_line(address)} "
                        f"({error.strerror or type(error).__name__}); check the address, or unset RAY_ADDRESS to "
                        f"start a Ray for this run") from None


def _planned_copies(seed: int, copies: int, copies_file: str | None, copy_index: int | None) -> list[CopyPlan]:
    """The copies this process trains: from --copies-file, else seed+i for each of --copies; only --copy-index's."""

    if copies_file is None:
        if copy_index is None:
            return check_copies(default_copies(seed, copies))
        return [check_seed(CopyPlan(copy_index, seed + copy_index))]
    if click.get_current_context().get_parameter_source("copies") is not ParameterSource.DEFAULT:
        raise UserError(f"--copies-file {copies_file} says how many copies there are; leave out --copies")
    planned = read_copies(Path(copies_file))
    if copy_index is None:
        return planned
    if copy_index >= len(planned):
        raise UserError(f"--copy-index {copy_index} is not in --copies-file {copies_file}, which has copies "
                        f"0..{len(planned) - 1}")
    return [planned[copy_index]]


from rlkube.cli import doctor, experiments, hparams, pbt, sweep  # noqa: E402  (the group must exist before its commands join it)

experiments.register(cli)
sweep.register(cli)
pbt.register(cli)
hparams.register(cli)
doctor.register(cli)


def _print_result(result: dict[str, Any], target: float | None) -> None:
    def shown(key: str) -> str:
        value = result.get(key)
        return f"{value['mean']:.2f} ± {value['std']:.2f}" if value else "n/a"

    click.echo(f"copies: {result['copies']}   last eval return: {shown('eval_mean_return')}   "
               f"best eval return: {shown('best_eval_mean_return')}   steps: {shown('total_steps')}   "
               f"SPS: {shown('sps')}")
    test = result.get("test_mean_return")
    if test is None:
        return
    tested = " and ".join(sorted({copy["test_policy"] for copy in result["per_copy"]}))
    verdict = ""
    if target is not None:
        verdict = f": {'at or above' if test['mean'] >= target else 'below'} the set's target {target:g}"
    click.echo(f"test return ({tested} policy): {shown('test_mean_return')}{verdict}")
