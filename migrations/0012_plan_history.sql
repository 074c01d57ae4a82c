-- Plan changes, kept for good: who moved which tenant from which plan to which, and when.
CREATE TABLE tenant_master.plan_changes (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant_master.tenants (id),
    from_plan   text NOT NULL,
    to_plan     text NOT NULL,
    actor       text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_changes_tenant_idx ON tenant_master.plan_changes (tenant_id, id);
