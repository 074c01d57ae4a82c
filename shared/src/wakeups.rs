//! Worker wake-ups: one LISTEN connection per process feeds every worker.
//!
//! apalis-postgres gives each worker a listener of its own (one connection per job type
//! and worker), and its trigger sends one NOTIFY per inserted row, each of which makes
//! every worker of that type fetch. Here the control plane's trigger sends one NOTIFY per
//! statement and job type on `tenant_master_jobs` (migration 0010), one task listens,
//! and each worker's wake-up stream yields when its type was notified or its poll
//! interval passed (the interval catches delayed jobs, retries and missed notifications).
//! Notifications that arrive while a worker is busy collapse into one wake-up: a fetch
//! takes a whole batch anyway.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;

/// The channel the control plane's trigger notifies, with the job type as payload.
pub const CHANNEL: &str = "tenant_master_jobs";

/// Wake-up senders per job type, fed by [`Wakeups::listen`].
#[derive(Clone)]
pub struct Wakeups {
    senders: Arc<HashMap<String, watch::Sender<u64>>>,
}

impl Wakeups {
    /// Wake-ups for these job types.
    pub fn new(job_types: &[&str]) -> Wakeups {
        let senders = job_types.iter().map(|t| (t.to_string(), watch::channel(0).0)).collect();
        Wakeups { senders: Arc::new(senders) }
    }

    /// A stream that yields when `job_type` was notified, and at least every `interval`.
    pub fn stream(&self, job_type: &str, interval: Duration) -> Pin<Box<dyn Stream<Item = ()> + Send + Sync>> {
        let receiver = self.senders.get(job_type).map(|s| s.subscribe());
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Box::pin(futures_util::stream::unfold((receiver, ticks), |(mut receiver, mut ticks)| async move {
            match receiver.as_mut() {
                Some(r) => {
                    tokio::select! {
                        changed = r.changed() => {
                            if changed.is_err() {
                                // The listener is gone: the interval alone wakes us.
                                receiver = None;
                            }
                            // A notified fetch counts as this interval's poll.
                            ticks.reset();
                        }
                        _ = ticks.tick() => {}
                    }
                }
                None => {
                    ticks.tick().await;
                }
            }
            Some(((), (receiver, ticks)))
        }))
    }

    /// Wakes the workers of `job_type`.
    pub fn wake(&self, job_type: &str) {
        if let Some(sender) = self.senders.get(job_type) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every worker (after the listener reconnected: notifications may have been lost).
    fn wake_all(&self) {
        for sender in self.senders.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
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
        // Notifications sent while we were not listening are lost: everyone looks now.
        self.wake_all();
        loop {
            match listener.try_recv().await? {
                Some(notification) => self.wake(notification.payload()),
                // The connection was lost (sqlx reconnects on the next call): start over, so
                // the wake-up after reconnecting is not forgotten.
                None => return Err(sqlx::Error::Protocol("the connection was closed".into())),
            }
        }
    }
}
