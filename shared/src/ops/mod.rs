//! Tenant operations: the real work, knowing nothing of the queue, so the worker,
//! the CLI and the tests call the same code.

pub mod backup;
pub mod maintenance;
pub mod provision;
pub mod prune;
pub mod restore;
