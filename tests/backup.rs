//! Backups and restores: round trips in both modes, retention, damaged files, failed
//! restores, crashes at every step, a full disk, locks and slots.

use std::{path::Path, time::Duration};

use sqlx::PgConnection;
use tenant_master::{
    backups::{self, Kind},
    error::{Error, JobOutcome},
    fault,
    lock::{HostSlot, TenantLock},
    ops::{backup::backup, restore::restore},
    tenants::Tenant,
};
use tenant_master_tests::{TempDir, TestEnv};

async fn names(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM projects ORDER BY name").fetch_all(conn).await.unwrap()
}

async fn write(conn: &mut PgConnection, sql: &'static str) {
    sqlx::raw_sql(sql).execute(conn).await.unwrap();
}

/// Schemas of the tenant's database whose name starts with the tenant's schema name.
async fn schemas(env: &TestEnv, tenant: &Tenant) -> Vec<String> {
    let mut db = env.admin(&tenant.database).await;
    sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1")
        .bind(&tenant.schema)
        .fetch_all(&mut db)
        .await
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

async fn finished(env: &TestEnv, tenant: &Tenant) -> Vec<backups::Backup> {
    let mut conn = env.pool.acquire().await.unwrap();
    backups::list(&mut conn, tenant.id).await.unwrap()
}

#[tokio::test]
async fn restore_brings_back_exactly_the_backed_up_rows_in_both_modes() {
    let env = TestEnv::new().await;
    let app = env.app();
    for plan in ["business", "lifetime"] {
        let tenant = env.provisioned(&env.slug(&format!("rt{}", &plan[..1])), plan).await;
        let mut own = env.as_tenant(&tenant.slug).await;
        write(&mut own, "INSERT INTO projects (name) VALUES ('alpha'), ('beta'); INSERT INTO events (kind) VALUES ('e1')").await;
        let taken = backup(&app, &tenant.slug, Kind::Manual, None, "job-backup").await.unwrap();
        assert!(taken.verified && taken.sha256.as_ref().is_some_and(|s| s.len() == 64));
        assert!(Path::new(&taken.file_path).is_file());

        write(&mut own, "DELETE FROM projects WHERE name = 'alpha'; INSERT INTO projects (name) VALUES ('gamma')").await;
        drop(own);
        let done = restore(&app, &tenant.slug, taken.id, &format!("job-restore-{plan}")).await.unwrap();

        let mut own = env.as_tenant(&tenant.slug).await;
        assert_eq!(names(&mut own).await, vec!["alpha", "beta"], "{plan}: rows as at backup time");
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut own).await.unwrap();
        assert_eq!(events, 1);
        write(&mut own, "INSERT INTO projects (name) VALUES ('after-restore')").await;
        assert_eq!(schemas(&env, &tenant).await, vec![tenant.schema.clone()], "no set-aside copy remains");

        // The safety backup holds the state the restore replaced.
        let safety = finished(&env, &tenant).await.into_iter().find(|b| b.id == done.safety_backup_id).unwrap();
        assert_eq!(safety.kind, "pre_restore");
        drop(own);
        restore(&app, &tenant.slug, safety.id, &format!("job-undo-{plan}")).await.unwrap();
        let mut own = env.as_tenant(&tenant.slug).await;
        assert_eq!(names(&mut own).await, vec!["beta", "gamma"], "{plan}: the pre_restore backup holds the changed state");
        assert_eq!(env.footprint(&tenant.slug, &tenant.database).await.migrations, vec![1, 2]);
    }
}

#[tokio::test]
async fn retention_keeps_exactly_n_and_files_match_rows() {
    let env = TestEnv::new().await;
    let app = env.app();
    let tenant = env.provisioned(&env.slug("keep"), "starter").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(backup(&app, &tenant.slug, Kind::Manual, Some(3), &format!("job-{i}")).await.unwrap().id);
    }
    let kept = finished(&env, &tenant).await;
    assert_eq!(kept.iter().map(|b| b.id).collect::<Vec<_>>(), ids[3..].iter().rev().copied().collect::<Vec<_>>(), "the newest 3");
    let mut paths: Vec<String> = kept.iter().map(|b| Path::new(&b.file_path).file_name().unwrap().to_string_lossy().into_owned()).collect();
    paths.sort();
    assert_eq!(files_in(&env.config.backup_dir.join(&tenant.slug)), paths, "files and rows agree");

    // A rerun of a finished job takes no second backup.
    let again = backup(&app, &tenant.slug, Kind::Manual, Some(3), "job-5").await.unwrap();
    assert_eq!(again.id, ids[5]);
    assert_eq!(finished(&env, &tenant).await.len(), 3);
}

#[tokio::test]
async fn damaged_backups_are_refused_and_live_data_is_untouched() {
    let env = TestEnv::new().await;
    let app = env.app();
    let tenant = env.provisioned(&env.slug("tamper"), "starter").await;
    let mut own = env.as_tenant(&tenant.slug).await;
    write(&mut own, "INSERT INTO projects (name) VALUES ('keep-me')").await;
    let tampered = backup(&app, &tenant.slug, Kind::Manual, None, "job-a").await.unwrap();
    let truncated = backup(&app, &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
    write(&mut own, "INSERT INTO projects (name) VALUES ('newer')").await;

    let mut bytes = std::fs::read(&tampered.file_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&tampered.file_path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&truncated.file_path).unwrap();
    file.set_len(truncated.bytes.unwrap() as u64 / 2).unwrap();

    for (b, why) in [(&tampered, "sha256 mismatch"), (&truncated, "bytes on disk")] {
        let err = restore(&app, &tenant.slug, b.id, &format!("job-r{}", b.id)).await.unwrap_err();
        assert!((err.job_outcome() == JobOutcome::Dead), "a damaged file does not heal: {err}");
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(names(&mut own).await, vec!["keep-me", "newer"], "live data untouched");
    }
    assert_eq!(schemas(&env, &tenant).await, vec![tenant.schema.clone()]);
    assert!(finished(&env, &tenant).await.iter().all(|b| b.kind != "pre_restore"), "refused before the safety backup");
}

#[tokio::test]
async fn a_restore_that_fails_in_pg_restore_leaves_the_tenant_as_it_was() {
    let env = TestEnv::new().await;
    let app = env.app();
    let a = env.provisioned(&env.slug("fa"), "starter").await;
    let b = env.provisioned(&env.slug("fb"), "starter").await;
    let mut own = env.as_tenant(&a.slug).await;
    write(&mut own, "INSERT INTO projects (name) VALUES ('a-data')").await;
    drop(own);
    // A valid archive that cannot be restored into A: it recreates B's schema, which exists.
    let of_b = backup(&app, &b.slug, Kind::Manual, None, "job-b").await.unwrap();
    let wrong: i64 = sqlx::query_scalar(
        "INSERT INTO tenant_master.backups (tenant_id, kind, file_path, bytes, sha256, started_at, finished_at, verified)
         SELECT $1, 'manual', file_path || '.copy', bytes, sha256, started_at, finished_at, true FROM tenant_master.backups WHERE id = $2
         RETURNING id",
    )
    .bind(a.id)
    .bind(of_b.id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    std::fs::copy(&of_b.file_path, format!("{}.copy", of_b.file_path)).unwrap();

    let err = restore(&app, &a.slug, wrong, "job-wrong").await.unwrap_err();
    assert!(err.to_string().contains("live data kept"), "{err}");
    let mut own = env.as_tenant(&a.slug).await;
    assert_eq!(names(&mut own).await, vec!["a-data"]);
    assert_eq!(schemas(&env, &a).await, vec![a.schema.clone()], "renamed back, nothing left over");
}

#[tokio::test]
async fn a_crash_at_any_restore_step_never_loses_data_and_a_rerun_finishes() {
    let env = TestEnv::new().await;
    let app = env.app();
    for (i, step) in ["restore:safety_backup", "restore:set_aside", "restore:restored"].iter().enumerate() {
        let tenant = env.provisioned(&env.slug(&format!("cr{i}")), if i == 1 { "enterprise" } else { "starter" }).await;
        let mut own = env.as_tenant(&tenant.slug).await;
        write(&mut own, "INSERT INTO projects (name) VALUES ('old')").await;
        let taken = backup(&app, &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
        write(&mut own, "INSERT INTO projects (name) VALUES ('new')").await;
        drop(own);

        fault::arm(&tenant.slug, step);
        let err = restore(&app, &tenant.slug, taken.id, &format!("job-r-{i}")).await.unwrap_err();
        assert!(err.is_injected(), "{err}");
        // The live rows exist under the live name or the set-aside name: never dropped.
        let present = schemas(&env, &tenant).await;
        assert!(!present.is_empty(), "after a crash at {step} some copy of the data must exist");
        let mut db = env.admin(&tenant.database).await;
        let mut rows_somewhere = 0i64;
        for schema in &present {
            let sql = format!("SELECT count(*) FROM \"{schema}\".projects");
            rows_somewhere += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&mut db).await.unwrap();
        }
        assert!(rows_somewhere >= 1, "{step}: rows still on the server ({present:?})");

        let done = restore(&app, &tenant.slug, taken.id, &format!("job-r-{i}")).await.unwrap();
        let mut own = env.as_tenant(&tenant.slug).await;
        assert_eq!(names(&mut own).await, vec!["old"], "after a crash at {step}, the rerun restores");
        assert_eq!(schemas(&env, &tenant).await, vec![tenant.schema.clone()]);
        // A rerun that finds the live data still in place copies it again (it cannot know
        // that nothing was written since) and keeps the earlier copy: a retry never deletes
        // a safety copy. Once the data was set aside, the recorded copy is the one.
        let safeties: Vec<_> = finished(&env, &tenant).await.into_iter().filter(|b| b.kind == "pre_restore").collect();
        let expected = if *step == "restore:safety_backup" { 2 } else { 1 };
        assert_eq!(safeties.len(), expected, "safety copies after a crash at {step}");
        assert_eq!(safeties.iter().map(|b| b.id).max(), Some(done.safety_backup_id));
    }
}

#[tokio::test]
async fn a_crash_at_any_backup_step_leaves_one_backup_after_the_rerun() {
    let env = TestEnv::new().await;
    let app = env.app();
    let tenant = env.provisioned(&env.slug("cb"), "starter").await;
    for step in ["backup:registered", "backup:dumped", "backup:renamed"] {
        fault::arm(&tenant.slug, step);
        let job = format!("job-{step}");
        assert!(backup(&app, &tenant.slug, Kind::Manual, None, &job).await.unwrap_err().is_injected());
        assert!(!finished(&env, &tenant).await.iter().any(|b| b.job_id.as_deref() == Some(job.as_str())), "nothing registered at {step}");
        backup(&app, &tenant.slug, Kind::Manual, None, &job).await.unwrap();
    }
    let done = finished(&env, &tenant).await;
    assert_eq!(done.len(), 3);
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE finished_at IS NULL").fetch_one(&env.pool).await.unwrap();
    assert_eq!(unfinished, 0);
    let files = files_in(&env.config.backup_dir.join(&tenant.slug));
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|f| f.ends_with(".dump")), "no .partial left: {files:?}");
    for b in &done {
        tenant_master::ops::backup::verify_file(b).await.unwrap();
    }
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = TempDir::new("tmpfs");
        let status =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).status();
        assert!(status.is_ok_and(|s| s.success()), "mounting a tmpfs needs root (the CI runs as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_full_backup_disk_fails_clearly_and_keeps_earlier_backups() {
    let mut env = TestEnv::new().await;
    let disk = Tmpfs::mount("256k");
    env.config.backup_dir = disk.0.path().to_owned();
    let app = env.app();
    let tenant = env.provisioned(&env.slug("full"), "starter").await;
    let first = backup(&app, &tenant.slug, Kind::Manual, None, "job-1").await.unwrap();
    let mut own = env.as_tenant(&tenant.slug).await;
    // About 2 MB of random text: more than the disk holds, even compressed.
    write(&mut own, "INSERT INTO events (kind, payload) SELECT 'bulk', jsonb_build_object('r', md5(random()::text) || md5(random()::text)) FROM generate_series(1, 30000)").await;

    let err = backup(&app, &tenant.slug, Kind::Manual, None, "job-2").await.unwrap_err();
    // pg_dump's own failure, kept as the typed cause of the backup step: retried later.
    let cause = std::error::Error::source(&err).and_then(|c| c.downcast_ref::<Error>());
    assert!(matches!(cause, Some(Error::Tool { program, .. }) if program == "pg_dump"), "{err:?}");
    assert_eq!(err.job_outcome(), JobOutcome::RetryLater, "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let left = finished(&env, &tenant).await;
    assert_eq!(left.iter().map(|b| b.id).collect::<Vec<_>>(), vec![first.id], "only the earlier backup is registered");
    tenant_master::ops::backup::verify_file(&left[0]).await.expect("the earlier backup is intact");
    assert_eq!(files_in(&disk.0.path().join(&tenant.slug)).len(), 1, "no partial file left behind");
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE finished_at IS NULL").fetch_one(&env.pool).await.unwrap();
    assert_eq!(unfinished, 0);
}

#[tokio::test]
async fn one_tenant_one_job_at_a_time_and_heavy_slots_per_host() {
    let mut env = TestEnv::new().await;
    env.config.worker.tenant_lock_wait_secs = 1;
    env.config.worker.heavy_slot_wait_secs = 1;
    env.config.worker.heavy_jobs_per_host = 2;
    let held = TenantLock::acquire(&env.config, "acme").await.unwrap();
    assert!(matches!(TenantLock::acquire(&env.config, "acme").await, Err(Error::Busy(_))), "a second job of acme waits, then retries");
    let other = TenantLock::acquire(&env.config, "other").await.expect("other tenants are not blocked");
    held.release().await;
    let again = TenantLock::acquire(&env.config, "acme").await.expect("free again once released");

    let host = format!("h{}", env.suffix);
    let s1 = HostSlot::acquire(&env.config, &host).await.unwrap();
    let s2 = HostSlot::acquire(&env.config, &host).await.unwrap();
    assert!(matches!(HostSlot::acquire(&env.config, &host).await, Err(Error::Busy(_))), "a third heavy job on the host waits");
    drop(s1);
    tokio::time::timeout(Duration::from_secs(10), HostSlot::acquire(&env.config, &host)).await.unwrap().expect("a slot frees up");
    drop((s2, other, again));
}

/// Old code: a tenant whose schema vanished (dropped by hand) made every backup retry for
/// minutes with the driver's "no rows returned by a query that expected to return at least
/// one row". Now the backup job is dead at its first attempt with what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_schema_makes_a_backup_dead_at_once_with_what_to_do() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("gone"), "starter").await;
    let mut db = env.admin(&t.database).await;
    tenant_master::db::ddl(&mut db, "DROP SCHEMA %I CASCADE", &[&t.schema]).await.unwrap();
    let err = backup(&env.app(), &t.slug, Kind::Manual, None, "job-v").await.unwrap_err();
    assert!((err.job_outcome() == JobOutcome::Dead), "{err}");
    let said = err.to_string();
    assert!(said.contains(&format!("has no schema {}", t.schema)) && said.contains("tenantctl backup restore"), "{said}");
    assert!(!said.contains("no rows returned"), "{said}");
    let out = env.tenantctl(&["backup", "create", &t.slug]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.run_worker_until(Duration::from_secs(60), || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE type = 'BackupTenant'").fetch_one(&env.pool).await.unwrap();
        status == "dead"
    })
    .await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM tenant_master.jobs WHERE type = 'BackupTenant'").fetch_one(&env.pool).await.unwrap();
    assert!(attempts <= 1, "dead at its first attempt, not after {attempts}");
}

/// Old code: large objects were silently left out of every backup, and a move reported
/// success while they stayed behind in the source, gone once it was pruned. Backups,
/// restores and moves of a tenant that owns any are now refused in one sentence before
/// anything changes (the objects belong to the database, not to the tenant's schema).
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_with_large_objects_is_refused_before_anything_changes() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("blobs"), "starter").await;
    let mut own = env.as_tenant(&t.slug).await;
    write(&mut own, "INSERT INTO projects (name) VALUES ('kept')").await;
    let taken = backup(&env.app(), &t.slug, Kind::Manual, None, "job-before").await.unwrap();
    let oid: i64 = sqlx::query_scalar("SELECT lo_from_bytea(0, 'file bytes')::bigint").fetch_one(&mut own).await.unwrap();
    let refusal = |e: Error| {
        let said = e.to_string();
        assert!(said.contains("owns 1 large object(s)") && said.contains("lo_unlink") && said.contains("nothing was done"), "{said}");
        assert!((e.job_outcome() == JobOutcome::Dead));
    };
    refusal(backup(&env.app(), &t.slug, Kind::Manual, None, "job-lo").await.unwrap_err());
    refusal(restore(&env.app(), &t.slug, taken.id, "job-lo-restore").await.unwrap_err());
    let req = tenant_master_tests::moves::request(&t, None, Some("enterprise"));
    refusal(tenant_master::ops::moves::move_tenant(&env.app(), &req, "job-lo-move").await.unwrap_err());
    // Nothing changed: one backup, the tenant where it was, logged in, its object readable.
    assert_eq!(finished(&env, &t).await.len(), 1);
    let now = env.registry(&t.slug).await;
    assert_eq!((now.isolation.as_str(), now.database.as_str()), ("schema", t.database.as_str()));
    let mut own = env.as_tenant(&t.slug).await;
    assert_eq!(names(&mut own).await, vec!["kept"]);
    let bytes: Vec<u8> = sqlx::query_scalar("SELECT lo_get($1::oid)").bind(oid).fetch_one(&mut own).await.unwrap();
    assert_eq!(bytes, b"file bytes");
    assert_eq!(schemas(&env, &t).await, vec![t.schema.clone()]);
    // The way out the sentence names: the bytes into a table, the object unlinked; then it works.
    sqlx::query("SELECT lo_unlink($1::oid)").bind(oid).execute(&mut own).await.unwrap();
    backup(&env.app(), &t.slug, Kind::Manual, None, "job-after").await.expect("a backup once the object is gone");
}

/// Old code: dumps were written 0644 in 0755 folders, so any local user on the worker's
/// machine could read every tenant's rows. Now 0600 in 0700, whatever the umask, and
/// `tenantctl check` warns about anything readable by others.
#[tokio::test]
async fn backups_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("private"), "starter").await;
    let taken = backup(&env.app(), &t.slug, Kind::Manual, None, "job-p").await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&taken.path()), 0o600, "the dump");
    assert_eq!(mode(taken.path().parent().unwrap()), 0o700, "the tenant's backup folder");
    let check = env.tenantctl(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(!report["checks"].as_array().unwrap().iter().any(|c| c["name"] == "backup_files"), "{report}");
    std::fs::set_permissions(taken.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = env.tenantctl(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let warned = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "backup_files").cloned();
    let warned = warned.unwrap_or_else(|| panic!("no warning about a readable backup: {report}"));
    assert!(warned["detail"].as_str().unwrap().contains("chmod -R go-rwx"), "{warned}");
}

/// A restore brings back the schema version the tenant had.
mod restored_version {

    use tenant_master_tests::TestEnv;

    /// Finding 10. A restore brings the tenant to the product's *latest* migration, whatever
    /// the rollout did: a migration still being canaried (or held back with `--to`) reaches a
    /// tenant nobody chose, with auto_migrate off.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_brings_back_the_version_the_tenant_had() {
        let products = tenant_master_tests::demo_products();
        let dir = products.path().to_owned();
        let env = TestEnv::with_products(products).await;
        let app = env.app();
        let t = env.provisioned(&env.slug("restored"), "starter").await;
        let backup =
            tenant_master::ops::backup::backup(&app, &t.slug, tenant_master::backups::Kind::Manual, None, "review-backup").await.unwrap();
        // 0003 is added and held back (canary elsewhere, or `--to 2`).
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\n");
        assert!(!env.config.products.auto_migrate);
        tenant_master::ops::restore::restore(&app, &t.slug, backup.id, "review-restore").await.unwrap();
        assert_eq!(env.ledger(&t).await, vec![1, 2], "the restore applied no migration the rollout had not");
        assert!(!env.has_table(&t, "labels").await);
    }
}

/// A restore run again after the tenant wrote takes a fresh safety copy.
mod restore_reruns {

    use tenant_master::{
        backups::{self, Kind},
        fault,
        ops::{
            access::{change_access, Change},
            backup::backup,
            restore::restore,
        },
        tenants::Tenant,
    };
    use tenant_master_tests::{names_in_backup, TestEnv};

    async fn insert(env: &TestEnv, slug: &str, name: &str) {
        let mut own = env.as_tenant(slug).await;
        sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(name).execute(&mut own).await.unwrap();
    }

    /// The tenant's `projects` names, read over an admin connection (works while paused).
    async fn live_names(env: &TestEnv, t: &Tenant) -> Vec<String> {
        let mut db = env.admin(&t.database).await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM \"{}\".projects ORDER BY name", t.schema)))
            .fetch_all(&mut db)
            .await
            .unwrap()
    }

    /// (1) A rerun of a restore job on a tenant whose login is held reuses the safety copy the
    /// job's first run took, even though the tenant wrote after it (paused -> restore crashed
    /// after its safety copy -> admin resumed the tenant, the tenant wrote, admin paused it
    /// again -> the same job reruns). The row is then in neither the live data nor any backup.
    #[tokio::test]
    async fn a_restore_run_again_after_the_tenant_wrote_takes_a_fresh_safety_copy() {
        let env = TestEnv::new().await;
        let app = env.app();
        let t = env.provisioned(&env.slug("stale"), "starter").await;
        insert(&env, &t.slug, "before").await;
        let taken = backup(&app, &t.slug, Kind::Manual, None, "job-b").await.unwrap();
        // The admin pauses the tenant for the restore; the worker dies right after the safety copy.
        change_access(&app, &t.slug, Change::Pause, Some("restore"), "admin").await.unwrap();
        fault::arm(&t.slug, "restore:safety_backup");
        let err = restore(&app, &t.slug, taken.id, "job-r").await.unwrap_err();
        assert!(err.is_injected(), "{err}");
        // The admin lets the customer work meanwhile, then pauses again for the retry.
        change_access(&app, &t.slug, Change::Resume, None, "admin").await.unwrap();
        insert(&env, &t.slug, "written between the runs").await;
        change_access(&app, &t.slug, Change::Pause, Some("restore, second try"), "admin").await.unwrap();
        // The same job runs again (automatic retry, orphan sweep or `jobs retry`).
        restore(&app, &t.slug, taken.id, "job-r").await.unwrap();

        let mut kept = live_names(&env, &t).await;
        let mut conn = env.pool.acquire().await.unwrap();
        for b in backups::list(&mut conn, t.id).await.unwrap() {
            kept.extend(names_in_backup(&b.file_path));
        }
        assert!(
            kept.contains(&"written between the runs".to_owned()),
            "a committed row is in neither the live data nor any backup (live {:?})",
            live_names(&env, &t).await
        );
    }
}
