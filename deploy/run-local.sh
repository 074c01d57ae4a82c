#!/usr/bin/env bash
# Sets up everything on this machine and runs the system: local PostgreSQL (started if
# needed), the binaries, the control-plane database, a worker, and a demo tenant
# provisioned end to end. The worker keeps running in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/ensure-postgres.sh
cargo build --workspace --locked
bin=target/debug
mkdir -p data
# The key that seals tenant passwords (the default secret_key_file), made once.
[ -s data/secret.key ] || $bin/tenantctl key generate --file data/secret.key
$bin/tenantctl migrate
# Tenant roles may connect to their own database only (closes postgres, template1 to PUBLIC).
$bin/tenantctl host lockdown default --yes
$bin/tenantctl check
$bin/tenant-worker > data/worker.log 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker; exit 0' INT TERM
# Stops this script, with the worker's last words, if the worker is gone.
worker_alive() {
  kill -0 "$worker" 2>/dev/null && return 0
  status=0; wait "$worker" || status=$?
  [ "$status" -eq 0 ] && { echo "tenant-worker stopped"; exit 0; }
  echo "tenant-worker stopped (exit status $status); the end of data/worker.log:" >&2
  tail -n 15 data/worker.log >&2
  exit 1
}
sleep 1; worker_alive
echo "tenant-worker started (pid $worker, log data/worker.log)"
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
Ctrl-C here stops the worker (it finishes running jobs first).
TXT
  while true; do worker_alive; sleep 1; done
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
Ctrl-C here stops the worker (it finishes running jobs first).
TXT
while true; do worker_alive; sleep 1; done
