#!/usr/bin/env bash
# The test command: starts local PostgreSQL if needed, builds the binaries the tests
# start, then runs every test (unit and integration) against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
cargo build --workspace --locked
cargo test --workspace --locked "$@"
