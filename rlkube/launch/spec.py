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
from rlkube.errors import UserError, refuse_credentials
from rlkube.launch.clusters import ClusterProfile
from rlkube.launch.nodes import node_fit_problem
from rlkube.rl.hparams import to_dict
from rlkube.run.options import CopyPlan, TrainOptions, check_copies, copy_hparams, default_copies

NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # always fullmatch: `$` lets a trailing newline in
# Pods of an Indexed Job are named <job>-<index>-<5 random>, and <job> may gain "-copy-<i>": keep room.
MAX_NAME_LENGTH = 40


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
    copies: list[CopyPlan]
    image: str
    output_dir: str
    train: TrainOptions
    hparams: dict[str, Any]
    provenance: Provenance
    sweep: str | None = None  # the sweep this experiment is a trial of (labels its objects rlkube.io/sweep)
    # Which experiment owns the copies' run directories (rlkube.launch.store.experiment_id), given at submission;
    # empty in a render (the pods then write as a run trained by hand would).
    experiment_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentSpec":
        copies = data["copies"]
        # Records from before copies had their own seeds hold a count: copy i had seed+i, as default_copies plans.
        plans = default_copies(data["train"]["seed"], copies) if isinstance(copies, int) else \
            [CopyPlan(**copy) for copy in copies]
        return cls(**{**data, "copies": plans,
                      "train": TrainOptions(**data["train"]), "provenance": Provenance(**data["provenance"])})


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"bad experiment name {name!r}: use at most {MAX_NAME_LENGTH} lowercase letters, digits "
                        f"and '-', starting and ending with a letter or digit (e.g. dqn-pong-1)")
    return name


def experiment_output_dir(output: str, name: str) -> str:
    """An experiment's run directory under a profile's output, on every target: <output>/<name>. On a PVC the
    experiment's pods mount only this directory (render.py), so it is named by the experiment alone."""
    return f"{output.rstrip('/')}/{name}"


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


def current_provenance(command: str, now: datetime) -> Provenance:
    """What was submitted from where: this checkout's commit, this rlkube and the command that submitted it."""
    commit, dirty = git_provenance()
    return Provenance(commit, dirty, __version__, command, now.isoformat(timespec="seconds"))


def check_track_uri(uri: str) -> None:
    """A submitted --track-uri is written into the experiment's records and its pods' env in plain text, so it may
    not carry credentials (user:password@, ?token=...): those belong in the environment, or a Secret on a cluster."""
    refuse_credentials(uri, "--track-uri", "the credentials as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                       "(or MLFLOW_TRACKING_TOKEN, WANDB_API_KEY) in a Secret that the profile's env_from_secrets "
                       "names (locally: in your environment)")


# An image reference as registries take it: [host[:port]/]path[:tag][@algorithm:digest], the path lowercase.
_IMAGE_REFERENCE = re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                              r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::\w[\w.-]{0,127})?"
                              r"(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,})?")


def check_image(image: str) -> str:
    """An --image the pods can pull: a UserError for anything that is no image reference."""
    if not _IMAGE_REFERENCE.fullmatch(image):
        raise UserError(f"--image {image!r} is not an image reference; write [registry/]path[:tag][@sha256:digest], "
                        f"e.g. ghcr.io/rlkube/rlkube-cpu:0.1.0")
    return image


def build_spec(profile: ClusterProfile, train: TrainOptions, copies: int | list[CopyPlan], name: str | None = None,
               image: str | None = None, now: datetime | None = None,
               provenance: Provenance | None = None, sweep: str | None = None) -> ExperimentSpec:
    """Resolve and check everything about an experiment; raises UserError for any bad input.

    `copies` is a count K (copy i gets seed train.seed+i and the experiment's hparams, as `--copies K`) or each
    copy's own plan, numbered 0..K-1: what a sweep or PBT driver submits.
    """
    now = now or datetime.now(UTC)
    if (problem := node_fit_problem(profile)) is not None:
        raise UserError(problem)
    train.check_tracking_flags()
    train.check_actors_flag()
    if profile.ray is not None and train.actors != "ray":
        raise UserError(f"cluster '{profile.name}' runs actors on {profile.ray.workers} Ray worker pods per copy: "
                        f"add --num-workers N --actors ray")
    check_track_uri(train.track_uri)
    hp = train.resolved_hparams()
    planned = check_copies(default_copies(train.seed, copies) if isinstance(copies, int) else list(copies))
    for copy in planned:
        copy_hparams(hp, copy)  # each copy's own overrides are checked here, before anything is sent
    name = check_name(default_name(train.hparams, now) if name is None else name)
    if image is not None:
        check_image(image)
    if provenance is None:
        provenance = current_provenance(shlex.join(["rlkube", *sys.argv[1:]]), now)
    return ExperimentSpec(
        name=name, cluster=profile.name, namespace=profile.namespace, copies=planned,
        image=image or profile.default_image, output_dir=experiment_output_dir(profile.output, name),
        train=train, hparams=to_dict(hp), provenance=provenance, sweep=sweep,
    )
