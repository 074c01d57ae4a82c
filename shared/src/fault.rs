//! Crash points: every step of a job after which the world has changed is named here, and
//! the crash matrix (`tests/crash_matrix.rs`) stops a real worker at each one.
//!
//! With the `fault-injection` feature a point can
//! - fail once, as an error, for a test that calls an operation in-process ([`arm`]);
//! - end the process on the spot, as SIGKILL would: no error path, no destructor, no
//!   cleanup code runs (`TENANT_MASTER_CRASH_AT`);
//! - stop the process there until a test has restarted PostgreSQL
//!   (`TENANT_MASTER_PAUSE_AT`, with `TENANT_MASTER_FAULT_DIR`).
//!
//! Without the feature every point compiles to nothing.

use crate::error::Result;

/// Every crash point, by job. `*` stands for a product migration's version (`0001`).
pub const POINTS: &[&str] = &[
    "provision:register",
    "provision:role",
    "provision:database",
    "provision:schema",
    "provision:migration:*",
    "provision:activate",
    "backup:registered",
    "backup:dumped",
    "backup:renamed",
    "restore:safety_backup",
    "restore:set_aside",
    "restore:restored",
    "restore:aside_dropped",
    "restore:recorded",
    "delete:held",
    "delete:backup",
    "delete:data",
    "delete:roles",
    "move:target_ready",
    "move:held",
    "move:copied",
    "move:restored",
    "move:verified",
    "move:switched",
    "move:login_back",
    "move:source_kept",
    "migrate:migration:*",
    "pause:login_blocked",
    "pause:recorded",
    "resume:recorded",
    "resume:login",
    "maintenance:backup_first",
    "maintenance:vacuumed",
    "cleanup:batch",
];

/// Whether `point` (a concrete name, `provision:migration:0002`) is declared in [`POINTS`].
pub fn is_declared(point: &str) -> bool {
    POINTS.iter().any(|declared| match declared.strip_suffix('*') {
        Some(prefix) => point.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains(':')),
        None => *declared == point,
    })
}

#[cfg(feature = "fault-injection")]
static ARMED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Makes the next pass through `point` for `scope` (a tenant slug) fail once.
#[cfg(feature = "fault-injection")]
pub fn arm(scope: &str, point: &str) {
    ARMED.lock().unwrap().push((scope.to_owned(), point.to_owned()));
}

/// Passes point `point` of the work on `scope` (a tenant slug): with the feature, fails if a
/// test armed it, or crashes or pauses the process if its environment says so.
#[cfg(feature = "fault-injection")]
pub fn point(scope: &str, point: &str) -> Result<()> {
    debug_assert!(is_declared(point), "crash point '{point}' is not declared in fault::POINTS");
    process_faults::at(scope, point);
    let mut armed = ARMED.lock().unwrap();
    match armed.iter().position(|(s, p)| s == scope && p == point) {
        Some(i) => {
            armed.remove(i);
            Err(crate::error::Error::Injected(format!("fault injected after step '{point}'")))
        }
        None => Ok(()),
    }
}

/// Without the feature, a point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_scope: &str, _point: &str) -> Result<()> {
    Ok(())
}

/// Process-level faults for the crash matrix. Both variables hold `scope@point` entries
/// separated by commas. Each entry fires once per `TENANT_MASTER_FAULT_DIR`: the process
/// writes `<dir>/<scope>@<point>.reached` first (so the harness knows which point it hit,
/// and a restarted worker with the same variables passes it by).
#[cfg(feature = "fault-injection")]
mod process_faults {
    use std::path::PathBuf;

    fn listed(var: &str, entry: &str) -> bool {
        std::env::var(var).is_ok_and(|v| v.split(',').any(|e| e == entry))
    }

    fn marker(entry: &str, suffix: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("TENANT_MASTER_FAULT_DIR")?;
        Some(PathBuf::from(dir).join(format!("{entry}.{suffix}")))
    }

    /// Claims `entry` once: false if it fired before (in this or an earlier process).
    fn first_time(entry: &str) -> bool {
        let Some(reached) = marker(entry, "reached") else { return true };
        std::fs::OpenOptions::new().write(true).create_new(true).open(reached).is_ok()
    }

    pub(super) fn at(scope: &str, point: &str) {
        let entry = format!("{scope}@{point}");
        if listed("TENANT_MASTER_CRASH_AT", &entry) && first_time(&entry) {
            // As SIGKILL: nothing after this line runs, no destructor, no error path.
            eprintln!("crash point {entry}: aborting the process");
            std::process::abort();
        }
        if listed("TENANT_MASTER_PAUSE_AT", &entry) && first_time(&entry) {
            // Blocks this thread (and so this job) until the harness has restarted the
            // server and says go on: the job then meets the restart as it would in life.
            eprintln!("crash point {entry}: paused for a server restart");
            let Some(resume) = marker(&entry, "resume") else { return };
            let wait = || {
                while !resume.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            };
            // Other tasks of a multi-threaded runtime move off this thread meanwhile.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                _ => wait(),
            }
        }
    }
}
