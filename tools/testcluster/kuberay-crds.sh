#!/usr/bin/env bash
# Fetches (once) and caches KubeRay's CustomResourceDefinitions (RayJob, RayCluster, RayService), which tests/k8s
# installs in the test control plane; with `operator`, also builds (once) KubeRay's operator, which the full tier's
# tests/k8s/test_kuberay_operator.py runs beside the control plane, as the controller-manager runs.
#
# Both come from the Go module proxy (github.com/ray-project/kuberay/ray-operator: its module zip holds
# config/crd/bases, and its main package is the operator), like every other test tool of tools/testcluster, into
# ${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}/kuberay-crds-<v>/ and kuberay-operator-<v>/ (~6 min of Go build on
# 2 cores the first time).
# stdout: exactly one line, the CRDs' directory (with `operator`, the operator binary's path).
# Override the version with RLKUBE_KUBERAY_VERSION.
set -euo pipefail

KUBERAY_VERSION="${RLKUBE_KUBERAY_VERSION:-v1.5.0}"
MODULE="github.com/ray-project/kuberay/ray-operator"
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
DIR="$TESTBIN/kuberay-crds-$KUBERAY_VERSION"
OPERATOR_DIR="$TESTBIN/kuberay-operator-$KUBERAY_VERSION"
CRDS=(ray.io_rayjobs.yaml ray.io_rayclusters.yaml ray.io_rayservices.yaml)

need_go() {
  command -v go >/dev/null || { echo "kuberay-crds.sh: go is required (https://go.dev/dl/)" >&2; exit 1; }
}

crds_present() {
  local crd
  for crd in "${CRDS[@]}"; do
    [[ -s "$DIR/$crd" ]] || return 1
  done
}

if ! crds_present; then
  need_go
  module_dir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod GOWORK=off go mod download -json \
    "$MODULE@$KUBERAY_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$module_dir" ]] || { echo "kuberay-crds.sh: go mod download gave no module directory" >&2; exit 1; }
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp"
  for crd in "${CRDS[@]}"; do
    install -m 644 "$module_dir/config/crd/bases/$crd" "$DIR.tmp/"
  done
  rm -rf "$DIR"
  mv "$DIR.tmp" "$DIR"
fi

if [[ "${1:-}" != operator ]]; then
  echo "$DIR"
  exit 0
fi

if [[ ! -x "$OPERATOR_DIR/ray-operator" ]]; then
  need_go
  # Serialise concurrent callers; the loser finds the binary built.
  mkdir -p "$TESTBIN"
  exec 9>"$TESTBIN/.kuberay-operator.lock"
  flock 9
  if [[ ! -x "$OPERATOR_DIR/ray-operator" ]]; then
    echo "kuberay-crds.sh: building KubeRay's operator $KUBERAY_VERSION (once, ~6 min on 2 cores)" >&2
    rm -rf "$OPERATOR_DIR.tmp"
    mkdir -p "$OPERATOR_DIR.tmp"
    (cd "${TMPDIR:-/tmp}" && CGO_ENABLED=0 GOWORK=off GOFLAGS= GOBIN="$OPERATOR_DIR.tmp" \
      go install "$MODULE@$KUBERAY_VERSION")
    rm -rf "$OPERATOR_DIR"
    mv "$OPERATOR_DIR.tmp" "$OPERATOR_DIR"
  fi
fi
echo "$OPERATOR_DIR/ray-operator"
