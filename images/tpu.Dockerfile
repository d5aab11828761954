# syntax=docker/dockerfile:1
#
# rlkube on Cloud TPUs (GKE TPU slices, TPU VMs): tensorflow-tpu with libtpu on slim Python 3.11.
#
# TensorFlow's TPU build lags: the newest tensorflow-tpu on PyPI is 2.20 (there is no 2.21), so this
# image runs TensorFlow 2.20 with the TensorBoard it requires (~=2.20.0), where the other images run
# 2.21. tensorflow-tpu 2.20 asks for libtpu~=0.0.14, which would float to the newest libtpu on PyPI
# (built for much newer XLA); libtpu is pinned to the release that requirement names instead.
# tensorflow-tpu and libtpu ship x86-64 wheels only: build for linux/amd64 (`rlkube build` does).
#
#   rlkube build --target tpu [--push --registry REGISTRY]
#   docker buildx build --platform linux/amd64 -f images/tpu.Dockerfile -t rlkube-tpu .
#
# The entrypoint is `rlkube train` (what every training pod runs); the same image serves the
# in-cluster TensorBoard with command `tensorboard`. Layers go from slowest-changing to fastest:
# the dependencies are installed from pyproject.toml alone, rlkube itself last, so a code change
# rebuilds only the last layer, in seconds.

FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/rlkube \
    PATH=/opt/rlkube/bin:$PATH

# The user rlkube's pods run as (runAsUser, runAsGroup and fsGroup 1000), with a writable home; and wget, which
# KubeRay's liveness and readiness probes run in a RayJob's Ray pods (`wget ... | grep success` against Ray's
# health endpoints): without it no Ray pod of a Ray profile ever becomes ready.
RUN groupadd --gid 1000 rlkube \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/rlkube --shell /bin/bash rlkube \
 && apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/*

# `rlkube build` (the Docker SDK's classic builder, which has no cache mounts) sets this to 1 so
# pip's cache does not end up in a layer; BuildKit leaves it unset and caches in the mount.
ARG PIP_NO_CACHE_DIR

# A current pip in the virtualenv: older resolvers (such as the 23.0 that Debian's venv bundles) can
# backtrack for many minutes through botocore's daily releases (s3fs -> aiobotocore -> botocore).
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
 && pip install --upgrade "pip>=25.1"

# Where there is no TPU (the in-cluster TensorBoard's node, `--device cpu`, a laptop), importing this
# TensorFlow loads libtpu, which asks the GCE metadata server for the TPU's settings, 30 tries per
# setting: minutes of hanging before anything runs. This start-up hook (a .pth line, which every Python
# process in the virtualenv runs) tells TensorFlow not to load libtpu when no TPU device or GKE TPU
# variable is there; on TPU nodes it changes nothing.
RUN python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_path('purelib'), 'rlkube-no-tpu.pth').write_text('import glob, os; glob.glob(\"/dev/accel*\") or glob.glob(\"/dev/vfio/[0-9]*\") or any(os.environ.get(name) for name in (\"TPU_WORKER_ID\", \"TPU_NAME\", \"TPU_ACCELERATOR_TYPE\")) or os.environ.setdefault(\"TPU_LOAD_LIBRARY\", \"0\")\n')"

WORKDIR /opt/rlkube-src

# 1. TensorFlow for this image, on its own: the biggest layer, and rebuilt only when these pins change.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "tensorflow-tpu==2.20.*" "libtpu==0.0.14"

# 2. The other dependencies, from pyproject.toml alone: rebuilt only when they change. EXCLUDE names
#    the dependencies this image replaces: pyproject's TensorFlow 2.21 would overwrite the TPU build,
#    and its tensorboard~=2.21 conflicts with tensorflow-tpu 2.20's tensorboard~=2.20.0.
ARG EXCLUDE="tensorflow tensorflow-cpu tensorboard"
# EXTRAS are the optional dependencies a pod may need: Atari and MuJoCo envs (dqn_pong, td3_halfcheetah), envpool
#    (an accelerator node's many cores step the Pong sets' games in its C++ threads), the trackers' clients (--track)
#    and Ray with its job server for a RayJob's pods (profiles with `ray`).
ARG EXTRAS="atari envpool mujoco mlflow wandb rayjob"
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c 'import os, re, tomllib; drop = set(os.environ.get("EXCLUDE", "").split()); project = tomllib.load(open("pyproject.toml", "rb"))["project"]; deps = project["dependencies"] + [d for extra in os.environ.get("EXTRAS", "").split() for d in project["optional-dependencies"][extra]]; print("\n".join(d for d in deps if re.match(r"[A-Za-z0-9._-]+", d)[0].lower() not in drop))' > requirements.txt \
 && pip install -r requirements.txt

# 3. rlkube itself, without dependencies (they are all above): a code change rebuilds only this.
#    (`pip check` reports rlkube's tensorflow-cpu and tensorboard~=2.21 as unmet: the TPU build stands in.)
COPY README.md ./
COPY rlkube ./rlkube
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && rm -rf build

# Declared last: a new commit or build time changes only the metadata below, never a layer above.
ARG VERSION=dev
ARG GIT_COMMIT=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/rlkube/rlkube
LABEL org.opencontainers.image.title="rlkube-tpu" \
      org.opencontainers.image.description="rlkube: TF2 reinforcement learning, Cloud TPU image (tensorflow-tpu 2.20, libtpu)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

ENV HOME=/home/rlkube
USER 1000:1000
WORKDIR /home/rlkube
ENTRYPOINT ["rlkube", "train"]
CMD ["--help"]
