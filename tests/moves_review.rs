//! An adversarial review of MoveTenant (issue 14) proved these: a deleted tenant's copy
//! left on another server for the next tenant of the slug, a dead move's ledger rows, a
//! delete that never finishes, two pending requests undoing each other, an upgraded tenant
//! that cannot be deleted, a move of a tenant whose restore stopped part way. Each test
//! failed on the code before its fix.

use tenant_master::{
    fault,
    jobs::move_tenant::{self, Requested},
    jobs::{change_plan::Changed, provision_tenant as provision},
    ops::{delete, move_cleanup, moves, prune},
    tenants::NewTenant,
};
use tenant_master_tests::{
    admin_on, database_exists,
    moves::{add_alias_of_the_test_server, payload, request},
    private_server::PrivateServer,
    schemas_like, stderr, TestEnv,
};

fn add_second(env: &TestEnv, second: &PrivateServer) {
    let out = env.add_host("second", &second.url());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A cross-host move is cut short after the copy reached the second server (SIGKILL; the
/// job waits for its retry). A careless admin deletes the tenant meanwhile. The move's retry
/// is refused (tenant deleted) and its on_dead returns early for a deleted tenant. The full
/// copy stays on the second server; once the slug is free, a new customer created on that
/// host with the same slug adopts the role, the schema and the ledger: it sees the deleted
/// tenant's rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_short_move_leaves_nothing_for_the_next_tenant_of_the_slug() {
    let second = PrivateServer::start();
    let mut env = TestEnv::new().await;
    env.config.backups.keep_deleted_days = 0;
    add_second(&env, &second);
    let t = env.provisioned(&env.slug("ghost"), "starter").await;
    env.add_projects(&t.slug, "secret-", 50).await;
    let req = request(&t, Some("second"), None);
    fault::arm(&t.slug, "move:restored");
    let err = moves::move_tenant(&env.app(), &req, "move-ghost").await.unwrap_err();
    assert!(err.is_injected(), "{err}");

    // The careless admin: delete while the move waits for its retry.
    delete::delete(&env.app(), &t.slug, Some(t.id), "delete-ghost", "admin").await.expect("delete");
    assert_eq!(env.registry(&t.slug).await.status, "deleted");
    // The move's retry is refused; the job gives up and its on_dead runs.
    let err = moves::move_tenant(&env.app(), &req, "move-ghost").await.unwrap_err();
    println!("retry of the move: {err}");
    moves::recover(&env.app(), &req, "move-ghost").await.unwrap();
    let left = schemas_like(&second.url(), &t.database, &t.role).await;
    println!("schemas of the deleted tenant left on the second server: {left:?}");

    // Weeks later the slug is free again; a new customer takes it, on host 'second'.
    prune::prune_deleted_tenant_backups(&env.pool, 0).await.unwrap();
    let new = NewTenant::parse(&t.slug, "demo", "starter", "new-owner@example.com", None, Some("second")).unwrap();
    provision::provision(&env.app(), &new, "test").await.expect("provision the new tenant");
    let mut own = env.as_tenant(&t.slug).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE name LIKE 'secret-%'").fetch_one(&mut own).await.unwrap();
    assert_eq!(seen, 0, "the new tenant of the slug sees {seen} rows of the deleted tenant (left on 'second': {left:?})");
}

/// Same as above without a crash+delete: a move that gives up for good (on_dead) after the
/// copy reached the target leaves the role and the ledger rows there. A later tenant of the
/// slug on that host gets its migrations skipped: no tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_move_leaves_no_ledger_rows_for_a_later_tenant() {
    let second = PrivateServer::start();
    let mut env = TestEnv::new().await;
    env.config.backups.keep_deleted_days = 0;
    add_second(&env, &second);
    let t = env.provisioned(&env.slug("ledger"), "starter").await;
    let req = request(&t, Some("second"), None);
    fault::arm(&t.slug, "move:restored");
    assert!(moves::move_tenant(&env.app(), &req, "move-ledger").await.unwrap_err().is_injected());
    // The last attempt died: on_dead.
    moves::recover(&env.app(), &req, "move-ledger").await.unwrap();
    let mut second_db = admin_on(&second.url(), &t.database).await;
    let ledger_left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master_meta.applied_migrations WHERE schema_name = $1")
        .bind(&t.schema)
        .fetch_one(&mut second_db)
        .await
        .unwrap();
    println!("ledger rows left on the second server after on_dead: {ledger_left}");
    delete::delete(&env.app(), &t.slug, Some(t.id), "delete-ledger", "admin").await.expect("delete");
    prune::prune_deleted_tenant_backups(&env.pool, 0).await.unwrap();
    let new = NewTenant::parse(&t.slug, "demo", "starter", "new-owner@example.com", None, Some("second")).unwrap();
    provision::provision(&env.app(), &new, "test").await.expect("provision the new tenant");
    let mut own = env.as_tenant(&t.slug).await;
    let has_projects: bool = sqlx::query_scalar("SELECT to_regclass('projects') IS NOT NULL").fetch_one(&mut own).await.unwrap();
    assert!(has_projects, "the new tenant's migrations were skipped ({ledger_left} stale ledger rows left by on_dead): it has no tables");
}

/// Same host: shared -> dedicated, cut short after the copy; the admin deletes the tenant.
/// The delete cannot drop the role (it owns the copy in the dedicated database): it never
/// finishes, and the copy stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_during_a_pending_move_finishes() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("stuck"), "starter").await;
    env.add_projects(&t.slug, "row-", 20).await;
    let req = request(&t, None, Some("enterprise"));
    fault::arm(&t.slug, "move:restored");
    assert!(moves::move_tenant(&env.app(), &req, "move-stuck").await.unwrap_err().is_injected());
    let target = tenant_master::naming::TenantNames::derive(
        &env.config.database_prefix,
        "demo",
        &tenant_master::naming::Slug::parse(&t.slug).unwrap(),
        tenant_master::naming::Isolation::Database,
    )
    .unwrap();
    let first = delete::delete(&env.app(), &t.slug, Some(t.id), "delete-stuck", "admin").await;
    println!("delete: {first:?}");
    // The move's retry is refused, it gives up, on_dead runs; then the delete is retried.
    let retry = moves::move_tenant(&env.app(), &req, "move-stuck").await;
    println!("move retry: {:?}", retry.as_ref().err());
    moves::recover(&env.app(), &req, "move-stuck").await.unwrap();
    let second = delete::delete(&env.app(), &t.slug, Some(t.id), "delete-stuck", "admin").await;
    println!("delete retried: {second:?}");
    let server = tenant_master_tests::server_url();
    let left = schemas_like(&server, &target.database, &t.role).await;
    let status = env.registry(&t.slug).await.status;
    let db_left = database_exists(&server, &target.database).await;
    assert!(first.is_ok(), "the delete failed: {first:?} (copy left: {left:?})");
    assert_eq!(status, "deleted", "retried delete: {second:?}; dedicated database left: {db_left}");
}

/// change-plan to enterprise, then `tenant move --host second`, both pending: each froze
/// the other setting when it was asked (the move: isolation 'schema'; the plan change: host
/// 'default'), so run in order the tenant ended on plan enterprise in a shared database.
/// Now a second request is refused while a move is under way, and a move works its target
/// out from the registry when it first runs, so the plan's isolation holds.
#[tokio::test(flavor = "multi_thread")]
async fn change_plan_then_move_keeps_the_plan_isolation_invariant() {
    let second = PrivateServer::start();
    let env = TestEnv::new().await;
    add_second(&env, &second);
    let t = env.provisioned(&env.slug("twice"), "starter").await;
    env.add_projects(&t.slug, "row-", 10).await;
    let Changed::Moving { job_id: j1, .. } =
        tenant_master::jobs::change_plan::change(&env.pool, &env.config, &t.slug, "enterprise", None, "admin").await.unwrap()
    else {
        panic!("expected a move")
    };
    let refused = move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("second"), None, "admin").await.unwrap_err().to_string();
    assert!(refused.contains("a move of") && refused.contains(&j1), "{refused}");
    let refused =
        tenant_master::jobs::change_plan::change(&env.pool, &env.config, &t.slug, "lifetime", None, "admin").await.unwrap_err().to_string();
    assert!(refused.contains("under way"), "{refused}");
    let p1 = payload(&env, &j1).await;
    moves::move_tenant(&env.app(), &p1.request, &j1).await.unwrap();
    sqlx::query("DELETE FROM apalis.jobs WHERE id = $1").bind(&j1).execute(&env.pool).await.unwrap(); // as if done and pruned
    let Requested::Enqueued { job_id: j2, .. } =
        move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("second"), None, "admin").await.unwrap()
    else {
        panic!("expected a move")
    };
    moves::move_tenant(&env.app(), &payload(&env, &j2).await.request, &j2).await.unwrap();
    let after = env.registry(&t.slug).await;
    assert_eq!((after.plan.as_str(), after.isolation.as_str(), after.host.as_str()), ("enterprise", "database", "second"));
}

/// The most common upgrade: starter -> enterprise on one host, finished cleanly. Later the
/// tenant is deleted (before and after its kept copy is pruned): the operator role still
/// holds the ledger grants it got in the shared database while it lived there, and nothing
/// revokes them, so DROP ROLE fails and the delete never finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_upgraded_to_a_dedicated_database_on_the_same_host_can_be_deleted() {
    let env = TestEnv::new().await;
    let mut failures = Vec::new();
    for (i, prune_first) in [false, true].into_iter().enumerate() {
        let t = env.provisioned(&env.slug(&format!("upgraded{i}")), "starter").await;
        env.add_projects(&t.slug, "row-", 10).await;
        moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), &format!("move-up-{i}")).await.unwrap();
        if prune_first {
            sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second' WHERE tenant_id = $1")
                .bind(t.id)
                .execute(&env.pool)
                .await
                .unwrap();
            assert_eq!(move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 1);
        }
        {
            let mut shared = env.admin(&t.database).await;
            let grants: (bool, bool) = sqlx::query_as("SELECT has_schema_privilege($1, 'tenant_master_meta', 'USAGE'), has_function_privilege($1, 'tenant_master_meta.record_migration(bigint,text,text)', 'EXECUTE')")
                .bind(format!("{}__op", t.role)).fetch_one(&mut shared).await.unwrap();
            println!("operator's grants left in the shared database {}: {grants:?}", t.database);
        }
        let deleted = delete::delete(&env.app(), &t.slug, Some(t.id), &format!("delete-up-{i}"), "admin").await;
        if let Err(e) = deleted {
            failures.push(format!("kept copy pruned first: {prune_first}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A restore is cut short by a real crash while pg_restore fills the new live schema (state:
/// the live data renamed `<schema>__restore_aside`, an empty `<schema>` in its place, login
/// held, exactly what `replace_schema` leaves before pg_restore commits). A move runs before
/// the restore's retry: it copies the empty live schema, verifies 0 = 0 rows and switches.
/// The restore then gives up (on_dead) and puts "back" nothing at the new place: the tenant
/// is live on an empty schema and its rows sit in the old database under a name nothing
/// ever looks at again.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_after_an_interrupted_restore_is_refused_and_loses_nothing() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("halfrestored"), "starter").await;
    env.add_projects(&t.slug, "row-", 100).await;
    {
        // The state a SIGKILL of the restore leaves between CREATE SCHEMA and pg_restore's commit.
        let mut db = env.admin(&t.database).await;
        let aside = format!("{}__restore_aside", t.schema);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE \"{r}\" NOLOGIN; ALTER SCHEMA \"{s}\" RENAME TO \"{aside}\"; CREATE SCHEMA \"{s}\" AUTHORIZATION \"{r}\";",
            r = t.role,
            s = t.schema
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let moved = moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-half").await;
    let refused = moved.expect_err("a move of a half-restored tenant is refused").to_string();
    assert!(refused.contains("restore that stopped part way"), "{refused}");
    // The restore job's last attempt gives up: its on_dead puts the data back.
    tenant_master::ops::restore::recover(&env.app(), &t.slug, 0, "restore-half").await.unwrap();
    let after = env.registry(&t.slug).await;
    let mut db = env.admin(&after.database).await;
    let live_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{}\".projects", t.schema)))
        .fetch_one(&mut db)
        .await
        .unwrap_or(-1);
    let server = tenant_master_tests::server_url();
    let old = schemas_like(&server, &t.database, &t.role).await;
    assert_eq!(
        live_rows, 100,
        "live copy in {} has {live_rows} rows (-1: no projects table); the rows are left in {}: {old:?}",
        after.database, t.database
    );
}

/// Second review. One server registered under two host names (by SQL: `host add` refuses
/// it). A tenant that lives on the alias, its kept copy on the first name pruned: the "other" host is its own
/// server, so its roles must not be released there (DROP OWNED would take its live schema).
#[tokio::test(flavor = "multi_thread")]
async fn a_server_under_two_names_keeps_its_tenants_roles_when_a_copy_is_pruned() {
    let env = TestEnv::new().await;
    add_alias_of_the_test_server(&env).await;
    let t = env.provisioned(&env.slug("aliased"), "starter").await;
    env.add_projects(&t.slug, "row-", 30).await;
    moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-alias").await.unwrap();
    // The registry names the tenant's server by its other name (a move to an alias is
    // refused now, see below; a registry edited by hand gets here too).
    sqlx::query("UPDATE tenant_master.tenants SET host = 'alias' WHERE id = $1").bind(t.id).execute(&env.pool).await.unwrap();
    sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second'").execute(&env.pool).await.unwrap();
    assert_eq!(move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 1);
    let mut own = env.as_tenant(&t.slug).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
    assert_eq!(rows, 30, "the tenant and its data survive the prune on its own server's other name");
}

/// Third review. A move to the alias of its own server: the "target" database is the
/// tenant's live one, which the copy would drop before anything is held or backed up. Now
/// refused, nothing touched. Dedicated and shared.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_to_its_own_server_under_another_name_is_refused_and_loses_nothing() {
    let env = TestEnv::new().await;
    add_alias_of_the_test_server(&env).await;
    for plan in ["enterprise", "starter"] {
        let t = env.provisioned(&env.slug(&format!("al{}", &plan[..2])), plan).await;
        env.add_projects(&t.slug, "row-", 30).await;
        let refused = moves::move_tenant(&env.app(), &request(&t, Some("alias"), None), &format!("move-al-{plan}")).await;
        let refused = refused.expect_err("refused").to_string();
        assert!(refused.contains("may be the same PostgreSQL server"), "{refused}");
        let refused = move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("alias"), None, "admin").await.unwrap_err().to_string();
        assert!(refused.contains("may be the same PostgreSQL server"), "{refused}");
        let mut own = env.as_tenant(&t.slug).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
        assert_eq!(rows, 30, "{plan}");
    }
}

/// Third review. A move crashed after its hold gives up while another job of the tenant
/// holds its lock: the cleanup waited `tenant_lock_wait_secs`, failed, and nothing ran it
/// again, so the active tenant's login stayed held. Now it waits for the lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_moves_cleanup_waits_for_another_job_of_the_tenant() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("rcbusy"), "starter").await;
    env.add_projects(&t.slug, "row-", 5).await;
    fault::arm(&t.slug, "move:held");
    moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-rcbusy").await.unwrap_err();
    let other = tenant_master::lock::TenantLock::acquire(&env.config, &t.slug).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        other.release().await;
    });
    let mut config = env.config.clone();
    config.worker.tenant_lock_wait_secs = 1;
    let app = tenant_master::App::new(config, env.pool.clone());
    moves::recover(&app, &request(&t, None, Some("enterprise")), "move-rcbusy").await.unwrap();
    release.await.unwrap();
    let mut own = env.as_tenant(&t.slug).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
    assert_eq!(rows, 5, "the active tenant logs in again after the dead move");
}
