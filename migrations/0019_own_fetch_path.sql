-- The worker's own fetch and acknowledgement path (shared/src/queue/feed.rs): the queue
-- keeps its table, and its indexes become the ones those statements need. Every index is
-- written on every fetch and every acknowledgement, so duplicates cost throughput.
--   fetch:   idx_apalis_jobs_fetch_partial (job_type, priority DESC, run_at), kept
--   ack:     jobs_pkey (id), kept
--   rescue:  the jobs workers hold now, by worker (replaces an index over every row
--            ever locked, which grew with the queue's history)
-- Dropped: unique_job_id (a copy of jobs_pkey), lidx (a copy of idx_apalis_jobs_lock_by),
-- and the foreign key from lock_by to apalis.workers: the worker process registers its
-- workers before it fetches, and the rescue treats a job whose worker row is missing as
-- orphaned, so the per-row key check on every fetch buys nothing.
-- `tenantctl migrate` runs this file again after the queue's own migrations on every run
-- (they may come after ours on a new control plane, and create these indexes then).
DO $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL OR to_regclass('apalis.workers') IS NULL THEN
        RETURN;
    END IF;
    ALTER TABLE apalis.jobs DROP CONSTRAINT IF EXISTS fk_worker_lock_by;
    DROP INDEX IF EXISTS apalis.unique_job_id;
    DROP INDEX IF EXISTS apalis.lidx;
    DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
    CREATE INDEX IF NOT EXISTS jobs_held_by_worker ON apalis.jobs (lock_by) WHERE status IN ('Queued', 'Running');
    -- The same copies on the workers table, written by every heartbeat.
    DROP INDEX IF EXISTS apalis.unique_worker_id;
    DROP INDEX IF EXISTS apalis.lsidx;
    DROP INDEX IF EXISTS apalis.wtidx;
END
$$;
