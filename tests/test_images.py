"""The container images: what the Dockerfiles say, how `rlkube build` tags, builds and pushes, and
that the exact command an image runs works in a fresh virtualenv built the way the image is built.

The Dockerfiles are read with the small parser below rather than a dependency: it handles what
these files use (a parser directive, comments, line continuations, flags such as `--mount=`, JSON
and shell forms), and the tests check its reading against what Docker would do where it matters.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from rlkube.errors import UserError
from rlkube.launch import images

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("cpu", "gpu", "tpu")
DOCKERFILES = {target: REPO / "images" / f"{target}.Dockerfile" for target in TARGETS}
IMAGE_UID = 1000
# What the python:3.11-slim base image itself sets, which the replay below stands in for.
BASE_IMAGE_ENV = {"LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}


# --- a tiny Dockerfile parser --------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    flags: tuple[str, ...]
    value: str

    def json(self) -> Any:
        return json.loads(self.value)

    def pairs(self) -> dict[str, str]:
        """`KEY=value KEY2="value 2"` (ENV, LABEL, ARG) as a dict; a bare ARG name maps to None."""
        result: dict[str, Any] = {}
        for word in shlex.split(self.value):
            key, sep, value = word.partition("=")
            result[key] = value if sep else None
        return result


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined, flags (`--mount=…`, `--from=…`) split off."""
    lines = text.splitlines()
    instructions = []
    index = 0
    while index < len(lines):
        start, line = index, lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\"):
            parts[-1] = parts[-1].rstrip()[:-1]
            # Docker drops comment and empty lines inside a continued instruction.
            while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
                index += 1
            if index == len(lines):
                break
            parts.append(lines[index])
            index += 1
        keyword, _, rest = " ".join(part.strip() for part in parts).partition(" ")
        flags = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        instructions.append(Instruction(start + 1, keyword.upper(), tuple(flags), rest))
    return instructions


def dockerfile(target: str) -> list[Instruction]:
    return parse_dockerfile(DOCKERFILES[target].read_text())


def pip_requirements(command: str) -> list[str]:
    """The requirement arguments of the `pip install` in a RUN command (not options, not `-r` files)."""
    words = shlex.split(command)
    start = next(i for i in range(len(words) - 1) if words[i] == "pip" and words[i + 1] == "install") + 2
    requirements, skip = [], False
    for word in words[start:]:
        if word in ("&&", "||", ";"):
            break
        if skip:
            skip = False
        elif word in ("-r", "--requirement", "-c", "--constraint"):
            skip = True
        elif not word.startswith("-") and word != ".":
            requirements.append(word)
    return requirements


def installs(target: str) -> list[tuple[int, Instruction]]:
    return [(i, ins) for i, ins in enumerate(dockerfile(target)) if ins.keyword == "RUN" and "pip install" in ins.value]


def tensorflow_install(target: str) -> Instruction:
    """The RUN that installs the image's TensorFlow build (its first install that names one)."""
    return next(ins for _, ins in installs(target) if any(
        Requirement(r).name.startswith("tensorflow") for r in pip_requirements(ins.value)))


def pyproject_dependencies(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """pyproject.toml's dependencies, then those of each of `extras`."""
    import tomllib  # noqa: PLC0415

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(dep) for dep in
            [*project["dependencies"], *(dep for extra in extras for dep in project["optional-dependencies"][extra])]]


# --- .dockerignore, with Docker's semantics ------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern_regex(line.lstrip("!").strip().strip("/"))))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]] | None = None) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, regex in rules if rules is not None else dockerignore():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


# --- what the Dockerfiles say --------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_dockerfile_asks_for_buildkit_syntax_1(target: str) -> None:
    assert DOCKERFILES[target].read_text().splitlines()[0] == "# syntax=docker/dockerfile:1"


@pytest.mark.parametrize("target", TARGETS)
def test_image_starts_from_slim_python_311(target: str) -> None:
    froms = [ins for ins in dockerfile(target) if ins.keyword == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"python:3\.11-slim(-bookworm)?", froms[0].value)


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_as_uid_1000_with_a_writable_home(target: str) -> None:
    instructions = dockerfile(target)
    users = [ins for ins in instructions if ins.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].value.split(":") == [str(IMAGE_UID), str(IMAGE_UID)]  # numeric, so runAsNonRoot can check it
    creates_user = next(ins.value for ins in instructions if ins.keyword == "RUN" and "useradd" in ins.value)
    assert f"--uid {IMAGE_UID}" in creates_user
    assert f"--gid {IMAGE_UID}" in creates_user
    assert "--create-home --home-dir /home/rlkube" in creates_user
    env = {k: v for ins in instructions if ins.keyword == "ENV" for k, v in ins.pairs().items()}
    assert env["HOME"] == "/home/rlkube"
    assert [ins.value for ins in instructions if ins.keyword == "WORKDIR"][-1] == "/home/rlkube"


@pytest.mark.parametrize("target", TARGETS)
def test_image_entrypoint_is_exactly_rlkube_train(target: str) -> None:
    entrypoints = [ins for ins in dockerfile(target) if ins.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert entrypoints[0].json() == ["rlkube", "train"]
    # Pods override it with command ["rlkube", "train"] and, for TensorBoard, ["tensorboard"]: both on the PATH.
    env = {k: v for ins in dockerfile(target) if ins.keyword == "ENV" for k, v in ins.pairs().items()}
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"


@pytest.mark.parametrize("target", TARGETS)
def test_image_carries_the_oci_labels_from_build_args(target: str) -> None:
    instructions = dockerfile(target)
    labels = {k: v for ins in instructions if ins.keyword == "LABEL" for k, v in ins.pairs().items()}
    assert labels["org.opencontainers.image.title"] == f"rlkube-{target}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"
    assert labels["org.opencontainers.image.created"] == "${CREATED}"
    assert labels["org.opencontainers.image.source"].startswith(("https://", "${"))
    args = {k for ins in instructions if ins.keyword == "ARG" for k in ins.pairs()}
    assert {"VERSION", "GIT_COMMIT", "CREATED"} <= args


@pytest.mark.parametrize("target", TARGETS)
def test_build_metadata_never_invalidates_a_layer(target: str) -> None:
    """A new commit or build time must not rebuild anything: those ARGs come after the last RUN."""
    instructions = dockerfile(target)
    last_run = max(i for i, ins in enumerate(instructions) if ins.keyword == "RUN")
    for i, ins in enumerate(instructions):
        if ins.keyword == "ARG" and set(ins.pairs()) & {"VERSION", "GIT_COMMIT", "CREATED", "SOURCE"}:
            assert i > last_run, f"line {ins.line}: {ins.value} would invalidate the RUN layers after it"


@pytest.mark.parametrize("target", TARGETS)
def test_rlkube_source_is_copied_after_the_dependencies_are_installed(target: str) -> None:
    instructions = dockerfile(target)
    dependency_installs = [i for i, ins in installs(target) if "--no-deps" not in ins.value]
    package_installs = [i for i, ins in installs(target) if "--no-deps" in ins.value]
    source_copy = next(i for i, ins in enumerate(instructions) if ins.keyword == "COPY" and
                       shlex.split(ins.value)[0].rstrip("/") == "rlkube")
    assert dependency_installs, "no dependency install"
    assert max(dependency_installs) < source_copy < package_installs[-1]
    # Before the package, nothing but pyproject.toml is copied: code changes cannot touch those layers.
    early_copies = [shlex.split(ins.value)[:-1] for ins in instructions[:max(dependency_installs)]
                    if ins.keyword in ("COPY", "ADD")]
    assert early_copies == [["pyproject.toml"]]
    # After the package's layer, only metadata: nothing that makes a layer of its own.
    assert {ins.keyword for ins in instructions[package_installs[-1] + 1:]} <= {
        "ARG", "LABEL", "ENV", "USER", "WORKDIR", "ENTRYPOINT", "CMD"}


@pytest.mark.parametrize("target", TARGETS)
def test_pip_installs_use_the_buildkit_cache_mount(target: str) -> None:
    for _, ins in installs(target):
        assert "--mount=type=cache,target=/root/.cache/pip" in ins.flags, f"line {ins.line}"
    env = {k: v for ins in dockerfile(target) if ins.keyword == "ENV" for k, v in ins.pairs().items()}
    assert "PIP_NO_CACHE_DIR" not in env  # that would make the cache mount useless


def test_cpu_image_installs_the_same_tensorflow_as_pyproject() -> None:
    tf_install = tensorflow_install("cpu")
    in_image = {(r.name, str(r.specifier)) for r in map(Requirement, pip_requirements(tf_install.value))}
    in_pyproject = {(r.name, str(r.specifier)) for r in pyproject_dependencies() if r.name.startswith("tensorflow")}
    assert in_image == in_pyproject


def test_gpu_image_installs_cuda_tensorflow_of_pyprojects_version() -> None:
    (requirement,) = map(Requirement, pip_requirements(tensorflow_install("gpu").value))
    cpu_build = next(r for r in pyproject_dependencies() if r.name == "tensorflow-cpu")
    assert requirement.name == "tensorflow"
    assert requirement.extras == {"and-cuda"}
    assert requirement.specifier == cpu_build.specifier


def test_tpu_image_pins_tensorflow_tpu_2_20_and_libtpu() -> None:
    requirements = pip_requirements(tensorflow_install("tpu").value)
    assert "tensorflow-tpu==2.20.*" in requirements
    (libtpu,) = [Requirement(r) for r in requirements if r.startswith("libtpu")]
    assert str(libtpu.specifier).startswith("==")  # tensorflow-tpu's own libtpu~=0.0.14 would float to any 0.0.x


@pytest.mark.parametrize(("tpu_variables", "loads_libtpu"), [({}, "0"), ({"TPU_WORKER_ID": "0"}, None)])
def test_tpu_image_skips_libtpu_where_there_is_no_tpu(tpu_variables: dict[str, str], loads_libtpu: str | None,
                                                      tmp_path: Path) -> None:
    """Without it, importing TensorFlow in the tpu image off a TPU (the in-cluster TensorBoard) hangs for minutes."""
    if Path("/dev/accel0").exists() or list(Path("/dev").glob("vfio/[0-9]*")):
        pytest.skip("this machine has a TPU")
    hook = next(ins for ins in dockerfile("tpu") if ins.keyword == "RUN" and ".pth" in ins.value)
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    path = f"{venv}/bin:/usr/bin:/bin"
    subprocess.run(["/bin/sh", "-c", hook.value], env={"PATH": path}, check=True)
    shown = subprocess.run([venv / "bin" / "python", "-c", "import os; print(os.environ.get('TPU_LOAD_LIBRARY'))"],
                           env={"PATH": path, **tpu_variables}, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == str(loads_libtpu)


@pytest.mark.parametrize(("target", "extras", "dropped"), [
    ("cpu", ("atari", "mujoco", "mlflow", "wandb", "rayjob"), set()),
    ("gpu", ("atari", "envpool", "mujoco", "mlflow", "wandb", "rayjob"), {"tensorflow", "tensorflow-cpu"}),
    ("tpu", ("atari", "envpool", "mujoco", "mlflow", "wandb", "rayjob"),
     {"tensorflow", "tensorflow-cpu", "tensorboard"}),
])
def test_dependency_layer_installs_pyproject_and_the_pods_extras_minus_what_the_image_replaces(
        target: str, extras: tuple[str, ...], dropped: set[str], tmp_path: Path) -> None:
    """Run the Dockerfile's own requirements step on pyproject.toml and read what it would install: a pod can make
    Atari and MuJoCo envs, track to MLflow or W&B and run in a RayJob; an accelerator's image steps Atari on
    envpool."""
    instructions = dockerfile(target)
    args = {k: v for ins in instructions if ins.keyword == "ARG" for k, v in ins.pairs().items()}
    step = next(ins for _, ins in installs(target) if "requirements.txt" in ins.value)
    extract = step.value.split("&&")[0]
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    subprocess.run(["/bin/sh", "-c", extract], cwd=tmp_path, check=True,
                   env={"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "EXCLUDE": args["EXCLUDE"] or "",
                        "EXTRAS": args["EXTRAS"]})
    listed = [Requirement(line) for line in (tmp_path / "requirements.txt").read_text().splitlines() if line]
    assert tuple(args["EXTRAS"].split()) == extras
    expected = [r for r in pyproject_dependencies(extras) if r.name not in dropped]
    assert [str(r) for r in listed] == [str(r) for r in expected]


def test_dockerignore_keeps_only_what_the_images_copy() -> None:
    rules = dockerignore()
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "runs/dqn/copy-0/summary.json",
                 ".pytest_cache/v", ".ruff_cache/x", "rlkube.egg-info/PKG-INFO", "tests/test_images.py",
                 "helm/rlkube/values.yaml", "manifests/setup/rbac.yaml", "benchmarks/dqn_cartpole.py",
                 "tools/testcluster/build.sh", "images/cpu.Dockerfile", "rlkube.yaml", ".env", "kubeconfig",
                 "build/lib/rlkube/x.py", "dist/rlkube.whl", "rlkube/__pycache__/x.cpython-311.pyc",
                 "rlkube/run/__pycache__/runner.cpython-311.pyc"):
        assert ignored(path, rules), f"{path} would be sent to the Docker engine"
    for path in ("pyproject.toml", "README.md", "rlkube/__init__.py", "rlkube/cli/main.py",
                 "rlkube/launch/clusters.yaml"):
        assert not ignored(path, rules), f"{path} is needed by the build but ignored"
    for target in TARGETS:
        for ins in dockerfile(target):
            if ins.keyword == "COPY" and not any(flag.startswith("--from") for flag in ins.flags):
                for source in shlex.split(ins.value)[:-1]:
                    assert not ignored(source, rules), f"{target}: COPY {source} but .dockerignore drops it"


@pytest.mark.parametrize("target", TARGETS)
def test_classic_builder_gets_the_same_instructions_without_cache_mounts(target: str) -> None:
    original = parse_dockerfile(DOCKERFILES[target].read_text())
    classic_text = images.classic_dockerfile(DOCKERFILES[target].read_text())
    classic = parse_dockerfile(classic_text)
    assert "--mount" not in classic_text
    assert [(ins.keyword, ins.value) for ins in classic] == [(ins.keyword, ins.value) for ins in original]
    assert [ins.flags for ins in classic if ins.keyword == "RUN"] == [
        tuple(f for f in ins.flags if not f.startswith("--mount=")) for ins in original if ins.keyword == "RUN"]


# --- image tags from git -------------------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "images").mkdir(parents=True)
    for target, path in DOCKERFILES.items():
        (root / "images" / f"{target}.Dockerfile").write_text(path.read_text())
    (root / "train.py").write_text("print('hello')\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_image_tag_of_a_clean_tree_is_the_commit_and_stable(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert images.image_tag(repo) == commit[:12]
    assert images.image_tag(repo) == commit[:12]
    assert images.image_tag(repo / "images") == commit[:12]  # from a subdirectory too


def test_image_tag_changes_with_each_change_to_a_tracked_file(repo: Path) -> None:
    clean = images.image_tag(repo)
    (repo / "train.py").write_text("print('hello, world')\n")
    first = images.image_tag(repo)
    assert re.fullmatch(rf"{clean}-dirty-[0-9a-f]{{8}}", first)
    assert images.image_tag(repo) == first  # the same changes, the same tag
    git(repo, "add", "train.py")
    assert images.image_tag(repo) == first  # staged or not
    (repo / "train.py").write_text("print('bye')\n")
    assert images.image_tag(repo) not in (clean, first)
    git(repo, "checkout", "HEAD", "--", "train.py")
    assert images.image_tag(repo) == clean


def test_image_tag_counts_untracked_files_but_not_ignored_ones(repo: Path) -> None:
    clean = images.image_tag(repo)
    (repo / "runs").mkdir()
    (repo / "runs" / "events.out").write_text("ignored")
    assert images.image_tag(repo) == clean
    (repo / "new_agent.py").write_text("x = 1\n")
    first = images.image_tag(repo)
    assert first.startswith(f"{clean}-dirty-")
    (repo / "new_agent.py").write_text("x = 2\n")
    assert images.image_tag(repo) not in (clean, first)


def test_image_tag_outside_a_git_checkout_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a git checkout with a commit"):
        images.image_tag(tmp_path)


# --- building ------------------------------------------------------------------------------------

def ignore_lines(_line: str) -> None:
    """An `emit` for tests that do not read the log."""


@pytest.fixture
def closed_unix_socket(tmp_path: Path) -> Iterator[str]:
    """A unix socket that exists but accepts nothing: connecting is refused at once."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # bound, never listening
    yield f"unix://{path}"
    sock.close()


def closed_tcp_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.mark.parametrize("where", ["closed unix socket", "closed tcp port"])
def test_build_without_a_docker_engine_is_one_line_saying_what_to_do(where: str, repo: Path,
                                                                     closed_unix_socket: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    host = closed_unix_socket if where == "closed unix socket" else closed_tcp_port()
    monkeypatch.setenv("DOCKER_HOST", host)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        images.build("cpu", None, False, repo, ignore_lines)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no Docker engine at {host} (Connection refused); start Docker")
    assert "images/cpu.Dockerfile" in message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("args", "message"), [
    (("arm", None, False), "unknown image target 'arm'; use one of cpu, gpu, tpu"),
    (("cpu", None, True), "--push needs a registry to push to; pass --registry"),
    (("tpu", "us-docker.pkg.dev/PROJECT/rlkube", True), "still has the placeholder PROJECT"),
    (("cpu", "ghcr.io/My Org", True), "bad registry 'ghcr.io/My Org'"),
])
def test_build_refuses_bad_input_before_touching_docker(args: tuple[Any, ...], message: str, repo: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_engine", lambda _target: pytest.fail("reached the engine"))
    with pytest.raises(UserError, match=re.escape(message)):
        images.build(*args, repo_dir=repo, emit=ignore_lines)


DIGEST = "sha256:" + "ab" * 32


class FakeAPI:
    """The parts of docker.APIClient that `build` uses, answering as a Docker engine does."""

    def __init__(self, build_chunks: list[dict[str, Any]], push_chunks: list[dict[str, Any]]) -> None:
        self.build_chunks, self.push_chunks = build_chunks, push_chunks
        self.build_kwargs: dict[str, Any] = {}
        self.dockerfile_text = ""
        self.pushed: tuple[str, str] | None = None
        self.timeout = 60

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.build_kwargs = kwargs
        self.dockerfile_text = Path(kwargs["dockerfile"]).read_text()
        yield from self.build_chunks

    def push(self, repository: str, tag: str, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
        assert stream
        assert decode
        self.pushed = (repository, tag)
        yield from self.push_chunks

    def inspect_image(self, _reference: str) -> dict[str, Any]:
        return {"RepoDigests": []}


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api


BUILD_OK = [{"stream": "Step 1/20 : FROM python:3.11-slim-bookworm\n"}, {"status": "Pulling fs layer", "id": "l1"},
            {"status": "Downloading", "id": "l1", "progressDetail": {"current": 1}},
            {"status": "Downloading", "id": "l1", "progressDetail": {"current": 2}},
            {"stream": " ---> 1234\nStep 2/20 : ENV"}, {"stream": " PYTHONUNBUFFERED=1\n"},
            {"aux": {"ID": "sha256:" + "cd" * 32}}, {"stream": "Successfully built 1234\n"}]


def fake_engine(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> None:
    monkeypatch.setattr(images, "_engine", lambda _target: FakeClient(api))


def test_build_streams_the_log_tags_by_git_state_and_returns_the_pushed_digest(repo: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    push = [{"status": "The push refers to repository [ghcr.io/org/rlkube-cpu]"},
            {"status": "Preparing", "id": "l1"},
            *({"status": "Pushing", "id": "l1", "progressDetail": {"current": n}} for n in range(50)),
            {"status": "Pushed", "id": "l1"}, {"status": f"x: digest: {DIGEST} size: 1234"},
            {"aux": {"Tag": "x", "Digest": DIGEST, "Size": 1234}}]
    api = FakeAPI(BUILD_OK, push)
    fake_engine(monkeypatch, api)
    lines: list[str] = []
    tag = images.image_tag(repo)

    reference = images.build("cpu", "ghcr.io/org/", True, repo, lines.append)

    assert reference == f"ghcr.io/org/rlkube-cpu@{DIGEST}"
    assert api.build_kwargs["tag"] == f"ghcr.io/org/rlkube-cpu:{tag}"
    assert api.pushed == ("ghcr.io/org/rlkube-cpu", tag)
    # The SDK's classic builder gets the Dockerfile without BuildKit's mounts, from outside the context.
    assert "--mount" not in api.dockerfile_text
    assert not Path(api.build_kwargs["dockerfile"]).is_relative_to(repo)
    assert Path(api.build_kwargs["path"]) == repo
    build_args = api.build_kwargs["buildargs"]
    assert build_args["GIT_COMMIT"] == git(repo, "rev-parse", "HEAD").strip()
    assert build_args["PIP_NO_CACHE_DIR"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", build_args["CREATED"])
    declared = {k for ins in dockerfile("cpu") if ins.keyword == "ARG" for k in ins.pairs()}
    assert set(build_args) <= declared  # the classic builder warns about, and ignores, undeclared ones
    # Build output line by line (a line split across chunks comes out whole), progress once per state.
    assert "Step 2/20 : ENV PYTHONUNBUFFERED=1" in lines
    assert lines.count("l1: Downloading") == 1
    assert lines.count("l1: Pushing") == 1
    assert lines[-1] == f"pushed ghcr.io/org/rlkube-cpu@{DIGEST}"


def test_build_without_push_returns_the_local_tag(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI(BUILD_OK, [])
    fake_engine(monkeypatch, api)
    assert images.build("cpu", None, False, repo, ignore_lines) == f"rlkube-cpu:{images.image_tag(repo)}"
    assert api.pushed is None


def test_tpu_image_is_built_for_amd64(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI(BUILD_OK, [])
    fake_engine(monkeypatch, api)
    images.build("tpu", None, False, repo, ignore_lines)
    assert api.build_kwargs["platform"] == "linux/amd64"


@pytest.mark.parametrize(("build_chunks", "push_chunks", "message"), [
    ([*BUILD_OK[:2], {"error": "The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 1",
                      "errorDetail": {"message": "returned a non-zero code: 1"}}], [],
     "building ghcr.io/org/rlkube-cpu:"),
    (BUILD_OK, [{"status": "Preparing", "id": "l1"}, {"error": "denied: requires authentication"}],
     "pushing ghcr.io/org/rlkube-cpu:"),
])
def test_a_failed_build_or_push_is_one_line(build_chunks: list[dict[str, Any]], push_chunks: list[dict[str, Any]],
                                            message: str, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_engine(monkeypatch, FakeAPI(build_chunks, push_chunks))
    with pytest.raises(UserError) as caught:
        images.build("cpu", "ghcr.io/org", True, repo, ignore_lines)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_default_registry_is_what_precedes_rlkube_target_in_each_shipped_profile() -> None:
    profiles = yaml.safe_load((REPO / "rlkube" / "launch" / "clusters.yaml").read_text())
    found = {name: images.default_registry(profile["image"])
             for name, profile in profiles.items() if "image" in profile}
    assert found["gke-tpu"] == "us-docker.pkg.dev/PROJECT/rlkube"
    assert found["gke-gpu"] == "us-docker.pkg.dev/PROJECT/rlkube"
    assert found["eks"] == "ACCOUNT.dkr.ecr.REGION.amazonaws.com"
    assert found["kube"] == "ghcr.io/rlkube"
    assert images.default_registry("localhost:5000/rlkube-cpu@" + DIGEST) == "localhost:5000"
    with pytest.raises(UserError, match=re.escape("cannot tell the registry from image 'python:3.11'")):
        images.default_registry("python:3.11")


def test_each_profile_gets_the_image_for_its_accelerator() -> None:
    from rlkube.launch.clusters import load_profiles  # noqa: PLC0415

    profiles = load_profiles()
    assert images.target_for(profiles["gke-tpu"]) == "tpu"
    assert images.target_for(profiles["gke-gpu"]) == "gpu"
    assert images.target_for(profiles["eks"]) == "gpu"
    assert images.target_for(profiles["kube"]) == "cpu"
    # The shipped images already follow the same naming: <registry>/rlkube-<target>.
    for profile in profiles.values():
        if profile.target == "kubernetes":
            assert f"/rlkube-{images.target_for(profile)}:" in profile.image


def test_builds_come_from_the_checkout_rlkube_runs_from() -> None:
    assert images.repo_root() == REPO


# --- the exact command the image runs, in a fresh virtualenv built as the image is ----------------

def _interpreter_for(uid: int | None) -> str:
    """A Python 3.11+ interpreter with venv that `uid` can run (a root-only one under /root will not do)."""
    candidates = [getattr(sys, "_base_executable", sys.executable), shutil.which("python3.11") or "",
                  "/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    for candidate in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
        try:
            probe = subprocess.run([candidate, "-c", "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)"],
                                   capture_output=True, check=False, **({"user": uid, "group": uid} if uid else {}))
        except OSError:  # not even executable by uid
            continue
        if probe.returncode == 0:
            return candidate
    return ""


@dataclass
class ImageVenv:
    """A fresh virtualenv built by replaying the cpu image's Python steps, and how to run like the image."""

    root: Path  # stands in for the image's `/`
    env: dict[str, str]  # the image's ENV, paths mapped under root
    workdir: Path
    entrypoint: list[str]
    cmd: list[str]
    run_as: int | None  # uid 1000 when the tests run as root, else None (already not root)
    seconds: float

    def run(self, args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False, **self.user(), **kwargs)

    def user(self) -> dict[str, int]:
        return {"user": self.run_as, "group": self.run_as} if self.run_as is not None else {}


def _passthrough_env() -> dict[str, str]:
    """What pip needs from here to reach the index (certificates, proxies, pip settings) and its cache (HOME)."""
    keep = ("HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}


def _mapped(value: str, image_paths: list[str], root: Path) -> str:
    """Put the image's own paths (its venv, its home) under `root`; leave the host's alone."""
    for path in image_paths:
        value = re.sub(rf"(?<![\w/]){re.escape(path)}(?=/|:|$)", str(root) + path, value)
    return value


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _copy_into(sources: list[str], destination: str, workdir: Path, root: Path) -> None:
    """COPY as the engine does it: sources from the context, minus what .dockerignore drops; a directory's
    contents go into the destination, a file goes into it when it names a directory (ends with `/`)."""
    rules = dockerignore()
    target = root / destination.lstrip("/") if destination.startswith("/") else workdir / destination
    for source in sources:
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=lambda folder, names: [
                name for name in names if ignored(str((Path(folder) / name).relative_to(REPO)), rules)])
        else:
            into = target / origin.name if destination.endswith("/") or target.is_dir() else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def replay_image_build(target: str, root: Path, run_as: int | None, python: str) -> ImageVenv:
    """Replay images/<target>.Dockerfile's Python steps on this machine, with `root` standing in for `/`.

    ENV, ARG, WORKDIR and COPY are applied as the builder would; RUN steps that build the Python
    environment (those starting with `python` or `pip`) run as they are, in `sh -c`. The only step not
    replayed is creating the user (it needs root and changes this machine): the tests run the result
    as uid 1000 when they can, instead.
    """
    started = time.monotonic()
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    (root / "usr" / "local" / "bin" / "python").symlink_to(python)
    env = {**BASE_IMAGE_ENV, "PATH": f"{root}/usr/local/bin:/usr/bin:/bin"}
    build_env = _passthrough_env()
    args: dict[str, str] = {}
    image_paths: list[str] = []
    workdir = root
    skipped = []
    for ins in parse_dockerfile(DOCKERFILES[target].read_text()):
        if ins.keyword == "ENV":
            for key, value in ins.pairs().items():
                if key in ("VIRTUAL_ENV", "HOME"):
                    image_paths.append(value)
                env[key] = _mapped(_expand(value, env), image_paths, root)
        elif ins.keyword == "ARG":
            args.update({k: v for k, v in ins.pairs().items() if v is not None})
        elif ins.keyword == "WORKDIR":
            workdir = root / ins.value.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, destination = shlex.split(ins.value)
            _copy_into(sources, destination, workdir, root)
        elif ins.keyword == "RUN" and re.match(r"(python|pip)\b", ins.value):
            result = subprocess.run(["/bin/sh", "-c", ins.value], cwd=workdir, capture_output=True, text=True,
                                    env={**build_env, **args, **env}, check=False, timeout=1800)
            assert result.returncode == 0, f"line {ins.line} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        elif ins.keyword == "RUN":
            skipped.append(ins.value)
    assert len(skipped) == 1, f"RUN steps this replay does not know: {skipped}"
    assert skipped[0].startswith("groupadd --gid 1000 rlkube && useradd --uid 1000")
    instructions = parse_dockerfile(DOCKERFILES[target].read_text())
    entrypoint = next(ins for ins in instructions if ins.keyword == "ENTRYPOINT").json()
    cmd = next(ins for ins in instructions if ins.keyword == "CMD").json()
    home = Path(env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(home, run_as, run_as)
    return ImageVenv(root, env, workdir, entrypoint, cmd, run_as, time.monotonic() - started)


def _remove_leftovers(parent: Path) -> None:
    """Remove the virtualenvs (1.6 GB each) of earlier runs that were killed before they could clean up."""
    for old in parent.glob("rlkube-image-*-*"):
        pid = old.name.split("-")[2]
        try:
            alive = pid.isdigit() and (os.kill(int(pid), 0) is None)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="module")
def cpu_image_venv() -> Iterator[ImageVenv]:
    run_as = IMAGE_UID if os.geteuid() == 0 else None
    python = _interpreter_for(run_as)
    if not python and run_as is not None:  # no interpreter uid 1000 may run: run as this (root) user instead
        run_as, python = None, _interpreter_for(None)
    # Not under pytest's tmp_path: its base directory is private to this user, so uid 1000 could not reach it.
    _remove_leftovers(Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=f"rlkube-image-{os.getpid()}-"))
    root.chmod(0o755)  # so uid 1000 can reach the virtualenv inside
    try:
        venv = replay_image_build("cpu", root, run_as, python)
        print(f"\nfresh image virtualenv built in {venv.seconds:.1f} s (run as uid {run_as or os.geteuid()})")
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


# Replays the image build into a fresh virtualenv: about a minute with pip's cache warm, ~1 GB of wheels without.
@pytest.mark.xdist_group("image-venv")  # one worker builds the virtualenv, once
@pytest.mark.full
def test_image_entrypoint_trains_in_a_fresh_virtualenv(cpu_image_venv: ImageVenv) -> None:
    venv = cpu_image_venv
    # The virtualenv is really fresh and really holds rlkube: no site-packages from elsewhere, no checkout.
    config = (venv.root / "opt" / "rlkube" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config
    where = venv.run(["python", "-c", "import rlkube, sys; print(rlkube.__file__); print(sys.prefix)"], timeout=60)
    module_path, prefix = where.stdout.split()
    assert Path(module_path).is_relative_to(venv.root / "opt" / "rlkube" / "lib"), where
    assert Path(prefix) == venv.root / "opt" / "rlkube"
    assert shutil.which(venv.entrypoint[0], path=venv.env["PATH"]) == str(venv.root / "opt" / "rlkube" / "bin" /
                                                                           venv.entrypoint[0])

    # With no arguments the image prints the help (its CMD).
    helped = venv.run([*venv.entrypoint, *venv.cmd], timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "--hparams" in helped.stdout

    output = venv.root / "home" / "rlkube" / "runs" / "cp"
    command = [*venv.entrypoint, "--hparams", "dqn_cartpole", "--train-steps", "300", "--eval-episodes", "1",
               "--test-episodes", "1", "--output-dir", str(output)]
    started = time.monotonic()
    result = venv.run(command, timeout=600)
    print(f"{shlex.join(command)}: exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["copies"] == 1
    assert (output / "copy-0" / "summary.json").is_file()
    if venv.run_as is not None:
        assert (output / "copy-0").stat().st_uid == venv.run_as


# Replays the image build into a fresh virtualenv: about a minute with pip's cache warm, ~1 GB of wheels without.
@pytest.mark.xdist_group("image-venv")  # one worker builds the virtualenv, once
@pytest.mark.full
def test_image_makes_the_atari_and_mujoco_sets_envs_and_loads_both_trackers(cpu_image_venv: ImageVenv) -> None:
    """What `rlkube submit --hparams dqn_pong` and `--track` need in a pod, checked as a run checks them."""
    check = ("from rlkube.rl.envs import make_env; from rlkube.rl.hparams import get_hparams; "
             "from rlkube.run.options import TrainOptions; from rlkube.run.tracking import TrackingSettings; "
             "[make_env(get_hparams(name).env).close() for name in ('dqn_pong', 'sac_halfcheetah')]; "
             "[TrackingSettings.from_options(TrainOptions(hparams='dqn_pong', track=kind)) for kind in "
             "('mlflow', 'wandb')]; import mlflow, wandb; print('ok')")
    result = cpu_image_venv.run(["python", "-c", check], timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


# Replays the image build into a fresh virtualenv: about a minute with pip's cache warm, ~1 GB of wheels without.
@pytest.mark.xdist_group("image-venv")  # one worker builds the virtualenv, once
@pytest.mark.full
def test_image_serves_tensorboard_with_the_same_environment(cpu_image_venv: ImageVenv) -> None:
    venv = cpu_image_venv
    logdir = venv.root / "home" / "rlkube" / "tb-logs"
    if not logdir.exists():
        logdir.mkdir(parents=True)
        if venv.run_as is not None:
            os.chown(logdir, venv.run_as, venv.run_as)
    process = subprocess.Popen(["tensorboard", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0"],
                               cwd=venv.workdir, env=venv.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, **venv.user())
    try:
        deadline, seen = time.monotonic() + 120, []
        url = None
        assert process.stdout is not None
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url, "".join(seen)
        with urllib.request.urlopen(f"{url}data/environment", timeout=30) as response:
            assert json.load(response)["data_location"] == str(logdir)
    finally:
        process.terminate()
        process.wait(timeout=30)
