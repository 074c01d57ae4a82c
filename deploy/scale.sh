#!/usr/bin/env bash
# The scale run (README, "Ten thousand tenants"): a release build, then one control plane
# grown to each size in turn, with a night's schedules and a rollout at each size; prints
# one table and removes everything it created.
#   ./deploy/scale.sh                     # 1,000 then 10,000 tenants (about an hour here)
#   ./deploy/scale.sh --tenants 200,1000  # other sizes, growing
#   ./deploy/scale.sh --tenants 2000 --per-shared-database 100000   # all in one shared database
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
cargo build --release --workspace --locked
exec target/release/tenant-bench --scale "$@"
