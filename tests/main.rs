//! Every integration test, in one binary: a module per subject, each against the real
//! PostgreSQL server (and SMTP, browser, private servers where the subject needs them).
//! Shared helpers live in the support crate (`support/`), not here.

// A test is one scenario read top to bottom (set up, act, check what a user would see);
// cutting it into functions to meet the 60-line rule would hide the story, not shorten it.
#![allow(clippy::too_many_lines)]

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
