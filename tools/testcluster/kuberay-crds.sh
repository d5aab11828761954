#!/usr/bin/env bash
# Fetches (once) and caches KubeRay's RayJob CustomResourceDefinition, which tests/k8s installs in the test control
# plane to prove that the admission policies hold for RayJobs' pod templates (no KubeRay operator runs: only the kind
# must exist).
#
# It comes from the Go module proxy (github.com/ray-project/kuberay/ray-operator's module zip holds
# config/crd/bases), like every other test tool of tools/testcluster, into
# ${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}/kuberay-crds-<v>/.
# stdout: exactly one line, that directory. Override the version with RLKUBE_KUBERAY_VERSION.
set -euo pipefail

KUBERAY_VERSION="${RLKUBE_KUBERAY_VERSION:-v1.5.0}"
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
DIR="$TESTBIN/kuberay-crds-$KUBERAY_VERSION"
CRD=ray.io_rayjobs.yaml

if [[ ! -s "$DIR/$CRD" ]]; then
  command -v go >/dev/null || { echo "kuberay-crds.sh: go is required (https://go.dev/dl/)" >&2; exit 1; }
  module_dir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod GOWORK=off go mod download -json \
    "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$module_dir" ]] || { echo "kuberay-crds.sh: go mod download gave no module directory" >&2; exit 1; }
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp"
  install -m 644 "$module_dir/config/crd/bases/$CRD" "$DIR.tmp/"
  rm -rf "$DIR"
  mv "$DIR.tmp" "$DIR"
fi
echo "$DIR"
