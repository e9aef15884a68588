#!/usr/bin/env bash
# Starts (or stops) a real single-node control plane on 127.0.0.1: etcd, kube-apiserver and
# kube-controller-manager (job, garbage collector, PV binder, PV/PVC protection, namespace,
# TTL controllers), built by scripts/build-control-plane.sh. No kubelet and no scheduler run:
# the test node (tests/it/controller/node.rs, also run by scripts/k8s-demo.sh) plays both.
#
#   scripts/control-plane.sh start DIR     writes DIR/kubeconfig, DIR/*.log, DIR/pids
#   scripts/control-plane.sh stop DIR
#
# Environment: CONTROL_PLANE_BIN (the directory of the binaries; built when unset).
set -euo pipefail

cmd="${1:?usage: control-plane.sh start|stop DIR}"
dir="${2:?usage: control-plane.sh start|stop DIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

stop() {
    if [ -f "$dir/pids" ]; then
        # Reverse start order: controller manager, API server, etcd.
        for pid in $(tac "$dir/pids"); do
            kill "$pid" 2>/dev/null || true
        done
        for pid in $(cat "$dir/pids"); do
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        done
        rm -f "$dir/pids"
    fi
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi
[ "$cmd" = start ] || { echo "unknown command $cmd (start or stop)" >&2; exit 2; }

bin="${CONTROL_PLANE_BIN:-$("$root/scripts/build-control-plane.sh")}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
stop

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
etcd_port="$(free_port)"
peer_port="$(free_port)"
api_port="$(free_port)"
kcm_port="$(free_port)"

pki="$dir/pki"
mkdir -p "$pki"
if [ ! -f "$pki/apiserver.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=mover-test-ca \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' \
        >"$pki/ext.cnf"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 3650 -out "$pki/apiserver.crt" -extfile "$pki/ext.cnf" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pki/admin.token"
    printf '%s,mover-admin,mover-admin-uid,system:masters\n' "$(cat "$pki/admin.token")" \
        >"$pki/tokens.csv"
fi
token="$(cat "$pki/admin.token")"

rm -rf "$dir/etcd"
"$bin/etcd" --data-dir="$dir/etcd" --name=default \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="default=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync=true --log-level=warn >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/pids"

wait_for() {
    local what="$1" tries="$2"
    shift 2
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "$what did not become ready; see $dir/*.log" >&2
    tail -20 "$dir"/*.log >&2 || true
    stop
    exit 1
}
wait_for etcd 60 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$etcd_port/health')"

"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --cert-dir="$dir/cert" --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount --profiling=false >"$dir/kube-apiserver.log" 2>&1 &
echo $! >>"$dir/pids"

cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mover-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: mover-admin
  user:
    token: $token
contexts:
- name: mover-test
  context:
    cluster: mover-test
    user: mover-admin
    namespace: default
current-context: mover-test
KUBECONFIG

wait_for kube-apiserver 240 python3 - "$api_port" "$pki/ca.crt" "$token" <<'PY'
import ssl, sys, urllib.request
port, ca, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
req = urllib.request.Request(f"https://127.0.0.1:{port}/readyz", headers={"Authorization": "Bearer " + token})
assert urllib.request.urlopen(req, context=ctx, timeout=5).read() == b"ok"
PY

"$bin/kube-controller-manager" --kubeconfig="$dir/kubeconfig" \
    --authentication-kubeconfig="$dir/kubeconfig" --authorization-kubeconfig="$dir/kubeconfig" \
    --controllers=job-controller,garbage-collector-controller,persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,ttl-after-finished-controller,namespace-controller,serviceaccount-controller \
    --leader-elect=false --use-service-account-credentials=false \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --enable-hostpath-provisioner=true >"$dir/kube-controller-manager.log" 2>&1 &
echo $! >>"$dir/pids"

"$bin/kubectl" --kubeconfig="$dir/kubeconfig" apply -f "$bin/crds/" >"$dir/apply-crds.log"
echo "control plane up: KUBECONFIG=$dir/kubeconfig (kubectl: $bin/kubectl)"
