#!/bin/sh
# Table scale: 10,000 apps x 50 clusters. Prints compute time (the controller's pure
# compute), validation and indexing, wire encode/decode, the encoded size, and the slowest
# read of a TableCell while tables are swapped in under a reading thread.
# Goal (DESIGN.md): compute <= 100 ms, swap with no stall.
#
# Usage: bench/table-scale.sh [--apps N] [--clusters N] [--runs N]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet -p meridian-controller --example table_scale
[ $# -gt 0 ] || set -- --apps 10000 --clusters 50 --runs 5
exec "${CARGO_TARGET_DIR:-target}/release/examples/table_scale" "$@"
