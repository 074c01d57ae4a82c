//! `tenantctl` as a user runs it: exit codes, one-sentence errors, JSON output.

use std::time::Duration;

use tenant_master_tests::TestEnv;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "tenantctl failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

async fn tenant_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_master.tenants").fetch_one(&env.pool).await.unwrap()
}

#[tokio::test]
async fn bad_input_is_one_sentence_and_changes_nothing() {
    let env = TestEnv::new().await;
    let taken = env.slug("taken");
    let out = env.tenantctl(&["tenant", "create", &taken, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (jobs_before, tenants_before) = (env.job_count().await, tenant_rows(&env).await);

    let long = "a".repeat(41);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["Acme"], 2, "invalid slug 'Acme'"),
        (vec!["ab"], 2, "invalid slug 'ab'"),
        (vec!["x; drop"], 2, "invalid slug 'x; drop'"),
        (vec![&long], 2, "3 to 40 characters"),
        (vec!["pg_x"], 2, "reserved"),
        // `shared` as an enterprise tenant once got the product's shared database itself.
        (vec!["shared", "--plan", "enterprise"], 2, "invalid slug 'shared': it is a reserved word"),
        // `<slug>__restore_aside` was another tenant's set-aside schema during a restore.
        (vec!["vic__restore_aside"], 2, "reserved for Tenant Master's own names"),
        (vec!["okslug", "--product", "nope"], 2, "unknown product 'nope'"),
        (vec!["okslug", "--plan", "gold"], 2, "unknown plan 'gold'"),
        (vec!["okslug", "--owner-email", "not-an-email"], 2, "not a valid owner e-mail"),
        (vec!["okslug", "--host", "nowhere"], 2, "unknown host 'nowhere'"),
        (vec![&taken, "--plan", "business"], 1, "already taken"),
    ];
    for (overrides, code, message) in cases {
        let mut args = vec!["tenant", "create", overrides[0], "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"];
        for pair in overrides[1..].chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(at) => args[at + 1] = pair[1],
                None => args.extend_from_slice(pair),
            }
        }
        let out = env.tenantctl(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one sentence, got: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout for {args:?}");
    }
    assert_eq!(env.job_count().await, jobs_before, "nothing enqueued");
    assert_eq!(tenant_rows(&env).await, tenants_before, "nothing created");

    let out = env.tenantctl(&["tenant", "show", "nosuchtenant"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("there is no tenant 'nosuchtenant'"));
}

#[tokio::test]
async fn create_wait_show_and_list_in_both_modes() {
    let env = TestEnv::new().await;
    let (shared, own) = (env.slug("acme"), env.slug("bigco"));
    // The real CLI waits in a thread while the real worker runs in this process.
    let commands: Vec<_> = [(&shared, "starter"), (&own, "enterprise")]
        .into_iter()
        .map(|(slug, plan)| {
            env.tenantctl_command(&[
                "tenant",
                "create",
                slug,
                "--product",
                "demo",
                "--plan",
                plan,
                "--owner-email",
                "owner@example.com",
                "--wait",
            ])
        })
        .collect();
    let cli = tokio::task::spawn_blocking(move || commands.into_iter().map(|mut c| c.output().unwrap()).collect::<Vec<_>>());
    env.run_worker_until(Duration::from_secs(90), || async { cli.is_finished() }).await;
    let outputs = cli.await.unwrap();
    for out in &outputs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }

    let shown = json(&env.tenantctl(&["tenant", "show", &shared, "--json"]));
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["isolation"], "schema");
    assert_eq!(shown["plan"], "starter");
    assert_eq!(shown["database"], format!("{}demo_shared", env.config.database_prefix));
    assert_eq!(shown["schema"], format!("t_{shared}"));
    assert_eq!(shown["role"], format!("t_{shared}"));
    assert!(shown.get("role_password").is_none(), "show never prints the password");
    assert!(shown["recent_activity"].as_array().unwrap().iter().any(|e| e["action"] == "tenant.active"));

    let shown = json(&env.tenantctl(&["tenant", "show", &own, "--json"]));
    assert_eq!((shown["status"].as_str(), shown["isolation"].as_str()), (Some("active"), Some("database")));
    assert_eq!(shown["database"], format!("{}demo__{own}", env.config.database_prefix));

    let listed = json(&env.tenantctl(&["tenant", "list", "--json", "--plan", "enterprise"]));
    let slugs: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, vec![own.as_str()]);

    let creds = env.tenantctl(&["tenant", "credentials", &own]);
    let url = String::from_utf8(creds.stdout).unwrap();
    assert!(url.starts_with(&format!("postgres://t_{own}:")), "{url}");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url.trim()).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn backup_commands_through_the_worker() {
    let env = TestEnv::new().await;
    let (a, b) = (env.slug("bka"), env.slug("bkb"));
    env.provisioned(&a, "starter").await;
    env.provisioned(&b, "enterprise").await;
    let mut own = env.as_tenant(&a).await;
    sqlx::raw_sql("INSERT INTO projects (name) VALUES ('v1')").execute(&mut own).await.unwrap();
    drop(own);

    // Refusals first: nothing may be enqueued by any of them.
    let jobs_before = env.job_count().await;
    let out = env.tenantctl(&["backup", "create", &a, "ghost_tenant"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("there is no tenant 'ghost_tenant'"));
    let out = env.tenantctl(&["backup", "restore", &a, "--latest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"));
    let out = env.tenantctl(&["backup", "restore", &a, "--latest", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no routine backup to restore"), "{}", stderr(&out));
    assert_eq!(env.job_count().await, jobs_before);

    let run = |args: Vec<String>| {
        let mut cmd = env.tenantctl_command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let create = run(vec!["backup".into(), "create".into(), "--all".into(), "--wait".into(), "--json".into()]);
    env.run_worker_until(Duration::from_secs(90), || async { create.is_finished() }).await;
    let created = json(&create.await.unwrap());
    assert_eq!(created.as_array().unwrap().len(), 2, "--all covers both tenants");
    assert!(created.as_array().unwrap().iter().all(|j| j["status"] == "done"));

    let listed = json(&env.tenantctl(&["backup", "list", &a, "--json"]));
    let list = listed.as_array().unwrap();
    assert_eq!(list.len(), 1);
    for field in ["id", "kind", "bytes", "sha256", "created_at"] {
        assert!(!list[0][field].is_null(), "backup field {field}");
    }
    assert_eq!(list[0]["kind"], "manual");

    let mut own = env.as_tenant(&a).await;
    sqlx::raw_sql("UPDATE projects SET name = 'v2'").execute(&mut own).await.unwrap();
    drop(own);
    let restore = run(vec!["backup".into(), "restore".into(), a.clone(), "--latest".into(), "--yes".into(), "--wait".into()]);
    env.run_worker_until(Duration::from_secs(90), || async { restore.is_finished() }).await;
    let out = restore.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut own = env.as_tenant(&a).await;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut own).await.unwrap();
    assert_eq!(names, vec!["v1"]);
}

#[tokio::test]
async fn a_backup_of_a_missing_tenant_fails_without_retries() {
    let env = TestEnv::new().await;
    let id: String = sqlx::query_scalar("SELECT tenant_master.enqueue('BackupTenant', '{\"slug\": \"ghost_x\", \"kind\": \"manual\"}')")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let dead = || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
        status == "dead"
    };
    env.run_worker_until(Duration::from_secs(60), dead).await;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM tenant_master.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(attempts, 1);
    assert!(error.contains("there is no tenant 'ghost_x'"), "{error}");
}

#[tokio::test]
async fn check_refuses_a_pg_dump_older_than_the_server() {
    let env = TestEnv::new().await;
    let out = env.tenantctl(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let fake = tenant_master_tests::TempDir::new("oldpg");
    let script = fake.path().join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap());
    let out = env.tenantctl_command(&["check", "--json"]).env("PATH", path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pg_dump = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "pg_dump").unwrap();
    assert_eq!(pg_dump["ok"], false);
    assert!(pg_dump["detail"].as_str().unwrap().contains("older than the server"));
}

/// `check --workers N` compares what N workers (plus a scheduler and tenantctl) may open
/// with what the server gives, and fails when it would not be enough.
#[tokio::test]
async fn check_compares_the_workers_connections_with_max_connections() {
    let env = TestEnv::new().await;
    let connections = |workers: &str| {
        let out = env.tenantctl(&["check", "--json", "--workers", workers]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let item = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "connections").unwrap().clone();
        (out.status.code(), item)
    };
    let (code, one) = connections("1");
    assert_eq!((code, &one["ok"]), (Some(0), &serde_json::json!(true)), "{one}");
    let peak = tenant_master::worker::peak_control_plane_connections(&env.config);
    assert!(one["detail"].as_str().unwrap().contains(&format!("1 worker(s) x ({peak} control plane")), "{one}");
    let (code, many) = connections("1000");
    assert_eq!((code, &many["ok"]), (Some(1), &serde_json::json!(false)), "{many}");
    assert!(many["detail"].as_str().unwrap().contains("raise max_connections"), "{many}");
}

/// `tenant change-plan` within one isolation mode changes the registry and keeps the
/// history; across modes it enqueues a move and the plan stays until the data has moved
/// (tests/moves.rs runs the moves).
#[tokio::test]
async fn change_plan_keeps_a_history_and_enqueues_what_needs_a_move() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("plan"), "starter").await;
    let out = env.tenantctl(&["tenant", "change-plan", &tenant.slug, "business", "--actor", "billing"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.tenantctl(&["tenant", "change-plan", &tenant.slug, "business"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = env.tenantctl(&["tenant", "change-plan", &tenant.slug, "enterprise"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("enqueued MoveTenant job"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = env.tenantctl(&["tenant", "change-plan", &tenant.slug, "gold"]);
    assert_eq!(out.status.code(), Some(2));
    let shown = json(&env.tenantctl(&["tenant", "show", &tenant.slug, "--json"]));
    assert_eq!(shown["plan"], "business");
    let history = shown["plan_history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{shown}");
    assert_eq!(
        (&history[0]["from"], &history[0]["to"], &history[0]["actor"]),
        (&serde_json::json!("starter"), &serde_json::json!("business"), &serde_json::json!("billing"))
    );
}

/// Issue 25: paths depended on the current folder, so `key generate` in another folder
/// made a second key, a new tenant was sealed with it, and its jobs went dead. Relative
/// paths now resolve against `data_dir`, `key generate` makes missing folders, and a key
/// the control plane does not know seals nothing.
#[tokio::test]
async fn every_folder_reads_one_key_and_an_unknown_key_seals_nothing() {
    let env = TestEnv::new().await;
    let data = tenant_master_tests::TempDir::new("data-dir");
    let data_dir = data.path().join("state");
    let (here, there) = (tenant_master_tests::TempDir::new("here"), tenant_master_tests::TempDir::new("there"));
    let run = |cwd: &std::path::Path, args: &[&str]| {
        env.tenantctl_command(args)
            .current_dir(cwd)
            .env("TENANT_MASTER_DATA_DIR", &data_dir)
            .env("TENANT_MASTER_SECRET_KEY_FILE", "keys/secret.key")
            .output()
            .unwrap()
    };
    let out = run(here.path(), &["key", "generate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(data_dir.join("keys/secret.key").is_file(), "written in data_dir, its folders made");
    let slug = env.slug("onekey");
    let out = run(here.path(), &["tenant", "create", &slug, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(there.path(), &["tenant", "credentials", &slug]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("postgres://"), "{}", stderr(&out));

    // A second key, made by mistake elsewhere: nothing is sealed with it.
    let stray = there.path().join("stray.key");
    let out = env.tenantctl_command(&["key", "generate", "--file", stray.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = tenant_rows(&env).await;
    let other = env.slug("strayed");
    let out2 = env
        .tenantctl_command(&["tenant", "create", &other, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"])
        .env("TENANT_MASTER_SECRET_KEY_FILE", &stray)
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(1), "{}", stderr(&out2));
    let said = stderr(&out2);
    assert!(said.contains("but this control plane's secrets are sealed with") && said.contains("nothing was sealed"), "{said}");
    assert_eq!(tenant_rows(&env).await, before, "no tenant was registered");
    let check = env.tenantctl_command(&["check", "--json"]).env("TENANT_MASTER_SECRET_KEY_FILE", &stray).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let item = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "secret_key").unwrap().clone();
    assert_eq!(item["ok"], false, "{item}");
}

/// Issue 25: `tenantctl jobs list | head -1` panicked on the closed pipe (exit 101 and a
/// backtrace). A closed pipe now ends it as it ends every Unix tool: quietly, by SIGPIPE.
#[tokio::test]
async fn a_closed_pipe_ends_tenantctl_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let env = TestEnv::new().await;
    let mut child = env
        .tenantctl_command(&["jobs", "list", "--limit", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {}", out.status, stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Issue 25: Ctrl-C during `--wait` printed nothing and left the progress line hanging. It
/// now says the job goes on and how to follow it, and exits 130.
#[tokio::test]
async fn ctrl_c_during_wait_says_the_job_goes_on() {
    let env = TestEnv::new().await;
    let slug = env.slug("waiting");
    env.provisioned(&slug, "starter").await;
    // No worker runs: the pause waits until interrupted.
    let child = env.tenantctl_command(&["tenant", "pause", &slug, "--wait"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("the job(s) go on") && said.contains("tenantctl jobs show"), "{said}");
}

/// Issue 25: `admin user add` asked for the password once, so a typo became the password.
/// On a terminal (here `script` gives it one) it asks twice and refuses two different ones.
#[tokio::test]
async fn a_new_panel_password_is_asked_twice_on_a_terminal() {
    let env = TestEnv::new().await;
    let on_a_terminal = |name: &str, typed: &str| {
        let command = format!("{} admin user add {name} --role admin", tenant_master_tests::binary("tenantctl").display());
        // The test control plane's environment, as tenantctl gets it.
        let settings = env.tenantctl_command(&[]);
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &command, "/dev/null"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        for (k, v) in settings.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env_remove("TENANT_MASTER_ADMIN_PASSWORD");
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(typed.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = on_a_terminal("typo", "correct horse battery\ncorrect horse batterz\n");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("the same password again") && said.contains("the two passwords differ"), "{said}");
    let out = on_a_terminal("careful", "correct horse battery\ncorrect horse battery\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let users: Vec<String> =
        sqlx::query_scalar("SELECT name FROM tenant_master.admin_users ORDER BY 1").fetch_all(&env.pool).await.unwrap();
    assert_eq!(users, vec!["careful".to_owned()]);
}

/// Every `tenantctl ...` command the code suggests (in an error, a hint or a page) parses:
/// its subcommand and flags exist (run with `--help`), and a literal job type or status
/// in it is one tenantctl accepts. `schedule run` once suggested `--type backup`.
#[test]
fn every_suggested_command_parses() {
    let root = tenant_master_tests::repo_root();
    let job_types: Vec<&str> = tenant_master::jobs::REGISTRY.iter().map(|t| t.name).collect();
    let mut suggestions = std::collections::BTreeSet::new();
    let mut files = vec![];
    for dir in ["enqueue-cli/src", "shared/src", "worker/src", "scheduler/src"] {
        collect_source_files(&root.join(dir), &mut files);
    }
    for file in &files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            if line.trim_start().starts_with("//") {
                continue; // Comments name commands in passing (`tenantctl jobs ...`).
            }
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 1 && part.starts_with("tenantctl ") && !part.contains("...") && !part.contains('|') {
                    suggestions.insert(part.to_owned());
                }
            }
        }
    }
    assert!(suggestions.len() > 30, "the scan found only {suggestions:?}");
    let scratch = tenant_master_tests::TempDir::new("suggestions");
    let mut broken = Vec::new();
    for suggestion in &suggestions {
        let words: Vec<&str> = suggestion.split_whitespace().skip(1).collect();
        let mut args = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let previous = if i > 0 { words[i - 1] } else { "" };
            let placeholder = word.starts_with('{') || (word.len() > 1 && word.chars().all(|c| c.is_ascii_uppercase()));
            let arg = match (previous, placeholder) {
                ("--type", true) => "BackupTenant".to_owned(),
                ("--slot", true) => "2026-01-01T00:00:00Z".to_owned(),
                (_, true) => "acme".to_owned(),
                ("--type", false) if !job_types.contains(word) => {
                    broken.push(format!("{suggestion}: '{word}' is no job type"));
                    word.to_string()
                }
                ("--status", false) if !tenant_master::queue::STATUSES.contains(word) => {
                    broken.push(format!("{suggestion}: '{word}' is no job status"));
                    word.to_string()
                }
                _ => word.to_string(),
            };
            args.push(arg);
        }
        // A flag at the end that wants a value is prose ("see `tenantctl jobs list --type`").
        if args.last().is_some_and(|a| a == "--type" || a == "--status") {
            continue;
        }
        // Run for real, against a port nobody listens on, from an empty folder with no
        // terminal: a command that parses fails on the connection (or on a question it
        // cannot ask); one that does not parse fails with clap's usage.
        let out = std::process::Command::new(tenant_master_tests::binary("tenantctl"))
            .args(&args)
            .current_dir(scratch.path())
            .env("DATABASE_URL", "postgres://127.0.0.1:1/nothing_here")
            .env("TENANT_MASTER_DATA_DIR", scratch.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = stderr(&out);
        if said.contains("Usage:") {
            broken.push(format!("{suggestion} (as {args:?}): {}", said.lines().next().unwrap_or("")));
        }
    }
    assert!(broken.is_empty(), "suggested commands that do not parse:\n{}", broken.join("\n"));
}

/// Rust sources and the panel's templates under `dir`.
fn collect_source_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "html") {
            out.push(path);
        }
    }
}

/// Careless commands: a password in a URL is never printed, a mistake enqueues nothing.
mod admin_mistakes {

    use tenant_master_tests::stderr;
    use tenant_master_tests::TestEnv;

    /// Finding 4. `host add` with an invalid URL whose password is in the query string
    /// (`?password=`, which sqlx/libpq accept) prints the password: `redact_url` only knows
    /// `user:password@`.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_password_in_a_urls_query_string_is_never_printed() {
        let env = TestEnv::new().await;
        let out = env
            .tenantctl_command(&["host", "add", "leaky", "--admin-url-env", "LEAKY_URL"])
            .env("LEAKY_URL", "postgres://127.0.0.1:5432/postgres?user=root&password=TopSecret123&sslmode=bogus")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        println!("{err}");
        assert!(!err.contains("TopSecret123") && err.contains("password=***"), "{err}");
    }

    /// What held up (not a finding): --to a missing version, --limit 0, both slugs and --all,
    /// an unknown slug, the same host name twice; the stored URL is sealed.
    #[tokio::test(flavor = "multi_thread")]
    async fn admin_mistakes_are_refused_and_nothing_is_enqueued() {
        let env = TestEnv::new().await;
        let t = env.provisioned(&env.slug("fine"), "starter").await;
        for args in [
            vec!["tenant", "migrate", "--all", "--to", "99", "--dry-run"],
            vec!["tenant", "migrate", "--all", "--limit", "0"],
            vec!["tenant", "migrate", "--all", t.slug.as_str()],
            vec!["tenant", "migrate", "nosuchtenant"],
        ] {
            let out = env.tenantctl(&args);
            println!("{args:?} -> {:?}: {}", out.status.code(), stderr(&out).trim());
            assert!(!out.status.success());
        }
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM apalis.jobs WHERE job_type = 'MigrateTenant'")
                .fetch_one(&env.pool)
                .await
                .unwrap(),
            0
        );
    }
}
