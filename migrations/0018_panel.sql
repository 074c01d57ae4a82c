-- The admin panel (issue 25). Every attempt of a job that did not succeed, for the admin panel's job page (issue 25).
-- The queue's row keeps only the last attempt; a success is read from it, so a job that
-- succeeds at once costs no write here. Pruned with the jobs (`PruneJobs`).
CREATE TABLE tenant_master.job_attempts (
    id bigserial PRIMARY KEY,
    job_id text NOT NULL,
    -- 1 for the first; `jobs retry` starts counting again.
    attempt integer NOT NULL,
    started_at timestamptz,
    ended_at timestamptz NOT NULL DEFAULT now(),
    -- The queue worker that ran it: `<type>-<host>-<pid>-...`.
    worker text,
    -- failed (will retry) | dead (gave up)
    outcome text NOT NULL CHECK (outcome IN ('failed', 'dead')),
    error text NOT NULL
);

CREATE INDEX job_attempts_job ON tenant_master.job_attempts (job_id, id);
CREATE INDEX job_attempts_ended ON tenant_master.job_attempts (ended_at);

-- The panel's activity page: the whole log newest first, and filtered by action.
CREATE INDEX activity_log_at_idx ON tenant_master.activity_log (at DESC);
CREATE INDEX activity_log_action_idx ON tenant_master.activity_log (action, at DESC);
