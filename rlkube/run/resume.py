"""Resuming a copy: what it must keep (its seed, the hparams its agent cannot change mid-run), what a resume
changed (recorded in hparams.yaml), and the environments a checkpoint holds so that a run continues mid-episode.
"""

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

from rlkube.errors import UserError
from rlkube.rl.hparams import RUN_LOOP_MUTABLE, HParams, changed_hparams, from_dict, to_dict
from rlkube.rundir import layout
from rlkube.rundir.hparams_record import hparams_record_text


def saved_record(copy_dir: Path) -> dict[str, Any] | None:
    """The copy's hparams.yaml (hparams, seed, changes), None before its first start: what a resume is checked
    against."""
    path = copy_dir / layout.HPARAMS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def check_same_hparams(copy_dir: Path, hp: HParams) -> dict[str, tuple[Any, Any]]:
    """A run directory holds one experiment: refuse to resume it with hparams its agent cannot change mid-run.

    Returns the changes it accepts, as (saved, new) by name: those in the saved set's mutable_on_resume(),
    which the runner applies once the checkpoint is restored.
    """
    record = saved_record(copy_dir)
    if record is None:
        return {}
    saved = from_dict(record["hparams"])
    changes = changed_hparams(saved, hp)
    # train_steps may grow: continuing a finished run for longer is a resume, not a new experiment.
    changes.pop("train_steps", None)
    mutable = saved.mutable_on_resume() | RUN_LOOP_MUTABLE
    if fixed := [key for key in changes if key not in mutable]:
        shown = ", ".join(f"{key}: {changes[key][0]} -> {changes[key][1]}" for key in fixed[:3])
        may_change = f" (a resume may change {', '.join(sorted(mutable))})" if mutable else ""
        raise UserError(f"{copy_dir} holds a run with other hparams ({shown}); "
                        f"use a new --output-dir or the same hparams to resume{may_change}")
    return changes


def check_same_seed(copy_dir: Path, seed: int) -> None:
    """A copy resumes only with the seed it started with: its RNGs in the checkpoint came from that seed."""
    record = saved_record(copy_dir)
    if record is not None and (saved := record["seed"]) != seed:
        raise UserError(f"{copy_dir} holds a run with seed {saved}, not {seed}; "
                        f"use a new --output-dir or the same seed to resume")


def record_hparams_changes(copy_dir: Path, hp: HParams, changes: dict[str, tuple[Any, Any]], step: int) -> str:
    """hparams.yaml holds the hparams in force and, under `changes`, what each resume changed at which step.
    Returns the changes as a line for the progress log."""
    record = saved_record(copy_dir)
    changed = {key: {"from": old, "to": new} for key, (old, new) in changes.items()}
    history = [*record.get("changes", []), {"step": step, **changed}]
    layout.write_atomically(copy_dir / layout.HPARAMS_FILE, hparams_record_text(to_dict(hp), record["seed"], history))
    shown = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
    return f"hparams changed at step {step}: {shown}"


def pickled_envs(envs: gym.vector.VectorEnv | None) -> bytes | None:
    """The env state itself, so a resumed run continues mid-episode (sync vector envs only)."""
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return None
    return pickle.dumps(envs)
