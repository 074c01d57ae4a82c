-- Restores, deletes and admin actions that lose nothing, however often they run (issue 11).

-- Safety copies taken by `maintenance --backup-first` are not routine backups: retention
-- does not count them, and `restore --latest` does not pick them.
ALTER TABLE tenant_master.backups DROP CONSTRAINT backups_kind_check;
ALTER TABLE tenant_master.backups ADD CONSTRAINT backups_kind_check
    CHECK (kind IN ('scheduled', 'manual', 'pre_restore', 'pre_delete', 'pre_move', 'pre_maintenance'));

-- Destructive jobs record that they finished, in the control plane: a rerun of the same
-- job (a lost acknowledgement, the orphan sweep, `tenantctl jobs retry` weeks later) finds
-- its row and repeats nothing.
CREATE TABLE tenant_master.job_outcomes (
    job_id       text PRIMARY KEY,
    job_type     text NOT NULL,
    tenant_id    bigint NOT NULL REFERENCES tenant_master.tenants (id),
    outcome      jsonb NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now()
);

-- A deleted tenant's slug can be taken again once its backups are pruned: slugs are unique
-- among tenants that are not deleted; the deleted row keeps its history under its id.
ALTER TABLE tenant_master.tenants DROP CONSTRAINT tenants_slug_key;
CREATE UNIQUE INDEX tenants_live_slug_idx ON tenant_master.tenants (slug) WHERE status <> 'deleted';
CREATE INDEX tenants_slug_idx ON tenant_master.tenants (slug);
