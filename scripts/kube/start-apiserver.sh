#!/usr/bin/env bash
# Starts etcd and kube-apiserver on loopback in the background and writes a kubeconfig.
# usage: start.sh DIR [APISERVER_PORT] [ETCD_PORT]
#   DIR receives etcd data, certificates, logs, pids and DIR/kubeconfig. Prints the kubeconfig path
#   once /readyz answers. Stop with: kill $(cat DIR/apiserver.pid) $(cat DIR/etcd.pid)
# No controller-manager or scheduler runs: Deployments get no ReplicaSets or Pods; a test sets
# status itself through the /status subresource. Namespace deletion and garbage collection do not finish.
set -euo pipefail
KUBE_WORK=${KUBE_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-kube}
BIN=${KUBE_APISERVER:-$KUBE_WORK/bin/kube-apiserver}
DIR=$(mkdir -p "$1" && cd "$1" && pwd); PORT=${2:-16443}; EPORT=${3:-12379}
[[ -x $BIN ]] || { echo "no kube-apiserver at $BIN: run scripts/kube/build-apiserver.sh first" >&2; exit 1; }
mkdir -p "$DIR/certs"
[[ -f $DIR/sa.key ]] || { openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null; openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null; }
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" >"$DIR/tokens.csv"

setsid etcd --name meridian-test --data-dir "$DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$EPORT" --advertise-client-urls "http://127.0.0.1:$EPORT" \
  --listen-peer-urls "http://127.0.0.1:$((EPORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((EPORT + 1))" \
  --initial-cluster "meridian-test=http://127.0.0.1:$((EPORT + 1))" --listen-metrics-urls "http://127.0.0.1:$((EPORT + 2))" \
  >"$DIR/etcd.log" 2>&1 &
echo $! >"$DIR/etcd.pid"

setsid "$BIN" --etcd-servers="http://127.0.0.1:$EPORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" --insecure-port=0 \
  --cert-dir="$DIR/certs" --token-auth-file="$DIR/tokens.csv" --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$DIR/sa.pub" --service-account-signing-key-file="$DIR/sa.key" \
  --service-cluster-ip-range=10.96.0.0/24 --enable-priority-and-fairness=false --profiling=false \
  --endpoint-reconciler-type=none >"$DIR/apiserver.log" 2>&1 &
echo $! >"$DIR/apiserver.pid"

for _ in $(seq 1 120); do
  [[ -f $DIR/certs/apiserver.crt ]] && curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q ok && break
  sleep 0.5
done
curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" | grep -q ok || { echo "apiserver not ready; see $DIR/apiserver.log" >&2; exit 1; }
# The bootstrap controller creates the "default" namespace a few seconds after /readyz.
for _ in $(seq 1 60); do
  curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/api/v1/namespaces/default" | grep -q 200 && break
  sleep 0.5
done
CA=$(base64 -w0 "$DIR/certs/apiserver.crt")
cat >"$DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$PORT", certificate-authority-data: "$CA"}}]
users: [{name: admin, user: {token: "$TOKEN"}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KC
echo "$DIR/kubeconfig"
