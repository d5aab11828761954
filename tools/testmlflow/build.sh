#!/usr/bin/env bash
# Installs (once) and caches the MLflow tracking server that tests/test_tracking.py runs on loopback, in a virtualenv
# of its own.
#
# Why not in .venv: the server is the full `mlflow` package, which brings scikit-learn, pandas and pyarrow. With
# scikit-learn importable, every `import tensorflow` imports it too (Keras's scikit-learn wrappers), about a second of
# CPU in each of the test tier's ~150 training processes; rlkube's own client needs only mlflow-skinny (the `mlflow`
# extra), which is what .venv holds.
#
# The virtualenv lives OUTSIDE the repository, in
#   ${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}/mlflow-server-<version>/
# built with this Python's venv and pip (from pip's cache after the first time).
#
# stdout: exactly one line, the server's `mlflow` executable. Progress goes to stderr.
# When it is present the script does nothing and returns in milliseconds.
#
# Override the version with RLKUBE_MLFLOW_SERVER_VERSION, the Python with PYTHON.
set -euo pipefail

MLFLOW_VERSION="${RLKUBE_MLFLOW_SERVER_VERSION:-3.17.2}"
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
DIR="$TESTBIN/mlflow-server-$MLFLOW_VERSION"
EXECUTABLE="$DIR/bin/mlflow"
# Written last: a virtualenv cannot be moved into place (its scripts name their interpreter's path), so an
# interrupted install is told from a finished one by this file.
DONE="$DIR/.installed"

# Fast path: nothing to do.
if [[ -f "$DONE" ]]; then
  echo "$EXECUTABLE"
  exit 0
fi

log() { echo "build.sh: $*" >&2; }

mkdir -p "$TESTBIN"
# Serialise concurrent callers (several pytest-xdist workers); the loser finds the finished install.
if command -v flock >/dev/null; then
  exec 9>"$TESTBIN/.install-mlflow-server.lock"
  flock 9
  if [[ -f "$DONE" ]]; then
    echo "$EXECUTABLE"
    exit 0
  fi
fi

started=$SECONDS
log "installing mlflow $MLFLOW_VERSION (the tracking server) into $DIR"
rm -rf "$DIR"
"${PYTHON:-python3}" -m venv "$DIR"
"$DIR/bin/python" -m pip install --quiet --upgrade pip >&2
"$DIR/bin/python" -m pip install --quiet "mlflow==$MLFLOW_VERSION" >&2
touch "$DONE"
log "done in $((SECONDS - started)) s"
echo "$EXECUTABLE"
