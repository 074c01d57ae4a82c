//! Every integration test, in one binary: a module per subject, each against the real
//! PostgreSQL server (and SMTP, browser, private servers where the subject needs them).
//! Shared helpers live in the support crate (`support/`), not here.

mod backup;
mod cli;
mod crash_matrix;
mod deploy;
mod hostile;
mod hostile_fleet;
mod hostile_night;
mod hosts;
mod jobs;
mod lifecycle;
mod lose_nothing;
mod maintenance;
mod migrate;
mod moves;
mod operator;
mod panel;
mod panel_router;
mod provision;
mod rollout;
mod run_local;
mod shards;
mod untrusted;
mod worker_process;
