-- Hostile tenants, second round (issue 24).

-- The checksum of each product migration as it was when one of our own sessions first
-- applied it. A tenant's ledger lives in its own database and its code can add rows to it
-- (see ledger.rs), so a ledger is only the tenant's word; this table is ours. A file
-- whose checksum differs from the one here changed on our side and stops every rollout;
-- a tenant whose ledger differs from both stops only itself.
CREATE TABLE tenant_master.product_migrations_applied (
    product text NOT NULL,
    version bigint NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    first_applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, version)
);
