"""hparams.yaml: the resolved hparams a copy runs with, its seed, and what each resume changed.

Written by the runner and printed by `rlkube hparams show`, through the one function here, so that what a user
reads before a run is what the run saves.
"""

from typing import Any

import yaml


def hparams_record_text(hparams: dict[str, Any], seed: int, changes: list[dict[str, Any]] | None = None) -> str:
    """The file's text: `hparams` in saved form (rlkube.rl.hparams.to_dict), the seed, and under `changes` each
    resume's changes, when there were any."""
    record: dict[str, Any] = {"hparams": hparams, "seed": seed}
    if changes:
        record["changes"] = changes
    return yaml.safe_dump(record, sort_keys=False)
