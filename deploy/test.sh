#!/usr/bin/env bash
# The test command: starts local PostgreSQL if needed, builds the binaries the tests
# start, then runs every test (unit and integration) against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
./deploy/ensure-postgres.sh
./deploy/ensure-browser.sh
cargo build --workspace --locked
rm -f target/crash-matrix-summary.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
if [ -f target/crash-matrix-summary.txt ]; then cat target/crash-matrix-summary.txt; fi
echo "tests: $passed passed, $failed failed"
echo "test command took $(( $(date +%s) - started )) s"
exit $status
