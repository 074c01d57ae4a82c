//! `Noop`: does nothing. A canary for monitoring (enqueue one, see it done) and the
//! benchmark's unit of work.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::{
    context::App,
    queue::{
        payload::{optional, Field, Shape},
        Job, Policy, Run,
    },
};

/// Payload: a free-form note (ignored) and how long to take, for a slow canary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    /// A free-form note; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Sleep this long before finishing (at most the type's 60 s timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<u64>,
}

impl Job for Noop {
    const TYPE: &'static str = "Noop";
    const FIELDS: &'static [Field] = &[optional("note", Shape::String), optional("sleep_ms", Shape::Unsigned)];
    const DESCRIPTION: &'static str = "does nothing: a canary and the benchmark's unit of work";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 60, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        None
    }

    /// Returns when it ran (RFC 3339, microseconds): the end point of pickup latency.
    async fn run(&self, _app: &App, _run: &Run) -> Result<Value> {
        if let Some(ms) = self.sleep_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Ok(Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
    }
}
