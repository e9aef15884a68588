#!/usr/bin/env bash
# The Kubernetes demo: starts a real control plane on 127.0.0.1 (built from Go modules on
# first use, a few minutes), installs deploy/crds.yaml, runs the test node and
# `mover controller`, backs up an example PVC and restores it into a new one. While it
# runs, the command it prints (`kubectl get volumebackups -n demo -w`) shows progress.
#
#   scripts/k8s-demo.sh           stays up until Ctrl-C
#   scripts/k8s-demo.sh --exit    stops after the restored volume is checked
#
# Runs as root (the test node bind-mounts volumes into pods in a private mount namespace).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bins --examples
exec target/release/examples/k8s_demo "$@"
