#!/bin/sh
# Routing-table propagation: time from a weight change through the controller's API until
# 100 subscribers following the watch stream on loopback all hold the new version.
# Goal (DESIGN.md): p99 <= 100 ms. No peer: there is no comparable open tool to run beside it.
#
# Usage: bench/propagation.sh [--subscribers N] [--rounds N]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet -p meridian-controller --example propagation
[ $# -gt 0 ] || set -- --subscribers 100 --rounds 200
exec ./target/release/examples/propagation "$@"
