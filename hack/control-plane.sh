#!/usr/bin/env bash
# Builds the control-plane binaries that envtest and the local run need
# (kube-apiserver, etcd, kubectl, kube-controller-manager) from the Go module
# proxy into bin/k8s/<version>/. envtest's usual download cannot work on a machine
# without internet, and building from source pins exactly what we test against.
#
# Cached: nothing is rebuilt while bin/k8s/<version>/.complete exists.
# Prints the directory to stdout (for KUBEBUILDER_ASSETS); progress goes to stderr.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
STAGING_VERSION="${STAGING_VERSION:-v0.${KUBE_VERSION#v1.}}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/bin/k8s/${KUBE_VERSION}-etcd${ETCD_VERSION}"
if [[ -f "${out}/.complete" ]]; then
  # Linked again: another KUBE_VERSION may have been built (and linked) since.
  ln -sfn "k8s/$(basename "${out}")" "${root}/bin/control-plane"
  echo "${out}"
  exit 0
fi

# One build at a time, whoever asks (two makes, a make and a direct
# `go run ./hack/local-run`): the second waits for the lock, then finds the
# first one's result.
if command -v flock >/dev/null; then
  mkdir -p "${root}/bin"
  exec 9>"${root}/bin/.control-plane.lock"
  flock 9
  if [[ -f "${out}/.complete" ]]; then
    ln -sfn "k8s/$(basename "${out}")" "${root}/bin/control-plane"
    echo "${out}"
    exit 0
  fi
fi

log() { echo "control-plane: $*" >&2; }
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
mkdir -p "${out}"

log "building kube-apiserver, kube-controller-manager, kubectl ${KUBE_VERSION} and etcd ${ETCD_VERSION} into ${out} (5-6 minutes cold)"
cd "${work}"
cat > go.mod <<MOD
module customer-operator/control-plane

go 1.26
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO

# k8s.io/kubernetes replaces its staging modules with local directories
# (k8s.io/foo => ./staging/src/k8s.io/foo); a consumer must point each of them
# at the published module of the matching version instead.
gomod="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "${gomod}" ]] || { log "could not download k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
args=(-require="k8s.io/kubernetes@${KUBE_VERSION}" -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}")
while read -r mod; do
  args+=(-replace="${mod}=${mod}@${STAGING_VERSION}")
done < <(grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "${gomod}" | awk '{print $1}')
go mod edit "${args[@]}"
GOFLAGS=-mod=mod go mod tidy -e >&2 || true

export CGO_ENABLED=0
GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "${out}/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl >&2
GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "${out}/etcd" go.etcd.io/etcd/server/v3 >&2
touch "${out}/.complete"
ln -sfn "k8s/$(basename "${out}")" "${root}/bin/control-plane"
log "done"
echo "${out}"
