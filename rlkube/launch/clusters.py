"""Cluster profiles: data (YAML) shipped with rlkube, overridable per user and per project.

Files are read in order and merged key by key, later winning: the packaged clusters.yaml,
~/.config/rlkube/clusters.yaml (or $XDG_CONFIG_HOME), then ./rlkube.yaml. Every profile is
checked into a typed ClusterProfile, with one clear line naming the file, profile and field.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlkube import __version__
from rlkube.core.errors import UserError, unknown_name
from rlkube.launch import tpu

TARGETS = ("local", "kubernetes")
PROVIDERS = ("generic", "gke", "eks")
ACCELERATORS = ("tpu", "gpu")
CAPACITY_SELECTORS = ("karpenter", "managed")


@dataclass(frozen=True)
class Accelerator:
    type: str  # tpu or gpu
    name: str  # a TPU name (v5litepod-8) or a GPU model as the cloud labels it (nvidia-l4)
    count: int = 1  # GPUs per pod; TPUs take the chips of one host


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    target: str
    provider: str = "generic"
    context: str | None = None
    namespace: str = "default"
    image: str = "ghcr.io/rlkube/rlkube-cpu:{version}"
    output: str = "runs"
    pvc: str | None = None
    resources: dict[str, str] = field(default_factory=dict)
    accelerator: Accelerator | None = None
    spot: bool = False
    capacity_selector: str = "karpenter"
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # extra labels on every object, e.g. team or cost-center
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    retries_per_copy: int = 3
    termination_grace_seconds: int = 120
    queue: str | None = None
    priority_class: str | None = None

    @property
    def default_image(self) -> str:
        return self.image.format(version=__version__)

    @property
    def tpu_slice(self) -> tpu.TPUSlice | None:
        if self.accelerator is None or self.accelerator.type != "tpu":
            return None
        return tpu.resolve(self.accelerator.name)


def config_files() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return [config_home / "rlkube" / "clusters.yaml", Path.cwd() / "rlkube.yaml"]


def _read(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{origin} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{origin} must map profile names to settings, e.g. 'my-gke:\\n  target: kubernetes'")
    return data


def load_profiles() -> dict[str, ClusterProfile]:
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    packaged = resources.files("rlkube.launch").joinpath("clusters.yaml").read_text()
    sources = [(packaged, "rlkube's clusters.yaml")]
    sources += [(path.read_text(), str(path)) for path in config_files() if path.is_file()]
    for text, origin in sources:
        for name, settings in _read(text, origin).items():
            merged[name] = {**merged.get(name, {}), **settings}
            origins[name] = origin
    return {name: _profile(name, settings, origins[name]) for name, settings in merged.items()}


def get_profile(name: str) -> ClusterProfile:
    profiles = load_profiles()
    if name not in profiles:
        raise unknown_name("cluster", name, profiles)
    return profiles[name]


def _profile(name: str, settings: dict[str, Any], origin: str) -> ClusterProfile:
    where = f"{origin}: profile '{name}'"
    fields = {f.name: f for f in dataclasses.fields(ClusterProfile)}
    for key in settings:
        if key not in fields or key == "name":
            raise unknown_name(f"field in {where}:", key, [f for f in fields if f != "name"])
    values = dict(settings)
    accelerator = values.get("accelerator")
    if accelerator is not None:
        if not isinstance(accelerator, dict) or set(accelerator) - {"type", "name", "count"} \
                or "type" not in accelerator or "name" not in accelerator:
            raise UserError(f"{where}: accelerator needs type (tpu or gpu), name and optionally count")
        values["accelerator"] = Accelerator(**accelerator)
    profile = ClusterProfile(name=name, **values)
    _check(profile, where)
    return profile


def _check(profile: ClusterProfile, where: str) -> None:
    choices = {"target": TARGETS, "provider": PROVIDERS, "capacity_selector": CAPACITY_SELECTORS}
    for key, allowed in choices.items():
        if getattr(profile, key) not in allowed:
            raise UserError(f"{where}: {key} must be one of {', '.join(allowed)}, got '{getattr(profile, key)}'")
    for key in ("resources", "service_account_annotations", "node_selector", "labels"):
        value = getattr(profile, key)
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
            raise UserError(f"{where}: {key} must map names to values")
    if profile.accelerator is not None:
        if profile.accelerator.type not in ACCELERATORS:
            raise UserError(f"{where}: accelerator type must be tpu or gpu, got '{profile.accelerator.type}'")
        if profile.accelerator.type == "tpu":
            if profile.provider != "gke":
                raise UserError(f"{where}: TPUs need provider gke")
            try:
                tpu.resolve(profile.accelerator.name)
            except UserError as error:
                raise UserError(f"{where}: {error}") from None
        if not isinstance(profile.accelerator.count, int) or profile.accelerator.count < 1:
            raise UserError(f"{where}: accelerator count must be a positive integer")
    for key in ("retries_per_copy", "termination_grace_seconds"):
        if not isinstance(getattr(profile, key), int) or getattr(profile, key) < 0:
            raise UserError(f"{where}: {key} must be a whole number >= 0")
    if profile.target == "kubernetes" and not profile.output.startswith(("gs://", "s3://")) and not profile.pvc:
        raise UserError(f"{where}: output {profile.output} is a path in the pod, so name the pvc that holds it "
                        f"(or write to gs:// or s3://)")


def with_accelerator(profile: ClusterProfile, name: str) -> ClusterProfile:
    """The profile with its accelerator replaced by name, keeping its type (a --tpu/--gpu flag)."""
    if profile.accelerator is None:
        raise UserError(f"cluster '{profile.name}' has no accelerator to change")
    return dataclasses.replace(profile, accelerator=dataclasses.replace(profile.accelerator, name=name))
