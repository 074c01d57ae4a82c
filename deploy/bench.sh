#!/usr/bin/env bash
# The benchmark: a release build, then one table of Tenant Master beside raw PostgreSQL
# ceilings measured in the same run (./deploy/bench.sh --quick for a shorter run).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
cargo build --release --workspace --locked
exec target/release/tenant-bench "$@"
