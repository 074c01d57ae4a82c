#!/usr/bin/env bash
# The test command: starts local PostgreSQL if needed, builds the binaries the tests
# start, then runs every test (unit and integration) against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
./deploy/ensure-postgres.sh
./deploy/ensure-browser.sh
cargo build --workspace --locked
# The lints are part of the tests: [workspace.lints] (missing docs, functions over 60
# lines) and clippy's defaults fail the run, as does unformatted code.
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "clippy is not installed (rustup component add clippy): lints not checked" >&2
fi
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check
fi
rm -f target/crash-matrix-summary.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Who may connect to each database the tests did not make (a developer's server holds
# other projects'): the tests must leave every one as it was.
grants() {
  psql "${TEST_DATABASE_URL:-postgres://127.0.0.1:5432/postgres}" -AtX -c \
    "SELECT datname || ' ' || COALESCE(datacl::text, '(default)') FROM pg_database WHERE datname !~ '^(tt[a-z0-9]{6}_|tm_test_)' ORDER BY 1"
}
grants_before=$(grants)
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
grants_after=$(awk 'NR == FNR { known[$1] = 1; next } ($1 in known)' <(echo "$grants_before") <(grants))
if [ "$grants_before" != "$grants_after" ]; then
  echo "the tests changed who may connect to databases they did not make (before < > after):"
  diff <(echo "$grants_before") <(echo "$grants_after") || true
  status=1
fi
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
if [ -f target/crash-matrix-summary.txt ]; then cat target/crash-matrix-summary.txt; fi
echo "tests: $passed passed, $failed failed"
echo "test command took $(( $(date +%s) - started )) s"
exit $status
