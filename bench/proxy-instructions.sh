#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: HAProxy and Meridian (and an
# older Meridian build) in front of the same nginx upstream, HTTP/1.1 and h2c, in one run.
#
#   bench/proxy-instructions.sh                       # builds release `meridian`, 20,000 requests
#   MERIDIAN_BIN=path bench/proxy-instructions.sh     # skip the build
#   MERIDIAN_BASELINE=path bench/proxy-instructions.sh  # also an older `meridian` build
#   REQUESTS=50000 ONLY="meridian baseline" bench/proxy-instructions.sh
#
# What it is for: the time figures of bench/proxy.sh move by 10-25 % between runs on a
# shared machine, more than most single changes to the request path are worth. An
# instruction count does not move (the same binary and load give the same count to within
# 0.3 %), so it tells whether a change to the proxy's own code made it do less work. It
# counts only user space: the kernel's share (the socket calls, TCP on loopback, waking
# the peers; about two thirds of every proxy's CPU time here) is not in it, and an
# instruction is not a nanosecond (cache misses, atomics). Requests per CPU-second against
# HAProxy stay bench/proxy.sh's to report.
#
# Method: each proxy runs alone under `valgrind --tool=callgrind` (one worker, one thread),
# h2load sends 2,000 requests to warm it up, the counters are zeroed, h2load sends REQUESTS
# requests over 16 connections (one request at a time on each), the counters are dumped;
# instructions per request = the dump's total / the requests answered. Everything listens on
# 127.0.0.1 only (ports 19100-19119). Installs (Debian): valgrind nginx-light haproxy
# nghttp2-client.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REQUESTS=${REQUESTS:-20000}
W=$(mktemp -d /tmp/meridian-instr.XXXXXX)

source "$ROOT/bench/packages.sh"
source "$ROOT/bench/ports.sh"
install_packages valgrind nginx-light haproxy nghttp2-client
if [[ -z ${MERIDIAN_BIN:-} ]]; then
  cargo build --release -p meridian
  MERIDIAN_BIN=$ROOT/target/release/meridian
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT


# The upstream, on the port the configs in bench/ name.
sed "s|/tmp/meridian-bench|$W|g" bench/proxy-upstream-nginx.conf >"$W/upstream.conf"
nginx -c "$W/upstream.conf" -e "$W/upstream-error.log" &
PIDS+=($!)
wait_port 19000 60

# Each proxy's command and ports, moved to 191xx so a bench/proxy.sh run cannot collide.
sed -e 's/127.0.0.1:19002$/127.0.0.1:19102/' -e 's/127.0.0.1:19012 /127.0.0.1:19112 /' \
  bench/proxy-haproxy.cfg >"$W/haproxy.cfg"
sed -e 's/127.0.0.1:19003/127.0.0.1:19103/' -e 's/127.0.0.1:19013/127.0.0.1:19113/' \
  bench/proxy-meridian.yaml >"$W/meridian.yaml"
sed -e 's/127.0.0.1:19003/127.0.0.1:19104/' -e 's/127.0.0.1:19013/127.0.0.1:19114/' \
  bench/proxy-meridian.yaml >"$W/baseline.yaml"
declare -A CMD H1 H2
CMD[haproxy]="haproxy -f $W/haproxy.cfg -db"
H1[haproxy]=19102 H2[haproxy]=19112
CMD[meridian]="$MERIDIAN_BIN proxy -c $W/meridian.yaml --workers 1"
H1[meridian]=19103 H2[meridian]=19103
PROXIES=(haproxy meridian)
if [[ -n ${MERIDIAN_BASELINE:-} ]]; then
  CMD[baseline]="$MERIDIAN_BASELINE proxy -c $W/baseline.yaml --workers 1"
  H1[baseline]=19104 H2[baseline]=19104
  PROXIES+=(baseline)
fi
[[ -z ${ONLY:-} ]] || read -r -a PROXIES <<<"$ONLY"

# Instructions per request of one proxy for one protocol: "h1" or "h2c".
count() { # name proto
  local name=$1 proto=$2 port flag=() out
  if [[ $proto == h1 ]]; then port=${H1[$name]} flag=(--h1); else port=${H2[$name]}; fi
  # shellcheck disable=SC2086 # CMD holds a command line
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/$name-$proto.out" \
    ${CMD[$name]} >"$W/$name-$proto.log" 2>&1 &
  local vg=$!
  PIDS+=("$vg")
  wait_port "$port" 60
  h2load "${flag[@]}" -n 2000 -c 16 -m 1 "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$vg" >/dev/null
  out=$(h2load "${flag[@]}" -n "$REQUESTS" -c 16 -m 1 "http://127.0.0.1:$port/")
  callgrind_control -d "$vg" >/dev/null
  sleep 0.5
  # The dump just asked for is the newest file (the one at exit is written after it).
  local done ir dump
  dump=$(ls -t "$W/$name-$proto.out"* | head -1)
  ir=$(awk '/^summary:/ {print $2}' "$dump")
  kill "$vg"
  wait "$vg" 2>/dev/null || true
  done=$(awk '/^requests:/ {print $8}' <<<"$out")
  printf '%s\t%s\t%s\t%s\n' "$name" "$proto" "$done" "$ir" >>"$W/results.tsv"
}

: >"$W/results.tsv"
for proto in h1 h2c; do
  for name in "${PROXIES[@]}"; do
    echo "$name $proto" >&2
    count "$name" "$proto"
  done
done

echo
echo "User-space instructions per request (callgrind, $REQUESTS requests, h2load -c 16 -m 1):"
awk -F'\t' '{per[$1" "$2] = $4 / $3; ok[$1" "$2] = $3}
END {
  for (k in per) {
    split(k, p, " ")
    printf "  %-9s %-4s %8.0f  (%d answered)", p[1], p[2], per[k], ok[k]
    if (per["haproxy " p[2]] > 0) printf "  %.2fx HAProxy\047s count", per[k] / per["haproxy " p[2]]
    printf "\n"
  }
}' "$W/results.tsv" | sort -k2,2 -k1,1
