-- Moving tenants between isolation modes and hosts (MoveTenant).
-- A move copies the tenant, switches the registry, and keeps the source copy (its schema
-- renamed `<schema>__moved`) until `kept_until`, for an admin to roll back by hand;
-- PruneJobs drops it after that and sets `dropped_at`.
CREATE TABLE tenant_master.kept_sources (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant_master.tenants (id),
    job_id        text NOT NULL,
    host          text NOT NULL,
    database_name text NOT NULL,
    schema_name   text NOT NULL,
    isolation     text NOT NULL CHECK (isolation IN ('schema', 'database')),
    kept_until    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dropped_at    timestamptz
);
CREATE INDEX kept_sources_due_idx ON tenant_master.kept_sources (kept_until) WHERE dropped_at IS NULL;
CREATE INDEX kept_sources_tenant_idx ON tenant_master.kept_sources (tenant_id);

-- Where each move copies to, recorded on its first run: every rerun copies to the same
-- place, and what a move that gave up (or whose tenant was deleted) left there is cleared.
-- copying: not switched yet; switched: the registry points there; abandoned: cleared.
CREATE TABLE tenant_master.move_targets (
    job_id        text PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant_master.tenants (id),
    host          text NOT NULL,
    database_name text NOT NULL,
    isolation     text NOT NULL CHECK (isolation IN ('schema', 'database')),
    state         text NOT NULL DEFAULT 'copying' CHECK (state IN ('copying', 'switched', 'abandoned')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX move_targets_tenant_idx ON tenant_master.move_targets (tenant_id) WHERE state = 'copying';

INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('MoveTenant', 5, 'copies a tenant to another database or host, switches it over, keeps the source for a while');
