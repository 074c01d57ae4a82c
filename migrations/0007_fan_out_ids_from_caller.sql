-- The scheduler now fans out with one INSERT from its own process, passing the tenants
-- and their job ids (ULIDs made in Rust: apalis.generate_ulid() in PL/pgSQL cost a fifth
-- of a 10,000-tenant fan-out). The SQL function of 0003 is no longer used.
DROP FUNCTION tenant_master.fan_out(text, text, timestamptz, jsonb, integer);
