//! A suspended tenant's night (issue 24), on a private server set up as production runs
//! one: tenant roles log in with passwords (scram-sha-256) and every connection is logged.
//!
//! The tenant planted code that runs inside our jobs: a DELETE trigger (the nightly
//! cleanup runs it) and an index expression (ANALYZE and REINDEX run it) that each leave
//! the tenant's role for the operator's and set the operator's password to one the tenant
//! knows, then linger. Meanwhile the tenant tries to log in, as the operator with that
//! password and as itself with its own, over and over, through the whole night's
//! schedules. The server's own log must show no login of either role but our sessions'.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tenant_master::{
    ops::{access, access::Change},
    schedule::{self, Schedule},
};
use tenant_master_tests::{private_server::PrivateServer, TestEnv};

/// The tenant's code: record that it ran, take the operator's role and set its password.
const PLANT: &str = r#"
CREATE TABLE {s}.loot (what text);
CREATE FUNCTION {s}.take_operator(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO {s}.loot VALUES (what);
    BEGIN
        RESET ROLE;
        EXECUTE format('ALTER ROLE %I PASSWORD %L', session_user, 'known to the tenant');
        INSERT INTO {s}.loot VALUES (what || ': password set');
        PERFORM pg_sleep(2);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $f$;
CREATE FUNCTION {s}.on_delete() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN PERFORM {s}.take_operator('delete trigger'); RETURN OLD; END $f$;
CREATE TRIGGER on_delete BEFORE DELETE ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.on_delete();
CREATE FUNCTION {s}.key(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN PERFORM {s}.take_operator('index expression'); RETURN $1; END $f$;
CREATE TABLE {s}.indexed (id int);
INSERT INTO {s}.indexed SELECT generate_series(1, 3);
CREATE INDEX ON {s}.indexed (({s}.key(id)));
INSERT INTO {s}.events (kind, created_at) VALUES ('ancient', now() - interval '2 years');
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_tenant_never_logs_in_through_a_nights_schedules() {
    let server = PrivateServer::start_with_passwords();
    let mut env = TestEnv::on_server(&server.url()).await;
    // No spread: the night's jobs run at once.
    for (name, mut schedule) in env.config.scheduler.merged() {
        schedule.spread_minutes = 0;
        env.config.scheduler.schedules.insert(name, schedule);
    }
    let app = env.app();
    let evil = env.provisioned(&env.slug("night"), "starter").await;
    let calm = env.provisioned(&env.slug("calm"), "starter").await;
    let mut own = env.as_tenant(&evil.slug).await;
    sqlx::raw_sql(AssertSqlSafe(PLANT.replace("{s}", &evil.schema))).execute(&mut own).await.unwrap();
    own.close().await.unwrap();
    let own_url = {
        let mut cp = env.pool.acquire().await.unwrap();
        tenant_master::tenants::credentials_url(&mut cp, &env.config, &evil.slug).await.unwrap()
    };
    access::change_access(&app, &evil.slug, Change::Suspend, Some("unpaid"), "test").await.unwrap();
    let log_from = server.log().len();

    // The tenant knocks all night: as the operator with the password its code sets, and as
    // itself with its own.
    let operator = format!("{}__op", evil.role);
    let as_operator = tenant_master::db::options(&server.url())
        .unwrap()
        .username(&operator)
        .password("known to the tenant")
        .database(&evil.database)
        .application_name("attacker");
    let as_itself = own_url.parse::<sqlx::postgres::PgConnectOptions>().unwrap().application_name("attacker");
    let (stop, tries, got_in) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let knocking = {
        let (stop, tries, got_in, as_operator) = (stop.clone(), tries.clone(), got_in.clone(), as_operator.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for options in [&as_operator, &as_itself] {
                    tries.fetch_add(1, Ordering::Relaxed);
                    if let Ok(conn) = options.connect().await {
                        got_in.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.close().await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The night: every default schedule, for a slot well in the past.
    let now = Utc::now() - chrono::Duration::hours(2);
    for name in ["nightly_backup", "daily_cleanup", "weekly_maintenance", "monthly_vacuum"] {
        let s = Schedule::find(&env.config.scheduler, name).unwrap();
        schedule::fan_out(&env.pool, &s, s.current_slot(now).unwrap(), "test").await.unwrap();
    }
    let pool = env.pool.clone();
    env.run_worker_until(Duration::from_secs(300), || {
        let pool = pool.clone();
        async move {
            let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status NOT IN ('done', 'dead')")
                .fetch_one(&pool)
                .await
                .unwrap();
            open == 0
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    knocking.await.unwrap();

    let jobs: Vec<(String, String, String)> =
        sqlx::query_as("SELECT type, coalesce(tenant, '-'), status FROM tenant_master.jobs ORDER BY type, tenant")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    for t in [&evil, &calm] {
        for job in ["BackupTenant", "Cleanup", "Vacuum"] {
            assert!(
                jobs.iter().any(|(ty, slug, status)| ty == job && slug == &t.slug && status == "done"),
                "{job} of {}: {jobs:?}",
                t.slug
            );
        }
    }
    // The tenant's code did run inside our jobs and did set the operator's password.
    let mut admin = env.admin(&evil.database).await;
    let loot: Vec<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT what FROM {}.loot", evil.schema))).fetch_all(&mut admin).await.unwrap();
    assert!(loot.iter().any(|w| w == "delete trigger: password set"), "{loot:?}");
    assert!(loot.iter().any(|w| w.starts_with("index expression")), "{loot:?}");

    // Between our sessions the password the tenant set is expired, not only LOGIN taken:
    // the server checks the password against the role's row before it reads LOGIN again,
    // so an attempt checked just before the next window opens would get in through it.
    // LOGIN given back by hand stands for that window.
    let (can_login, expired): (bool, bool) =
        sqlx::query_as("SELECT rolcanlogin, rolvaliduntil < now() - interval '1 year' FROM pg_roles WHERE rolname = $1")
            .bind(&operator)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(!can_login && expired, "operator role after the night: login {can_login}, password expired {expired}");
    let mut window = env.admin("postgres").await;
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER ROLE \"{operator}\" LOGIN"))).execute(&mut window).await.unwrap();
    let through_window = as_operator.connect().await;
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER ROLE \"{operator}\" NOLOGIN"))).execute(&mut window).await.unwrap();
    let refused = through_window.expect_err("the tenant's password let it in through a login window").to_string();
    assert!(refused.contains("password authentication failed"), "{refused}");

    // Not one login: neither the client's nor the server's log says otherwise.
    let tries = tries.load(Ordering::Relaxed);
    assert!(tries > 20, "the tenant tried {tries} times only");
    assert_eq!(got_in.load(Ordering::Relaxed), 0, "the tenant logged in during the night");
    // The server logs "connection authorized" once the password checks out, before it
    // looks at LOGIN; a session that then was refused has a FATAL line of the same pid.
    let log = server.log()[log_from..].to_owned();
    let pid = |line: &str| line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(pid, _)| pid.to_owned());
    let refused_pids: Vec<String> = log.lines().filter(|l| l.contains("FATAL")).filter_map(pid).collect();
    let logged_in: Vec<&str> =
        log.lines().filter(|l| l.contains("connection authorized:") && !pid(l).is_some_and(|p| refused_pids.contains(&p))).collect();
    let ours = logged_in.iter().filter(|l| l.contains(&format!("user={operator} "))).count();
    assert!(ours > 0, "the night's jobs logged in as the operator (the log is read right): {logged_in:?}");
    let theirs: Vec<&&str> =
        logged_in.iter().filter(|l| l.contains("application_name=attacker") || l.contains(&format!("user={} ", evil.role))).collect();
    assert!(theirs.is_empty(), "logins of the suspended tenant: {theirs:?}");
    let refused = log.lines().filter(|l| l.contains("FATAL") && l.contains(&evil.role)).count();
    assert!(refused > 0, "the server refused the tenant's attempts: {log}");
}
