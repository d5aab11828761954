"""A copy's side of population-based training (rlkube.launch.pbt), with --pbt-interval.

At every multiple of the interval the member evaluates, checkpoints, and waits for the controller's decision
(rlkube.storage.pbt_decisions). The decision may give it new hparams and, after an exploit, another member's
checkpoint in place of its own (rlkube.launch.pbt.exploit), which it restores as a restart there would.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rlkube.rl.hparams import HParams, apply_overrides
from rlkube.rl.schedules import multiples_between
from rlkube.run.options import override_text
from rlkube.run.progress import Progress
from rlkube.run.signals import StopRequested, StopSignals
from rlkube.rundir import checkpoint, layout
from rlkube.storage import sync
from rlkube.storage.pbt_decisions import latest_decision, read_decision

# How often a PBT member waiting at a boundary looks for the controller's decision: in its own directory (a file
# to stat), or in its bucket (a request). Every member waits for the slowest, then for this.
PBT_POLL_S = 0.05
PBT_BUCKET_POLL_S = 0.2


def exploit_record(copy_dir: Path, step: int) -> dict[str, Any] | None:
    """PBT's record that the checkpoint at `step` was copied here from another member (see
    rlkube.launch.pbt.exploit), or None. An older record (the member has checkpointed since) no longer applies."""
    path = copy_dir / layout.EXPLOIT_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record["step"] == step else None


def decided_hparams(hp: HParams, decision: dict[str, Any]) -> HParams:
    return apply_overrides(hp, {name: override_text(value) for name, value in decision["hparams"].items()})


class PBTMember:
    """A copy that trains as a member of a population, stopping at every multiple of `interval` steps."""

    def __init__(self, copy_dir: Path, remote_dir: str | None, interval: int) -> None:
        self.copy_dir = copy_dir
        self.remote_dir = remote_dir
        self.interval = interval

    @property
    def decisions_location(self) -> str | Path:
        """Where the controller writes this member's decisions: its bucket directory, else its own."""
        return self.remote_dir or self.copy_dir

    def hparams_at_restart(self, hp: HParams) -> HParams:
        """The hparams the newest PBT decision at or before this copy's checkpoint gave it (or `hp`, the ones it
        started with): a restarted member goes on with what an uninterrupted one would have."""
        latest = checkpoint.latest(layout.checkpoints_dir(self.copy_dir))
        if latest is None:
            return hp
        decision = latest_decision(self.decisions_location, layout.checkpoint_step(latest.name))
        return decided_hparams(hp, decision) if decision else hp

    def at_boundary(self, before: int, after: int, train_steps: int) -> bool:
        return 0 < after < train_steps and multiples_between(before, after, self.interval) > 0

    def undecided(self, step: int) -> bool:
        """No decision for the boundary at `step` yet: a member restarted there goes on waiting for it."""
        return read_decision(self.decisions_location, step) is None

    def wait_for_decision(self, step: int, stop: StopSignals, progress: Progress) -> dict[str, Any]:
        """The controller's decision at the boundary at `step`, once it is there; StopRequested meanwhile on a stop
        signal (the boundary's checkpoint is written)."""
        progress.message(f"PBT: at step {step}, waiting for the controller's decision")
        while (decision := read_decision(self.decisions_location, step)) is None:
            if stop.received is not None:
                raise StopRequested(stop.received, step)
            time.sleep(PBT_BUCKET_POLL_S if self.remote_dir else PBT_POLL_S)
        return decision

    def donor_checkpoint(self, step: int, generation: int) -> Path:
        """After an exploit at `step`: the checkpoint the controller put in place of this member's own (pulled from
        the bucket by the member's writer of `generation`, if it has one)."""
        checkpoint_dir = layout.checkpoints_dir(self.copy_dir)
        name = layout.checkpoint_name(step)
        if self.remote_dir:  # this copy's own checkpoint at the step would shadow the bucket's new one
            shutil.rmtree(checkpoint_dir / name, ignore_errors=True)
            sync.pull_latest_checkpoint(self.remote_dir, self.copy_dir, generation)
        return checkpoint_dir / name
