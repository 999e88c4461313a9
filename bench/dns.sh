#!/usr/bin/env bash
# Authoritative DNS side by side: Meridian, Knot and NSD serving the same zone, one worker
# each, measured one after another in the same run (order reversed in the second round),
# with dnsperf as the load. The figure that matters is queries per CPU-second of the
# server (all its threads and child processes, from /proc), since dnsperf shares the
# machine's cores. Every server and dnsperf run pinned (server on CPU 1, dnsperf on CPU 0)
# and at the same autogroup priority (nice -20 in a fresh autogroup): `setsid` alone gives a
# process a new nice-0 autogroup that loses to everything else on the machine, and the
# ratio then measures the scheduler, not the server (docs/benchmarking.md). Every thread of
# a server is then held to CPU 1 and checked again after the run (bench/pinning.sh): Knot
# pins UDP worker i to CPU i itself, which put its only worker on dnsperf's CPU 0, where a
# query and its answer never cross CPUs. Beside the throughput, each server answers a fixed
# 20k q/s for a few seconds and the latency percentiles are reported.
#
# Variants:
#   static      a mix of SOA, NS, A, AAAA, two-address A, in-zone CNAME, MX and NXDOMAIN
#   static+ecs  the same with an ECS option on every query (198.51.100.0/24)
#   geo+ecs     one name answered by client subnet, ECS on every query
#               (Knot: mod-geoip in subnet mode; NSD has no geo answers, so it serves the
#               same name as a plain A record and is marked "static")
#   static+do   the static mix with DO set, against the signed servers: Meridian with
#               online signing (dnssec: in the zone, ECDSA P-256) and Knot with automatic
#               signing (dnssec-signing: on, ECDSA P-256, one combined key)
#   geo+ecs+do  the geo name with ECS and DO against the signed servers (Knot's mod-geoip
#               signs its answers on the fly with the zone's key)
#
# PAIRS (environment) picks server:variant pairs, e.g.
#   PAIRS="meridian:static meridian-signed:static+do knot-signed:static+do" bench/dns.sh 5 1
#
# Usage: bench/dns.sh [SECONDS_PER_RUN (default 10)] [ROUNDS (default 2)] [MERIDIAN_BINARY]
# With MERIDIAN_BINARY (a release `meridian`), Meridian runs as `meridian dns -c FILE`;
# without, the same server is built on its own (dns/examples/serve.rs, release mode).
# Installs (Debian): knot knot-module-geoip nsd dnsperf knot-dnsutils.
# Everything listens on 127.0.0.1 only.
set -euo pipefail

SECS=${1:-10}
ROUNDS=${2:-2}
MERIDIAN_BIN=${3:-}
FIXED_QPS=20000
FIXED_SECS=${FIXED_SECS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/meridian-dnsbench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$ROOT/bench/packages.sh"
install_packages knot knot-module-geoip nsd dnsperf knot-dnsutils

if [ -n "$MERIDIAN_BIN" ]; then
    MERIDIAN=("$(realpath "$MERIDIAN_BIN")" dns -c)
else
    # The same server `meridian dns` runs, built on its own (dns/examples/serve.rs), so the
    # benchmark does not wait on every other part of the binary.
    (cd "$ROOT" && cargo build --release -p meridian-dns --example serve)
    MERIDIAN=("${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/serve")
fi

# `pinned`, `hold_to_cpu`, `check_on_cpu`.
source "$ROOT/bench/pinning.sh"

PORT_MERIDIAN=25353
PORT_KNOT=25354
PORT_NSD=25355

# --- the zone, in each server's format ---------------------------------------------------
cat >"$WORK/example.test.zone" <<'EOF'
$ORIGIN example.test.
$TTL 300
@       IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60
@       IN NS  ns1.example.test.
@       IN MX  10 mail.example.test.
ns1     IN A   127.0.0.53
mail    IN A   192.0.2.25
www     IN A   192.0.2.10
www     IN AAAA 2001:db8::10
multi   IN A   192.0.2.11
multi   IN A   192.0.2.12
alias   IN CNAME www.example.test.
geo     IN A   127.0.1.2
EOF

cat >"$WORK/meridian.yaml" <<EOF
regions:
  - { name: eu, location: { lat: 50.11, lon: 8.68 } }
  - { name: us, location: { lat: 38.95, lon: -77.45 } }
geo:
  subnets:
    - { cidr: 192.0.2.0/24, region: eu }
    - { cidr: 198.51.100.0/24, region: us }
clusters:
  - { name: eu1, region: eu, provider: aws, endpoints: ["127.0.1.2:443"] }
  - { name: us1, region: us, provider: aws, endpoints: ["127.0.3.1:443"] }
apps:
  - name: geo
    hostnames: [geo.example.test]
    policy: geo
    failure_mode: fail-open
    dns_ttl: 300
    geo_preferences:
      - { region: us, clusters: [us1] }
      - { region: eu, clusters: [eu1] }
    targets: [{ cluster: eu1 }, { cluster: us1 }]
zones:
  - name: example.test
    soa: { mname: ns1.example.test, rname: hostmaster.example.test, minimum: 60, ttl: 300 }
    ns: [ns1.example.test]
    records:
      - { name: "@", type: MX, value: "10 mail.example.test" }
      - { name: ns1, type: A, value: 127.0.0.53 }
      - { name: mail, type: A, value: 192.0.2.25 }
      - { name: www, type: A, value: 192.0.2.10 }
      - { name: www, type: AAAA, value: "2001:db8::10" }
      - { name: multi, type: A, value: 192.0.2.11 }
      - { name: multi, type: A, value: 192.0.2.12 }
      - { name: alias, type: CNAME, value: www.example.test }
dns:
  listen: 127.0.0.1:$PORT_MERIDIAN
  udp_workers: 1
  max_answers: 1
  # Rate limiting is on by default; a benchmark from one address must not be limited
  # (as for NSD below).
  rrl: { rate: 0 }
EOF

# The same zone signed online: a key made the way `meridian dnssec keygen` makes it.
if [ -n "$MERIDIAN_BIN" ]; then
    (cd "$WORK" && "${MERIDIAN[0]}" dnssec keygen example.test -o zone.key >/dev/null)
else
    "${MERIDIAN[0]}" keygen example.test "$WORK/zone.key" >/dev/null
fi
sed 's/^    ns: \[ns1.example.test\]$/    ns: [ns1.example.test]\n    dnssec: { keys: [{ file: zone.key }] }/' \
    "$WORK/meridian.yaml" >"$WORK/meridian-signed.yaml"
grep -q 'dnssec:' "$WORK/meridian-signed.yaml"

mkdir -p "$WORK/knot"
cat >"$WORK/knot/geo.conf" <<'EOF'
geo.example.test:
  - net: 198.51.100.0/24
    A: 127.0.3.1
  - net: 192.0.2.0/24
    A: 127.0.1.2
EOF
cat >"$WORK/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$PORT_KNOT
    rundir: "$WORK/knot"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot"
mod-geoip:
  - id: geo
    config-file: "$WORK/knot/geo.conf"
    ttl: 300
    mode: subnet
zone:
  - domain: example.test
    file: "$WORK/example.test.zone"
    module: mod-geoip/geo
EOF

# Knot with automatic signing of the same zone (its own copy: Knot keeps the signed zone).
mkdir -p "$WORK/knot-signed"
cp "$WORK/example.test.zone" "$WORK/knot-signed/example.test.zone"
cat >"$WORK/knot-signed/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$PORT_KNOT
    rundir: "$WORK/knot-signed"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot-signed"
policy:
  - id: online
    algorithm: ecdsap256sha256
    single-type-signing: on
mod-geoip:
  - id: geo
    config-file: "$WORK/knot/geo.conf"
    ttl: 300
    mode: subnet
zone:
  - domain: example.test
    file: "$WORK/knot-signed/example.test.zone"
    dnssec-signing: on
    dnssec-policy: online
    zonefile-sync: -1
    module: mod-geoip/geo
EOF

mkdir -p "$WORK/nsd"
cat >"$WORK/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1
    port: $PORT_NSD
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$WORK"
    database: ""
    pidfile: "$WORK/nsd/nsd.pid"
    xfrdfile: "$WORK/nsd/xfrd.state"
    zonelistfile: "$WORK/nsd/zone.list"
    verbosity: 0
    # Debian's NSD limits responses to 200/s per /24 by default; a benchmark must not.
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: example.test
    zonefile: example.test.zone
EOF

cat >"$WORK/static.txt" <<'EOF'
example.test SOA
example.test NS
www.example.test A
www.example.test AAAA
multi.example.test A
alias.example.test A
example.test MX
nx.example.test A
EOF
echo "geo.example.test A" >"$WORK/geo.txt"

# --- measuring -------------------------------------------------------------------------------
# CPU nanoseconds of a process and all its descendants (threads included), from schedstat.
cpu_ns() {
    local total=0 pid tid ns
    while read -r pid tid; do
        ns=$(cut -d' ' -f1 "/proc/$pid/task/$tid/schedstat" 2>/dev/null) || continue
        total=$((total + ns))
    done < <(tree_threads "$1")
    echo "$total"
}

wait_ready() { # port
    for _ in $(seq 100); do
        if kdig @127.0.0.1 -p "$1" +time=1 +retry=0 www.example.test A 2>/dev/null | grep -q NOERROR; then
            return 0
        fi
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

start_server() { # name -> sets SERVER_PID, SERVER_PORT
    case "$1" in
        meridian)
            pinned 1 "${MERIDIAN[@]}" "$WORK/meridian.yaml" >"$WORK/meridian.log" 2>&1 &
            SERVER_PORT=$PORT_MERIDIAN ;;
        meridian-signed)
            pinned 1 "${MERIDIAN[@]}" "$WORK/meridian-signed.yaml" >"$WORK/meridian.log" 2>&1 &
            SERVER_PORT=$PORT_MERIDIAN ;;
        knot-signed)
            pinned 1 knotd -c "$WORK/knot-signed/knot.conf" >"$WORK/knot.log" 2>&1 &
            SERVER_PORT=$PORT_KNOT ;;
        knot)
            pinned 1 knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
            SERVER_PORT=$PORT_KNOT ;;
        nsd)
            pinned 1 nsd -d -c "$WORK/nsd/nsd.conf" >"$WORK/nsd.log" 2>&1 &
            SERVER_PORT=$PORT_NSD ;;
    esac
    # `pinned` waits for its command; the server is the process listening on the port.
    local waiter=$!
    PIDS+=("$waiter")
    wait_ready "$SERVER_PORT"
    # The session `pinned` made is led by the server's main process (bash exec'd into it).
    local any
    any=$(ss -Hulpn "sport = :$SERVER_PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    SERVER_PID=$(ps -o sid= -p "$any" | tr -d ' ')
    PIDS+=("$SERVER_PID")
    hold_to_cpu "$SERVER_PID" 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    while kill -0 "$SERVER_PID" 2>/dev/null; do sleep 0.05; done
}

# Sanity: every server gives the geo answer (or, for NSD, the static one) before measuring.
check_geo() {
    kdig @127.0.0.1 -p "$SERVER_PORT" +short +subnet=198.51.100.0/24 geo.example.test A | head -1
}

RESULTS="$WORK/results.tsv"
run_one() { # server variant
    local server=$1 variant=$2 file ecs=()
    case "$variant" in
        static) file="$WORK/static.txt" ;;
        static+ecs) file="$WORK/static.txt"; ecs=(-E 8:00011800c63364) ;;
        geo+ecs) file="$WORK/geo.txt"; ecs=(-E 8:00011800c63364) ;;
        static+do) file="$WORK/static.txt"; ecs=(-D) ;;
        geo+ecs+do) file="$WORK/geo.txt"; ecs=(-D -E 8:00011800c63364) ;;
    esac
    start_server "$server"
    local answer
    answer=$(check_geo)
    if [[ $variant == *+do ]]; then
        # The signed servers must sign: an RRSIG in a DO answer, or the run is void.
        kdig @127.0.0.1 -p "$SERVER_PORT" +dnssec www.example.test A | grep -q RRSIG ||
            { echo "$server does not sign" >&2; exit 1; }
    fi
    # Warm up, then measure.
    pinned 0 dnsperf -s 127.0.0.1 -p "$SERVER_PORT" -d "$file" -l 1 -c 20 -T 1 -q 200 -t 2 "${ecs[@]}" >/dev/null 2>&1 || true
    local before after out
    before=$(cpu_ns "$SERVER_PID")
    out=$(pinned 0 dnsperf -s 127.0.0.1 -p "$SERVER_PORT" -d "$file" -l "$SECS" -c 20 -T 1 -q 200 -t 2 "${ecs[@]}" 2>&1)
    after=$(cpu_ns "$SERVER_PID")
    check_on_cpu "$SERVER_PID" 1
    # Latency at a fixed rate: every reply's latency from dnsperf -v.
    pinned 0 dnsperf -s 127.0.0.1 -p "$SERVER_PORT" -d "$file" -l "$FIXED_SECS" -c 20 -T 1 -q 200 -t 2 -Q "$FIXED_QPS" -v "${ecs[@]}" >"$WORK/fixed.txt" 2>&1 || true
    local pcts
    pcts=$(python3 - "$WORK/fixed.txt" <<'PY'
import sys
lat = sorted(float(l.split()[-1]) for l in open(sys.argv[1]) if l.startswith("> ") and len(l.split()) >= 5)
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else 0
print(f"{pick(0.5):.0f}\t{pick(0.99):.0f}")
PY
)
    stop_server
    local completed lost qps latency
    completed=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
    qps=$(echo "$out" | awk '/Queries per second:/ {print $4}')
    latency=$(echo "$out" | awk '/Average Latency/ {print $4}')
    python3 - "$server" "$variant" "$completed" "$lost" "$qps" "$latency" "$before" "$after" "$answer" "$pcts" >>"$RESULTS" <<'PY'
import sys
server, variant, done, lost, qps, lat, before, after, answer, pcts = sys.argv[1:]
cpu = (int(after) - int(before)) / 1e9
per_cpu = int(done) / cpu if cpu > 0 else 0
print(f"{server}\t{variant}\t{int(done)}\t{lost}\t{float(qps):.0f}\t{cpu:.2f}\t{per_cpu:.0f}\t{float(lat)*1e6:.0f}\t{answer}\t{pcts}")
PY
}

default_pairs=""
for variant in static static+ecs geo+ecs; do
    for server in meridian knot nsd; do default_pairs+=" $server:$variant"; done
done
for variant in static+do geo+ecs+do; do
    for server in meridian-signed knot-signed; do default_pairs+=" $server:$variant"; done
done
read -r -a pairs <<<"${PAIRS:-$default_pairs}"
for round in $(seq "$ROUNDS"); do
    order=("${pairs[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#pairs[@]} - 1; i >= 0; i--)); do order+=("${pairs[i]}"); done
    fi
    for pair in "${order[@]}"; do
        server=${pair%%:*} variant=${pair#*:}
        echo "round $round: $server $variant" >&2
        run_one "$server" "$variant"
    done
done

echo
echo "queries per CPU-second of the server (median over $ROUNDS rounds), ${SECS}s runs, dnsperf -c 20 -T 1 -q 200;"
echo "p50/p99 latency at a fixed ${FIXED_QPS} q/s (${FIXED_SECS}s)"
python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r[1], r[0]), []).append(r)
variants = ["static", "static+ecs", "geo+ecs", "static+do", "geo+ecs+do"]
servers = ["meridian", "knot", "nsd", "meridian-signed", "knot-signed"]
print(f"{'variant':<11} {'server':<15} {'q/CPU-s':>9} {'q/s':>8} {'CPU s':>6} {'lat µs':>7} {'p50 µs':>7} {'p99 µs':>7} {'lost':>5}  geo answer (198.51.100.0/24)")
for v in variants:
    knot = None
    for s in servers:
        rs = by.get((v, s), [])
        if not rs:
            continue
        per_cpu = statistics.median(float(r[6]) for r in rs)
        if s in ("knot", "knot-signed"):
            knot = per_cpu
        qps = statistics.median(float(r[4]) for r in rs)
        cpu = statistics.median(float(r[5]) for r in rs)
        lat = statistics.median(float(r[7]) for r in rs)
        lost = sum(int(r[3]) for r in rs)
        p50 = statistics.median(float(r[9]) for r in rs)
        p99 = statistics.median(float(r[10]) for r in rs)
        note = "" if not (s == "nsd" and v == "geo+ecs") else " (static: NSD has no geo)"
        print(f"{v:<11} {s:<15} {per_cpu:>9.0f} {qps:>8.0f} {cpu:>6.2f} {lat:>7.0f} {p50:>7.0f} {p99:>7.0f} {lost:>5}  {rs[0][8]}{note}")
    mine, theirs = ("meridian-signed", "knot-signed") if v.endswith("+do") else ("meridian", "knot")
    mr, kr = by.get((v, mine), []), by.get((v, theirs), [])
    if knot and mr:
        m = [float(r[6]) for r in mr]
        print(f"{'':<11} {mine} / {theirs} = {statistics.median(m) / knot:.2f}")
        # Each round's pair, so the spread is on record: a shared VM's rounds can differ by
        # more than the goal's margin.
        pairs = [f"{float(a[6]) / float(b[6]):.2f} (p99 {float(a[10]):.0f}/{float(b[10]):.0f})"
                 for a, b in zip(mr, kr) if float(b[6]) > 0]
        print(f"{'':<11} by round: {', '.join(pairs)}")
PY
