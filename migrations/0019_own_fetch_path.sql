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
-- A re-run takes no lock on the queue: `DROP INDEX IF EXISTS` of an absent index locks
-- nothing, while an ALTER TABLE or a CREATE INDEX, even a no-op one, would wait for every
-- reader and stop every worker's fetch behind it, so those two run only when needed.
DO $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL OR to_regclass('apalis.workers') IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'fk_worker_lock_by' AND conrelid = 'apalis.jobs'::regclass) THEN
        ALTER TABLE apalis.jobs DROP CONSTRAINT fk_worker_lock_by;
    END IF;
    DROP INDEX IF EXISTS apalis.unique_job_id, apalis.lidx, apalis.idx_apalis_jobs_lock_by;
    IF to_regclass('apalis.jobs_held_by_worker') IS NULL THEN
        CREATE INDEX jobs_held_by_worker ON apalis.jobs (lock_by) WHERE status IN ('Queued', 'Running');
    END IF;
    -- The same copies on the workers table, written by every heartbeat.
    DROP INDEX IF EXISTS apalis.unique_worker_id, apalis.lsidx, apalis.wtidx;
END
$$;
