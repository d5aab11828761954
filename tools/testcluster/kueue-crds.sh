#!/usr/bin/env bash
# Fetches (once) and caches Kueue's LocalQueue and ClusterQueue CustomResourceDefinitions, which tests/k8s installs in
# the test control plane for `rlkube doctor`'s queue check (no Kueue controller runs: only the kinds must exist).
#
# They come from the Go module proxy (sigs.k8s.io/kueue's module zip holds config/components/crd/bases), like every
# other test tool of tools/testcluster, into ${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}/kueue-crds-<v>/.
# stdout: exactly one line, that directory. Override the version with RLKUBE_KUEUE_VERSION.
set -euo pipefail

KUEUE_VERSION="${RLKUBE_KUEUE_VERSION:-v0.17.0}"
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
DIR="$TESTBIN/kueue-crds-$KUEUE_VERSION"
CRDS=(kueue.x-k8s.io_localqueues.yaml kueue.x-k8s.io_clusterqueues.yaml)

present() {
  local crd
  for crd in "${CRDS[@]}"; do
    [[ -s "$DIR/$crd" ]] || return 1
  done
}

if ! present; then
  command -v go >/dev/null || { echo "kueue-crds.sh: go is required (https://go.dev/dl/)" >&2; exit 1; }
  module_dir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod GOWORK=off go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$module_dir" ]] || { echo "kueue-crds.sh: go mod download gave no module directory" >&2; exit 1; }
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp"
  for crd in "${CRDS[@]}"; do
    install -m 644 "$module_dir/config/components/crd/bases/$crd" "$DIR.tmp/"
  done
  rm -rf "$DIR"
  mv "$DIR.tmp" "$DIR"
fi
echo "$DIR"
