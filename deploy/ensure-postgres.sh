#!/usr/bin/env bash
# Makes sure a local PostgreSQL server is running on 127.0.0.1:5432 and that the current
# OS user has a superuser role there (the default DATABASE_URL connects as that user).
# Handles a fresh Debian machine: installs the server if missing, starts a stopped
# cluster, creates the role. Does nothing if DATABASE_URL points somewhere else.
set -euo pipefail

log() { echo "ensure-postgres: $*" >&2; }
me=$(id -un)

if [ -n "${DATABASE_URL:-}" ] && [[ "$DATABASE_URL" != *"127.0.0.1"* && "$DATABASE_URL" != *"localhost"* ]]; then
  log "DATABASE_URL points to another server; leaving local PostgreSQL alone"
  exit 0
fi

as_postgres() {
  if [ "$me" = postgres ]; then "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { log "PostgreSQL is not installed and I am not root: install postgresql, then rerun"; exit 1; }
  log "installing PostgreSQL from the Debian packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL $version"
  if [ "$(id -u)" = 0 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    pg_ctlcluster "$version" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not come up on 127.0.0.1:5432; see /var/log/postgresql/"; exit 1; }
fi

# The socket with peer/trust auth works as the postgres OS user even when our role is missing.
if ! as_postgres psql -XAtq -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$me'" | grep -q 1; then
  log "creating superuser role '$me'"
  as_postgres createuser --superuser "$me"
fi
if ! psql -XAtq -h 127.0.0.1 -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
  log "role '$me' cannot log in over TCP on 127.0.0.1: allow it in pg_hba.conf (trust or a password in DATABASE_URL)"
  exit 1
fi
log "PostgreSQL $version is running on 127.0.0.1:5432 (role $me)"
