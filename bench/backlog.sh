#!/usr/bin/env bash
# The backlog benchmark: builds ledgerq and the benchmark in release mode, then
# publishes a backlog (default 5,000,000 messages of 200 B) into one topic with
# one channel, samples the server's RSS, restarts it on the same data dir, times
# how soon it accepts connections, and drains the backlog.
#
# Arguments are passed to the `backlog` binary; see `bench/backlog.sh --help`.
#   bench/backlog.sh                       # the full run
#   bench/backlog.sh --messages 200000     # a quick one
#   bench/backlog.sh --stop kill           # SIGKILL instead of SIGTERM before the restart
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ledgerq/target}"
cargo build --release -p ledgerq -p ledgerq-bench
LEDGERQ_BENCH_SCRIPT=bench/backlog.sh exec "$CARGO_TARGET_DIR/release/backlog" "$@"
