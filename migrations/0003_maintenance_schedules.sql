-- Maintenance jobs and the scheduler's record of the slots it fanned out.
INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('Vacuum', 3, 'VACUUM / ANALYZE / REINDEX of one tenant''s tables'),
    ('Cleanup', 3, 'delete rows older than N days from the product''s prunable tables'),
    ('PruneJobs', 3, 'delete finished queue rows older than the retention');

-- One row per (schedule, slot) fanned out: `tenantctl schedule list` shows the last one,
-- and the scheduler logs slots missed beyond its catch-up window after the last one.
CREATE TABLE tenant_master.schedule_runs (
    schedule     text NOT NULL,
    slot         timestamptz NOT NULL,
    tenants      integer NOT NULL,
    enqueued     integer NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    recorded_by  text NOT NULL,
    PRIMARY KEY (schedule, slot)
);

-- Fans one job type out over every live tenant for one slot in a single statement:
-- keys `<schedule>:<slug>:<slot>` make it once per slot however many schedulers run, and
-- ON CONFLICT skips the tenants already enqueued instead of failing the whole batch.
-- run_at is spread over p_spread_secs by a hash of the slug. Returns the jobs inserted.
CREATE FUNCTION tenant_master.fan_out(p_schedule text, p_job_type text, p_slot timestamptz,
                                      p_payload jsonb, p_spread_secs integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_inserted integer;
    v_slot text := to_char(p_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
BEGIN
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
    SELECT apalis.generate_ulid(), p_job_type,
           convert_to((p_payload || jsonb_build_object('slug', t.slug, 'schedule', p_schedule, 'slot', v_slot))::text, 'UTF8'),
           'Pending', 0, jt.max_attempts,
           p_slot + make_interval(secs => abs(hashtext(t.slug)::bigint) % GREATEST(p_spread_secs, 1)),
           0, p_schedule || ':' || t.slug || ':' || v_slot
    FROM tenant_master.tenants t
    JOIN tenant_master.job_types jt ON jt.job_type = p_job_type
    WHERE t.status IN ('active', 'paused', 'suspended')
    ON CONFLICT (job_type, idempotency_key) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    RETURN v_inserted;
END
$$;
