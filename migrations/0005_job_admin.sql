-- Admin actions on jobs (tenantctl jobs retry): back to Pending with a fresh attempt
-- budget, due now, and a NOTIFY like the insert trigger's, so an idle worker wakes at
-- once instead of at its next poll (apalis's trigger fires on INSERT only).
CREATE FUNCTION tenant_master.retry_jobs(p_ids text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, lock_at = NULL, done_at = NULL
        WHERE id = ANY (p_ids)
          AND tenant_master.job_status(status, attempts, max_attempts, lock_at, done_at) IN ('failed', 'dead', 'pending')
        RETURNING id, job_type, run_at
    LOOP
        PERFORM pg_notify('apalis::job::insert', json_build_object('job_type', r.job_type, 'id', r.id, 'run_at', r.run_at)::text);
        RETURN NEXT r.id;
    END LOOP;
END
$$;
