"""rlkube doctor: what must hold before a submit can work, one line per check, each failure with its fix.

A check is a `Check` (name, state, one line, the fix). The local checks read installed packages with
importlib.metadata (never importing TensorFlow) and the runs directory's disk; a profile's checks talk to its cluster
(targets/kubernetes/doctor.py), its registry (oci.py) and its bucket. Failures block a submit (exit 1); warnings
are what rlkube cannot see from here or what may still resolve itself (exit 0).
"""

import importlib.metadata
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.launch import images, oci

OK, WARN, FAIL = "ok", "warn", "fail"
FAILED_EXIT_CODE = 1
# Disk in the runs directory: a checkpointed Atari run with its replay memory takes a few GiB.
DISK_FAIL_BYTES = 1 << 30
DISK_WARN_BYTES = 10 << 30
MARKS = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # OK, WARN or FAIL
    line: str  # what was found
    fix: str = ""  # what to do, for WARN and FAIL


def passed(name: str, line: str) -> Check:
    return Check(name, OK, line)


def warned(name: str, line: str, fix: str) -> Check:
    return Check(name, WARN, line, fix)


def failed(name: str, line: str, fix: str) -> Check:
    return Check(name, FAIL, line, fix)


def format_check(check: Check) -> str:
    text = f"{MARKS[check.state]}  {check.name:<15} {check.line}"
    return f"{text}; fix: {check.fix}" if check.fix else text


def summary(checks: list[Check], action: str) -> str:
    """The counts, and whether `action` (submit, train) can work."""
    counts = {state: sum(check.state == state for check in checks) for state in (OK, WARN, FAIL)}
    verdict = f"fix the failures before you {action}" if counts[FAIL] else f"ready to {action}"
    return f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed: {verdict}"


def exit_code(checks: list[Check]) -> int:
    return FAILED_EXIT_CODE if any(check.state == FAIL for check in checks) else 0


# -- the local set-up ---------------------------------------------------------------------------------------------


def _requirements(extra: str | None) -> list[Requirement]:
    """rlkube's own requirements on this platform: the core ones (extra None) or one extra's."""
    environment = {"extra": extra or ""}
    found = []
    for requirement in map(Requirement, importlib.metadata.requires("rlkube") or []):
        of_an_extra = requirement.marker is not None and "extra" in str(requirement.marker)
        if of_an_extra == (extra is not None) and (requirement.marker is None
                                                   or requirement.marker.evaluate(environment)):
            found.append(requirement)
    return found


def unmet(requirements: Iterable[Requirement], installed: Callable[[str], str | None]) -> list[str]:
    """Each requirement that `installed` (name -> version or None) does not meet, as pip would write it."""
    missing = []
    for requirement in requirements:
        version = installed(requirement.name)
        if version is None or (requirement.specifier and not requirement.specifier.contains(version,
                                                                                          prereleases=True)):
            shown = f"{requirement.name}{requirement.specifier}"
            missing.append(shown if version is None else f"{shown} (have {version})")
    return missing


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python(requires: str | None, version: tuple[int, int, int]) -> Check:
    shown = ".".join(map(str, version))
    if requires and not Requirement(f"python{requires}").specifier.contains(shown):
        return failed("python", f"Python {shown}; rlkube needs {requires}", f"use a Python {requires} interpreter")
    return passed("python", f"Python {shown} at {sys.executable}")


def check_packages(name: str, requirements: list[Requirement], what: str, pip_target: str) -> Check:
    if not requirements:
        return passed(name, f"{what}: nothing to install")
    missing = unmet(requirements, installed_version)
    if missing:
        return failed(name, f"{what} needs {', '.join(missing)}", f"pip install '{pip_target}'")
    return passed(name, f"{what}: {len(requirements)} required packages installed")


def extras_for(hparams_set: str) -> list[str]:
    """The extras that training an hparams set needs, from its env and vector mode."""
    from rlkube.rl import atari  # noqa: PLC0415  (gymnasium, not TensorFlow)
    from rlkube.rl.envs import MUJOCO_IDS  # noqa: PLC0415
    from rlkube.rl.hparams import get_hparams  # noqa: PLC0415

    hp = get_hparams(hparams_set)
    extras = []
    if hp.vector_mode == "envpool":
        extras.append("envpool")
    elif atari.is_atari_id(hp.env):
        extras.append("atari")
    if hp.env in MUJOCO_IDS:
        extras.append("mujoco")
    return extras


def check_disk(runs_dir: Path, free_bytes: int) -> Check:
    shown = f"{free_bytes / 2**30:.1f} GiB free for {runs_dir}"
    fix = "free space there, or train with --output-dir on a larger disk or a bucket (gs://, s3://)"
    if free_bytes < DISK_FAIL_BYTES:
        return failed("disk", f"only {shown}", fix)
    if free_bytes < DISK_WARN_BYTES:
        return warned("disk", f"only {shown}; an Atari run with its replay memory takes a few GiB", fix)
    return passed("disk", shown)


def _free_bytes(directory: Path) -> int:
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def local_checks(hparams_sets: list[str], runs_dir: Path) -> list[Check]:
    """Python, rlkube's own requirements, the extras each named hparams set needs, and disk for runs."""
    metadata = importlib.metadata.metadata("rlkube")
    declared = set(metadata.get_all("Provides-Extra") or [])
    checks = [check_python(metadata["Requires-Python"], sys.version_info[:3]),
              check_packages("packages", _requirements(None), "rlkube", "rlkube")]
    for hparams_set in hparams_sets:
        extras = extras_for(hparams_set)
        undeclared = [extra for extra in extras if extra not in declared]
        target = f"rlkube[{','.join(extras)}]" if extras else "rlkube"
        if undeclared:
            checks.append(failed("extras", f"{hparams_set} needs the extra {', '.join(undeclared)}, which the "
                                 f"installed rlkube {metadata['Version']} does not declare (installed before it was "
                                 "added?)", f"reinstall: pip install -e '.[{','.join(extras)}]' in the checkout"))
            continue
        requirements = [r for extra in extras for r in _requirements(extra)]
        checks.append(check_packages("extras", requirements, f"{hparams_set} ({', '.join(extras) or 'no extras'})",
                                     target))
    checks.append(check_disk(runs_dir, _free_bytes(runs_dir)))
    return checks


# -- an image and a bucket, wherever the profile points -----------------------------------------------------------


def check_image(image: str) -> list[Check]:
    """The image resolves to a digest in its registry, and its version label is this CLI's version."""
    placeholders = [word for word in images.PLACEHOLDERS if re.search(rf"\b{word}\b", image)]
    if placeholders:
        return [failed("image", f"{image} still has the placeholder {placeholders[0]} of a shipped profile",
                       "set the profile's image in ~/.config/rlkube/clusters.yaml or ./rlkube.yaml")]
    reference = oci.parse_reference(image)
    registry = oci.Registry(reference)
    match = images.IMAGE_NAME.match(image)
    build = (f"rlkube build --target {match.group('target') if match else 'cpu'} --push "
             f"--registry {match.group('registry') if match else reference.registry}")
    try:
        digest = registry.digest()
    except oci.RegistryError as error:
        if error.status == 404:
            return [failed("image", f"{image} is not in its registry", f"push it: {build}")]
        return [warned("image", f"cannot resolve {image} as you ({error})",
                       "check `docker login` to the registry; the nodes pull with their own credentials")]
    checks = [passed("image", f"{image} resolves to {digest[:19]}…")]
    try:
        version = registry.labels(digest).get(oci.VERSION_LABEL)
    except (oci.RegistryError, KeyError, IndexError, TypeError) as error:
        return [*checks, warned("image-version", f"cannot read {image}'s labels ({error})",
                                "check the image was built by rlkube build")]
    if version is None:
        checks.append(warned("image-version", f"{image} has no {oci.VERSION_LABEL} label",
                             f"rebuild it with {build}"))
    elif version != __version__:
        checks.append(failed("image-version", f"the image is rlkube {version}, this CLI is {__version__}",
                             f"pip install rlkube=={version}, or rebuild the image: {build}"))
    else:
        checks.append(passed("image-version", f"the image and this CLI are both rlkube {version}"))
    return checks


def check_bucket(url: str) -> Check:
    """List the bucket URL, write a marker under it, and delete the marker, with this machine's credentials."""
    from rlkube.storage.errors import preflight_gcs, translated  # noqa: PLC0415
    from rlkube.storage.filesystems import open_filesystem, split_url  # noqa: PLC0415

    marker = f"{url.rstrip('/')}/.rlkube-doctor-{uuid.uuid4().hex[:12]}"
    step = "list"
    try:
        with translated(url, opening=True):
            fs, _ = open_filesystem(url)
        scheme, bucket, _ = split_url(url)
        if scheme == "gs":
            preflight_gcs(fs, url)  # one listing without gcsfs's minute of retries on an endpoint out of reach
        with translated(url, listing=True):
            fs.ls(bucket, detail=False)  # the bucket's top level: one request, however many runs it holds
        step = "write"
        with translated(marker):
            _, marker_path = open_filesystem(marker)
            fs.pipe_file(marker_path, b"rlkube doctor\n")
            step = "delete"
            fs.rm_file(marker_path)
    except UserError as error:
        return failed("bucket", f"cannot {step} in {url}: {error}",
                      "grant your credentials list, write and delete there (the pods need the same)")
    return passed("bucket", f"listed, wrote and deleted a marker in {url} as you")
