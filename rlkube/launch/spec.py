"""The experiment spec: what to run, built from the user's flags and checked before anything is sent."""

import dataclasses
import re
import shlex
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.launch.clusters import CREDENTIAL_NAME, ClusterProfile
from rlkube.rl.hparams import to_dict
from rlkube.run.options import CopyPlan, TrainOptions, check_copies, copy_hparams, default_copies

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
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


def current_provenance(command: str, now: datetime) -> Provenance:
    """What was submitted from where: this checkout's commit, this rlkube and the command that submitted it."""
    commit, dirty = git_provenance()
    return Provenance(commit, dirty, __version__, command, now.isoformat(timespec="seconds"))


def check_track_uri(uri: str) -> None:
    """A submitted --track-uri is written into the experiment's records and its pods' env in plain text, so it may
    not carry credentials (user:password@, ?token=...): those belong in the environment, or a Secret on a cluster."""
    parts = urllib.parse.urlsplit(uri)
    secret_query = [key for key, _ in urllib.parse.parse_qsl(parts.query) if CREDENTIAL_NAME.search(key)]
    if parts.username is None and not secret_query:
        return
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    shown = parts._replace(netloc=host, query="").geturl()
    raise UserError(f"--track-uri {shown} carries credentials, which a submission would write down in plain text; "
                    f"give the URI without them, and the credentials as MLFLOW_TRACKING_USERNAME and "
                    f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN, WANDB_API_KEY) in a Secret that the "
                    f"profile's env_from_secrets names (locally: in your environment)")


def build_spec(profile: ClusterProfile, train: TrainOptions, copies: int | list[CopyPlan], name: str | None = None,
               image: str | None = None, now: datetime | None = None,
               provenance: Provenance | None = None, sweep: str | None = None) -> ExperimentSpec:
    """Resolve and check everything about an experiment; raises UserError for any bad input.

    `copies` is a count K (copy i gets seed train.seed+i and the experiment's hparams, as `--copies K`) or each
    copy's own plan, numbered 0..K-1: what a sweep or PBT driver submits.
    """
    now = now or datetime.now(UTC)
    train.check_tracking_flags()
    check_track_uri(train.track_uri)
    hp = train.resolved_hparams()
    planned = default_copies(train.seed, copies) if isinstance(copies, int) else check_copies(list(copies))
    for copy in planned:
        copy_hparams(hp, copy)  # each copy's own overrides are checked here, before anything is sent
    name = check_name(name or default_name(train.hparams, now))
    if provenance is None:
        provenance = current_provenance(shlex.join(["rlkube", *sys.argv[1:]]), now)
    return ExperimentSpec(
        name=name, cluster=profile.name, namespace=profile.namespace, copies=planned,
        image=image or profile.default_image, output_dir=f"{profile.output.rstrip('/')}/{name}",
        train=train, hparams=to_dict(hp), provenance=provenance, sweep=sweep,
    )
