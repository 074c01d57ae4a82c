-- Rolling product migrations out to existing tenants (tenantctl tenant migrate).
-- `schema_version` caches the highest product migration recorded in the tenant's own
-- ledger (tenant_master_meta.applied_migrations in its database), which stays the truth:
-- it is refreshed by every path that applies migrations and by the rollout's reads.
-- `migration_error` is the last rollout failure of the tenant, cleared when one succeeds.
ALTER TABLE tenant_master.tenants ADD COLUMN schema_version bigint;
ALTER TABLE tenant_master.tenants ADD COLUMN migration_error text;

INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('MigrateTenant', 3, 'applies pending product migrations to one tenant');
