#!/usr/bin/env bash
# Create the isolated Stable-Baselines3 reference venv used by benchmarks/sb3_reference.py.
#
# SB3 (and PyTorch) are NOT dependencies of rlkube: they live in their own virtualenv outside the
# repository so the comparison never leaks into rlkube's environment. The venv path is keyed by the
# SB3 minor version so bumping the pinned version creates a fresh venv instead of mutating an old one.
#
# Usage:  bash benchmarks/setup_sb3_venv.sh
# Env:    RLKUBE_SB3_VENV  venv location (default: $HOME/.cache/rlkube/sb3-venv-2.9)
#         PYTHON           base interpreter (default: python3)
# Prints the venv's python path as the last line of output.
set -euo pipefail

SB3_SPEC="stable-baselines3==2.9.*"
TORCH_VERSION="2.13.0"
GYM_SPEC="gymnasium[classic-control]>=1.0,<2"
VENV="${RLKUBE_SB3_VENV:-$HOME/.cache/rlkube/sb3-venv-2.9}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.rlkube-sb3-installed"

log() { echo "[setup_sb3_venv] $*" >&2; }

if [[ -f "$MARKER" && -x "$VENV/bin/python" ]]; then
    log "venv already set up at $VENV (delete it to rebuild)"
    echo "$VENV/bin/python"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv at $VENV with $("$PYTHON" --version 2>&1)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
else
    log "venv exists at $VENV but install marker is missing; (re)installing packages"
fi

VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

# Prefer a CPU-only torch wheel if one is available locally (pip's configured find-links, e.g.
# /opt/wheels). --no-index keeps this check offline, so it never downloads the large CUDA wheel.
TORCH_REQ="torch==${TORCH_VERSION}"
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
if "$VPY" -m pip download --quiet --no-deps --no-index --dest "$probe_dir" \
        "torch==${TORCH_VERSION}+cpu" >/dev/null 2>&1; then
    log "found local CPU-only wheel: $(ls "$probe_dir")"
    TORCH_REQ="torch==${TORCH_VERSION}+cpu"
else
    log "no local torch ${TORCH_VERSION}+cpu wheel; using PyPI torch (pulls CUDA libraries, several GB)"
fi

log "installing $TORCH_REQ, $SB3_SPEC, $GYM_SPEC"
"$VPY" -m pip install "$TORCH_REQ" "$SB3_SPEC" "$GYM_SPEC"

"$VPY" - <<'PY' >&2
import gymnasium
import stable_baselines3
import torch

print(f"torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
      f"gymnasium {gymnasium.__version__}")
PY

touch "$MARKER"
echo "$VPY"
