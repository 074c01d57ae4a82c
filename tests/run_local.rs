//! `deploy/run-local.sh`, run as a developer does: twice in a row it leaves one worker and
//! an intact log, and it changes no grant on a database that is not Tenant Master's.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tenant_master_tests::{die_with_test, repo_root, TempDir, TestEnv};

/// Who may connect to each database that exists now (name, ACL), as an admin reads it.
async fn grants(env: &TestEnv) -> Vec<(String, Option<String>)> {
    let mut admin = env.admin("postgres").await;
    sqlx::query_as("SELECT datname::text, datacl::text FROM pg_database WHERE datname !~ '^(tt[a-z0-9]{6}_|tm_test_)' ORDER BY 1")
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

/// Stops the worker a run started, also when the test fails.
struct Stop(Option<i32>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Waits until the first run has its demo tenant and keeps its worker in the foreground;
/// fails at once, with what the script and its worker said, if the script ends first.
async fn wait_for_the_demo(run: &mut std::process::Child, out: &Path, log: &Path) {
    let said = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log = read(log);
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        format!("stdout:\n{}\nstderr:\n{}\nworker log (end):\n{}", read(out), read(&out.with_extension("err")), tail.join("\n"))
    };
    let started = Instant::now();
    while !std::fs::read_to_string(out).unwrap_or_default().contains("Ctrl-C here stops the worker") {
        if let Some(status) = run.try_wait().unwrap() {
            panic!("run-local.sh ended ({status}) before its demo tenant was ready\n{}", said());
        }
        assert!(started.elapsed() < Duration::from_secs(180), "no demo tenant after 180 s\n{}", said());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_leave_one_worker_an_intact_log_and_foreign_grants_alone() {
    let env = TestEnv::new().await;
    let data = TempDir::new("run-local");
    let slug = env.slug("demo");
    let before = grants(&env).await;
    let script = |out: &std::path::Path| {
        let mut cmd = Command::new(repo_root().join("deploy/run-local.sh"));
        for (k, v) in env.env_vars() {
            cmd.env(k, v);
        }
        cmd.env_remove("TENANT_MASTER_CONFIG")
            .env("TENANT_MASTER_DATA_DIR", data.path())
            .env("DEMO_TENANT", &slug)
            .env("RUN_LOCAL_SKIP_BUILD", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
        die_with_test(&mut cmd);
        cmd
    };
    let first_out = data.path().join("first.out");
    let mut first = script(&first_out).spawn().unwrap();
    let pidfile = data.path().join("worker.pid");
    wait_for_the_demo(&mut first, &first_out, &data.path().join("worker.log")).await;
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
    let worker: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let _stop = Stop(Some(worker));
    let log = data.path().join("worker.log");
    let log_before = std::fs::read(&log).unwrap();

    let second_out = data.path().join("second.out");
    let second = script(&second_out).status().unwrap();
    let said = std::fs::read_to_string(&second_out).unwrap();
    assert!(second.success(), "{said}{}", std::fs::read_to_string(second_out.with_extension("err")).unwrap_or_default());
    assert!(said.contains(&format!("tenant-worker is running already (pid {worker}")), "{said}");
    assert!(said.contains("belongs to the first run-local.sh"), "{said}");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), worker.to_string(), "no second worker");
    assert!(first.try_wait().unwrap().is_none(), "the first run still holds its worker");
    assert_eq!(unsafe { libc::kill(worker, 0) }, 0, "its worker still runs");
    let log_after = std::fs::read(&log).unwrap();
    assert!(log_after.starts_with(&log_before) && !log_after.contains(&0), "the log was appended to, never truncated");
    assert_eq!(String::from_utf8_lossy(&log_after).matches("run-local.sh started tenant-worker").count(), 1);

    // Nothing it ran changed who may connect to a database that is not ours.
    let after = grants(&env).await;
    let after: Vec<_> = after.into_iter().filter(|(name, _)| before.iter().any(|(b, _)| b == name)).collect();
    assert_eq!(before, after, "grants of databases run-local.sh did not make");

    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = first.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends the first run cleanly: {status:?}");
    assert_ne!(unsafe { libc::kill(worker, 0) }, 0, "and its worker");
    assert!(!pidfile.exists(), "the pid file goes with the worker");

    // A worker started by hand (as the README shows) for the same control plane and
    // folder is found and used as well: no second worker beside it.
    let mut by_hand = Command::new(tenant_master_tests::binary("tenant-worker"));
    for (k, v) in env.env_vars() {
        by_hand.env(k, v);
    }
    by_hand.env("TENANT_MASTER_DATA_DIR", data.path()).stdout(Stdio::null()).stderr(Stdio::null());
    die_with_test(&mut by_hand);
    let mut by_hand = by_hand.spawn().unwrap();
    let _stop_by_hand = Stop(Some(by_hand.id() as i32));
    let third_out = data.path().join("third.out");
    let third = script(&third_out).status().unwrap();
    let said = std::fs::read_to_string(&third_out).unwrap();
    assert!(third.success(), "{said}{}", std::fs::read_to_string(third_out.with_extension("err")).unwrap_or_default());
    assert!(said.contains(&format!("tenant-worker is running already (pid {}, not started by run-local.sh", by_hand.id())), "{said}");
    assert!(by_hand.try_wait().unwrap().is_none(), "the worker started by hand still runs");
    assert!(!pidfile.exists(), "no worker of the script's own");
}
