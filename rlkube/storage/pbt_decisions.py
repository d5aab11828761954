"""A PBT member's decisions: at each boundary the controller (rlkube.launch.pbt) writes one into every member's
directory, wherever the member works from (a local path, or its bucket), and the member, waiting there at its
checkpoint, goes on with it (rlkube.run.pbt_member).

Each decision file (pbt-decision-<step>.json, named in rlkube.rundir.layout) holds {"generation", "step",
"hparams": {name: value}, "exploit": null or {"donor"}}: the member's mutated hparams from that step on, and
whether its checkpoint at that step was replaced by a donor's (the exploit record beside it, layout.EXPLOIT_FILE,
has the seed of the member's own streams). A member that restarts takes the hparams of the newest decision at or
before its checkpoint, so a restart and an uninterrupted run go on alike.
"""

import json
from pathlib import Path
from typing import Any

from rlkube.rundir.layout import pbt_decision_name, pbt_decision_step
from rlkube.storage import filesystems


def write_decision(copy_location: str | Path, decision: dict[str, Any]) -> None:
    """Write the decision whole: a member polling for it never reads half of one."""
    fs, root = filesystems.filesystem_for(copy_location)
    name = pbt_decision_name(decision["step"])
    if filesystems.is_remote(str(copy_location)):
        fs.pipe(f"{root}/{name}", json.dumps(decision).encode())  # an object appears whole
        return
    temporary = Path(root) / f".{name}.tmp"
    temporary.write_text(json.dumps(decision))
    temporary.replace(Path(root) / name)


def read_decision(copy_location: str | Path, step: int) -> dict[str, Any] | None:
    fs, root = filesystems.filesystem_for(copy_location)
    path = f"{root}/{pbt_decision_name(step)}"
    return json.loads(fs.cat(path)) if fs.exists(path) else None


def latest_decision(copy_location: str | Path, up_to: int) -> dict[str, Any] | None:
    """The newest decision at or before step `up_to`, or None."""
    fs, root = filesystems.filesystem_for(copy_location)
    if not fs.exists(root):
        return None
    steps = [pbt_decision_step(str(entry).rstrip("/").rsplit("/", 1)[-1]) for entry in fs.ls(root, detail=False)]
    steps = [step for step in steps if step is not None and step <= up_to]
    return read_decision(copy_location, max(steps)) if steps else None
