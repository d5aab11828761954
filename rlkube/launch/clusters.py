"""Cluster profiles: data (YAML) shipped with rlkube, overridable per user and per project.

Files are read in order and merged key by key, later winning: the packaged clusters.yaml,
~/.config/rlkube/clusters.yaml (or $XDG_CONFIG_HOME), then ./rlkube.yaml. Every profile is
checked into a typed ClusterProfile, with one clear line naming the file, profile and field.
"""

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlkube import __version__
from rlkube.errors import UserError, refuse_credentials, unknown_name
from rlkube.launch import tpu
from rlkube.storage.filesystems import split_url

PROVIDERS = ("generic", "gke", "eks")
ACCELERATORS = ("tpu", "gpu")
CAPACITY_SELECTORS = ("karpenter", "managed")
# Environment variables of the trainer that rlkube (or, for JOB_COMPLETION_INDEX, the Job controller) sets itself.
RESERVED_ENV = ("RLKUBE_EXPERIMENT", "RLKUBE_CLUSTER", "RLKUBE_IMAGE", "RLKUBE_GIT_COMMIT", "HOME", "MPLCONFIGDIR",
                "XDG_CACHE_HOME", "WANDB_DIR", "JOB_COMPLETION_INDEX")
# Names that say "credential": such values belong in a Secret (env_from_secrets), never in a profile's env, which
# rlkube writes into the Job in plain text.
CREDENTIAL_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE_KEY|ACCESS_KEY|API_KEY|CREDENTIAL", re.IGNORECASE)
# Every pattern here is matched whole (fullmatch): `$` would let a trailing newline in.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_CPU_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?m?")
# A namespace is a DNS label (RFC 1123): at most 63 lowercase letters, digits and '-', a letter or digit at each end.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A size as Kubernetes writes quantities of bytes: a whole or decimal number with an optional decimal (k, M, G, T,
# P, E) or binary (Ki, Mi, Gi, Ti, Pi, Ei) suffix.
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
# ephemeral_storage's default: /tmp's size limit plus room for the container's logs (the root file system is
# read-only, so nothing else of the container's writes to the node's disk).
EPHEMERAL_HEADROOM = 2**30


@dataclass(frozen=True)
class Accelerator:
    type: str  # tpu or gpu
    name: str  # a TPU name (v5litepod-8) or a GPU model as the cloud labels it (nvidia-l4)
    count: int = 1  # GPUs per pod; TPUs take the chips of one host


@dataclass(frozen=True)
class RayWorkers:
    """Pods for a copy's `--num-workers` Ray actors, beside its learner: each copy becomes a RayJob (render.py)."""
    workers: int  # worker pods per copy
    cpu: int | float | str = 1  # each pod's CPU request, a Kubernetes quantity: 4, 0.5, 500m
    memory: str = "2Gi"  # each pod's memory request and limit
    # Ray's logical CPUs on each worker pod, which place the actors (each takes ACTOR_CPUS, a quarter); more than
    # the pod's CPUs packs more waiting actors on it. Default: cpu, rounded up.
    num_cpus: int | None = None

    @property
    def ray_cpus(self) -> int:
        return self.num_cpus if self.num_cpus is not None else max(1, math.ceil(cpu_cores(self.cpu)))


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    target: str  # the kind of a registered Target (rlkube.launch.targets): local, kubernetes
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
    tmp_size_limit: str = "8Gi"  # the /tmp emptyDir: HOME, caches, and the local mirror of a run in a bucket
    shm_size_limit: str = "2Gi"  # the /dev/shm emptyDir, in memory
    ephemeral_storage: str | None = None  # request and limit of node disk; None: tmp_size_limit + 1Gi
    active_deadline_seconds: int | None = 3 * 24 * 3600  # a Job running longer fails; None: no deadline
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600  # a finished Job (and its pods) is deleted; None: kept
    env: dict[str, str] = field(default_factory=dict)  # extra, non-secret environment variables of the trainer
    env_from_secrets: list[str] = field(default_factory=list)  # Secrets whose keys become environment variables
    price_per_hour: float | None = None  # of one TPU chip or GPU: submit and render then print the cost ceiling
    ray: RayWorkers | None = None  # actors on Ray worker pods (KubeRay's RayJob), the learner on the Ray head

    @property
    def default_image(self) -> str:
        return self.image.format(version=__version__)

    @property
    def tpu_slice(self) -> tpu.TPUSlice | None:
        if self.accelerator is None or self.accelerator.type != "tpu":
            return None
        return tpu.resolve(self.accelerator.name)

    @property
    def ephemeral_storage_size(self) -> str:
        """The trainer's ephemeral-storage request and limit: ephemeral_storage, else tmp_size_limit + 1Gi."""
        if self.ephemeral_storage is not None:
            return self.ephemeral_storage
        return format_bytes(quantity_bytes(self.tmp_size_limit) + EPHEMERAL_HEADROOM)


def cpu_cores(quantity: int | float | str) -> float:
    """A Kubernetes CPU quantity (4, 0.5, "500m") in cores; ValueError if it is none."""
    if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    text = str(quantity)
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    if not math.isfinite(cores):
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    return cores


def quantity_bytes(text: str) -> int:
    """The bytes of a quantity like 8Gi or 500M (rounded up, as Kubernetes does); ValueError if it is not one."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(text)
    number, suffix = match.group(1), match.group(2) or ""
    unit = _BINARY_UNITS.get(suffix) or _DECIMAL_UNITS[suffix]
    whole, _, fraction = number.partition(".")
    scale = 10 ** len(fraction)
    return -(-int(whole + fraction) * unit // scale)


def format_bytes(count: int) -> str:
    """A byte count as the largest binary unit that divides it exactly (9Gi, 1536Mi), else in bytes."""
    for suffix, unit in reversed(_BINARY_UNITS.items()):
        if count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)


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
    return _load()[0]


def get_profile(name: str) -> ClusterProfile:
    """The named profile. If ./rlkube.yaml changes a profile that an earlier file defines (a shipped one, or the
    user's), a note says so (see take_notes): a checked-out project could otherwise swap a known profile's image or
    context unseen."""
    profiles, changed_by_project = _load()
    if name not in profiles:
        raise unknown_name("cluster", name, profiles)
    if name in changed_by_project:
        origin, fields = changed_by_project[name]
        note = (f"note: {Path.cwd() / 'rlkube.yaml'} changes {', '.join(fields)} of the profile '{name}' from "
                f"{origin}; rlkube clusters lists every profile and its files")
        if note not in _notes:
            _notes.append(note)
    return profiles[name]


_notes: list[str] = []  # what get_profile noted, until the CLI takes it


def take_notes() -> list[str]:
    """The notes about the profiles used so far, once each: the CLI prints them when a command has succeeded, so that
    a refused one stays one line."""
    taken = list(_notes)
    _notes.clear()
    return taken


def _load() -> tuple[dict[str, ClusterProfile], dict[str, tuple[str, list[str]]]]:
    """Every profile, and for each that ./rlkube.yaml changes after an earlier file defined it: that file and the
    fields changed."""
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    changed_by_project: dict[str, tuple[str, list[str]]] = {}
    project_file = config_files()[-1]
    packaged = resources.files("rlkube.launch").joinpath("clusters.yaml").read_text()
    sources = [(packaged, "rlkube's clusters.yaml")]
    sources += [(path.read_text(), str(path)) for path in config_files() if path.is_file()]
    for text, origin in sources:
        for name, settings in _read(text, origin).items():
            if origin == str(project_file) and name in merged:
                changed = sorted(key for key in settings if merged[name].get(key) != settings[key])
                if changed:
                    changed_by_project[name] = (origins[name], changed)
            merged[name] = {**merged.get(name, {}), **settings}
            origins[name] = origin
    return ({name: _profile(name, settings, origins[name]) for name, settings in merged.items()},
            changed_by_project)


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
    ray = values.get("ray")
    if ray is not None:
        if not isinstance(ray, dict) or set(ray) - {"workers", "cpu", "memory", "num_cpus"} or "workers" not in ray:
            raise UserError(f"{where}: ray needs workers (pods per copy) and optionally cpu, memory and num_cpus per "
                            f"pod, e.g. {{workers: 2, cpu: 4, memory: 8Gi}}, got {ray!r}")
        values["ray"] = RayWorkers(**ray)
    profile = ClusterProfile(name=name, **values)
    _check(profile, where)
    return profile


def _check(profile: ClusterProfile, where: str) -> None:
    # Which targets exist is the target registry's to say, where a profile is used (target_for): targets are built
    # on profiles, so profiles cannot look them up.
    if not isinstance(profile.target, str):
        raise UserError(f"{where}: target must name a target, e.g. local or kubernetes, got {profile.target!r}")
    for key in ("image", "output", "namespace", "context", "pvc", "queue", "priority_class"):
        value = getattr(profile, key)
        if not isinstance(value, str) and (value is not None or key in ("image", "output", "namespace")):
            raise UserError(f"{where}: {key} must be a string, got {value!r}")
    check_namespace(profile.namespace, f"{where}: namespace")
    choices = {"provider": PROVIDERS, "capacity_selector": CAPACITY_SELECTORS}
    for key, allowed in choices.items():
        if getattr(profile, key) not in allowed:
            raise UserError(f"{where}: {key} must be one of {', '.join(allowed)}, got '{getattr(profile, key)}'")
    for key in ("resources", "service_account_annotations", "node_selector", "labels"):
        value = getattr(profile, key)
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) and not _non_finite(v)
                                                  for v in value.values()):
            raise UserError(f"{where}: {key} must map names to values (finite numbers or strings)")
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
    if "ephemeral-storage" in profile.resources:
        raise UserError(f"{where}: resources cannot set ephemeral-storage; set the ephemeral_storage field instead")
    _check_output(profile, where)
    _check_storage(profile, where)
    _check_lifetime(profile, where)
    _check_price(profile, where)
    _check_env(profile, where)
    _check_ray(profile, where)
    if profile.target == "kubernetes" and not profile.output.startswith(("gs://", "s3://")) and not profile.pvc:
        raise UserError(f"{where}: output {profile.output} is a path in the pod, so name the pvc that holds it "
                        f"(or write to gs:// or s3://)")


def check_namespace(namespace: Any, what: str) -> str:
    """A UserError unless `namespace` (`what` says where it came from) is a Kubernetes namespace's name."""
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
        raise UserError(f"{what} {namespace!r} is not a namespace name: use at most 63 lowercase letters, digits "
                        f"and '-', starting and ending with a letter or digit (e.g. rl-team)")
    return namespace


def _check_output(profile: ClusterProfile, where: str) -> None:
    """A bucket output is a gs:// or s3:// URL naming a bucket, and without credentials, which every Job would
    carry in plain text."""
    if "://" not in profile.output:
        return
    refuse_credentials(profile.output, f"{where}: output", "the bucket's credentials in a Secret that "
                       "env_from_secrets names, or the identity of the profile's service account")
    try:
        split_url(profile.output)
    except UserError as error:
        raise UserError(f"{where}: output: {error}") from None


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_quantity(value: Any) -> bool:
    try:
        return quantity_bytes(value) > 0
    except ValueError:
        return False


def _check_storage(profile: ClusterProfile, where: str) -> None:
    for key in ("tmp_size_limit", "shm_size_limit", "ephemeral_storage"):
        value = getattr(profile, key)
        if (value is None and key == "ephemeral_storage") or _positive_quantity(value):
            continue
        default = "null for tmp_size_limit + 1Gi, or " if key == "ephemeral_storage" else ""
        raise UserError(f"{where}: {key} must be {default}a positive Kubernetes quantity of bytes such as 8Gi or "
                        f"500M (suffixes k, M, G, T, Ki, Mi, Gi, Ti), got {value!r}")
    if quantity_bytes(profile.ephemeral_storage_size) < quantity_bytes(profile.tmp_size_limit):
        raise UserError(f"{where}: ephemeral_storage {profile.ephemeral_storage} is less than tmp_size_limit "
                        f"{profile.tmp_size_limit}, so a pod would be evicted before /tmp is full; raise it or "
                        f"leave it unset (tmp_size_limit + 1Gi)")


def _check_lifetime(profile: ClusterProfile, where: str) -> None:
    deadline = profile.active_deadline_seconds
    if deadline is not None and (not _whole(deadline) or deadline < 1):
        raise UserError(f"{where}: active_deadline_seconds must be a whole number of seconds > 0 (e.g. 259200, "
                        f"3 days), or null for no deadline, got {deadline!r}")
    ttl = profile.ttl_seconds_after_finished
    if ttl is not None and (not _whole(ttl) or ttl < 0):
        raise UserError(f"{where}: ttl_seconds_after_finished must be a whole number of seconds >= 0 (e.g. 604800, "
                        f"7 days), or null to keep finished Jobs, got {ttl!r}")


def _check_price(profile: ClusterProfile, where: str) -> None:
    price = profile.price_per_hour
    if price is None:
        return
    if not isinstance(price, int | float) or isinstance(price, bool) or _non_finite(price) or price <= 0:
        raise UserError(f"{where}: price_per_hour must be a number > 0, the price of one TPU chip or GPU per hour "
                        f"(e.g. 1.2), or null, got {price!r}")
    if profile.accelerator is None:
        raise UserError(f"{where}: price_per_hour prices a TPU chip or GPU, and the profile has no accelerator")


def _check_env(profile: ClusterProfile, where: str) -> None:
    if not isinstance(profile.env, dict):
        raise UserError(f"{where}: env must map variable names to values, e.g. {{AWS_ENDPOINT_URL: "
                        f"'http://minio.storage:9000'}}")
    for name, value in profile.env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise UserError(f"{where}: env name {name!r} must be letters, digits and '_', not starting with a digit")
        if name in RESERVED_ENV:
            raise UserError(f"{where}: env cannot set {name}: rlkube sets {', '.join(RESERVED_ENV)} itself")
        if CREDENTIAL_NAME.search(name):
            raise UserError(f"{where}: env {name} looks like a credential: put it in a Secret and name the Secret "
                            f"in env_from_secrets (env is written into the Job in plain text)")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise UserError(f"{where}: env {name} must be a string or a whole number, got {value!r} (quote it)")
        if isinstance(value, str) and "://" in value:
            refuse_credentials(value, f"{where}: env {name}", "the credentials in a Secret that env_from_secrets "
                               "names (env is written into the Job in plain text)")
    secrets = profile.env_from_secrets
    if not isinstance(secrets, list) or not all(isinstance(s, str) and len(s) <= 253 and _SECRET_NAME.fullmatch(s)
                                                 for s in secrets):
        raise UserError(f"{where}: env_from_secrets must be a list of Secret names (lowercase letters, digits, "
                        f"'-' and '.'), e.g. [minio-credentials], got {secrets!r}")
    if len(set(secrets)) != len(secrets):
        raise UserError(f"{where}: env_from_secrets names a Secret twice: {secrets!r}")


def _check_ray(profile: ClusterProfile, where: str) -> None:
    ray = profile.ray
    if ray is None:
        return
    if not _whole(ray.workers) or ray.workers < 1:
        raise UserError(f"{where}: ray workers must be a whole number >= 1, got {ray.workers!r}")
    try:
        cores = cpu_cores(ray.cpu)
    except ValueError:
        cores = 0
    if cores <= 0 or (isinstance(ray.cpu, str) and not _CPU_QUANTITY.fullmatch(ray.cpu)):
        raise UserError(f"{where}: ray cpu must be a positive Kubernetes CPU quantity such as 4, 0.5 or 500m, "
                        f"got {ray.cpu!r}")
    if ray.num_cpus is not None and (not _whole(ray.num_cpus) or ray.num_cpus < 1):
        raise UserError(f"{where}: ray num_cpus (Ray's logical CPUs per worker pod) must be a whole number >= 1, "
                        f"got {ray.num_cpus!r}")
    if not _positive_quantity(ray.memory):
        raise UserError(f"{where}: ray memory must be a positive Kubernetes quantity of bytes such as 8Gi, "
                        f"got {ray.memory!r}")
    if profile.target != "kubernetes":
        raise UserError(f"{where}: ray places actors on worker pods of a Kubernetes cluster, so it needs target "
                        f"kubernetes (a local run starts its own Ray with --actors ray)")
    if profile.tpu_slice is not None and profile.tpu_slice.hosts > 1:
        raise UserError(f"{where}: ray puts a copy's learner on one Ray head pod, and a multi-host TPU slice "
                        f"({profile.accelerator.name}) needs a pod per host; use a single-host slice")


def with_accelerator(profile: ClusterProfile, name: str) -> ClusterProfile:
    """The profile with its accelerator replaced by name, keeping its type (a --tpu/--gpu flag)."""
    if profile.accelerator is None:
        raise UserError(f"cluster '{profile.name}' has no accelerator to change")
    return dataclasses.replace(profile, accelerator=dataclasses.replace(profile.accelerator, name=name))
