#!/usr/bin/env bash
# Builds the peers mover plugs into, for the tests only: VolSync's controller (its manager
# binary and CRDs, from the github.com/backube/volsync Go module) and Velero's CRDs (from the
# github.com/vmware-tanzu/velero module's config/crd). Cached outside the clone keyed by
# version; nothing of this goes into mover. Prints the directory that holds them:
#
#   volsync-manager
#   crds/volsync/*.yaml     ReplicationSource, ReplicationDestination
#   crds/velero/*.yaml      velero.io v1 and v2alpha1 (DataUpload, DataDownload, BSL, ...)
#   volsync/entry.sh        VolSync's restic mover script (mover-restic/entry.sh)
#   velero                  Velero's server and CLI (github.com/vmware-tanzu/velero ./cmd/velero)
#   plugins/velero-plugin-for-aws   its S3 object store plugin
#
#   scripts/build-peers.sh [CACHE_DIR]     (default /opt/mover-ci)
set -euo pipefail

cache="${1:-${MOVER_CI_CACHE:-/opt/mover-ci}}"
VOLSYNC_VERSION="${VOLSYNC_VERSION:-v0.16.0}"
VELERO_VERSION="${VELERO_VERSION:-v1.18.3}"
VELERO_AWS_VERSION="${VELERO_AWS_VERSION:-v1.14.3}"
# Velero v1.18.3's go.mod asks for k8s.io/cli-runtime v0.33.12, which the module proxy does
# not serve; v0.33.13 is the next patch release of the same line.
VELERO_CLI_RUNTIME="${VELERO_CLI_RUNTIME:-v0.33.13}"
export GOTOOLCHAIN=local CGO_ENABLED=0
export PATH="/usr/local/go/bin:$PATH"

out="$cache/peers-volsync-$VOLSYNC_VERSION-velero-$VELERO_VERSION"
mkdir -p "$out"

module_dir() {
    # `go mod download` outside any module fetches one module's zip and prints where it is.
    (cd "$out" && go mod download -json "$1" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

if [ ! -x "$out/volsync-manager" ] || [ ! -f "$out/crds/volsync/volsync.backube_replicationsources.yaml" ]; then
    echo "building VolSync's controller $VOLSYNC_VERSION" >&2
    dir="$(module_dir "github.com/backube/volsync@$VOLSYNC_VERSION")"
    [ -n "$dir" ] || {
        echo "github.com/backube/volsync@$VOLSYNC_VERSION could not be downloaded" >&2
        exit 1
    }
    (cd "$dir" && go build -trimpath -ldflags="-s -w" -o "$out/volsync-manager.tmp" ./cmd)
    mv "$out/volsync-manager.tmp" "$out/volsync-manager"
    mkdir -p "$out/crds/volsync"
    cp "$dir"/config/crd/bases/*.yaml "$out/crds/volsync/"
    chmod u+w "$out"/crds/volsync/*.yaml
fi

if [ ! -f "$out/crds/velero/velero.io_datauploads.yaml" ]; then
    echo "fetching Velero's CRDs $VELERO_VERSION" >&2
    dir="$(module_dir "github.com/vmware-tanzu/velero@$VELERO_VERSION")"
    [ -n "$dir" ] || {
        echo "github.com/vmware-tanzu/velero@$VELERO_VERSION could not be downloaded" >&2
        exit 1
    }
    mkdir -p "$out/crds/velero"
    cp "$dir"/config/crd/v1/bases/*.yaml "$dir"/config/crd/v2alpha1/bases/*.yaml "$out/crds/velero/"
    chmod u+w "$out"/crds/velero/*.yaml
fi
# VolSync's restic mover script, run by the tests with mover and with restic as `restic`.
if [ ! -f "$out/volsync/entry.sh" ]; then
    dir="$(module_dir "github.com/backube/volsync@$VOLSYNC_VERSION")"
    mkdir -p "$out/volsync"
    cp "$dir/mover-restic/entry.sh" "$out/volsync/entry.sh.tmp"
    chmod u+w "$out/volsync/entry.sh.tmp"
    mv "$out/volsync/entry.sh.tmp" "$out/volsync/entry.sh"
fi
if [ ! -x "$out/velero" ]; then
    echo "building Velero $VELERO_VERSION" >&2
    dir="$(module_dir "github.com/vmware-tanzu/velero@$VELERO_VERSION")"
    src="$(mktemp -d)"
    cp -r "$dir"/. "$src"
    chmod -R u+w "$src"
    (cd "$src" &&
        go mod edit -replace "k8s.io/cli-runtime=k8s.io/cli-runtime@$VELERO_CLI_RUNTIME" &&
        go mod download k8s.io/cli-runtime &&
        go build -mod=mod -trimpath -ldflags="-s -w" -o "$out/velero.tmp" ./cmd/velero)
    rm -rf "$src"
    mv "$out/velero.tmp" "$out/velero"
fi

if [ ! -x "$out/plugins/velero-plugin-for-aws" ]; then
    echo "building velero-plugin-for-aws $VELERO_AWS_VERSION" >&2
    dir="$(module_dir "github.com/vmware-tanzu/velero-plugin-for-aws@$VELERO_AWS_VERSION")"
    [ -n "$dir" ] || {
        echo "github.com/vmware-tanzu/velero-plugin-for-aws@$VELERO_AWS_VERSION could not be downloaded" >&2
        exit 1
    }
    mkdir -p "$out/plugins"
    (cd "$dir" && go build -trimpath -ldflags="-s -w" \
        -o "$out/plugins/velero-plugin-for-aws.tmp" ./velero-plugin-for-aws)
    mv "$out/plugins/velero-plugin-for-aws.tmp" "$out/plugins/velero-plugin-for-aws"
fi
echo "$out"
