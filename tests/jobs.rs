//! Admins and failed jobs: growing backoff stored in run_at, `tenantctl jobs` list, retry
//! (which wakes an idle worker at once), cancel, and the worker's /metrics and /healthz.

use std::time::Duration;

use tenant_master::{
    jobs::vacuum::{enqueue_maintenance, MaintenanceRequest},
    ops::maintenance::Tasks,
    tenants::Selection,
};
use tenant_master_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn http_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_backs_off_is_listed_and_retried_at_once() {
    let mut env = TestEnv::new().await;
    env.config.worker.retry_base_secs = 1;
    let port = free_port();
    env.config.worker.metrics_addr = format!("127.0.0.1:{port}");
    let tenant = env.provisioned(&env.slug("broken"), "enterprise").await;
    // Its database vanishes behind our back: every Vacuum attempt fails, retryably.
    let mut admin = env.admin("postgres").await;
    tenant_master::db::ddl(&mut admin, "DROP DATABASE %I WITH (FORCE)", &[&tenant.database]).await.unwrap();
    let request =
        MaintenanceRequest { tasks: Tasks { vacuum: true, ..Tasks::default() }, cleanup_days: None, dry_run: false, backup_first: false };
    let jobs = enqueue_maintenance(&env.pool, Selection::Slugs(vec![tenant.slug.clone()]), &request, "test").await.unwrap();
    let id = jobs[0].1.clone();
    sqlx::query("UPDATE apalis.jobs SET max_attempts = 6 WHERE id = $1").bind(&id).execute(&env.pool).await.unwrap();

    // Run until three attempts failed, noting how far each failure pushed run_at.
    let delays: std::sync::Mutex<Vec<(i32, f64)>> = Default::default();
    let metrics_text = std::sync::Mutex::new(String::new());
    env.run_worker_until(Duration::from_secs(90), || async {
        let (attempts, status, delay): (i32, String, Option<f64>) = sqlx::query_as(
            "SELECT j.attempts, j.status, EXTRACT(EPOCH FROM a.run_at - a.lock_at)::float8
             FROM tenant_master.jobs j JOIN apalis.jobs a ON a.id = j.id WHERE j.id = $1",
        )
        .bind(&id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        {
            let mut seen = delays.lock().unwrap();
            if let (true, Some(delay)) = (status == "failed" && seen.last().is_none_or(|(a, _)| *a != attempts), delay) {
                seen.push((attempts, delay));
            }
        }
        let done = attempts == 3 && status == "failed";
        if done {
            *metrics_text.lock().unwrap() = http_get(port, "/metrics").await;
            assert!(http_get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
        }
        done
    })
    .await;
    let delays = delays.into_inner().unwrap();
    assert_eq!(delays.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![1, 2, 3], "{delays:?}");
    assert!(delays[0].1 < delays[1].1 && delays[1].1 < delays[2].1, "run_at moved out by growing delays: {delays:?}");
    assert!(delays[2].1 > 8.0, "the third delay is about 16 s (base 1 s x 4^2): {delays:?}");

    let metrics = metrics_text.into_inner().unwrap();
    assert!(metrics.contains("tenant_master_jobs_started_total{type=\"Vacuum\"} 3"), "{metrics}");
    assert!(metrics.contains("tenant_master_jobs_retried_total{type=\"Vacuum\"} 3"), "{metrics}");
    assert!(metrics.contains("tenant_master_job_duration_seconds_count{type=\"Vacuum\"} 3"), "{metrics}");

    let listed = json(&env.tenantctl(&["jobs", "list", "--status", "failed", "--type", "Vacuum", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["tenant"], tenant.slug.as_str());
    assert!(listed[0]["last_error"].as_str().unwrap().contains("does not exist"), "{}", listed[0]);
    for field in ["type", "status", "attempts", "max_attempts", "run_at"] {
        assert!(!listed[0][field].is_null(), "{field}");
    }
    let shown = json(&env.tenantctl(&["jobs", "show", &id, "--json"]));
    assert_eq!((shown["attempts"].as_i64(), shown["max_attempts"].as_i64()), (Some(3), Some(6)));

    // A worker that would not poll for a minute, nor heartbeat for 30 s: only the NOTIFY
    // sent by `jobs retry` can wake it.
    env.config.worker.poll_interval_ms = 60_000;
    env.config.worker.heartbeat_secs = 30;
    // The job waits ~16 s for its next attempt; retry it once the idle worker listens.
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&env.pool).await.unwrap();
    let listening = || async {
        // The wake-up listener of the new worker (not the earlier worker's).
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND backend_start > $1",
        )
        .bind(started)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        n >= 1
    };
    // Evidence of the wake-up is the fetch (lock_at after the retry): the attempt's result
    // is acknowledged by apalis only at the worker's next poll, a minute away here.
    let retried_at: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>> = Default::default();
    env.run_worker_until(Duration::from_secs(30), || async {
        if retried_at.lock().unwrap().is_none() && listening().await {
            let at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&env.pool).await.unwrap();
            let out = env.tenantctl(&["jobs", "retry", &id]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            *retried_at.lock().unwrap() = Some(at);
        }
        let Some(at) = *retried_at.lock().unwrap() else { return false };
        let (lock_at, attempts): (Option<chrono::DateTime<chrono::Utc>>, i32) =
            sqlx::query_as("SELECT lock_at, attempts FROM apalis.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
        assert!(attempts <= 1, "the retry reset the attempts (now {attempts})");
        lock_at.is_some_and(|l| l > at)
    })
    .await;
}

#[tokio::test]
async fn retry_failed_and_cancel() {
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id: String = sqlx::query_scalar("SELECT tenant_master.enqueue('PruneJobs', $1, NULL, now() + interval '1 hour')")
            .bind(serde_json::json!({ "done_older_than_days": 7, "dead_older_than_days": 30, "n": i }))
            .fetch_one(&env.pool)
            .await
            .unwrap();
        ids.push(id);
    }
    // The first two failed earlier (one for good), the third is still pending.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, last_result = '{\"Err\": \"boom\"}', done_at = now() WHERE id = $1",
    )
    .bind(&ids[0])
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Killed', attempts = 3, last_result = '{\"Err\": \"gave up\"}', done_at = now() WHERE id = $1",
    )
    .bind(&ids[1])
    .execute(&env.pool)
    .await
    .unwrap();
    let out = json(&env.tenantctl(&["jobs", "retry", "--failed", "--type", "PruneJobs", "--json"]));
    let mut retried: Vec<String> = out["retried"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    retried.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(retried, expected);
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM tenant_master.jobs ORDER BY id").fetch_all(&env.pool).await.unwrap();
    assert_eq!(statuses, vec!["pending", "pending", "pending"]);

    let out = env.tenantctl(&["jobs", "cancel", &ids[2], "--actor", "alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Old code: the cancelled job vanished, and `jobs retry` said there was no such job.
    let shown = json(&env.tenantctl(&["jobs", "show", &ids[2], "--json"]));
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert!(shown["last_error"].as_str().unwrap().contains("cancelled by alice"), "{shown}");
    // Asked again: it holds already, so exit 0 and a sentence (issue 25).
    let again = env.tenantctl(&["jobs", "cancel", &ids[2]]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("was cancelled already, by alice"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let retry = env.tenantctl(&["jobs", "retry", &ids[2]]);
    assert_eq!(retry.status.code(), Some(1));
    let said = String::from_utf8_lossy(&retry.stderr);
    assert!(said.contains("was cancelled by alice at") && said.contains("nothing was retried"), "{said}");
    let by_filter = json(&env.tenantctl(&["jobs", "retry", "--failed", "--json"]));
    assert!(!by_filter["retried"].as_array().unwrap().iter().any(|v| v == &serde_json::json!(ids[2])), "a cancelled job is no failed job");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM tenant_master.jobs ORDER BY id").fetch_all(&env.pool).await.unwrap();
    assert_eq!(statuses, vec!["pending", "pending", "cancelled"]);
    sqlx::query("UPDATE apalis.jobs SET status = 'Done', done_at = now() WHERE id = $1").bind(&ids[0]).execute(&env.pool).await.unwrap();
    let done = env.tenantctl(&["jobs", "cancel", &ids[0]]);
    assert_eq!(done.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&done.stderr).contains("is done"));
    let bad = env.tenantctl(&["jobs", "list", "--status", "broken"]);
    assert_eq!(bad.status.code(), Some(2));
    // Retry by tenant: a typo is refused, not read as "nothing failed".
    let typo = env.tenantctl(&["jobs", "retry", "--failed", "--tenant", "no_such_tenant"]);
    assert_eq!(typo.status.code(), Some(2), "{}", String::from_utf8_lossy(&typo.stderr));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no tenant 'no_such_tenant'"));
}

/// Every job type's declared payload fields (what `tenant_master.enqueue` checks) give the
/// same verdict as the worker's decoding, for payloads with each field missing, null,
/// of every wrong shape and of a right one.
#[tokio::test]
async fn enqueue_refuses_exactly_the_payloads_no_worker_can_read() {
    use tenant_master::{
        jobs::REGISTRY,
        queue::payload::{Presence, Shape},
    };
    let env = TestEnv::new().await;
    let sample = |shape: &Shape| -> Vec<serde_json::Value> {
        use serde_json::json;
        match shape {
            Shape::String => vec![json!("x")],
            Shape::OneOf(words) => vec![json!(words[0]), json!(words[words.len() - 1])],
            Shape::Boolean => vec![json!(true)],
            Shape::Integer => vec![json!(-5), json!(7)],
            Shape::Count => vec![json!(0), json!(4294967295u64)],
            Shape::Unsigned => vec![json!(0), json!(12)],
        }
    };
    let wrong: Vec<serde_json::Value> = vec![
        serde_json::json!("nope"),
        serde_json::json!(true),
        serde_json::json!(3.5),
        serde_json::json!(-1),
        serde_json::json!(4294967296u64),
        serde_json::json!(5.0),
        serde_json::json!([1]),
        serde_json::json!({"a": 1}),
        serde_json::Value::Null,
    ];
    let mut checked = 0;
    for job_type in REGISTRY {
        let mut base = serde_json::Map::new();
        for f in job_type.fields.iter().filter(|f| f.presence == Presence::Required) {
            base.insert(f.name.to_owned(), sample(&f.shape)[0].clone());
        }
        let mut payloads = vec![serde_json::Value::Object(base.clone()), serde_json::json!([]), serde_json::json!("text")];
        for f in job_type.fields {
            let mut without = base.clone();
            without.remove(f.name);
            payloads.push(serde_json::Value::Object(without));
            for value in sample(&f.shape).into_iter().chain(wrong.iter().cloned()) {
                let mut with = base.clone();
                with.insert(f.name.to_owned(), value);
                payloads.push(serde_json::Value::Object(with));
            }
        }
        for payload in payloads {
            let problem: Option<String> = sqlx::query_scalar(
                "SELECT tenant_master.payload_problem(payload_fields, $2) FROM tenant_master.job_types WHERE job_type = $1",
            )
            .bind(job_type.name)
            .bind(&payload)
            .fetch_one(&env.pool)
            .await
            .unwrap();
            let decoded = (job_type.decode)(payload.clone());
            if !payload.is_object() {
                // serde also reads a struct from an array, by position: producers send objects.
                assert!(problem.is_some(), "{}: {payload} was accepted", job_type.name);
                continue;
            }
            assert_eq!(problem.is_none(), decoded.is_ok(), "{}: SQL says {problem:?}, serde says {decoded:?} for {payload}", job_type.name);
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} payloads checked");
    // The control plane's rows are the registry's: no type missing, none left over, and
    // each with the retry limit its policy states.
    let rows: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT job_type, max_attempts, description FROM tenant_master.job_types WHERE payload_fields IS NOT NULL ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.job_types").fetch_one(&env.pool).await.unwrap();
    assert_eq!(all as usize, rows.len(), "every row has payload fields: no job type the registry does not know");
    let mut expected: Vec<(String, i32, String)> =
        REGISTRY.iter().map(|t| (t.name.to_owned(), t.policy.max_attempts as i32, t.description.to_owned())).collect();
    expected.sort();
    assert_eq!(rows, expected, "tenant_master.job_types is the registry");
}

/// Old code: the README's SQL example without `plan` was enqueued, its decode failed inside
/// the queue library, every worker of the pool restarted with growing backoff, and the job
/// never went dead. Now the producer gets the sentence in its own transaction, and a bad
/// payload that reaches the queue anyway (written by hand) is dead at once while 1,000
/// other jobs finish.
#[tokio::test(flavor = "multi_thread")]
async fn a_payload_no_worker_can_read_is_refused_at_enqueue_and_dead_at_once_in_the_queue() {
    let env = TestEnv::new().await;
    let refused = sqlx::query_scalar::<_, String>(
        "SELECT tenant_master.enqueue('ProvisionTenant', '{\"slug\": \"acme\", \"product\": \"demo\", \"owner_email\": \"owner@example.com\"}', 'provision:acme')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap_err();
    let said = refused.as_database_error().unwrap().message().to_owned();
    assert_eq!(said, "ProvisionTenant cannot be enqueued: the payload lacks \"plan\" (a string); nothing was enqueued");
    let refused =
        sqlx::query_scalar::<_, String>("SELECT tenant_master.enqueue('PruneJobs', '{}')").fetch_one(&env.pool).await.unwrap_err();
    assert!(refused.as_database_error().unwrap().message().contains("lacks \"done_older_than_days\""), "{refused}");
    assert_eq!(env.job_count().await, 0, "nothing was enqueued");
    // The README's own example, as written, is accepted.
    let readme = std::fs::read_to_string(tenant_master_tests::repo_root().join("README.md")).unwrap();
    let example = readme.split("```sql\n").find(|block| block.starts_with("SELECT tenant_master.enqueue(")).unwrap();
    let example = &example[..example.find("```").unwrap()];
    let id: String =
        sqlx::query_scalar(sqlx::AssertSqlSafe(example.trim().trim_end_matches(';').to_owned())).fetch_one(&env.pool).await.unwrap();
    sqlx::query("DELETE FROM apalis.jobs WHERE id = $1").bind(&id).execute(&env.pool).await.unwrap();
    sqlx::query("DELETE FROM tenant_master.tenants").execute(&env.pool).await.unwrap();

    // Written past the SQL API, as an older producer or a hand-made INSERT would.
    let bad: String = sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at)
         VALUES (apalis.generate_ulid(), 'PruneJobs', convert_to('{\"done_older_than_days\": \"soon\"}', 'UTF8'), 'Pending', 0, 3, now())
         RETURNING id",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![tenant_master::jobs::noop::Noop { note: None, sleep_ms: None }; 1000])
        .await
        .unwrap();
    drop(conn);
    env.run_worker_until(Duration::from_secs(120), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status NOT IN ('done', 'dead')")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        left == 0
    })
    .await;
    let (status, attempts, error): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, last_error FROM tenant_master.jobs WHERE id = $1")
            .bind(&bad)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "dead");
    assert!(attempts <= 1, "the bad payload was tried {attempts} times");
    let error = error.unwrap();
    assert!(error.starts_with("the payload cannot be read as PruneJobs") && error.contains("nothing was done"), "{error}");
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'Noop' AND status = 'done'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(done, 1000);
}

/// A payload the JSON reader cannot take (nested deeper than its limit, or a number past a
/// double) failed the worker's whole fetch batch and restarted the pool; enqueue refuses it.
#[tokio::test]
async fn enqueue_refuses_payloads_the_json_reader_cannot_take() {
    let env = TestEnv::new().await;
    let deep = format!("{{\"note\": \"x\", \"junk\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    for payload in [deep.as_str(), r#"{"note": "x", "junk": 1e400}"#, r#"{"sleep_ms": 1e400}"#] {
        let refused = sqlx::query_scalar::<_, String>("SELECT tenant_master.enqueue('Noop', $1::jsonb)")
            .bind(payload)
            .fetch_one(&env.pool)
            .await
            .unwrap_err();
        let said = refused.as_database_error().unwrap().message().to_owned();
        assert!(said.starts_with("Noop cannot be enqueued:") && said.ends_with("nothing was enqueued"), "{said}");
    }
    assert_eq!(env.job_count().await, 0);
}

/// Issue 25: `jobs retry` had no `--wait`. With it, the command follows the retried jobs
/// to their end and says how they ended.
#[tokio::test(flavor = "multi_thread")]
async fn retry_can_wait_for_the_retried_job() {
    let env = TestEnv::new().await;
    let mut conn = env.pool.acquire().await.unwrap();
    let id = tenant_master::queue::enqueue(&mut conn, &tenant_master::jobs::noop::Noop { note: Some("retry me".into()), sleep_ms: None })
        .await
        .unwrap();
    // Dead, as after its last failed attempt.
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, last_result = '\"boom\"' WHERE id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await
        .unwrap();
    let logs = tenant_master_tests::TempDir::new("retry-wait");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let out = env.tenantctl(&["jobs", "retry", &id, "--wait", "--timeout", "60s"]);
    let _ = worker.kill();
    let _ = worker.wait();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("1 done, 0 failed again"), "{said}");
}

/// `jobs cancel` by filter (the scheduler once queued a thousand backups by mistake):
/// without a terminal and without --yes it names the count and cancels nothing; with
/// --yes it cancels exactly the matching jobs that have not started.
#[tokio::test]
async fn jobs_cancel_by_filter_counts_and_cancels_only_what_matches() {
    let env = TestEnv::new().await;
    let enqueue = |job_type: &'static str, payload: serde_json::Value| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT tenant_master.enqueue($1, $2, NULL, now() + interval '1 hour')")
                .bind(job_type)
                .bind(payload)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let mut prunes = Vec::new();
    for i in 0..5 {
        prunes.push(enqueue("PruneJobs", serde_json::json!({ "done_older_than_days": 7, "dead_older_than_days": 30, "n": i })).await);
    }
    let noops = [enqueue("Noop", serde_json::json!({})).await, enqueue("Noop", serde_json::json!({})).await];
    let failed = enqueue("PruneJobs", serde_json::json!({ "done_older_than_days": 7, "dead_older_than_days": 30, "n": 9 })).await;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, last_result = '{\"Err\": \"boom\"}', done_at = now() WHERE id = $1",
    )
    .bind(&failed)
    .execute(&env.pool)
    .await
    .unwrap();
    let status = |id: String| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&pool).await.unwrap()
        }
    };

    let asked = env.tenantctl(&["jobs", "cancel", "--pending", "--type", "PruneJobs"]);
    assert_eq!(asked.status.code(), Some(2), "{}", String::from_utf8_lossy(&asked.stderr));
    assert!(String::from_utf8_lossy(&asked.stderr).contains("nothing cancelled; 5 job(s) match"));
    for id in &prunes {
        assert_eq!(status(id.clone()).await, "pending", "nothing cancelled without a yes");
    }
    let typo = env.tenantctl(&["jobs", "cancel", "--pending", "--type", "Backup", "--yes"]);
    assert_eq!(typo.status.code(), Some(2));
    let mixed = env.tenantctl(&["jobs", "cancel", &noops[0], "--type", "Noop"]);
    assert_eq!(mixed.status.code(), Some(2), "ids and a filter together are refused");

    let out = json(&env.tenantctl(&["jobs", "cancel", "--pending", "--type", "PruneJobs", "--yes", "--json", "--actor", "carol"]));
    let mut cancelled: Vec<String> = out["cancelled"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    cancelled.sort();
    let mut expected = prunes.clone();
    expected.sort();
    assert_eq!(cancelled, expected);
    assert_eq!(out["skipped"], serde_json::json!([]));
    for id in &prunes {
        assert_eq!(status(id.clone()).await, "cancelled");
    }
    for id in noops.iter().chain([&failed]) {
        assert_ne!(status(id.clone()).await, "cancelled", "{id} did not match the filter");
    }
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.activity_log WHERE action = 'job.cancelled' AND actor = 'carol'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(logged, 5);

    let out = env.tenantctl(&["jobs", "cancel", "--failed", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled 1 job(s); 0 skipped"));
    assert_eq!(status(failed).await, "cancelled");
    let none = env.tenantctl(&["jobs", "cancel", "--failed", "--yes"]);
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stdout).contains("nothing was cancelled"));

    // Cancelling a cancelled job again: what was asked holds, exit 0.
    let again = env.tenantctl(&["jobs", "cancel", &prunes[0]]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("was cancelled already, by carol"));
    assert_eq!(json(&env.tenantctl(&["jobs", "cancel", &prunes[0], "--json"]))["changed"], false);

    // A delete that has begun can only be finished: not counted, named, and no failure.
    let delete = enqueue("DeleteTenant", serde_json::json!({ "slug": "gone", "actor": "test" })).await;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, last_result = '{\"Err\": \"boom\"}', done_at = now() WHERE id = $1",
    )
    .bind(&delete)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO tenant_master.activity_log (actor, action, details) VALUES ('worker', 'tenant.delete_started', $1)")
        .bind(serde_json::json!({ "job_id": delete }))
        .execute(&env.pool)
        .await
        .unwrap();
    for _ in 0..2 {
        let out = env.tenantctl(&["jobs", "cancel", "--failed", "--yes"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("not cancellable: {delete}")));
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing was cancelled"));
    }
    assert_ne!(status(delete).await, "cancelled");

    // Two admins cancelling the same 200 jobs at once: both succeed, each job once.
    for i in 0..200 {
        enqueue("Noop", serde_json::json!({ "n": i })).await;
    }
    let both: Vec<std::process::Child> = (0..2)
        .map(|_| {
            env.tenantctl_command(&["jobs", "cancel", "--pending", "--type", "Noop", "--yes"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let (left, records): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenant_master.jobs WHERE type = 'Noop' AND status <> 'cancelled'),
                (SELECT count(*) FROM tenant_master.cancelled_jobs c JOIN apalis.jobs j ON j.id = c.job_id WHERE j.job_type = 'Noop')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((left, records), (0, 202));
}

/// The README's table of retry limits and time limits is each job type's `Policy`.
#[test]
fn the_readmes_policy_table_is_the_registry() {
    use tenant_master::{jobs::REGISTRY, queue::Policy};
    let readme = std::fs::read_to_string(tenant_master_tests::repo_root().join("README.md")).unwrap();
    let words = |secs: u64| match secs {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    };
    for job_type in REGISTRY {
        let row = format!("| `{}` | {} | {} |", job_type.name, job_type.policy.max_attempts, words(job_type.policy.timeout_secs));
        assert!(readme.contains(&row), "the README lacks the row {row}");
        let Policy { backoff_factor, backoff_cap_secs, .. } = job_type.policy;
        assert_eq!((backoff_factor, backoff_cap_secs), (4, 3600), "{}: the README says one backoff for all", job_type.name);
    }
}
