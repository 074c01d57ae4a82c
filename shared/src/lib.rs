//! Tenant Master: the lifecycle of a multi-tenant SaaS's tenants on PostgreSQL, as durable
//! background jobs.
//!
//! # Layers
//!
//! A module imports from its own layer or the ones below, never from above, and no two
//! modules import each other, directly or around a circle. [`LAYERS`] is this list, and a
//! test (`layers::imports_go_down_and_never_around_a_circle`) reads every source file and
//! fails on an upward import or a cycle; another (`layers::operations_call_each_other_without_a_circle`)
//! does the same for the modules inside [`ops`], which call each other.
//!
//! 0. **Foundation**, knowing nothing of Tenant Master's data: [`error`], [`naming`]
//!    (slugs, plans, PostgreSQL names), [`secrets`], [`password`], [`private_files`],
//!    [`fault`] (the declared crash points), [`system`], [`telemetry`], [`wakeups`].
//! 1. **Configuration and connections**: [`config`], [`context`] (the [`App`] every
//!    operation takes: configuration and the control-plane pool), [`db`], [`pg_tools`],
//!    [`products`], [`deployment`], and the control-plane records every layer above
//!    writes: [`activity`], [`outcomes`], [`backups`], [`ledger`], [`lock`],
//!    [`catalog_deps`].
//! 2. **The registry**: [`keys`], [`hosts`], [`tenants`], [`plans`], [`tenant_session`]
//!    (sessions with a tenant's rights), [`mail`], [`guard`], [`large_objects`],
//!    [`overview`].
//! 3. **Operations**: [`ops`], the work itself (provision, back up, restore, move, ...),
//!    knowing nothing of the queue.
//! 4. **The queue**: [`queue`] (enqueue, read, what a job type is, the handler every job
//!    runs through, metrics).
//! 5. **Job types**: [`jobs`], one file each, and the admin requests that enqueue them.
//! 6. **Processes**: [`worker`], [`schedule`], [`migrate`]; then [`scheduler`] and
//!    [`service`] on top. The binaries (`tenantctl` with the admin panel,
//!    `tenant-worker`, `tenant-scheduler`) sit above the crate.
//!
//! From `tenantctl tenant create` down: the CLI calls
//! [`jobs::provision_tenant::create`], which registers the tenant ([`tenants`]) and
//! enqueues `ProvisionTenant` ([`queue`]); the worker's handler ([`queue::runner`]) runs
//! [`jobs::provision_tenant::ProvisionTenant`], which calls [`ops::provision`], which
//! runs the SQL through [`db`] and [`tenant_session`].

/// The layers above, as data: module name and layer. A module missing here fails the test.
pub const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("naming", 0),
    ("secrets", 0),
    ("password", 0),
    ("private_files", 0),
    ("fault", 0),
    ("system", 0),
    ("telemetry", 0),
    ("wakeups", 0),
    ("config", 1),
    ("context", 1),
    ("db", 1),
    ("pg_tools", 1),
    ("products", 1),
    ("deployment", 1),
    ("activity", 1),
    ("outcomes", 1),
    ("backups", 1),
    ("ledger", 1),
    ("lock", 1),
    ("catalog_deps", 1),
    ("keys", 2),
    ("hosts", 2),
    ("tenants", 2),
    ("plans", 2),
    ("tenant_session", 2),
    ("mail", 2),
    ("guard", 2),
    ("large_objects", 2),
    ("overview", 2),
    ("ops", 3),
    ("queue", 4),
    ("jobs", 5),
    ("worker", 6),
    ("schedule", 6),
    ("migrate", 6),
    ("scheduler", 7),
    ("service", 7),
];

pub mod activity;
pub mod backups;
pub mod catalog_deps;
pub mod config;
pub mod context;
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
pub use context::App;
pub use error::{Error, Result};

#[cfg(test)]
mod layers;
