#!/usr/bin/env bash
# Starts etcd and kube-apiserver on loopback in the background and writes a kubeconfig.
# usage: start-apiserver.sh DIR [APISERVER_PORT]
#   DIR receives etcd data and sockets, certificates, logs, pids and DIR/kubeconfig. Prints the
#   kubeconfig path once /readyz answers and the "default" namespace exists.
#   Stop with: kill -9 $(cat DIR/apiserver.pid) $(cat DIR/etcd.pid) (v1.36 was seen to keep
#   running after a plain kill sent together with etcd's)
# The binary is $KUBE_APISERVER, else the v1.36 one scripts/kube/apiserver.sh installs, else the
# v1.20 one scripts/kube/build-apiserver.sh builds. Works with both versions.
# Ports: etcd listens on Unix sockets in DIR only (client and peer; no metrics listener), so it
# takes no TCP port. Without APISERVER_PORT the API server gets a random port below the
# ephemeral range (outgoing connections never take it) and a fresh one if that is in use.
# No controller-manager or scheduler runs: Deployments get no ReplicaSets or Pods; a test sets
# status itself through the /status subresource. Namespace deletion and garbage collection do not finish.
set -euo pipefail
KUBE_WORK=${KUBE_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-kube}
if [[ -n ${KUBE_APISERVER:-} ]]; then BIN=$KUBE_APISERVER
elif [[ -x $KUBE_WORK/v1.36.3/kube-apiserver ]]; then BIN=$KUBE_WORK/v1.36.3/kube-apiserver
else BIN=$KUBE_WORK/bin/kube-apiserver; fi
DIR=$(mkdir -p "$1" && cd "$1" && pwd); PORT=${2:-}

# On failure, stop what this script started: the caller has nothing to stop it by.
fail() {
  echo "start-apiserver.sh: $*" >&2
  for pid in "$DIR/apiserver.pid" "$DIR/etcd.pid"; do [[ -f $pid ]] && kill -9 "$(cat "$pid")" 2>/dev/null || true; done
  exit 1
}
# The last lines of a log, indented, for a failure message.
tail_of() { tail -n "${2:-15}" "$1" 2>/dev/null | sed 's/^/    /'; }
alive() { kill -0 "$(cat "$1")" 2>/dev/null; }

[[ -x $BIN ]] || fail "no kube-apiserver at $BIN: install one with scripts/kube/apiserver.sh (or set KUBE_APISERVER)"
command -v etcd >/dev/null || fail "no etcd on PATH: install Debian's etcd-server"
version=$("$BIN" --version 2>&1) || fail "$BIN --version failed: $version"
# --insecure-port=0 closes the insecure port 8080 that 1.20 opens by default (parallel servers
# would collide on it); 1.24 removed the flag and refuses it, so pass it only where it exists.
insecure=()
"$BIN" --help 2>&1 | grep -q -- '--insecure-port' && insecure=(--insecure-port=0)

mkdir -p "$DIR/certs"
[[ -f $DIR/sa.key ]] || { openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null; openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null; }
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" >"$DIR/tokens.csv"

# etcd wants host:port URLs; for unix:// it makes a socket file named so in its working
# directory, and the API server (started in the same directory) dials the same name.
(cd "$DIR" && exec setsid etcd --name meridian-test --data-dir "$DIR/etcd-data" \
  --listen-client-urls unix://etcd-client:0 --advertise-client-urls unix://etcd-client:0 \
  --listen-peer-urls unix://etcd-peer:0 --initial-advertise-peer-urls unix://etcd-peer:0 \
  --initial-cluster meridian-test=unix://etcd-peer:0 >"$DIR/etcd.log" 2>&1) &
echo $! >"$DIR/etcd.pid"
for _ in $(seq 1 100); do
  curl -sf --max-time 2 --unix-socket "$DIR/etcd-client:0" http://etcd/health 2>/dev/null | grep -q '"health":"true"' && break
  alive "$DIR/etcd.pid" || fail "etcd exited before it was healthy; $DIR/etcd.log ends:
$(tail_of "$DIR/etcd.log")"
  sleep 0.2
done
curl -sf --max-time 2 --unix-socket "$DIR/etcd-client:0" http://etcd/health | grep -q '"health":"true"' ||
  fail "etcd not healthy within 20 s (GET /health on $DIR/etcd-client:0); $DIR/etcd.log ends:
$(tail_of "$DIR/etcd.log")"

start_apiserver() {
  (cd "$DIR" && exec setsid "$BIN" --etcd-servers=unix://etcd-client:0 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" "${insecure[@]}" \
    --cert-dir="$DIR/certs" --token-auth-file="$DIR/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$DIR/sa.pub" --service-account-signing-key-file="$DIR/sa.key" \
    --service-cluster-ip-range=10.96.0.0/24 --enable-priority-and-fairness=false --profiling=false \
    --endpoint-reconciler-type=none >"$DIR/apiserver.log" 2>&1) &
  echo $! >"$DIR/apiserver.pid"
}
readyz() {
  [[ -f $DIR/certs/apiserver.crt ]] &&
    curl -sk --max-time 2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -qx ok
}

# Up to 5 attempts, each on a fresh port, while the port turns out to be taken.
for attempt in 1 2 3 4 5; do
  explicit=${2:-}; [[ -n $explicit ]] || PORT=$((20000 + RANDOM % 12000))
  start_apiserver
  ready=false
  for _ in $(seq 1 240); do
    readyz && { ready=true; break; }
    alive "$DIR/apiserver.pid" || break
    sleep 0.5
  done
  $ready && break
  if ! alive "$DIR/apiserver.pid" && grep -q 'address already in use' "$DIR/apiserver.log" && [[ -z $explicit ]]; then
    echo "start-apiserver.sh: port $PORT taken (attempt $attempt), trying another" >&2
    continue
  fi
  if alive "$DIR/apiserver.pid"; then what="did not answer ok on https://127.0.0.1:$PORT/readyz within 120 s"
  else what="exited before /readyz answered ok"; fi
  if alive "$DIR/etcd.pid"; then etcd_state="etcd is running"; else etcd_state="etcd has exited; $DIR/etcd.log ends:
$(tail_of "$DIR/etcd.log" 5)"; fi
  fail "$version ($BIN) $what ($etcd_state); $DIR/apiserver.log ends:
$(tail_of "$DIR/apiserver.log")"
done
$ready || fail "$version: every port tried was in use (last $PORT)"

# The bootstrap controller creates the "default" namespace a few seconds after /readyz.
for _ in $(seq 1 60); do
  [[ $(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$PORT/api/v1/namespaces/default") == 200 ]] && break
  sleep 0.5
done
[[ $(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  "https://127.0.0.1:$PORT/api/v1/namespaces/default") == 200 ]] ||
  fail "$version is ready but the namespace \"default\" does not exist after 30 s; $DIR/apiserver.log ends:
$(tail_of "$DIR/apiserver.log")"

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
