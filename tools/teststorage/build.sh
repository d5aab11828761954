#!/usr/bin/env bash
# Builds (once) and caches fake-gcs-server, the GCS emulator that tests/storage_servers.py runs on loopback.
# (The S3 side needs no build: it is moto's server, a Python test dependency.)
#
# The binary lives OUTSIDE the repository, in
#   ${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}/fake-gcs-server-<version>/fake-gcs-server
# built with `go install` from the Go module proxy. Go's module and build caches stay in their default places.
#
# stdout: exactly one line, the binary's path. Progress goes to stderr.
# When the binary is present the script does nothing and returns in milliseconds.
#
# Override the version with RLKUBE_FAKE_GCS_VERSION.
set -euo pipefail

FAKE_GCS_VERSION="${RLKUBE_FAKE_GCS_VERSION:-v1.56.1}"
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
DIR="$TESTBIN/fake-gcs-server-$FAKE_GCS_VERSION"
BINARY="$DIR/fake-gcs-server"

# Fast path: nothing to do.
if [[ -x "$BINARY" ]]; then
  echo "$BINARY"
  exit 0
fi

log() { echo "build.sh: $*" >&2; }

command -v go >/dev/null || { log "go is required (https://go.dev/dl/)"; exit 1; }
mkdir -p "$TESTBIN"

# Serialise concurrent callers (e.g. several pytest-xdist workers); the loser re-checks after the winner is done.
if command -v flock >/dev/null; then
  exec 9>"$TESTBIN/.build-fake-gcs.lock"
  flock 9
fi
if [[ -x "$BINARY" ]]; then
  echo "$BINARY"
  exit 0
fi

export CGO_ENABLED=0 GOWORK=off
unset GOFLAGS GOOS GOARCH
started=$SECONDS
log "building github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION (cold: about 1 min on 2 cores)"
# Built into a scratch directory and renamed into place, so an interrupted build never looks complete.
rm -rf "$DIR.tmp"
mkdir -p "$DIR.tmp"
GOBIN="$DIR.tmp" go install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
[[ -x "$BINARY" ]] || { log "internal error: $BINARY missing after the build"; exit 1; }
log "done in $((SECONDS - started)) s"
echo "$BINARY"
