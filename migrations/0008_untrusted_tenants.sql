-- Tenants are untrusted (issue 10).
--
-- Who this control plane is: the comment on every role and database it creates names this
-- id, so two deployments on one server (even with the same database_prefix) never adopt or
-- drop each other's objects.
CREATE TABLE tenant_master.deployment (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    singleton   boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenant_master.deployment (id) VALUES (substr(md5(gen_random_uuid()::text), 1, 16));

-- Sealed by `tenantctl migrate` right after this migration (it needs the key, which SQL
-- never sees); from then on only sealed values are written.
COMMENT ON COLUMN tenant_master.tenants.role_password IS
    'sealed (tmenc1:<key id>:...) under the key of TENANT_MASTER_SECRET_KEY_FILE; never plaintext';
