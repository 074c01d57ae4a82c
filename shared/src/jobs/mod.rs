//! The job types, one per file, and the one list of them ([`every_job_type!`]).
//!
//! Adding a job type: its file (the payload, its `Job` impl with its [`crate::queue::Policy`])
//! and its `pub mod` line here, plus one line in [`every_job_type!`]. `tenantctl migrate`
//! writes its row into `tenant_master.job_types` from [`REGISTRY`]; a migration is needed
//! only if SQL the migrations define must name it.

pub mod access;
pub mod backup_tenant;
pub mod cancel;
pub mod change_plan;
pub mod cleanup;
pub mod delete_tenant;
pub mod migrate_tenant;
pub mod move_tenant;
pub mod noop;
pub mod provision_tenant;
pub mod prune_jobs;
pub mod restore_tenant;
pub mod send_welcome_mail;
pub mod vacuum;

use crate::queue::job::{job_type, JobType};

/// Every job type, the one list: hands the list of payload types to macro `$apply`. The
/// worker registers a worker pool for each ([`crate::worker`]), [`REGISTRY`] describes
/// each, and `tenantctl migrate` writes each into `tenant_master.job_types`.
macro_rules! every_job_type {
    ($apply:ident) => {
        $apply!(
            $crate::jobs::provision_tenant::ProvisionTenant,
            $crate::jobs::backup_tenant::BackupTenant,
            $crate::jobs::restore_tenant::RestoreTenant,
            $crate::jobs::vacuum::Vacuum,
            $crate::jobs::cleanup::Cleanup,
            $crate::jobs::prune_jobs::PruneJobs,
            $crate::jobs::send_welcome_mail::SendWelcomeMail,
            $crate::jobs::access::PauseTenant,
            $crate::jobs::access::ResumeTenant,
            $crate::jobs::delete_tenant::DeleteTenant,
            $crate::jobs::migrate_tenant::MigrateTenant,
            $crate::jobs::move_tenant::MoveTenant,
            $crate::jobs::noop::Noop
        )
    };
}
pub(crate) use every_job_type;

/// Every job type, described: its name, payload fields and decoder.
pub const REGISTRY: &[JobType] = {
    macro_rules! describe {
        ($($job:ty),*) => { &[$(job_type::<$job>()),*] };
    }
    every_job_type!(describe)
};

/// The idempotency key of a job enqueued by a schedule: `<schedule>:<subject>:<slot>`,
/// the same as `schedule::fan_out` writes.
pub fn schedule_key(schedule: Option<&str>, subject: &str, slot: Option<&str>) -> Option<String> {
    Some(format!("{}:{subject}:{}", schedule?, slot?))
}

#[cfg(test)]
mod tests {
    /// Every `impl Job` under `jobs/` is in [`every_job_type!`]: a type left out would have
    /// no worker and no `job_types` row, and its jobs would wait forever.
    #[test]
    fn every_job_type_written_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/jobs");
        let mut written = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in source.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("const TYPE: &'static str = \"").and_then(|rest| rest.strip_suffix("\";")) {
                    written.push(name.to_owned());
                }
            }
        }
        written.sort();
        let mut registered: Vec<String> = super::REGISTRY.iter().map(|t| t.name.to_owned()).collect();
        registered.sort();
        assert!(written.len() >= 13, "the reader finds the job types: {written:?}");
        assert_eq!(written, registered, "a job type written under jobs/ is missing from every_job_type! (or listed twice)");
    }
}
