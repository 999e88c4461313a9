#!/bin/sh
# Watch-stream scale: one controller process, N simulated subscribers (lightweight tasks
# with real watch streams, in one process), A apps x C clusters, a stream of single-weight
# and single-verdict changes. Prints the controller's CPU per change and RSS, bytes per change
# per subscriber, change -> last subscriber p50/p99/max, and a full subscriber's time per
# delta. Goals (DESIGN.md): <= 2 KiB per change, <= 1 s p99 to 10,000 subscribers, RSS <= 2 GiB.
#
# Usage: bench/watch-scale.sh [--subscribers N] [--snapshots K] [--apps N] [--clusters N]
#                             [--changes N] [--encoding binary|json]
# --encoding json follows the JSON stream (a whole table per version, the protocol before
# deltas): use a small --subscribers with it.
#
# Bounded in time: the harness gives up after 10 minutes connecting or 60 s on one change,
# and the whole run is cut at 20 minutes. Both processes share the machine: ratios between
# runs on one machine, not absolutes (see docs/benchmarking.md).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin meridian -p meridian
cargo build --release --quiet -p meridian-controller --example watch_scale
# Each subscriber holds one socket in the harness and one in the controller.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ $# -gt 0 ] || set -- --subscribers 10000 --apps 10000 --clusters 50 --changes 40
target=${CARGO_TARGET_DIR:-target}
exec timeout 1200 "$target/release/examples/watch_scale" --meridian "$target/release/meridian" "$@"
