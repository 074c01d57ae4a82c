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

INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('MoveTenant', 5, 'copies a tenant to another database or host, switches it over, keeps the source for a while');
