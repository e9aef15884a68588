#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from their Go
# modules into a cache directory outside the clone, keyed by version. Only test programs are
# built here; nothing of this goes into mover. Prints the directory holding the binaries.
#
#   scripts/build-control-plane.sh [CACHE_DIR]     (default /opt/mover-ci)
#
# The consumer modules live in tools/k8s and tools/etcd (go.mod and go.sum only).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${1:-${MOVER_CI_CACHE:-/opt/mover-ci}}"
K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.4.0}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export PATH="/usr/local/go/bin:$PATH"

out="$cache/control-plane-k8s-v$K8S_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$out"

if [ ! -x "$out/etcd" ]; then
    echo "building etcd $ETCD_VERSION" >&2
    (cd "$root/tools/etcd" &&
        go build -trimpath -ldflags="-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3 &&
        mv "$out/etcd.tmp" "$out/etcd")
fi

minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
if [ ! -x "$out/kube-apiserver" ] || [ ! -x "$out/kube-controller-manager" ] || [ ! -x "$out/kubectl" ]; then
    echo "building kube-apiserver, kube-controller-manager and kubectl v$K8S_VERSION" >&2
    tmp="$out/tmp"
    mkdir -p "$tmp"
    (cd "$root/tools/k8s" &&
        go build -trimpath -tags=selinux,notest \
            -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
            -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kubectl)
    mv "$tmp/kube-apiserver" "$tmp/kube-controller-manager" "$tmp/kubectl" "$out/"
    rmdir "$tmp"
fi
# The VolumeSnapshot CRDs come from the external-snapshotter client module's zip.
if [ ! -f "$out/crds/snapshot.storage.k8s.io_volumesnapshots.yaml" ]; then
    dir="$(cd "$root/tools/etcd" && go mod download -json \
        "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "$out/crds"
    cp "$dir"/config/crd/snapshot.storage.k8s.io_*.yaml "$out/crds/"
    chmod u+w "$out"/crds/*.yaml
fi
echo "$out"
