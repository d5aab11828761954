"""The experiment spec: what to run, built from the user's flags and checked before anything is sent."""

import dataclasses
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.launch.clusters import ClusterProfile
from rlkube.rl.envs import check_env_name
from rlkube.rl.hparams import apply_overrides, get_hparams, to_dict

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Pods of an Indexed Job are named <job>-<index>-<5 random>, and <job> may gain "-copy-<i>": keep room.
MAX_NAME_LENGTH = 40


@dataclass(frozen=True)
class TrainFlags:
    """The `rlkube train` flags of the seed paper that a submission passes on to each copy."""

    hparams: str
    overrides: str = ""
    env: str | None = None
    train_steps: int | None = None
    eval_episodes: int = 10
    test_episodes: int = 10
    seed: int = 0
    record_video: bool = False
    num_workers: int = 0

    def args(self) -> list[str]:
        args = ["--hparams", self.hparams]
        if self.overrides:
            args += ["--hparam-override", self.overrides]
        if self.env:
            args += ["--env", self.env]
        if self.train_steps:
            args += ["--train-steps", str(self.train_steps)]
        args += ["--eval-episodes", str(self.eval_episodes), "--test-episodes", str(self.test_episodes),
                 "--seed", str(self.seed)]
        if self.num_workers:
            args += ["--num-workers", str(self.num_workers)]
        return [*args, "--record-video"] if self.record_video else args


@dataclass(frozen=True)
class Provenance:
    git_commit: str | None
    git_dirty: bool
    rlkube_version: str
    submit_command: str
    created: str


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    cluster: str
    namespace: str
    copies: int
    image: str
    output_dir: str
    train: TrainFlags
    hparams: dict[str, Any]
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentSpec":
        return cls(**{**data, "train": TrainFlags(**data["train"]), "provenance": Provenance(**data["provenance"])})


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise UserError(f"bad experiment name '{name}': use at most {MAX_NAME_LENGTH} lowercase letters, digits "
                        f"and '-', starting and ending with a letter or digit (e.g. dqn-pong-1)")
    return name


def default_name(hparams: str, now: datetime) -> str:
    return f"{hparams.replace('_', '-')[:MAX_NAME_LENGTH - 16]}-{now:%Y%m%d-%H%M%S}"


def git_provenance() -> tuple[str | None, bool]:
    """The commit of the working directory's repository and whether it has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, check=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit, dirty


def build_spec(profile: ClusterProfile, train: TrainFlags, copies: int, name: str | None = None,
               image: str | None = None, now: datetime | None = None,
               provenance: Provenance | None = None) -> ExperimentSpec:
    """Resolve and check everything about an experiment; raises UserError for any bad input."""
    now = now or datetime.now(UTC)
    hp = get_hparams(train.hparams, train.overrides)
    changes = {"env": train.env, "train_steps": str(train.train_steps) if train.train_steps else None}
    hp = apply_overrides(hp, {k: v for k, v in changes.items() if v is not None})
    check_env_name(hp.env)
    name = check_name(name or default_name(train.hparams, now))
    if provenance is None:
        commit, dirty = git_provenance()
        provenance = Provenance(commit, dirty, __version__, shlex.join(["rlkube", *sys.argv[1:]]),
                                now.isoformat(timespec="seconds"))
    return ExperimentSpec(
        name=name, cluster=profile.name, namespace=profile.namespace, copies=copies,
        image=image or profile.default_image, output_dir=f"{profile.output.rstrip('/')}/{name}",
        train=train, hparams=to_dict(hp), provenance=provenance,
    )
