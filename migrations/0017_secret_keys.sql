-- Safe to run from anywhere and twice (issue 25).

-- The ids of the secret keys that sealed this control plane's rows (tenant passwords,
-- host URLs). A process whose key is not one of them refuses to seal anything: a second
-- key, made by mistake in another folder, must not seal a tenant no worker can open.
-- `tenantctl key rotate` retires the old id once every row is re-sealed.
CREATE TABLE tenant_master.secret_keys (
    key_id text PRIMARY KEY,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

INSERT INTO tenant_master.secret_keys (key_id)
SELECT DISTINCT split_part(sealed, ':', 2) FROM (
    SELECT role_password AS sealed FROM tenant_master.tenants WHERE role_password LIKE 'tmenc1:%'
    UNION ALL
    SELECT admin_url FROM tenant_master.db_hosts WHERE admin_url LIKE 'tmenc1:%'
) s
ON CONFLICT DO NOTHING;
