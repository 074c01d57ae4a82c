-- Per-tenant backups (DESIGN §2, §4). A row is written before the dump starts
-- (finished_at NULL) so a crash between the dump and the bookkeeping is noticed by the
-- rerun; only finished, verified rows count as backups.
CREATE TABLE tenant_master.backups (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenant_master.tenants (id),
    kind             text NOT NULL CHECK (kind IN ('scheduled', 'manual', 'pre_restore', 'pre_delete', 'pre_move')),
    file_path        text NOT NULL UNIQUE,
    bytes            bigint,
    sha256           text,
    -- The product migrations the dumped schema had, so a restore can bring it up to date.
    schema_versions  bigint[] NOT NULL DEFAULT '{}',
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    verified         boolean NOT NULL DEFAULT false,
    job_id           text,
    CHECK (finished_at IS NULL OR (verified AND bytes IS NOT NULL AND sha256 IS NOT NULL))
);
CREATE INDEX backups_tenant_idx ON tenant_master.backups (tenant_id, finished_at DESC);
CREATE INDEX backups_job_idx ON tenant_master.backups (job_id);

INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('BackupTenant', 5, 'pg_dump of one tenant schema, verified, then retention'),
    ('RestoreTenant', 3, 'safety backup, then restore a backup in place of the live schema');
