-- A job that does nothing (a canary for monitoring, and the benchmark's unit of work),
-- and bulk enqueueing: many jobs of one type in one statement, skipping taken keys.
INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('Noop', 3, 'does nothing: a canary and the benchmark''s unit of work');

CREATE FUNCTION tenant_master.enqueue_many(p_job_type text, p_payloads jsonb[], p_idempotency_keys text[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_max integer;
    v_inserted integer;
BEGIN
    SELECT max_attempts INTO v_max FROM tenant_master.job_types WHERE job_type = p_job_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job type %', p_job_type USING ERRCODE = '22023';
    END IF;
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
    SELECT apalis.generate_ulid(), p_job_type, convert_to(p.payload::text, 'UTF8'), 'Pending', 0, v_max, now(), 0, k.key
    FROM unnest(p_payloads) WITH ORDINALITY AS p(payload, n)
    LEFT JOIN unnest(p_idempotency_keys) WITH ORDINALITY AS k(key, n) USING (n)
    ON CONFLICT (job_type, idempotency_key) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    RETURN v_inserted;
END
$$;
