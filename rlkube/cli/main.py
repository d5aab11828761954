"""`rlkube`: the command line. Commands that do not train never import TensorFlow."""

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rlkube import __version__


class CleanErrors(click.Group):
    """Turn the user's mistakes into one line on stderr and exit 2; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from rlkube.errors import UserError  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rlkube")
def cli() -> None:
    """Reinforcement-learning experiments in TensorFlow 2, from a laptop to Kubernetes."""


def _writable_output_dir(path: Path) -> Path:
    """Check that `path` could be created and written, leaving nothing behind."""
    import tempfile  # noqa: PLC0415

    from rlkube.errors import UserError  # noqa: PLC0415

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
    from rlkube.errors import UserError  # noqa: PLC0415

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--render needs a display, and none is set (DISPLAY is empty); "
                        "use --record-video to save mp4 and GIF files instead")


def train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The seed paper's train flags, shared by `train` and (later) `submit`."""
    options = [
        click.option("--hparams", "hparams_name", required=True, help="Named hparams set, e.g. dqn_cartpole."),
        click.option("--hparam-override", "overrides", default="",
                     help='Comma-separated key=value, e.g. "lr=1e-3,batch_size=64" (tuples: 64;64).'),
        click.option("--env", default=None, help="Environment, replacing the set's."),
        click.option("--train-steps", type=click.IntRange(min=1), default=None,
                     help="Environment steps, replacing the set's."),
        click.option("--eval-episodes", type=click.IntRange(min=0), default=10, show_default=True),
        click.option("--test-episodes", type=click.IntRange(min=0), default=10, show_default=True),
        click.option("--training/--no-training", default=True, show_default=True,
                     help="--no-training restores the latest checkpoint and only tests, weights frozen."),
        click.option("--copies", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Independent seeds, each in DIR/copy-<i>/."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of copy 0; copy i gets seed+i."),
        click.option("--render", is_flag=True, help="Show evaluation episodes in a window."),
        click.option("--record-video", is_flag=True, help="Write mp4 and GIF of evaluation and test episodes."),
        click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Actor processes stepping their own envs while this process learns; 0 acts in-process."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


@cli.command()
@train_options
@click.option("--output-dir", required=True,
              help="Run directory, local or gs://… / s3://…; an existing one is resumed exactly.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu", "tpu"]), default="auto", show_default=True,
              help="Where the learner runs; actors always act on the CPU.")
@click.option("--copy-index", type=click.IntRange(min=0), default=None, envvar="JOB_COMPLETION_INDEX",
              help="Run only copy I (seed+I, in DIR/copy-I); an Indexed Job's pods get it from JOB_COMPLETION_INDEX.")
def train(hparams_name: str, overrides: str, env: str | None, train_steps: int | None, eval_episodes: int,
          test_episodes: int, training: bool, copies: int, seed: int, render: bool, record_video: bool,
          num_workers: int, output_dir: str, device: str, copy_index: int | None) -> None:
    """Train one experiment in this process (what a container runs)."""
    from rlkube.errors import UserError  # noqa: PLC0415
    from rlkube.rl.envs import check_env_name  # noqa: PLC0415
    from rlkube.rl.hparams import apply_overrides, get_hparams  # noqa: PLC0415

    hp = get_hparams(hparams_name, overrides)
    flag_values = {"env": env, "train_steps": str(train_steps) if train_steps else None}
    hp = apply_overrides(hp, {k: v for k, v in flag_values.items() if v is not None})
    check_env_name(hp.env)
    from rlkube.storage import is_remote, local_mirror  # noqa: PLC0415

    remote = output_dir.rstrip("/") if is_remote(output_dir) else None
    output_dir = local_mirror(remote) if remote else _writable_output_dir(Path(output_dir))
    if render:
        _check_display()
    if not training and not remote:
        from rlkube.run.experiment import copy_dir  # noqa: PLC0415
        from rlkube.run.runner import has_checkpoint  # noqa: PLC0415

        indices = [copy_index] if copy_index is not None else range(copies)
        missing = [i for i in indices if not has_checkpoint(copy_dir(output_dir, i))]
        if missing:
            raise UserError(f"--no-training needs a checkpoint, and {copy_dir(output_dir, missing[0])} has "
                            f"none; train first or point --output-dir at a trained run")

    from rlkube.run.experiment import train_copy, train_experiment  # noqa: PLC0415  (imports TensorFlow)
    from rlkube.run.runner import RunOptions, StopRequested  # noqa: PLC0415

    which = f"copy {copy_index}" if copy_index is not None else f"copies: {copies}"
    where = f"{remote} (working in {output_dir})" if remote else output_dir
    click.echo(f"training {hparams_name} on {hp.env} -> {where}  ({which})", err=True)
    click.echo(f"TensorBoard logdir: {remote or output_dir}   (tensorboard --logdir {output_dir})", err=True)
    options = RunOptions(seed=seed, eval_episodes=eval_episodes, test_episodes=test_episodes,
                         training=training, render=render, record_video=record_video, device=device,
                         num_workers=num_workers)
    try:
        if copy_index is None:
            result = train_experiment(hp, output_dir, copies, options, remote)
        else:
            result = train_copy(hp, output_dir, copy_index, options, remote)
    except StopRequested as stop:
        click.echo(f"stopped by signal {stop.signum} at step {stop.step}; checkpoint saved. Run the same command "
                   "to resume.", err=True)
        sys.exit(128 + stop.signum)
    _print_result(result)
    click.echo(f"\nnext:\n  tensorboard --logdir {output_dir}\n"
               f"  rlkube train --hparams {hparams_name} --output-dir {remote or output_dir} --no-training "
               f"--record-video", err=True)


from rlkube.cli import experiments  # noqa: E402  (the group must exist before its commands join it)

experiments.register(cli)


def _print_result(result: dict[str, Any]) -> None:
    def shown(key: str) -> str:
        value = result.get(key)
        return f"{value['mean']:.2f} ± {value['std']:.2f}" if value else "n/a"

    click.echo(f"copies: {result['copies']}   eval return: {shown('eval_mean_return')}   "
               f"test return: {shown('test_mean_return')}   steps: {shown('total_steps')}   "
               f"SPS: {shown('sps')}")
