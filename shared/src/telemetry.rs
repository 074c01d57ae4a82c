//! Logging: human-readable on a terminal, JSON with `LOG_FORMAT=json`; `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}

/// Wall time per named step of one run, reported in a job's result (`timings_ms`), so an
/// operator (and the benchmark's `--profile`) sees where a slow job spends its time.
#[derive(Debug)]
pub struct Laps {
    last: std::time::Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Default for Laps {
    fn default() -> Laps {
        Laps { last: std::time::Instant::now(), steps: Vec::new() }
    }
}

impl Laps {
    /// Ends step `name` now: its time is what passed since the previous step ended.
    pub fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1000.0;
        self.last = now;
        match self.steps.iter_mut().find(|(step, _)| *step == name) {
            Some((_, total)) => *total += ms,
            None => self.steps.push((name, ms)),
        }
    }

    /// `{"step": milliseconds, ...}`, to a tenth of a millisecond.
    pub fn to_json(&self) -> serde_json::Value {
        self.steps.iter().map(|(step, ms)| ((*step).to_owned(), serde_json::json!((ms * 10.0).round() / 10.0))).collect()
    }
}
