//! `Noop`: does nothing. A canary for monitoring (enqueue one, see it done) and the
//! benchmark's unit of work.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{App, Job, Run};
use crate::error::Result;

/// Payload: free-form, ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Job for Noop {
    const TYPE: &'static str = "Noop";
    const TIMEOUT_SECS: u64 = 60;

    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        None
    }

    /// Returns when it ran (RFC 3339, microseconds): the end point of pickup latency.
    async fn run(&self, _app: &App, _run: &Run) -> Result<Value> {
        Ok(Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
    }
}
