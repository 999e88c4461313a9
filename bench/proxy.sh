#!/usr/bin/env bash
# Side-by-side proxy benchmark: Meridian, nginx and HAProxy as reverse proxies in front of
# one local nginx upstream, each proxy on one worker, in one run (see
# docs/benchmarking.md for the method).
#
#   bench/proxy.sh                     # 2 rounds, wrk 15 s and h2load 10 s per proxy
#   ROUNDS=1 DURATION=5 bench/proxy.sh # a quick look
#   MERIDIAN_BIN=path bench/proxy.sh   # skip the release build
#   BENCH_EXAMPLE=1 bench/proxy.sh      # build only the proxy crate (its `edge` example,
#                                       # the same Proxy::start as `meridian proxy`)
#   MERIDIAN_EDGE=path bench/proxy.sh   # an `edge` example built before
#   MERIDIAN_BASELINE=path bench/proxy.sh  # also an older build (of `meridian` or of the
#                                       # `edge` example) as "baseline" (ports 19004/19014)
#                                       # and "baseline-2w", to compare in the same run
#   ONLY="meridian meridian+log" bench/proxy.sh  # measure only these (the access log's cost)
#   IDLE_CONNS=0 bench/proxy.sh         # skip the idle-memory test
#   TWO_WORKERS=0 bench/proxy.sh        # skip the two-worker runs
#   SAME_RPS=0 bench/proxy.sh           # skip HAProxy and Meridian at one fixed rate
#
# Meridian runs twice: as configured, and as "meridian+log" with the access log written to
# a file (every line: the rate cap is far above the load), to show what the log costs.
#
# Every proxy, the upstream and the load generators run pinned (proxies on CPU 1, the rest
# on CPU 0) and at the same priority: nice -20 in an autogroup of its own at -20. `setsid`
# alone would give each a fresh nice-0 autogroup that competes with every other session on
# the machine, and the ratios would measure the scheduler (docs/benchmarking.md).
#
# Reports, per proxy: requests per CPU-second of the proxy process (utime+stime from /proc,
# all threads and children), requests/s, p50/p99 latency (wrk), RSS after the run; the
# access log's cost (meridian+log against meridian, per round and on average); HAProxy's
# and Meridian's CPU per request at one fixed rate (SAME_RPS, 50k req/s); the same
# h1 load against nginx, HAProxy and Meridian with two workers each (allowed both CPUs,
# which on a 2-core machine they share with wrk and the upstream: compare the proxies with
# each other there, not with their one-worker figures); then the idle memory of open client connections (9,000, reported per 10,000) for nginx, HAProxy
# and Meridian. The run's files go to a private temporary directory, removed at the end
# (KEEP_BENCH_DIR=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15}
H2_DURATION=${H2_DURATION:-10}
# 9,000: under HAProxy's maxconn (bench/proxy-haproxy.cfg); reported per 10,000.
IDLE_CONNS=${IDLE_CONNS:-9000}
TWO_WORKERS=${TWO_WORKERS:-1}
# A private directory per run: the configs in bench/ name /tmp/meridian-bench, rewritten
# here to this run's own (the ports are still fixed: one run at a time).
W=$(mktemp -d /tmp/meridian-bench.XXXXXX)
for conf in proxy-upstream-nginx.conf proxy-nginx.conf; do
  sed "s|/tmp/meridian-bench|$W|g" "$ROOT/bench/$conf" >"$W/$conf"
done
CLK_TCK=$(getconf CLK_TCK)

source "$ROOT/bench/packages.sh"
source "$ROOT/bench/ports.sh"
install_packages nginx-light haproxy wrk nghttp2-client

MERIDIAN_CFG=$ROOT/bench/proxy-meridian.yaml
if [[ -n "${MERIDIAN_BIN:-}" ]]; then
  MERIDIAN_CMD=("$MERIDIAN_BIN" proxy -c "$MERIDIAN_CFG" --workers 1)
elif [[ -n "${MERIDIAN_EDGE:-}" ]]; then
  MERIDIAN_CMD=("$MERIDIAN_EDGE" "$MERIDIAN_CFG" 1)
elif [[ -n "${BENCH_EXAMPLE:-}" ]]; then
  cargo build --release -p meridian-dataplane --example edge
  MERIDIAN_CMD=("$ROOT/target/release/examples/edge" "$MERIDIAN_CFG" 1)
else
  cargo build --release -p meridian
  MERIDIAN_CMD=("$ROOT/target/release/meridian" proxy -c "$MERIDIAN_CFG" --workers 1)
fi

# As many open files as allowed: the idle-connection test holds thousands.
ulimit -n "$(ulimit -Hn)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The servers are not this shell's children: wait until they are gone, so the next run
  # finds its ports free.
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  [[ -n ${KEEP_BENCH_DIR:-} ]] || rm -rf "$W"
}
trap cleanup EXIT

# `pinned`, `hold_to_cpu`, `check_on_cpu`.
source "$ROOT/bench/pinning.sh"

# Starts a server with `pinned` in the background and sets STARTED to its main process
# once PORT listens (the session `pinned` made is led by it: bash exec'd into the server).
start_pinned() { # cpu port cmd...
  local cpu=$1 port=$2
  shift 2
  pinned "$cpu" "$@" >"$W/server-$port.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port"
  local any
  any=$(ss -Htlpn "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  STARTED=$(ps -o sid= -p "$any" | tr -d ' ')
  PIDS+=("$STARTED")
  hold_to_cpu "$STARTED" "$cpu"
}


# Upstream and load generators on CPU 0, the proxy under test on CPU 1.
start_pinned 0 19000 nginx -c "$W/proxy-upstream-nginx.conf" -e "$W/upstream-error.log"
start_pinned 1 19001 nginx -c "$W/proxy-nginx.conf" -e "$W/nginx-proxy-error.log"
NGINX=$STARTED
start_pinned 1 19002 haproxy -f "$ROOT/bench/proxy-haproxy.cfg" -db
HAPROXY=$STARTED
export RUST_LOG=warn
start_pinned 1 19003 "${MERIDIAN_CMD[@]}"
MERIDIAN=$STARTED

declare -A PID=([nginx]=$NGINX [haproxy]=$HAPROXY [meridian]=$MERIDIAN)
# The CPUs each proxy may use (its threads are held there).
declare -A CPUS=([nginx]=1 [haproxy]=1 [meridian]=1 [meridian+log]=1 [baseline]=1)
declare -A H1=([nginx]=19001 [haproxy]=19002 [meridian]=19003)
declare -A H2=([nginx]=19011 [haproxy]=19012 [meridian]=19003)
PROXIES=(nginx haproxy meridian)
# The access log's cost: the same proxy with the log on, as "meridian+log". By default every
# line is written to a file (a rate cap far above the load); ACCESS_LOG_RATE=1000 measures
# the default cap instead.
sed -e 's/127.0.0.1:19003/127.0.0.1:19005/' -e 's/127.0.0.1:19013/127.0.0.1:19015/' \
  "$MERIDIAN_CFG" >"$W/access-log.yaml"
printf '  access_log: { file: %s, max_lines_per_second: %s }\n' "$W/access.log" \
  "${ACCESS_LOG_RATE:-100000000}" >>"$W/access-log.yaml"
LOGGED_CMD=("${MERIDIAN_CMD[@]}")
for i in "${!LOGGED_CMD[@]}"; do
  [[ ${LOGGED_CMD[i]} == "$MERIDIAN_CFG" ]] && LOGGED_CMD[i]=$W/access-log.yaml
done
start_pinned 1 19005 "${LOGGED_CMD[@]}"
PID[meridian+log]=$STARTED
H1[meridian+log]=19005
H2[meridian+log]=19005
PROXIES+=(meridian+log)
# The baseline's command for a config and a worker count: `meridian proxy` or `edge`.
baseline_cmd() {
  if [[ $(basename "$MERIDIAN_BASELINE") == edge ]]; then
    BASELINE_CMD=("$MERIDIAN_BASELINE" "$1" "$2")
  else
    BASELINE_CMD=("$MERIDIAN_BASELINE" proxy -c "$1" --workers "$2")
  fi
}
if [[ -n "${MERIDIAN_BASELINE:-}" ]]; then
  sed -e 's/127.0.0.1:19003/127.0.0.1:19004/' -e 's/127.0.0.1:19013/127.0.0.1:19014/' \
    "$MERIDIAN_CFG" >"$W/baseline.yaml"
  baseline_cmd "$W/baseline.yaml" 1
  start_pinned 1 19004 "${BASELINE_CMD[@]}"
  PID[baseline]=$STARTED
  H1[baseline]=19004
  H2[baseline]=19004
  PROXIES+=(baseline)
fi
if [[ -n "${ONLY:-}" ]]; then
  read -r -a PROXIES <<<"$ONLY"
fi

# A process and its children (nginx's worker).
family() { echo "$1" $(pgrep -P "$1" || true); }
ticks() {
  local sum=0 p stat
  for p in $(family "$1"); do
    # utime and stime are fields 14 and 15; counted after the ")" that ends the name.
    stat=$(sed 's/^.*) //' "/proc/$p/stat")
    read -r -a g <<<"$stat"
    sum=$((sum + g[11] + g[12]))
  done
  echo $sum
}
rss_kb() {
  local sum=0
  for p in $(family "$1"); do
    sum=$((sum + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
  done
  echo $sum
}

RESULTS=$W/results.tsv
: >"$RESULTS"
run_h1() {
  local name=$1 port=${H1[$1]} pid=${PID[$1]}
  pinned 0 wrk -t2 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$(pinned 0 wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
  t1=$(ticks "$pid")
  check_on_cpu "$pid" "${CPUS[$name]}"
  local reqs rps p50 p99 errors
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  local cpu per_cpu
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
  per_cpu=$(awk -v r="$reqs" -v c="$cpu" 'BEGIN {printf "%.0f", (c > 0 ? r / c : 0)}')
  printf '%s\th1\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$per_cpu" "$rps" "$cpu" "$p50" "$p99" "$(rss_kb "$pid")" "$reqs" "$errors" "$round" >>"$RESULTS"
}
run_h2() {
  local name=$1 port=${H2[$1]} pid=${PID[$1]}
  pinned 0 h2load -t2 -c64 -m1 -D 2 "http://127.0.0.1:$port/" >/dev/null
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$(pinned 0 h2load -t2 -c64 -m1 -D "$H2_DURATION" "http://127.0.0.1:$port/")
  t1=$(ticks "$pid")
  local done rps failed
  done=$(awk '/^requests:/ {print $8}' <<<"$out")
  failed=$(awk '/^requests:/ {print $10}' <<<"$out")
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  local cpu per_cpu
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
  per_cpu=$(awk -v r="$done" -v c="$cpu" 'BEGIN {printf "%.0f", (c > 0 ? r / c : 0)}')
  printf '%s\th2c\t%s\t%s\t%s\t-\t-\t%s\t%s\t%s\t%s\n' "$name" "$per_cpu" "$rps" "$cpu" "$(rss_kb "$pid")" "$done" "failed=$failed" "$round" >>"$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  order=("${PROXIES[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#PROXIES[@]} - 1; i >= 0; i--)); do order+=("${PROXIES[i]}"); done
  fi
  for name in "${order[@]}"; do
    echo "round $round: $name h1" >&2
    run_h1 "$name"
  done
  for name in "${order[@]}"; do
    echo "round $round: $name h2c" >&2
    run_h2 "$name"
  done
done

# Two workers each, allowed both CPUs ("0-1" as the kernel lists them), h1 only.
if ((TWO_WORKERS)); then
  sed -e 's/^worker_processes 1;/worker_processes 2;/' -e 's/127.0.0.1:19001 /127.0.0.1:19021 /' \
    -e 's/127.0.0.1:19011 /127.0.0.1:19031 /' -e 's/nginx-proxy\.pid/nginx-proxy-2w.pid/' \
    "$W/proxy-nginx.conf" >"$W/proxy-nginx-2w.conf"
  sed -e 's/^    nbthread 1$/    nbthread 2/' -e 's/127.0.0.1:19002$/127.0.0.1:19022/' \
    -e 's/127.0.0.1:19012 /127.0.0.1:19032 /' "$ROOT/bench/proxy-haproxy.cfg" >"$W/proxy-haproxy-2w.cfg"
  sed -e 's/127.0.0.1:19003/127.0.0.1:19023/' -e 's/127.0.0.1:19013/127.0.0.1:19033/' \
    "$MERIDIAN_CFG" >"$W/two-workers.yaml"
  TWO_CMD=("${MERIDIAN_CMD[@]}")
  for i in "${!TWO_CMD[@]}"; do
    [[ ${TWO_CMD[i]} == "$MERIDIAN_CFG" ]] && TWO_CMD[i]=$W/two-workers.yaml
  done
  # Every form of MERIDIAN_CMD ends in the worker count.
  TWO_CMD[-1]=2
  grep -q 'worker_processes 2;' "$W/proxy-nginx-2w.conf"
  grep -q 'nbthread 2' "$W/proxy-haproxy-2w.cfg"
  start_pinned 0-1 19021 nginx -c "$W/proxy-nginx-2w.conf" -e "$W/nginx-proxy-2w-error.log"
  PID[nginx-2w]=$STARTED
  start_pinned 0-1 19022 haproxy -f "$W/proxy-haproxy-2w.cfg" -db
  PID[haproxy-2w]=$STARTED
  start_pinned 0-1 19023 "${TWO_CMD[@]}"
  PID[meridian-2w]=$STARTED
  H1+=([nginx-2w]=19021 [haproxy-2w]=19022 [meridian-2w]=19023)
  CPUS+=([nginx-2w]=0-1 [haproxy-2w]=0-1 [meridian-2w]=0-1)
  TWO=(nginx-2w haproxy-2w meridian-2w)
  if [[ -n "${MERIDIAN_BASELINE:-}" ]]; then
    sed -e 's/127.0.0.1:19003/127.0.0.1:19024/' -e 's/127.0.0.1:19013/127.0.0.1:19034/' \
      "$MERIDIAN_CFG" >"$W/baseline-2w.yaml"
    baseline_cmd "$W/baseline-2w.yaml" 2
    start_pinned 0-1 19024 "${BASELINE_CMD[@]}"
    PID[baseline-2w]=$STARTED
    H1+=([baseline-2w]=19024)
    CPUS+=([baseline-2w]=0-1)
    TWO+=(baseline-2w)
  fi
  for round in $(seq "$ROUNDS"); do
    order=("${TWO[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#TWO[@]} - 1; i >= 0; i--)); do order+=("${TWO[i]}"); done
    fi
    for name in "${order[@]}"; do
      echo "round $round: $name h1" >&2
      run_h1 "$name"
    done
  done
fi

# The access log's cost at the same fixed load (h2load --h1 at LOG_RPS requests/s in all):
# at full load the proxies' throughputs differ, and so does how much each syscall batches,
# which blurs the log's own share; at a fixed rate both do the same work but the log.
LOG_RPS=${LOG_RPS:-19200}
fixed_rate() { # name rps file
  local name=$1 port=${H1[$1]} pid=${PID[$1]}
  local t0 t1 out done cpu
  t0=$(ticks "$pid")
  out=$(pinned 0 h2load --h1 -t2 -c64 --rps=$(($2 / 64)) -D "$H2_DURATION" "http://127.0.0.1:$port/")
  t1=$(ticks "$pid")
  done=$(awk '/^requests:/ {print $8}' <<<"$out")
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
  printf '%s\t%s\t%s\t%s\n' "$name" "$done" "$cpu" "$round" >>"$3"
}
: >"$W/fixed.tsv"
if [[ " ${PROXIES[*]} " == *" meridian+log "* && " ${PROXIES[*]} " == *" meridian "* ]]; then
  for round in $(seq "$ROUNDS"); do
    echo "round $round: the access log at $LOG_RPS req/s" >&2
    fixed_rate meridian "$LOG_RPS" "$W/fixed.tsv"
    fixed_rate meridian+log "$LOG_RPS" "$W/fixed.tsv"
  done
fi

# HAProxy and Meridian (and the baseline) at the same fixed rate (h2load --h1, SAME_RPS
# requests/s in all):
# CPU per request without the feedback of full load, where a slower proxy leaves the load
# generator's CPU idler and so pays more for waking it.
SAME_RPS=${SAME_RPS:-50000}
: >"$W/same.tsv"
if [[ " ${PROXIES[*]} " == *" haproxy "* && " ${PROXIES[*]} " == *" meridian "* ]] && ((SAME_RPS > 0)); then
  for round in $(seq "$ROUNDS"); do
    echo "round $round: HAProxy and Meridian at $SAME_RPS req/s" >&2
    for name in haproxy meridian baseline; do
      [[ " ${PROXIES[*]} " == *" $name "* ]] && fixed_rate "$name" "$SAME_RPS" "$W/same.tsv"
    done
  done
fi

# Idle memory: open IDLE_CONNS client connections and hold them.
idle() {
  local name=$1 port=${H1[$1]} pid=${PID[$1]}
  local before after
  before=$(rss_kb "$pid")
  python3 - "$port" "$IDLE_CONNS" "$W/idle-$name" <<'PY' &
import socket, sys, time
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
open(flag, "w").close()
time.sleep(4)
PY
  local py=$!
  for _ in $(seq 300); do [[ -e $W/idle-$name ]] && break; sleep 0.1; done
  sleep 1
  after=$(rss_kb "$pid")
  wait "$py" || true
  printf '%s\t%s\t%s\t%s\n' "$name" "$before" "$after" "$((after - before))" >>"$W/idle.tsv"
}
: >"$W/idle.tsv"
if ((IDLE_CONNS > 0)); then
  idle nginx
  idle haproxy
  idle meridian
fi

echo
echo "| proxy | proto | req/CPU-s | req/s | proxy CPU s | p50 | p99 | RSS KiB | requests | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
sort -k2,2 -k1,1 "$RESULTS" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
echo
echo "Mean req/CPU-s over rounds and ratio to HAProxy with as many workers (the goal: 1.2x):"
awk -F'\t' '{s[$1" "$2]+=$3; n[$1" "$2]++} END {
  for (k in s) m[k] = s[k] / n[k];
  for (k in m) {
    split(k, p, " "); peer = (p[1] ~ /-2w$/ ? "haproxy-2w" : "haproxy") " " p[2]
    printf "  %-12s %-4s %8.0f", p[1], p[2], m[k]; if (m[peer] > 0) printf "  (%.2fx HAProxy)", m[k] / m[peer]; printf "\n"
  }
}' "$RESULTS" | sort -b -k2,2 -k1,1
echo
echo "Access log cost (meridian+log against meridian, req/CPU-s; negative: the log costs):"
awk -F'\t' '$1 == "meridian" || $1 == "meridian+log" {v[$1" "$2" "$11] = $3; rounds[$11]; protos[$2]}
END {
  for (p in protos) {
    line = ""; off = 0; on = 0; n = 0
    for (r in rounds) {
      a = v["meridian " p " " r]; b = v["meridian+log " p " " r]
      if (a > 0 && b > 0) { line = line sprintf(" round %s %+.1f%%", r, (b / a - 1) * 100); off += a; on += b; n++ }
    }
    if (n > 0) printf "  %-4s off %8.0f  on %8.0f  %+.1f%%  (%s)\n", p, off / n, on / n, (on / off - 1) * 100, substr(line, 2)
  }
}' "$RESULTS" | sort
if [[ -s $W/fixed.tsv ]]; then
  echo "Access log cost at a fixed $LOG_RPS req/s (h1), proxy CPU microseconds per request:"
  awk -F'\t' '{us = $3 * 1e6 / $2; v[$1" "$4] = us; s[$1] += us; n[$1]++; rounds[$4]}
  END {
    line = ""
    for (r in rounds) line = line sprintf(" round %s %+.1f%%", r, (v["meridian+log " r] / v["meridian " r] - 1) * 100)
    off = s["meridian"] / n["meridian"]; on = s["meridian+log"] / n["meridian+log"]
    printf "  off %.2f  on %.2f  %+.1f%% CPU  (%s)\n", off, on, (on / off - 1) * 100, substr(line, 2)
  }' "$W/fixed.tsv"
fi
if [[ -s $W/same.tsv ]]; then
  echo "At a fixed $SAME_RPS req/s (h1), proxy CPU microseconds per request (lower is better):"
  awk -F'\t' '{us = $3 * 1e6 / $2; line[$1] = line[$1] sprintf(" %.2f", us); s[$1] += us; n[$1]++}
  END {
    h = s["haproxy"] / n["haproxy"]
    printf "  haproxy  %.2f  (rounds:%s)\n", h, line["haproxy"]
    for (p in s) if (p != "haproxy") printf "  %-8s %.2f  (rounds:%s)  %.2fx HAProxy per CPU-second\n", p, s[p] / n[p], line[p], h * n[p] / s[p]
  }' "$W/same.tsv"
fi
echo
echo "| proxy | RSS before KiB | RSS with $IDLE_CONNS idle connections KiB | per 10k connections KiB |"
echo "|---|---|---|---|"
awk -F'\t' -v n="$IDLE_CONNS" '{printf "| %s | %s | %s | %.0f |\n", $1, $2, $3, $4 * 10000 / n}' "$W/idle.tsv"
