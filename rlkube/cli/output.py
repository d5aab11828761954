"""What commands print besides their own lines: aligned tables, the next commands, a detached loop started, and
what an experiment may hold at most."""

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rlkube.launch.clusters import ClusterProfile
    from rlkube.launch.detached import DetachedLoop


def table(rows: list[list[str]]) -> str:
    """Rows of cells (the first row the header) in left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def next_commands(*commands: str) -> str:
    """The commands a user will want after this one (SkyPilot's habit)."""
    return "\nnext:\n" + "\n".join(f"  {command}" for command in commands)


def started(loop: "DetachedLoop", pid: int, summary: str, then: list[str], follow: bool) -> None:
    """Say what a detached loop (a sweep's driver, a PBT controller) runs, where it logs and what to run next; with
    --follow, stream its log until it ends."""
    click.echo(f"{summary}; {loop.role} pid {pid}, log {loop.log}")
    click.echo(next_commands(*then))
    if follow:
        loop.follow(pid, click.echo)


def echo_ceiling(profile: "ClusterProfile", copies: int, err: bool = False, scope: str = "") -> None:
    """What `copies` copies on the profile may hold at most: chip- or GPU-hours, and at its price, the cost ceiling
    (nothing for a profile without accelerators). `scope` says what the copies are, e.g. a sweep's trials."""
    from rlkube.launch.cost import ceiling  # noqa: PLC0415

    if (held := ceiling(profile, copies)) is not None:
        click.echo(f"{scope}{held.line()}", err=err)
