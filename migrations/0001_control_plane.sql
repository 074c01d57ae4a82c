-- The registry of Tenant Master (DESIGN §2). The queue lives in apalis-postgres's own
-- schema `apalis`, migrated by apalis itself; nothing here depends on it existing yet.

CREATE TABLE tenant_master.db_hosts (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,39}$'),
    -- A role with CREATEDB and CREATEROLE; NULL means the control plane's own DATABASE_URL.
    admin_url   text,
    capacity    integer NOT NULL DEFAULT 1000 CHECK (capacity >= 0),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenant_master.db_hosts (name) VALUES ('default');

CREATE TABLE tenant_master.products (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{1,19}$'),
    display_name    text NOT NULL,
    migrations_dir  text NOT NULL,
    -- [{"table": "events", "column": "created_at"}]: what Cleanup may prune.
    prunable        jsonb NOT NULL DEFAULT '[]',
    plan_limits     jsonb NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_master.tenants (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug              text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9_]{2,39}$' AND slug NOT LIKE 'pg\_%'),
    display_name      text NOT NULL,
    product           text NOT NULL REFERENCES tenant_master.products (name),
    plan              text NOT NULL CHECK (plan IN ('free', 'starter', 'business', 'enterprise', 'lifetime')),
    isolation         text NOT NULL CHECK (isolation IN ('schema', 'database')),
    host              text NOT NULL REFERENCES tenant_master.db_hosts (name),
    database_name     text NOT NULL,
    schema_name       text NOT NULL,
    role_name         text NOT NULL,
    -- Secret: never logged, printed only by `tenantctl tenant credentials`.
    role_password     text,
    owner_email       text NOT NULL,
    status            text NOT NULL DEFAULT 'provisioning'
                      CHECK (status IN ('provisioning', 'active', 'paused', 'suspended', 'deleting', 'deleted', 'failed')),
    status_reason     text,
    size_bytes        bigint,
    size_measured_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX tenants_status_idx ON tenant_master.tenants (status);

CREATE TABLE tenant_master.activity_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    tenant_id   bigint REFERENCES tenant_master.tenants (id),
    action      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    origin      text
);
CREATE INDEX activity_log_tenant_idx ON tenant_master.activity_log (tenant_id, at DESC);

-- Every job type, with its retry limit: producers in any language enqueue through
-- tenant_master.enqueue(), which refuses unknown types instead of stranding a job.
CREATE TABLE tenant_master.job_types (
    job_type      text PRIMARY KEY,
    max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
    description   text NOT NULL
);
INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('ProvisionTenant', 8, 'create role, database or schema, apply product migrations, activate');

-- Our words for the queue library's states (see tenantctl jobs):
-- a job whose handler panicked is stored as Running with done_at after lock_at: dead.
CREATE FUNCTION tenant_master.job_status(status text, attempts integer, max_attempts integer,
                                         lock_at timestamptz, done_at timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN status = 'Done' THEN 'done'
        WHEN status = 'Killed' THEN 'dead'
        WHEN status = 'Failed' AND attempts >= max_attempts THEN 'dead'
        WHEN status = 'Failed' THEN 'failed'
        WHEN status IN ('Queued', 'Running') AND done_at IS NOT NULL AND lock_at IS NOT NULL
             AND done_at >= lock_at THEN 'dead'
        WHEN status IN ('Queued', 'Running') THEN 'running'
        ELSE 'pending'
    END
$$;

-- Enqueue one job from any language: SELECT tenant_master.enqueue('ProvisionTenant', '{...}', 'provision:acme');
-- A job whose idempotency key is already taken is not inserted again; its id is returned.
CREATE FUNCTION tenant_master.enqueue(p_job_type text, p_payload jsonb,
                                      p_idempotency_key text DEFAULT NULL,
                                      p_run_at timestamptz DEFAULT now(),
                                      p_max_attempts integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_max integer;
    v_id text;
BEGIN
    SELECT max_attempts INTO v_max FROM tenant_master.job_types WHERE job_type = p_job_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job type %', p_job_type USING ERRCODE = '22023';
    END IF;
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
    VALUES (apalis.generate_ulid(), p_job_type, convert_to(p_payload::text, 'UTF8'), 'Pending', 0,
            COALESCE(p_max_attempts, v_max), p_run_at, 0, p_idempotency_key)
    ON CONFLICT (job_type, idempotency_key) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM apalis.jobs WHERE job_type = p_job_type AND idempotency_key = p_idempotency_key;
    END IF;
    RETURN v_id;
END
$$;
