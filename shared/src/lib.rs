//! Tenant Master: the lifecycle of a multi-tenant SaaS's tenants on PostgreSQL, as durable
//! background jobs.
//!
//! - [`config`]: defaults -> TOML file -> environment.
//! - [`naming`]: slugs, plans, isolation and the PostgreSQL names derived from them.
//! - [`migrate`]: the control-plane schema and the queue's own migrations.
//! - [`tenants`]: the registry (create, list, show, credentials).
//! - [`queue`]: enqueue (also inside a caller's transaction) and read jobs.
//! - [`jobs`]: job payloads and the handler wrapper; [`ops`]: the work itself.
//! - [`worker`]: the apalis worker pool; [`schedule`] and [`scheduler`]: cron fan-outs.
//! - [`products`]: product definitions and their tenant migrations.
//! - [`fault`]: the declared crash points the crash matrix stops a worker at.
//! - [`large_objects`]: why a tenant with large objects is refused; [`private_files`]:
//!   backups and mails readable by the service account only.

pub mod activity;
pub mod backups;
pub mod catalog_deps;
pub mod config;
pub mod db;
pub mod deployment;
pub mod error;
pub mod fault;
pub mod guard;
pub mod hosts;
pub mod jobs;
pub mod keys;
pub mod large_objects;
pub mod ledger;
pub mod lock;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod naming;
pub mod ops;
pub mod outcomes;
pub mod overview;
pub mod password;
pub mod pg_tools;
pub mod plans;
pub mod private_files;
pub mod products;
pub mod queue;
pub mod schedule;
pub mod scheduler;
pub mod secrets;
pub mod service;
pub mod system;
pub mod telemetry;
pub mod tenant_session;
pub mod tenants;
pub mod wakeups;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
