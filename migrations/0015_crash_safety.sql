-- Lose nothing at any crash point (issue 23).

-- What each job type's payload must hold (written by `tenantctl migrate` from the Rust
-- declarations, `jobs::REGISTRY`): enqueue refuses what no worker could read, in the
-- producer's own transaction, instead of a job that fails in the worker.
ALTER TABLE tenant_master.job_types ADD COLUMN payload_fields jsonb;

-- The first problem of `p_payload` against `p_fields`, in words; NULL when it is readable.
CREATE FUNCTION tenant_master.payload_problem(p_fields jsonb, p_payload jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    f jsonb;
    v jsonb;
    n numeric;
    want text;
BEGIN
    IF p_fields IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_payload) IS DISTINCT FROM 'object' THEN
        RETURN 'the payload must be a JSON object';
    END IF;
    -- Payloads hold plain values: nesting past the JSON reader's depth limit, or a number
    -- past a double's range, would fail the worker's read of the whole batch.
    FOR f IN SELECT jsonb_build_object('name', key, 'value', value) FROM jsonb_each(p_payload) LOOP
        IF jsonb_typeof(f -> 'value') IN ('object', 'array') THEN
            RETURN format('"%s" holds an object or a list; a payload holds plain values only', f ->> 'name');
        END IF;
        IF jsonb_typeof(f -> 'value') = 'number' AND abs((f ->> 'value')::numeric) >= 1e308 THEN
            RETURN format('"%s" is a number too large to read', f ->> 'name');
        END IF;
    END LOOP;
    FOR f IN SELECT value FROM jsonb_array_elements(p_fields) LOOP
        v := p_payload -> (f ->> 'name');
        want := CASE f ->> 'type'
            WHEN 'string' THEN 'a string'
            WHEN 'one_of' THEN 'one of ' || (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(f -> 'one_of') x)
            WHEN 'boolean' THEN 'true or false'
            WHEN 'integer' THEN 'a whole number'
            WHEN 'count' THEN 'a whole number from 0 to 4294967295'
            WHEN 'unsigned' THEN 'a whole number from 0 up'
        END;
        IF v IS NULL THEN
            IF f ->> 'presence' = 'required' THEN
                RETURN format('the payload lacks "%s" (%s)', f ->> 'name', want);
            END IF;
            CONTINUE;
        END IF;
        IF jsonb_typeof(v) = 'null' THEN
            IF f ->> 'presence' = 'optional' THEN
                CONTINUE;
            END IF;
            RETURN format('"%s" is null in the payload; it must be %s', f ->> 'name', want);
        END IF;
        IF f ->> 'type' IN ('string', 'one_of') THEN
            IF jsonb_typeof(v) <> 'string' OR (f ->> 'type' = 'one_of' AND NOT (f -> 'one_of') ? (v #>> '{}')) THEN
                RETURN format('"%s" is %s in the payload; it must be %s', f ->> 'name', left(v::text, 60), want);
            END IF;
        ELSIF f ->> 'type' = 'boolean' THEN
            IF jsonb_typeof(v) <> 'boolean' THEN
                RETURN format('"%s" is %s in the payload; it must be %s', f ->> 'name', left(v::text, 60), want);
            END IF;
        ELSE
            IF jsonb_typeof(v) <> 'number' THEN
                RETURN format('"%s" is %s in the payload; it must be %s', f ->> 'name', left(v::text, 60), want);
            END IF;
            n := (v #>> '{}')::numeric;
            -- serde reads 5 but not 5.0 as a whole number.
            IF position('.' IN v::text) > 0 OR position('e' IN lower(v::text)) > 0
               OR (f ->> 'type' = 'integer' AND (n < -9223372036854775808 OR n > 9223372036854775807))
               OR (f ->> 'type' = 'count' AND (n < 0 OR n > 4294967295))
               OR (f ->> 'type' = 'unsigned' AND (n < 0 OR n > 18446744073709551615)) THEN
                RETURN format('"%s" is %s in the payload; it must be %s', f ->> 'name', left(v::text, 60), want);
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Raises the payload's problem, if it has one, as one sentence (SQLSTATE 22023).
CREATE FUNCTION tenant_master.check_payload(p_job_type text, p_fields jsonb, p_payload jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_problem text := tenant_master.payload_problem(p_fields, p_payload);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION '% cannot be enqueued: %; nothing was enqueued', p_job_type, v_problem USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenant_master.enqueue(p_job_type text, p_payload jsonb,
                                      p_idempotency_key text DEFAULT NULL,
                                      p_run_at timestamptz DEFAULT now(),
                                      p_max_attempts integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_max integer;
    v_fields jsonb;
    v_id text;
BEGIN
    SELECT max_attempts, payload_fields INTO v_max, v_fields FROM tenant_master.job_types WHERE job_type = p_job_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job type %', p_job_type USING ERRCODE = '22023';
    END IF;
    PERFORM tenant_master.check_payload(p_job_type, v_fields, p_payload);
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

CREATE OR REPLACE FUNCTION tenant_master.enqueue_many(p_job_type text, p_payloads jsonb[], p_idempotency_keys text[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_max integer;
    v_fields jsonb;
    v_inserted integer;
BEGIN
    SELECT max_attempts, payload_fields INTO v_max, v_fields FROM tenant_master.job_types WHERE job_type = p_job_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job type %', p_job_type USING ERRCODE = '22023';
    END IF;
    -- One bad payload refuses the batch, as one bad row of a COPY would.
    IF v_fields IS NOT NULL AND jsonb_array_length(v_fields) > 0 THEN
        PERFORM tenant_master.check_payload(p_job_type, v_fields, p.payload) FROM unnest(p_payloads) AS p(payload);
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

-- Where each restore job stands, written before the step it names destroys anything: a
-- rerun after a crash (or a server restart) anywhere continues from here and never takes
-- a second safety copy in place of the first.
--   holding: the job is about to take the tenant's login (so `jobs cancel` refuses it)
--   held: the safety copy (safety_backup_id) holds every row; the live data is intact
--   restored: the chosen backup's data committed under the live name; what is left is
--             dropping the set-aside copy, the migrations and the outcome
CREATE TABLE tenant_master.restore_progress (
    job_id           text PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenant_master.tenants (id),
    backup_id        bigint NOT NULL,
    safety_backup_id bigint,
    stage            text NOT NULL CHECK (stage IN ('holding', 'held', 'restored')),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Cancelled jobs stay visible (`cancelled`, by whom and when) instead of vanishing: the
-- queue row is marked Killed (no worker fetches it), and this row says it was a
-- cancellation. `jobs retry` of one says what happened to it instead of "no such job".
CREATE TABLE tenant_master.cancelled_jobs (
    job_id       text PRIMARY KEY,
    actor        text NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION tenant_master.retry_jobs(p_ids text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_types text[] := '{}';
BEGIN
    FOR r IN
        UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, lock_at = NULL, done_at = NULL
        WHERE id = ANY (p_ids)
          AND tenant_master.job_status(status, attempts, max_attempts, lock_at, done_at) IN ('failed', 'dead', 'pending')
          AND NOT EXISTS (SELECT 1 FROM tenant_master.cancelled_jobs c WHERE c.job_id = apalis.jobs.id)
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
