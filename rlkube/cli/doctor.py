"""`rlkube doctor`: what must hold before a submit can work, one line per check with its fix, and a summary.

Exit codes: 0 when every check passed or only warned, 1 when one failed, 2 for bad input (an unknown profile).
"""

import sys
from pathlib import Path

import click

from rlkube.cli.completion import cluster_profiles
from rlkube.errors import UserError


@click.command()
@click.option("--cluster", default=None, shell_complete=cluster_profiles,
              help="Check this profile's cluster, registry and bucket (rlkube clusters); without it, this machine.")
@click.option("--hparams", "hparams_sets", multiple=True, metavar="SET",
              help="Without --cluster: also check the extras this hparams set needs (repeatable).")
@click.option("--pods", is_flag=True,
              help="Also run one tiny Job with the pods' identity that writes a marker to the output, then delete it.")
@click.option("--image", default=None, help="Check this image rather than the profile's.")
def doctor(cluster: str | None, hparams_sets: tuple[str, ...], pods: bool, image: str | None) -> None:
    """Check everything a submit needs: local set-up, or with --cluster a profile's cluster, image and bucket."""
    from rlkube.launch.clusters import get_profile  # noqa: PLC0415
    from rlkube.launch.doctor import (  # noqa: PLC0415
        exit_code,
        format_check,
        local_checks,
        summary,
    )

    profile = get_profile(cluster) if cluster is not None else None
    if profile is None or profile.target == "local":
        if pods or image:
            raise UserError("--pods and --image check a cluster profile; pass --cluster, e.g. --cluster kube")
        runs_dir = Path(profile.output if profile is not None else "runs")
        checks, action = local_checks(list(hparams_sets), runs_dir), "train"
    elif profile.target == "kubernetes":
        if hparams_sets:
            raise UserError("--hparams checks this machine's extras; leave out --cluster (the images hold every extra)")
        from rlkube.launch.targets.kubernetes.doctor import cluster_checks  # noqa: PLC0415

        checks, action = cluster_checks(profile, image or profile.default_image, pods), "submit"
    else:
        raise UserError(f"rlkube doctor checks local and kubernetes profiles; '{profile.name}' is {profile.target}")
    for check in checks:
        click.echo(format_check(check))
    click.echo(summary(checks, action))
    sys.exit(exit_code(checks))


def register(group: click.Group) -> None:
    group.add_command(doctor)
