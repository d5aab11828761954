"""Container images: build `images/<target>.Dockerfile`, tag it by the git state, push it, return it by digest.

No TensorFlow here, and the Docker SDK is imported only when an image is really built.

The Dockerfiles are written for BuildKit (`# syntax=docker/dockerfile:1`, pip cache mounts), which is
what `docker buildx build` uses. The Docker SDK talks to the Engine API's `/build`, which is the classic
builder: it cannot mount caches (BuildKit needs its gRPC session, which the SDK does not speak). So
`build` hands the SDK the same Dockerfile with the `--mount` options taken out and `PIP_NO_CACHE_DIR=1`,
so pip's cache stays out of the layers; every layer, and so the order that makes a code change rebuild
in seconds, is the same.
"""

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlkube import __version__
from rlkube.errors import UserError

TARGETS = ("cpu", "gpu", "tpu")
# The platform a target must be built for, where it has one (tensorflow-tpu and libtpu: x86-64 wheels only).
PLATFORMS = {"tpu": "linux/amd64"}
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Placeholders in the shipped profiles' images, which have to be replaced before anything is pushed.
PLACEHOLDERS = ("PROJECT", "ACCOUNT", "REGION")
IMAGE_NAME = re.compile(r"^(?P<registry>.+)/rlkube-(?P<target>[a-z0-9]+)(?::[^/@]+)?(?:@sha256:[0-9a-f]{64})?$")
MOUNT_OPTIONS = re.compile(r"^(?P<run>[ \t]*RUN[ \t]+)(?P<mounts>(?:--mount=\S+[ \t]*(?:\\\r?\n[ \t]*)?)+)",
                           re.MULTILINE | re.IGNORECASE)
PUSH_TIMEOUT_S = 3600


def _git(repo_dir: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, check=True,
                              timeout=60).stdout
    except FileNotFoundError:
        raise UserError("image tags come from git, and there is no git here; install git, or pass --image") from None
    except subprocess.CalledProcessError as error:
        detail = error.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"{repo_dir} is not a git checkout with a commit ({detail[0] if detail else 'git failed'}); "
                        f"build from the rlkube repository, or pass --image") from None


def image_tag(repo_dir: Path) -> str:
    """`<commit12>` for a clean tree; `<commit12>-dirty-<hash8>` when there are uncommitted changes.

    The hash covers `git diff HEAD` (tracked changes, staged or not) and the paths and contents of
    untracked files that git does not ignore, so the same changes always give the same tag and any
    further change gives a new one.
    """
    top = Path(_git(repo_dir, "rev-parse", "--show-toplevel").decode().strip())
    commit = _git(top, "rev-parse", "--verify", "HEAD^{commit}").decode().strip()
    # Options that pin the diff's format, whatever the user's git config says.
    diff = _git(top, "-c", "core.quotePath=false", "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv",
                "--no-color", "--no-renames", "--full-index", "--src-prefix=a/", "--dst-prefix=b/", "--")
    untracked = sorted(path for path in _git(top, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0")
                       if path)
    if not diff and not untracked:
        return commit[:12]
    digest = hashlib.sha256(diff)
    for path in untracked:
        digest.update(b"\0untracked\0" + path + b"\0")
        file = top / os.fsdecode(path)
        if file.is_file() and not file.is_symlink():
            digest.update(file.read_bytes())
        elif file.is_symlink():
            digest.update(b"symlink\0" + os.fsencode(os.readlink(file)))
    return f"{commit[:12]}-dirty-{digest.hexdigest()[:8]}"


def repo_root() -> Path:
    """The checkout to build from: the one rlkube runs from (an editable install), else the current directory."""
    package_checkout = Path(__file__).resolve().parents[2]
    if (package_checkout / "images" / "cpu.Dockerfile").is_file():
        return package_checkout
    return Path.cwd()


def target_for(profile: Any) -> str:
    """The image a cluster profile's pods need: its accelerator's type (tpu or gpu), else cpu."""
    accelerator = getattr(profile, "accelerator", None)
    return accelerator.type if accelerator is not None and accelerator.type in TARGETS else "cpu"


def default_registry(image: str) -> str:
    """The registry part of a profile's image, before `/rlkube-<target>`.

    `us-docker.pkg.dev/PROJECT/rlkube/rlkube-tpu:{version}` -> `us-docker.pkg.dev/PROJECT/rlkube`.
    """
    match = IMAGE_NAME.match(image.strip())
    if not match:
        raise UserError(f"cannot tell the registry from image '{image}' (expected <registry>/rlkube-<target>[:tag], "
                        f"e.g. us-docker.pkg.dev/PROJECT/rlkube/rlkube-cpu:{{version}}); pass --registry")
    return match.group("registry")


def check_registry(registry: str) -> str:
    """The registry without a trailing slash, or a UserError if it is not one an image can be pushed to."""
    registry = registry.strip().rstrip("/")
    placeholders = [word for word in PLACEHOLDERS if re.search(rf"\b{word}\b", registry)]
    if placeholders:
        raise UserError(f"registry '{registry}' still has the placeholder {placeholders[0]} (from a shipped profile's "
                        f"image); pass --registry, or set the profile's image in ~/.config/rlkube/clusters.yaml")
    host, _, path = registry.partition("/")
    if not host or " " in registry or any(not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", part)
                                          for part in (path.split("/") if path else [])):
        raise UserError(f"bad registry '{registry}': write a host and lowercase path, e.g. "
                        f"us-docker.pkg.dev/my-project/rlkube or ghcr.io/my-org")
    return registry


def classic_dockerfile(text: str) -> str:
    """The Dockerfile for the classic builder: the same instructions without BuildKit's `RUN --mount` options."""
    return MOUNT_OPTIONS.sub(lambda match: match.group("run"), text)


def _reason(error: BaseException) -> str:
    """The root cause of a connection failure, short: 'Connection refused', 'No such file or directory'."""
    text = str(error)
    found = re.findall(r"\(\d+, '([^']+)'\)", text) or re.findall(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found[-1].strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def _engine(target: str) -> Any:
    """A Docker SDK client whose engine answers, or a one-line UserError saying there is none."""
    try:
        import docker  # noqa: PLC0415
    except ImportError:
        raise UserError(f"building images needs the Docker SDK for Python (pip install 'docker>=7.1'), or build "
                        f"with another tool from images/{target}.Dockerfile") from None
    where = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as error:  # docker.errors.DockerException, or requests' connection errors, by transport
        raise UserError(f"no Docker engine at {where} ({_reason(error)}); start Docker (or point DOCKER_HOST at "
                        f"one), or build with another tool from images/{target}.Dockerfile") from None
    client.api.timeout = PUSH_TIMEOUT_S  # builds and pushes can be quiet for minutes
    return client


class _Progress:
    """Turns the engine's JSON stream into lines for `emit`: build output as it comes, pull and push
    progress once per layer and state rather than once per byte count."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.pending = ""
        self.states: dict[str, str] = {}
        self.statuses: list[str] = []
        self.aux: list[dict[str, Any]] = []

    def feed(self, chunk: dict[str, Any]) -> str | None:
        """Emit what `chunk` says; return its error message, if it is one."""
        if chunk.get("error") or chunk.get("errorDetail"):
            self.flush()
            return str(chunk.get("error") or chunk["errorDetail"].get("message", "unknown error"))
        if "stream" in chunk:
            self.pending += chunk["stream"]
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                if line.strip():
                    self.emit(line.rstrip())
        if "status" in chunk:
            layer, status = chunk.get("id"), chunk["status"]
            if layer is None:
                self.statuses.append(status)
                self.emit(status)
            elif self.states.get(layer) != status:
                self.states[layer] = status
                self.emit(f"{layer}: {status}")
        if isinstance(chunk.get("aux"), dict):
            self.aux.append(chunk["aux"])
        return None

    def flush(self) -> None:
        if self.pending.strip():
            self.emit(self.pending.rstrip())
        self.pending = ""


def build(target: str, registry: str | None, push: bool, repo_dir: Path, emit: Callable[[str], None]) -> str:
    """Build images/<target>.Dockerfile as `[<registry>/]rlkube-<target>:<tag>`, streaming the log to `emit`.

    Returns the image by digest (`<registry>/rlkube-<target>@sha256:…`) after a push, so a submission
    names exactly what was built; without a push, the local tag.
    """
    if target not in TARGETS:
        raise UserError(f"unknown image target '{target}'; use one of {', '.join(TARGETS)}")
    if push and not registry:
        raise UserError("--push needs a registry to push to; pass --registry, e.g. us-docker.pkg.dev/PROJECT/rlkube "
                        "or ghcr.io/ORG")
    if registry:
        registry = check_registry(registry)
    repo_dir = Path(repo_dir).resolve()
    dockerfile = repo_dir / "images" / f"{target}.Dockerfile"
    if not dockerfile.is_file():
        raise UserError(f"no {dockerfile}; build from the rlkube repository (the images' build context)")
    tag = image_tag(repo_dir)
    repository = f"{registry}/rlkube-{target}" if registry else f"rlkube-{target}"
    reference = f"{repository}:{tag}"
    client = _engine(target)
    commit = _git(repo_dir, "rev-parse", "HEAD").decode().strip()
    build_args = {"VERSION": __version__, "GIT_COMMIT": commit,
                  "CREATED": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                  "PIP_NO_CACHE_DIR": "1"}
    emit(f"building {reference} from images/{target}.Dockerfile")
    progress = _Progress(emit)
    with tempfile.TemporaryDirectory(prefix="rlkube-build-") as scratch:
        # Outside the context, so the SDK adds it to the context's tar under a name of its own.
        classic = Path(scratch) / f"{target}.Dockerfile"
        classic.write_text(classic_dockerfile(dockerfile.read_text()))
        try:
            for chunk in client.api.build(path=str(repo_dir), dockerfile=str(classic), tag=reference, rm=True,
                                          forcerm=True, decode=True, buildargs=build_args,
                                          platform=PLATFORMS.get(target)):
                error = progress.feed(chunk)
                if error:
                    raise UserError(f"building {reference} failed: {error.strip().splitlines()[-1]} "
                                    f"(the log above says where); fix images/{target}.Dockerfile or the code")
        except UserError:
            raise
        except Exception as error:  # the engine went away mid-build
            raise UserError(f"building {reference} failed: {_reason(error)}") from None
    progress.flush()
    emit(f"built {reference}")
    if not push:
        return reference
    return _push(client, repository, tag, emit)


def _push(client: Any, repository: str, tag: str, emit: Callable[[str], None]) -> str:
    reference = f"{repository}:{tag}"
    emit(f"pushing {reference}")
    progress = _Progress(emit)
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            error = progress.feed(chunk)
            if error:
                raise UserError(f"pushing {reference} failed: {error.strip().splitlines()[-1]}; check that you are "
                                f"logged in to the registry (docker login, or its credential helper)")
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"pushing {reference} failed: {_reason(error)}") from None
    progress.flush()
    digest = next((aux["Digest"] for aux in reversed(progress.aux) if str(aux.get("Digest", "")).startswith("sha256:")),
                  None)
    if digest is None:  # older engines say it only in a status line, or only in the image's RepoDigests
        found = [match.group(1) for status in progress.statuses
                 if (match := re.search(r"digest: (sha256:[0-9a-f]{64})", status))]
        digest = found[-1] if found else None
    if digest is None:
        repo_digests = client.api.inspect_image(reference).get("RepoDigests") or []
        digest = next((entry.split("@", 1)[1] for entry in repo_digests if entry.startswith(f"{repository}@")), None)
    if digest is None:
        raise UserError(f"pushed {reference}, but the registry reported no digest; submit it with --image {reference}")
    by_digest = f"{repository}@{digest}"
    emit(f"pushed {by_digest}")
    return by_digest
