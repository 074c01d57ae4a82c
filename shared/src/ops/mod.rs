//! Tenant operations: the real work, knowing nothing of the queue, so the worker,
//! the CLI and the tests call the same code.

pub mod access;
pub mod admission;
pub mod backup;
pub mod delete;
pub mod maintenance;
pub mod migrations;
pub mod move_cleanup;
pub mod moves;
pub mod place;
pub mod provision;
pub mod prune;
pub mod restore;
pub mod rollout;
