-- Worker wake-ups: one NOTIFY per statement and job type on a channel of our own, instead
-- of apalis's one per inserted row (a bulk enqueue of 10,000 jobs sent 10,000 to every
-- listener, and each one made a worker fetch). The payload is the job type; workers
-- listen on one connection per process and fetch a batch per wake-up. The trigger that
-- calls this replaces apalis's on `apalis.jobs` once both schemas exist (`migrate::views`:
-- ours and the queue's migrations run in either order).

CREATE FUNCTION tenant_master.notify_new_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenant_master_jobs', t.job_type)
    FROM (SELECT DISTINCT job_type FROM new_jobs WHERE run_at <= now()) t;
    RETURN NULL;
END
$$;

-- `jobs retry` wakes the workers of the retried types at once.
CREATE OR REPLACE FUNCTION tenant_master.retry_jobs(p_ids text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_types text[] := '{}';
BEGIN
    FOR r IN
        UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, lock_at = NULL, done_at = NULL
        WHERE id = ANY (p_ids)
          AND tenant_master.job_status(status, attempts, max_attempts, lock_at, done_at) IN ('failed', 'dead', 'pending')
        RETURNING id, job_type
    LOOP
        IF NOT r.job_type = ANY (v_types) THEN
            v_types := v_types || r.job_type;
            PERFORM pg_notify('tenant_master_jobs', r.job_type);
        END IF;
        RETURN NEXT r.id;
    END LOOP;
END
$$;
