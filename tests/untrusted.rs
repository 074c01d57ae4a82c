//! Tenants are untrusted (besides `hostile.rs`): passwords sealed at rest, keys rotated,
//! two deployments on one server never touching each other's objects, and tenant roles
//! reaching their own database only.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tenant_master::{
    jobs::provision_tenant as provision,
    ops::delete,
    secrets::{Keyring, SecretKey},
    tenants::{self, NewTenant},
    App,
};
use tenant_master_tests::{server_url, url_with_database, TempDir, TestEnv};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sqlstate(err: &sqlx::Error) -> String {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned()).unwrap_or_default()
}

async fn stored_passwords(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT role_password FROM tenant_master.tenants WHERE role_password IS NOT NULL ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// The plaintext passwords, as `tenant credentials` prints them.
fn plaintext(env: &TestEnv, slug: &str) -> String {
    let out = env.tenantctl(&["tenant", "credentials", slug]);
    assert!(out.status.success(), "{}", stderr(&out));
    let url = String::from_utf8(out.stdout).unwrap();
    let userinfo = url.trim().split("://").nth(1).unwrap().split('@').next().unwrap().to_owned();
    userinfo.split_once(':').unwrap().1.to_owned()
}

#[tokio::test]
async fn no_tenant_password_is_readable_in_the_control_plane_and_keys_rotate() {
    let env = TestEnv::new().await;
    let (a, b) = (env.slug("sealed"), env.slug("sealedtoo"));
    for (slug, plan) in [(&a, "starter"), (&b, "enterprise")] {
        let out = env.tenantctl(&["tenant", "create", slug, "--product", "demo", "--plan", plan, "--owner-email", "o@example.com"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let slugs = [a.clone(), b.clone()];
    env.run_worker_until(std::time::Duration::from_secs(120), || async {
        let mut all = true;
        for slug in &slugs {
            all &= env.tenant_status(slug).await.as_deref() == Some("active");
        }
        all
    })
    .await;

    // A whole dump of the control plane (registry, queue payloads, activity) holds no password.
    let passwords: Vec<String> = slugs.iter().map(|s| plaintext(&env, s)).collect();
    let database = env.config.database_url.rsplit('/').next().unwrap().to_owned();
    let dump = std::process::Command::new("pg_dump")
        .args(["--no-password", "--dbname", &url_with_database(&server_url(), &database)])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains(&a) && dump.contains("tmenc1:"), "the dump holds the registry, sealed");
    for password in &passwords {
        assert!(password.len() >= 32 && !dump.contains(password.as_str()), "a tenant password is readable in the control plane");
    }
    // The credentials work: the tenant logs in with them.
    let out = env.tenantctl(&["tenant", "credentials", &a]);
    PgConnection::connect(String::from_utf8(out.stdout).unwrap().trim()).await.expect("the printed URL logs in");

    // Rotation: a new key seals every row; the old one opens them meanwhile.
    let old_key = env.config.secret_key_file.clone().unwrap();
    let keys = TempDir::new("keys");
    let new_key = keys.path().join("new.key");
    let out = env.tenantctl(&["key", "generate", "--file", new_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&new_key).unwrap().permissions().mode() & 0o777, 0o600);
    let out = env.tenantctl(&["key", "generate", "--file", new_key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "an existing key file is never overwritten: {}", stderr(&out));
    let new_id = SecretKey::read(&new_key).unwrap().id().to_owned();
    let old_id = SecretKey::read(&old_key).unwrap().id().to_owned();

    let with_keys = |current: &std::path::Path, old: Option<&std::path::Path>, args: &[&str]| {
        let mut cmd = env.tenantctl_command(args);
        cmd.env("TENANT_MASTER_SECRET_KEY_FILE", current);
        cmd.env("TENANT_MASTER_OLD_SECRET_KEY_FILE", old.map(|p| p.to_str().unwrap()).unwrap_or(""));
        cmd.output().unwrap()
    };
    // The new key alone cannot open rows sealed with the old one: one sentence naming both ids.
    let out = with_keys(&new_key, None, &["tenant", "credentials", &a]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&old_id) && err.contains(&new_id) && err.trim_end().lines().count() == 1, "{err}");
    let old_text = std::fs::read_to_string(&old_key).unwrap();
    assert!(!err.contains(old_text.trim()), "no key material in errors");

    let out = with_keys(&new_key, Some(&old_key), &["key", "rotate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 2"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stored_passwords(&env).await.iter().all(|p| Keyring::key_id_of(p) == Some(new_id.as_str())));
    let out = with_keys(&new_key, None, &["tenant", "credentials", &a]);
    assert!(out.status.success(), "after rotation the new key alone opens every row: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&passwords[0]), "the password itself did not change");

    // No key at all: one sentence, nothing created.
    let out = with_keys(
        std::path::Path::new(""),
        None,
        &["tenant", "create", &env.slug("nokey"), "--product", "demo", "--plan", "free", "--owner-email", "o@example.com"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no secret key is configured"), "{}", stderr(&out));
    assert_eq!(env.tenant_status(&env.slug("nokey")).await, None);
}

#[tokio::test]
async fn migrate_seals_passwords_stored_by_the_first_release() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("legacy"), "starter").await;
    let plain = plaintext(&env, &tenant.slug);
    // As the first release stored it: in plain text.
    sqlx::query("UPDATE tenant_master.tenants SET role_password = $1 WHERE id = $2")
        .bind(&plain)
        .bind(tenant.id)
        .execute(&env.pool)
        .await
        .unwrap();
    // ... and marked its role without naming a deployment.
    let mut server = env.admin("postgres").await;
    let marker: String = sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
        .bind(&tenant.role)
        .fetch_one(&mut server)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("COMMENT ON ROLE \"{}\" IS 'tenant-master:{}'", tenant.role, tenant.slug)))
        .execute(&mut server)
        .await
        .unwrap();
    let mut cmd = env.tenantctl_command(&["migrate"]);
    cmd.env("TENANT_MASTER_SECRET_KEY_FILE", "");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 tenant password(s) or host URL(s) are stored unencrypted"), "{}", stderr(&out));
    let out = env.tenantctl(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("sealed 1 tenant password") && said.contains("marked 1 role(s)"), "{said}");
    let upgraded: String = sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
        .bind(&tenant.role)
        .fetch_one(&mut server)
        .await
        .unwrap();
    assert_eq!(upgraded, marker, "the first release's marker names this deployment now");
    let stored = stored_passwords(&env).await;
    assert!(stored.iter().all(|p| Keyring::is_sealed(p) && !p.contains(&plain)));
    assert_eq!(plaintext(&env, &tenant.slug), plain);
}

#[tokio::test]
async fn two_deployments_with_one_prefix_never_touch_each_others_objects() {
    let first = TestEnv::new().await;
    let second = TestEnv::new().await;
    let slug = first.slug("twin");
    let ours = first.provisioned(&slug, "enterprise").await;
    let mut own = first.as_tenant(&slug).await;
    sqlx::query("INSERT INTO projects (name) VALUES ('first deployment')").execute(&mut own).await.unwrap();
    drop(own);

    // The second control plane, same server, same database_prefix, same slug.
    let mut config = second.config.clone();
    config.database_prefix = first.config.database_prefix.clone();
    let app = App::new(config, second.pool.clone());
    let new = NewTenant::parse(&slug, "demo", "enterprise", "o@example.com", None, None).unwrap();
    let err = provision::provision(&app, &new, "test").await.unwrap_err();
    assert!(err.to_string().contains("not made by this Tenant Master deployment"), "{err}");
    tenant_master::ops::provision::mark_failed(&app, &slug, &err.to_string()).await.unwrap();
    delete::delete(&app, &slug, None, "job-delete", "test").await.unwrap();
    let mut conn = second.pool.acquire().await.unwrap();
    assert_eq!(tenants::get(&mut conn, &slug).await.unwrap().status, "deleted");
    let left: serde_json::Value = sqlx::query_scalar(
        "SELECT details -> 'left_in_place' FROM tenant_master.activity_log WHERE action = 'tenant.deleted' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&second.pool)
    .await
    .unwrap();
    assert!(left.to_string().contains(&format!("role {}", ours.role)), "{left}");

    // The first deployment's tenant is whole: role, database, data, login.
    let mut own = first.as_tenant(&slug).await;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut own).await.unwrap();
    assert_eq!(names, vec!["first deployment"]);
}

/// On a private server: a lockdown changes grants server-wide, and the shared test server
/// holds other projects' databases.
#[tokio::test]
async fn tenant_roles_reach_their_own_database_only_after_lockdown() {
    let server = tenant_master_tests::private_server::PrivateServer::start();
    let env = TestEnv::on_server(&server.url()).await;
    let tenant = env.provisioned(&env.slug("reach"), "starter").await;
    // A database open to PUBLIC, as `postgres` and `template1` are on a new server.
    let open = format!("{}open", env.config.database_prefix);
    let mut server = env.admin("postgres").await;
    assert!(tenant_master::db::create_database_if_missing(&mut server, &open).await.unwrap());
    let url = {
        let mut conn = env.pool.acquire().await.unwrap();
        tenants::credentials_url(&mut conn, &env.config, &tenant.slug).await.unwrap()
    };
    PgConnection::connect(&url_with_database(&url, &open)).await.expect("before lockdown the tenant reaches the open database");

    let out = env.tenantctl(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reach = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "reach:default").unwrap().clone();
    assert!(reach["warning"].as_bool().unwrap() && reach["detail"].as_str().unwrap().contains(&open), "{reach}");

    let out = env.tenantctl(&["host", "lockdown", "default"]);
    assert_eq!(out.status.code(), Some(2), "lockdown asks, or needs --yes: {}", stderr(&out));
    assert!(stderr(&out).contains("nothing changed") && stderr(&out).contains(&open), "it lists what it would close: {}", stderr(&out));
    PgConnection::connect(&url_with_database(&url, &open)).await.expect("refused, the lockdown changed nothing");
    let out = env.tenantctl(&["host", "lockdown", "default", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for database in [open.as_str(), "postgres", "template1"] {
        let err = PgConnection::connect(&url_with_database(&url, database)).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "the tenant must not reach {database}");
    }
    PgConnection::connect(&url).await.expect("its own database still works");
    let out = env.tenantctl(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reach = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "reach:default").unwrap().clone();
    // (Tests running beside this one may have made databases of their own meanwhile.)
    let detail = reach["detail"].as_str().unwrap();
    let still_open: Vec<&str> = detail
        .split_once("can connect to ")
        .map(|(_, rest)| rest.split(':').next().unwrap_or("").split(", ").collect())
        .unwrap_or_default();
    for closed in [open.as_str(), "postgres", "template1"] {
        assert!(!still_open.contains(&closed), "{reach}");
    }
}

/// A database that happens to carry a product's shared-database name but was not made by
/// this deployment (another application's, or another deployment's with the same prefix)
/// is never adopted: no tenant schema lands in it and its CONNECT rights stay as they were.
#[tokio::test]
async fn a_foreign_database_with_a_shared_name_is_not_adopted() {
    let env = TestEnv::new().await;
    let shared = format!("{}demo_shared", env.config.database_prefix);
    let mut server = env.admin("postgres").await;
    assert!(tenant_master::db::create_database_if_missing(&mut server, &shared).await.unwrap());
    let mut foreign = env.admin(&shared).await;
    sqlx::raw_sql("CREATE TABLE public.orders (id int); INSERT INTO public.orders VALUES (1)").execute(&mut foreign).await.unwrap();
    drop(foreign);

    let app = env.app();
    let slug = env.slug("adopt");
    let new = NewTenant::parse(&slug, "demo", "starter", "o@example.com", None, None).unwrap();
    let err = provision::provision(&app, &new, "test").await.unwrap_err();
    assert!(err.to_string().contains("not made by this Tenant Master deployment"), "{err}");
    let public_connect: bool =
        sqlx::query_scalar("SELECT has_database_privilege('public', $1, 'CONNECT')").bind(&shared).fetch_one(&mut server).await.unwrap();
    assert!(public_connect, "the foreign database's rights were changed");
    let mut foreign = env.admin(&shared).await;
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'").fetch_one(&mut foreign).await.unwrap();
    assert_eq!(schemas, 0);

    // A shared database this deployment made is marked, and takes the next tenant.
    drop(foreign);
    tenant_master::db::ddl(&mut server, "DROP DATABASE %I WITH (FORCE)", &[&shared]).await.unwrap();
    tenant_master::ops::provision::mark_failed(&app, &slug, "test").await.unwrap();
    let tenant = provision::provision(&app, &new, "test").await.unwrap();
    let marker: String = sqlx::query_scalar("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1")
        .bind(&tenant.database)
        .fetch_one(&mut server)
        .await
        .unwrap();
    assert!(marker.starts_with("tenant-master:") && marker.ends_with(":shared"), "{marker}");
    env.provisioned(&env.slug("second"), "starter").await;
}
