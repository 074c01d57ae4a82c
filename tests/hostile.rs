//! The hostile tenant: one tenant in each isolation mode plants every trick it can
//! (triggers on every table, CHECK / default / index-expression functions, a view, a
//! function and an operator named like built-ins), each trying to make its role a
//! superuser, join the admin's role, read or change another tenant, or write the
//! bookkeeping. Each trick is first shown to work against a naive admin connection (in a
//! transaction that is rolled back), so this test fails if the tricks stop working; then
//! every job type runs on the tenant and nothing of that may happen.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tenant_master::{
    backups::Kind,
    ops::{access, access::Change, backup, delete, maintenance, maintenance::Tasks, migrations, restore},
    tenants::Tenant,
};
use tenant_master_tests::TestEnv;

/// The tricks, as the tenant itself installs them. `{s}` is its schema (and role), `{v}`
/// the victim's schema (and role).
const TRICKS: &str = r#"
CREATE TABLE {s}.loot (what text);
-- Every trick calls this: each attempt on its own, errors swallowed, success recorded.
CREATE FUNCTION {s}.grab() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE {s} SUPERUSER'; INSERT INTO {s}.loot VALUES ('superuser'); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE {s} CREATEROLE'; INSERT INTO {s}.loot VALUES ('createrole'); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE {v} CREATEDB'; INSERT INTO {s}.loot VALUES ('victim role'); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'GRANT pg_read_all_data TO {s}'; INSERT INTO {s}.loot VALUES ('read all'); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE format('GRANT %I TO {s}', current_user); INSERT INTO {s}.loot VALUES ('joined ' || current_user);
        EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN INSERT INTO {s}.loot SELECT 'stole ' || name FROM {v}.projects; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN UPDATE {v}.projects SET name = 'pwned'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN INSERT INTO tenant_master_meta.applied_migrations VALUES ('{v}', 999, 'forged', 'x');
        INSERT INTO {s}.loot VALUES ('ledger'); EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN true;
END $f$;
CREATE FUNCTION {s}.grab_int(int) RETURNS boolean LANGUAGE sql AS 'SELECT {s}.grab()';
CREATE FUNCTION {s}.grab_immutable(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN PERFORM {s}.grab(); RETURN $1; END $f$;
CREATE FUNCTION {s}.on_anything() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN PERFORM {s}.grab(); IF TG_LEVEL = 'ROW' THEN RETURN COALESCE(NEW, OLD); END IF; RETURN NULL; END $f$;

CREATE TABLE {s}.check_t (id int CHECK ({s}.grab_int(id)));
CREATE TABLE {s}.default_t (id int, d boolean DEFAULT {s}.grab());
CREATE TABLE {s}.index_t (id int);
CREATE INDEX ON {s}.index_t (({s}.grab_immutable(id)));
CREATE VIEW {s}.view_v AS SELECT {s}.grab() AS g;
-- Named like built-ins: lower(varchar) beats pg_catalog.lower(text) for a varchar
-- argument, and `<` wins wherever the tenant's schema comes first in search_path.
CREATE FUNCTION {s}.lower(varchar) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN PERFORM {s}.grab(); RETURN pg_catalog.lower($1::text); END $f$;
CREATE FUNCTION {s}.less(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM {s}.grab(); RETURN $1 OPERATOR(pg_catalog.<) $2; END $f$;
CREATE OPERATOR {s}.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = {s}.less);

INSERT INTO {s}.check_t VALUES (1);
INSERT INTO {s}.default_t (id) VALUES (1);
INSERT INTO {s}.index_t VALUES (1);
INSERT INTO {s}.projects (name) VALUES ('evil plans');
INSERT INTO {s}.events (kind, created_at) VALUES ('ancient', now() - interval '2 years'), ('recent', now());
-- Triggers on every table, for every event, row and statement level.
DO $d$ DECLARE t text; BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{s}' AND tablename <> 'loot' LOOP
        EXECUTE format('CREATE TRIGGER r BEFORE INSERT OR UPDATE OR DELETE ON {s}.%I FOR EACH ROW EXECUTE FUNCTION {s}.on_anything()', t);
        EXECUTE format('CREATE TRIGGER s AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.%I FOR EACH STATEMENT EXECUTE FUNCTION {s}.on_anything()', t);
    END LOOP;
END $d$;
DELETE FROM {s}.loot;
"#;

/// What each trick does on a naive admin connection; every one must make the tenant a
/// superuser there. `replica` skips triggers so the other tricks are shown alone.
const NAIVE: &[(&str, &str)] = &[
    ("trigger on DELETE", "DELETE FROM {s}.events"),
    ("CHECK function", "SET LOCAL session_replication_role = replica; INSERT INTO {s}.check_t VALUES (2)"),
    ("column default", "SET LOCAL session_replication_role = replica; INSERT INTO {s}.default_t (id) VALUES (2)"),
    ("index expression", "SET LOCAL session_replication_role = replica; INSERT INTO {s}.index_t VALUES (2)"),
    ("view", "SELECT * FROM {s}.view_v"),
    ("function named like a built-in", "SET LOCAL search_path = {s}; SELECT lower('X'::varchar)"),
    ("operator named like a built-in", "SET LOCAL search_path = {s}, pg_catalog; SELECT count(*) FROM {s}.events WHERE created_at < now()"),
];

fn fill(template: &str, tenant: &Tenant, victim: &Tenant) -> String {
    template.replace("{s}", &tenant.schema).replace("{v}", &victim.schema)
}

/// Everything that must not change, whatever job runs on the hostile tenant.
#[derive(Debug, PartialEq, Eq)]
struct Harm {
    role_attributes: Vec<(String, bool)>,
    memberships: Vec<String>,
    loot: Vec<String>,
    victim_rows: Vec<String>,
    victim_ledger: Vec<i64>,
}

async fn harm(env: &TestEnv, evil: &Tenant, victim: &Tenant) -> Harm {
    let mut server = env.admin("postgres").await;
    let role_attributes = sqlx::query_as(
        "SELECT rolname::text, rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication FROM pg_roles
         WHERE rolname IN ($1, $2, $3) ORDER BY 1",
    )
    .bind(&evil.role)
    .bind(format!("{}__op", evil.role))
    .bind(&victim.role)
    .fetch_all(&mut server)
    .await
    .unwrap();
    let memberships = sqlx::query_scalar(
        "SELECT r.rolname || ' in ' || g.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
         WHERE r.rolname IN ($1, $2, $3) OR g.rolname IN ($1, $2, $3) ORDER BY 1",
    )
    .bind(&evil.role)
    .bind(format!("{}__op", evil.role))
    .bind(&victim.role)
    .fetch_all(&mut server)
    .await
    .unwrap();
    // After a delete the tenant's database (dedicated mode) or schema is gone: no loot left.
    let options = tenant_master::db::options(&tenant_master_tests::server_url()).unwrap().database(&evil.database);
    let loot = match PgConnection::connect_with(&options).await {
        Ok(mut evil_db) => sqlx::query_scalar(AssertSqlSafe(format!("SELECT what FROM {}.loot ORDER BY 1", evil.schema)))
            .fetch_all(&mut evil_db)
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut victim_db = env.admin(&victim.database).await;
    let victim_rows = sqlx::query_scalar(AssertSqlSafe(format!("SELECT name FROM {}.projects ORDER BY 1", victim.schema)))
        .fetch_all(&mut victim_db)
        .await
        .unwrap();
    let victim_ledger = sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY 1")
        .bind(&victim.schema)
        .fetch_all(&mut victim_db)
        .await
        .unwrap();
    Harm { role_attributes, memberships, loot, victim_rows, victim_ledger }
}

/// Each trick, run by a naive admin session in a transaction that is rolled back, makes
/// the tenant a superuser: the tricks are live.
async fn tricks_work_against_a_naive_admin(env: &TestEnv, evil: &Tenant, victim: &Tenant) {
    let mut admin = env.admin(&evil.database).await;
    for (trick, sql) in NAIVE {
        let mut tx = admin.begin().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(fill(sql, evil, victim))).execute(&mut *tx).await.unwrap();
        let superuser: bool =
            sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1").bind(&evil.role).fetch_one(&mut *tx).await.unwrap();
        assert!(superuser, "the {trick} trick must work against a naive admin session, or this test proves nothing");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn a_hostile_tenant_gains_nothing_from_any_job() {
    let products = tenant_master_tests::demo_products();
    let third = products.path().join("demo/0003_touch_events.sql");
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let victim = env.provisioned(&env.slug("vic"), "business").await;
    let mut own = env.as_tenant(&victim.slug).await;
    sqlx::query("INSERT INTO projects (name) VALUES ('victim data')").execute(&mut own).await.unwrap();
    drop(own);

    for plan in ["starter", "enterprise"] {
        let evil = env.provisioned(&env.slug(&format!("evil{}", &plan[..1])), plan).await;
        let mut own = env.as_tenant(&evil.slug).await;
        sqlx::raw_sql(AssertSqlSafe(fill(TRICKS, &evil, &victim))).execute(&mut own).await.unwrap();
        drop(own);
        tricks_work_against_a_naive_admin(&env, &evil, &victim).await;
        // Our own admin sessions pin search_path: the built-in-named function is not found.
        let options = tenant_master::db::options(&tenant_master_tests::server_url()).unwrap();
        let mut ours = tenant_master::db::connect_to(&options, &evil.database).await.unwrap();
        let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&mut ours).await.unwrap();
        assert_eq!(path, "pg_catalog");
        sqlx::query("SELECT lower('X'::varchar)").execute(&mut ours).await.unwrap();
        drop(ours);
        let clean = harm(&env, &evil, &victim).await;
        assert!(clean.loot.is_empty() && clean.role_attributes.iter().all(|(_, a)| !a), "{clean:?}");
        assert_eq!(clean.victim_rows, vec!["victim data"]);
        let check = |label: &'static str| {
            let (env, evil, victim, clean) = (&env, &evil, &victim, &clean);
            async move { assert_eq!(&harm(env, evil, victim).await, clean, "{plan}: after {label}") }
        };

        let taken = backup::backup(&app, &evil.slug, Kind::Manual, None, &format!("backup-{plan}")).await.unwrap();
        check("backup").await;
        restore::restore(&app, &evil.slug, taken.id, &format!("restore-{plan}")).await.unwrap();
        check("restore").await;
        maintenance::cleanup(&app, &evil.slug, 365, true, "test").await.unwrap();
        check("cleanup dry run").await;
        let cleaned = maintenance::cleanup(&app, &evil.slug, 365, false, "test").await.unwrap();
        assert_eq!(cleaned.tables, vec![("events".to_owned(), 1)], "the ancient event is gone, the recent one kept");
        check("cleanup").await;
        let plain = Tasks::default();
        for tasks in [
            Tasks { vacuum: true, ..plain },
            Tasks { full: true, ..plain },
            Tasks { analyze: true, ..plain },
            Tasks { reindex: true, ..plain },
        ] {
            maintenance::maintain(&app, &evil.slug, tasks, "test").await.unwrap();
            check("maintenance").await;
        }
        std::fs::write(
            &third,
            "INSERT INTO events (kind) VALUES ('migrated');\nALTER TABLE projects ADD COLUMN IF NOT EXISTS note text;\n",
        )
        .unwrap();
        assert_eq!(migrations::migrate_tenant(&app, &evil.slug).await.unwrap(), vec!["0003_touch_events"]);
        check("product migration").await;
        access::change_access(&app, &evil.slug, Change::Pause, None, "test").await.unwrap();
        check("pause").await;
        // Login held, and the work still runs with the tenant's rights.
        backup::backup(&app, &evil.slug, Kind::Manual, None, &format!("paused-{plan}")).await.unwrap();
        check("backup while paused").await;
        access::change_access(&app, &evil.slug, Change::Resume, None, "test").await.unwrap();
        check("resume").await;
        std::fs::remove_file(&third).unwrap();

        delete::delete(&app, &evil.slug, Some(evil.id), &format!("delete-{plan}"), "test").await.unwrap();
        let after = harm(&env, &evil, &victim).await;
        assert_eq!((after.victim_rows, after.victim_ledger), (clean.victim_rows.clone(), clean.victim_ledger.clone()), "{plan}: delete");
        assert!(after.role_attributes.iter().all(|(name, a)| name == &victim.role && !a), "{plan}: delete: {:?}", after.role_attributes);
        assert_eq!(after.memberships, vec![format!("{0}__op in {0}", victim.role)], "{plan}: delete left memberships");
    }
}

/// The operator role, as an admin sees it: may it log in, its settings anywhere, its sessions.
async fn operator_state(env: &TestEnv, tenant: &Tenant) -> (bool, i64, i64) {
    let mut server = env.admin("postgres").await;
    sqlx::query_as(
        "SELECT r.rolcanlogin,
                (SELECT count(*) FROM pg_db_role_setting s WHERE s.setrole = r.oid),
                (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname)
         FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(format!("{}__op", tenant.role))
    .fetch_one(&mut server)
    .await
    .unwrap()
}

/// Tenant code runs in the operator's session during a job, so it can change that role's
/// password and settings (any role may) and keep a session of it open. When the job is
/// over none of that lasts: no login, no settings, no session; and holding the tenant's
/// login (pause) holds the operator's too.
#[tokio::test]
async fn tenant_code_cannot_keep_the_operator_role() {
    let env = TestEnv::new().await;
    let app = env.app();
    let evil = env.provisioned(&env.slug("keep"), "starter").await;
    let mut own = env.as_tenant(&evil.slug).await;
    let plant = format!(
        r#"CREATE TABLE {s}.loot (what text);
        CREATE FUNCTION {s}.keep() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            INSERT INTO {s}.loot VALUES (current_user);
            EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'known to the tenant');
            EXECUTE format('ALTER ROLE %I SET work_mem = %L', current_user, '64kB');
            EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = 1', current_user, current_database());
            RETURN OLD;
        END $f$;
        CREATE TRIGGER keep BEFORE DELETE ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.keep();
        INSERT INTO {s}.events (kind, created_at) VALUES ('ancient', now() - interval '2 years');"#,
        s = evil.schema
    );
    sqlx::raw_sql(AssertSqlSafe(plant)).execute(&mut own).await.unwrap();
    drop(own);

    // The cleanup job, as the worker runs it: inside the job's scope.
    let limit = std::time::Duration::from_secs(600);
    let cleaned = tenant_master::tenant_session::scoped(limit, maintenance::cleanup(&app, &evil.slug, 365, false, "test")).await.unwrap();
    assert_eq!(cleaned.tables, vec![("events".to_owned(), 1)]);
    // The attack ran, as the operator role: it did change that role's password and settings.
    let mut admin = env.admin(&evil.database).await;
    let ran_as: Vec<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT what FROM {}.loot", evil.schema))).fetch_all(&mut admin).await.unwrap();
    assert_eq!(ran_as, vec![format!("{}__op", evil.role)]);
    // ... and none of it lasts past the job.
    assert_eq!(operator_state(&env, &evil).await, (false, 0, 0), "operator login, settings, sessions after the job");
    let options = tenant_master::db::options(&tenant_master_tests::server_url())
        .unwrap()
        .username(&format!("{}__op", evil.role))
        .password("known to the tenant")
        .database(&evil.database);
    let err = PgConnection::connect_with(&options).await.unwrap_err();
    assert!(err.to_string().contains("not permitted to log in"), "{err}");

    // An operator session open outside a job scope (an admin command) ends with a pause.
    let access = {
        let mut cp = env.pool.acquire().await.unwrap();
        tenant_master::tenant_session::TenantAccess::prepare(&app.config, &mut cp, &evil).await.unwrap()
    };
    assert_eq!(operator_state(&env, &evil).await, (false, 0, 0), "prepared, the operator still cannot log in");
    let mut session = access.connect().await.unwrap();
    // The login was open only while that session connected, and would have expired soon.
    let valid_until: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1")
        .bind(access.role())
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let valid_until = valid_until.expect("an operator login always ends");
    assert!(valid_until < chrono::Utc::now() + chrono::Duration::seconds(15), "{valid_until}");
    assert_eq!(operator_state(&env, &evil).await, (false, 0, 1), "one session in, no login open");
    access::change_access(&app, &evil.slug, Change::Pause, None, "test").await.unwrap();
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err(), "the operator's session survived the pause");
    assert_eq!(operator_state(&env, &evil).await, (false, 0, 0));
}

/// A tenant that takes read rights on its own tables away from itself cannot make its
/// backups, and so its own delete, fail: the dump reads everything, and a table that
/// forces row-level security on its owner is refused in one sentence, not half dumped.
#[tokio::test]
async fn a_tenant_cannot_make_its_backup_fail_or_miss_rows() {
    let env = TestEnv::new().await;
    let app = env.app();
    let evil = env.provisioned(&env.slug("hide"), "starter").await;
    let mut own = env.as_tenant(&evil.slug).await;
    sqlx::query("INSERT INTO projects (name) VALUES ('kept')").execute(&mut own).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("REVOKE ALL ON {s}.projects FROM {s}; REVOKE ALL ON {s}.projects FROM PUBLIC", s = evil.schema)))
        .execute(&mut own)
        .await
        .unwrap();
    // Without our repair the tenant's own rights no longer read the table.
    let err = sqlx::query("SELECT count(*) FROM projects").execute(&mut own).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(own);
    let taken = backup::backup(&app, &evil.slug, Kind::Manual, None, "hide-backup").await.unwrap();
    let list = tenant_master::pg_tools::list_archive(&taken.path()).await.unwrap();
    assert!(list.contains("TABLE DATA") && list.contains("projects"), "{list}");

    let mut own = env.as_tenant(&evil.slug).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {s}.projects ENABLE ROW LEVEL SECURITY; ALTER TABLE {s}.projects FORCE ROW LEVEL SECURITY",
        s = evil.schema
    )))
    .execute(&mut own)
    .await
    .unwrap();
    drop(own);
    let err = backup::backup(&app, &evil.slug, Kind::Manual, None, "hide-forced").await.unwrap_err();
    assert!(err.to_string().contains("force row-level security") && err.to_string().contains("projects"), "{err}");
}

/// Issue 24: tenant roles had no CONNECTION LIMIT, so one tenant opening sessions could use
/// up the server's `max_connections` and make other tenants' jobs fail. A tenant's role
/// may hold `tenant_max_connections` sessions; an older tenant gets the limit with its next
/// job.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_hold_more_sessions_than_its_limit() {
    let mut env = TestEnv::new().await;
    env.config.products.tenant_max_connections = 3;
    env.config.plans.insert("business".into(), tenant_master::config::PlanConfig { max_connections: Some(5) });
    let t = env.provisioned(&env.slug("greedy"), "starter").await;
    let bigger = env.provisioned(&env.slug("bigger"), "business").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(env.as_tenant(&t.slug).await);
    }
    let refused = env.try_as_tenant(&t.slug).await.expect_err("a fourth session of the tenant");
    assert!(refused.to_string().contains("too many connections for role"), "{refused}");
    drop(held);
    // An older tenant (no limit yet) gets it from its next job.
    let mut admin = env.admin("postgres").await;
    tenant_master::db::ddl(&mut admin, "ALTER ROLE %I CONNECTION LIMIT -1", &[&t.role]).await.unwrap();
    tenant_master::ops::backup::backup(&env.app(), &t.slug, tenant_master::backups::Kind::Manual, None, "job-limit").await.unwrap();
    let limit: i32 =
        sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1").bind(&t.role).fetch_one(&mut admin).await.unwrap();
    assert_eq!(limit, 3);
    // A plan may have its own limit ([plans.business] max_connections).
    let limit: i32 =
        sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1").bind(&bigger.role).fetch_one(&mut admin).await.unwrap();
    assert_eq!(limit, 5);
    // A plan change takes the new plan's limit at once, not with the next job.
    tenant_master::jobs::change_plan::change(&env.pool, &env.config, &t.slug, "business", None, "test").await.unwrap();
    let limit: i32 =
        sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1").bind(&t.role).fetch_one(&mut admin).await.unwrap();
    assert_eq!(limit, 5);
}

/// A tenant holding an advisory lock of ours stalls no other tenant.
mod advisory_locks {
    use std::time::Duration;
    use tenant_master::ops::migrations;
    use tenant_master_tests::TestEnv;

    /// Finding 1. A tenant in a shared database takes the ledger's advisory lock (a constant
    /// in ledger.rs; advisory locks need no privilege) and holds it: every other tenant's
    /// migration in that database (and any provisioning there) hangs in `ledger::ensure`.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tenant_holding_an_advisory_lock_stalls_no_other_tenant() {
        let products = tenant_master_tests::demo_products();
        let dir = products.path().to_owned();
        let env = TestEnv::with_products(products).await;
        let app = env.app();
        let evil = env.provisioned(&env.slug("evil"), "starter").await;
        let victim = env.provisioned(&env.slug("victim"), "starter").await;
        assert_eq!(evil.database, victim.database, "both share one database");
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\n");

        let mut own = env.as_tenant(&evil.slug).await;
        // The key the ledger setup used to lock on (any role may take an advisory lock).
        sqlx::query("SELECT pg_advisory_lock(128013335622753)").execute(&mut own).await.expect("any role may take an advisory lock");

        let migrating = migrations::migrate_tenant_to(&app, &victim.slug, Some(victim.id), Some(3), "review");
        let res = tokio::time::timeout(Duration::from_secs(10), migrating).await;
        assert!(matches!(res, Ok(Ok(_))), "the victim's migration must not wait for the tenant's lock: {res:?}");
        assert_eq!(env.ledger(&victim).await, vec![1, 2, 3]);
        let new = tenant_master::tenants::NewTenant::parse(&env.slug("newbie"), "demo", "starter", "o@example.com", None, None).unwrap();
        let res =
            tokio::time::timeout(Duration::from_secs(10), tenant_master::jobs::provision_tenant::provision(&app, &new, "review")).await;
        assert!(matches!(res, Ok(Ok(_))), "provisioning must not wait for the tenant's lock: {res:?}");
    }
}
