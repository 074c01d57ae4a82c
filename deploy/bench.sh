#!/usr/bin/env bash
# The benchmark: a release build, then one table of Tenant Master beside raw PostgreSQL
# ceilings measured in the same run (./deploy/bench.sh --quick for a shorter run).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
cargo build --release --workspace --locked
# The graphile_worker peer: a project of its own (its own lock file), built only here.
cargo build --release --locked --manifest-path tests/bench/graphile-peer/Cargo.toml --target-dir target/graphile-peer
exec target/release/tenant-bench "$@"
