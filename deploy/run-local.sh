#!/usr/bin/env bash
# Sets up everything on this machine and runs the system: local PostgreSQL (started if
# needed), the binaries, the control-plane database, a worker, and a demo tenant
# provisioned end to end. The worker keeps running in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
# RUN_LOCAL_SKIP_BUILD=1: the binaries are built already (the tests run this script).
[ -n "${RUN_LOCAL_SKIP_BUILD:-}" ] || cargo build --workspace --locked
bin=target/debug
# One folder for state (the default data_dir of a debug build is this tree's data/), so
# every tenantctl, from any folder, reads the same key.
data=${TENANT_MASTER_DATA_DIR:-$PWD/data}
export TENANT_MASTER_DATA_DIR=$data
mkdir -p "$data"
log=$data/worker.log
pidfile=$data/worker.pid
# The key that seals tenant passwords (the default secret_key_file, in data_dir), made once.
# A relative TENANT_MASTER_SECRET_KEY_FILE is read from data_dir, as tenantctl reads it.
key=${TENANT_MASTER_SECRET_KEY_FILE:-secret.key}
case $key in /*) ;; *) key=$data/$key ;; esac
[ -s "$key" ] || $bin/tenantctl key generate
$bin/tenantctl migrate
# Nothing here changes a database, role or grant that is not Tenant Master's: `check`
# says (reach:default) which databases of this server every role, tenant roles included,
# may still connect to; `tenantctl host lockdown default` lists them and asks before
# closing them.
$bin/tenantctl check
# A worker this script started before, still running: use it (a second one would fight
# over the metrics port, and its log is appended to, never truncated).
running=""
if [ -s "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q tenant-worker; then
    running=$pid
  fi
fi
# Or one started by hand (`target/debug/tenant-worker &`, as the README shows) for the same
# control plane and data folder: use it too. Workers of other control planes are left be.
setting() { tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | sed -n "s/^$2=//p" | head -n 1; }
started_by_hand=""
if [ -z "$running" ]; then
  for pid in $(pgrep -u "$(id -u)" -x tenant-worker || true); do
    url=$(setting "$pid" DATABASE_URL); dir=$(setting "$pid" TENANT_MASTER_DATA_DIR)
    if [ "${url:-postgres://127.0.0.1:5432/tenant_master}" = "${DATABASE_URL:-postgres://127.0.0.1:5432/tenant_master}" ] \
      && [ "${dir:-$PWD/data}" = "$data" ]; then
      running=$pid; started_by_hand=$pid; break
    fi
  done
fi
if [ -n "$started_by_hand" ]; then
  worker=$running
  echo "tenant-worker is running already (pid $worker, not started by run-local.sh; its log is wherever it writes): using it"
elif [ -n "$running" ]; then
  worker=$running
  echo "tenant-worker is running already (pid $worker, log $log), started by an earlier run-local.sh: using it"
else
  echo "--- run-local.sh started tenant-worker at $(date -u +%FT%TZ)" >> "$log"
  $bin/tenant-worker >> "$log" 2>&1 &
  worker=$!
  echo "$worker" > "$pidfile"
  trap 'kill -TERM $worker 2>/dev/null; wait $worker; rm -f "$pidfile"; exit 0' INT TERM
fi
# Stops this script, with the worker's last words, if the worker is gone.
worker_alive() {
  kill -0 "$worker" 2>/dev/null && return 0
  [ -n "$running" ] && { echo "the running tenant-worker (pid $worker) stopped; see $log" >&2; exit 1; }
  status=0; wait "$worker" || status=$?
  rm -f "$pidfile"
  [ "$status" -eq 0 ] && { echo "tenant-worker stopped"; exit 0; }
  echo "tenant-worker stopped (exit status $status); the end of $log:" >&2
  tail -n 15 "$log" >&2
  exit 1
}
# Keeps the worker this script started in the foreground; a second run ends here.
stay() {
  if [ -n "$running" ]; then
    if [ -n "$started_by_hand" ]; then
      echo "The worker (pid $worker) was started by hand; \`kill -TERM $worker\` stops it (it finishes running jobs first)."
    else
      echo "The worker belongs to the first run-local.sh (pid $worker); Ctrl-C there stops it."
    fi
    exit 0
  fi
  echo "Ctrl-C here stops the worker (it finishes running jobs first)."
  while true; do worker_alive; sleep 1; done
}
sleep 1; worker_alive
[ -n "$running" ] || echo "tenant-worker started (pid $worker, log $log)"
slug=${DEMO_TENANT:-demo_acme}
# Runs a tenantctl command in the background, so a dead worker or a signal stops the wait at once.
follow() {
  "$@" >/dev/null &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    kill -0 "$worker" 2>/dev/null || kill "$pid" 2>/dev/null
    worker_alive
    sleep 0.5
  done
  wait "$pid"
}
status=$($bin/tenantctl tenant show "$slug" --json 2>/dev/null | sed -n 's/^  "status": "\([a-z]*\)",$/\1/p' || true)
# Prints how to go on, and keeps the worker running, when the demo tenant cannot be used.
no_demo() {
  echo "$1"
  cat <<TXT

The worker is running. In another terminal:
  $bin/tenantctl tenant create bigco --product demo --plan enterprise --owner-email you@example.com --wait
TXT
  stay
}
case "$status" in
  ""|deleted)
    # A deleted demo tenant's slug is free again once its backups are pruned; until then
    # `tenant create` says when.
    follow $bin/tenantctl tenant create "$slug" --product demo --plan starter --owner-email owner@example.com --name "Demo Acme" --wait \
      || no_demo "Run again with DEMO_TENANT=another_name for a new demo tenant." ;;
  provisioning)
    echo "demo tenant '$slug' is still being provisioned (an earlier run stopped): waiting for it"
    for _ in $(seq 1 120); do
      status=$($bin/tenantctl tenant show "$slug" --json | sed -n 's/^  "status": "\([a-z]*\)",$/\1/p' || true)
      [ "$status" = provisioning ] || break
      worker_alive; sleep 1
    done
    [ "$status" = active ] || no_demo "demo tenant '$slug' is $status: see \`$bin/tenantctl tenant show $slug\` and \`$bin/tenantctl jobs list --tenant $slug\`." ;;
  failed)
    no_demo "demo tenant '$slug' failed to provision: \`$bin/tenantctl tenant show $slug\` says why; \`$bin/tenantctl tenant delete $slug --yes\` removes it (or run again with DEMO_TENANT=another_name)." ;;
  active|paused|suspended)
    echo "demo tenant '$slug' exists already ($status)" ;;
  *)
    no_demo "demo tenant '$slug' is $status: see \`$bin/tenantctl tenant show $slug\`." ;;
esac
$bin/tenantctl tenant show "$slug"
cat <<TXT

The worker is running. In another terminal:
  $bin/tenantctl tenant create bigco --product demo --plan enterprise --owner-email you@example.com --wait
  psql "\$($bin/tenantctl tenant credentials $slug)" -c 'select * from projects'
The admin panel (README, "Admin panel"):
  $bin/tenantctl admin user add admin --role admin   # asks for a password
  $bin/tenantctl admin serve                          # http://127.0.0.1:8001/
TXT
stay
