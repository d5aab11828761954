# syntax=docker/dockerfile:1
#
# rlkube on NVIDIA GPUs: TensorFlow 2.21 with CUDA (tensorflow[and-cuda]) on slim Python 3.11.
# CUDA, cuDNN and NCCL come as pip wheels with TensorFlow; the node brings only the driver
# (GKE and EKS GPU nodes, or the NVIDIA container toolkit, mount it into the container).
#
#   rlkube build --target gpu [--push --registry REGISTRY]
#   docker buildx build -f images/gpu.Dockerfile -t rlkube-gpu .      (context: the repository root)
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
    PATH=/opt/rlkube/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

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

WORKDIR /opt/rlkube-src

# 1. TensorFlow for this image, on its own: the biggest layer (several GB of CUDA libraries), and
#    rebuilt only when this pin changes. Same version as pyproject.toml's tensorflow-cpu.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "tensorflow[and-cuda]~=2.21.0"

# 2. The other dependencies, from pyproject.toml alone: rebuilt only when they change. EXCLUDE names
#    the dependencies this image replaces: pyproject's TensorFlow (tensorflow-cpu on x86-64) would
#    overwrite the CUDA build installed above.
ARG EXCLUDE="tensorflow tensorflow-cpu"
# EXTRAS are the optional dependencies a pod may need: Atari and MuJoCo envs (dqn_pong, td3_halfcheetah), envpool
#    (an accelerator node's many cores step the Pong sets' games in its C++ threads), the trackers' clients (--track)
#    and Ray with its job server for a RayJob's pods (profiles with `ray`).
ARG EXTRAS="atari envpool mujoco mlflow wandb rayjob"
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c 'import os, re, tomllib; drop = set(os.environ.get("EXCLUDE", "").split()); project = tomllib.load(open("pyproject.toml", "rb"))["project"]; deps = project["dependencies"] + [d for extra in os.environ.get("EXTRAS", "").split() for d in project["optional-dependencies"][extra]]; print("\n".join(d for d in deps if re.match(r"[A-Za-z0-9._-]+", d)[0].lower() not in drop))' > requirements.txt \
 && pip install -r requirements.txt

# 3. rlkube itself, without dependencies (they are all above): a code change rebuilds only this.
#    (`pip check` reports rlkube's tensorflow-cpu requirement as missing: the CUDA build stands in for it.)
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
LABEL org.opencontainers.image.title="rlkube-gpu" \
      org.opencontainers.image.description="rlkube: TF2 reinforcement learning, NVIDIA GPU image (tensorflow[and-cuda] 2.21)" \
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
