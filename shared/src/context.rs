//! What every operation takes: the configuration and the control-plane pool. Nothing of
//! the queue: the worker's own state (metrics, its limit of tenant jobs at once) sits in
//! `queue::runner::Runtime`, which holds one of these.

use sqlx::PgPool;

use crate::config::Config;

/// The context of an operation (and of a job's handler, which runs operations).
#[derive(Clone)]
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Connections to the control-plane database.
    pub pool: PgPool,
}

impl App {
    /// A context of `config` and `pool`.
    pub fn new(config: Config, pool: PgPool) -> App {
        App { config, pool }
    }
}
