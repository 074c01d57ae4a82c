//! Worker wake-ups: one LISTEN connection per process.
//!
//! The control plane's trigger sends one NOTIFY per statement that enqueues jobs, on
//! `tenant_master_jobs` (migration 0010); one task listens and bumps a counter the
//! process's fetch watches. Notifications that arrive while the fetch is busy collapse
//! into one wake-up: a fetch takes everything due anyway. The fetch's own interval
//! catches delayed jobs, retries and notifications missed while reconnecting.

use std::time::Duration;

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;

/// The channel the control plane's trigger notifies, with the job type as payload.
pub const CHANNEL: &str = "tenant_master_jobs";

/// Bumped on every notification, fed by [`Wakeups::listen`].
#[derive(Clone)]
pub struct Wakeups {
    sender: watch::Sender<u64>,
}

impl Default for Wakeups {
    fn default() -> Wakeups {
        Wakeups { sender: watch::channel(0).0 }
    }
}

impl Wakeups {
    /// A receiver that changes when jobs were enqueued (or may have been, after a reconnect).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    fn wake(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Listens on [`CHANNEL`] until the task is aborted, reconnecting with backoff when the
    /// connection is lost. It holds one connection of `pool` all along.
    pub async fn listen(self, pool: PgPool) {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.listen_once(&pool).await {
                Ok(()) => delay = Duration::from_millis(250),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "job wake-up listener lost its connection; reconnecting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Notifications sent while we were not listening are lost: look now.
        self.wake();
        loop {
            match listener.try_recv().await? {
                Some(_) => self.wake(),
                // The connection was lost (sqlx reconnects on the next call): start over, so
                // the wake-up after reconnecting is not forgotten.
                None => return Err(sqlx::Error::Protocol("the connection was closed".into())),
            }
        }
    }
}
