//! Prometheus metrics and health of a worker, served on `worker.metrics_addr`:
//! `/metrics` (text format 0.0.4) and `/healthz` (200 if the database answers).
//!
//! Counters live in this process; queue depth and the age of the oldest due job are read
//! from the database at scrape time, so every worker reports the same queue.

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex, time::Duration};

use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::error::Result;

/// Upper bounds (seconds) of the run-duration histogram.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0];

/// What happened to one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// The job finished well.
    Succeeded,
    /// Failed; will be retried.
    Retried,
    /// Failed for good.
    Dead,
}

#[derive(Default)]
struct TypeStats {
    started: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
    dead: u64,
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
}

/// A counter's name, help text and where its value lives.
type Counter = (&'static str, &'static str, fn(&TypeStats) -> u64);

/// The worker's counters.
#[derive(Default)]
pub struct Metrics {
    by_type: Mutex<BTreeMap<&'static str, TypeStats>>,
}

impl Metrics {
    /// A job of `job_type` started.
    pub fn started(&self, job_type: &'static str) {
        self.by_type.lock().unwrap().entry(job_type).or_default().started += 1;
    }

    /// A job of `job_type` ended after `took`.
    pub fn finished(&self, job_type: &'static str, outcome: Outcome, took: Duration) {
        let mut all = self.by_type.lock().unwrap();
        let s = all.entry(job_type).or_default();
        match outcome {
            Outcome::Succeeded => s.succeeded += 1,
            Outcome::Retried => {
                s.failed += 1;
                s.retried += 1;
            }
            Outcome::Dead => {
                s.failed += 1;
                s.dead += 1;
            }
        }
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
        s.duration_sum += secs;
        s.duration_count += 1;
    }

    /// The Prometheus text exposition, with the queue read from `pool`.
    pub async fn render(&self, pool: &PgPool) -> Result<String> {
        let queue = crate::queue::depth(pool).await?;
        let mut out = String::new();
        let all = self.by_type.lock().unwrap();
        let counters: [Counter; 5] = [
            ("started", "Jobs started", |s| s.started),
            ("succeeded", "Jobs that succeeded", |s| s.succeeded),
            ("failed", "Job attempts that failed (retried or dead)", |s| s.failed),
            ("retried", "Failed attempts scheduled for a retry", |s| s.retried),
            ("dead", "Jobs that gave up", |s| s.dead),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP tenant_master_jobs_{name}_total {help}, by job type.\n# TYPE tenant_master_jobs_{name}_total counter"
            );
            for (t, s) in all.iter() {
                let _ = writeln!(out, "tenant_master_jobs_{name}_total{{type=\"{t}\"}} {}", value(s));
            }
        }
        let _ = writeln!(
            out,
            "# HELP tenant_master_job_duration_seconds Run time of job attempts.\n# TYPE tenant_master_job_duration_seconds histogram"
        );
        for (t, s) in all.iter() {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "tenant_master_job_duration_seconds_bucket{{type=\"{t}\",le=\"{bound}\"}} {}", s.buckets[i]);
            }
            let _ = writeln!(out, "tenant_master_job_duration_seconds_bucket{{type=\"{t}\",le=\"+Inf\"}} {}", s.duration_count);
            let _ = writeln!(out, "tenant_master_job_duration_seconds_sum{{type=\"{t}\"}} {}", s.duration_sum);
            let _ = writeln!(out, "tenant_master_job_duration_seconds_count{{type=\"{t}\"}} {}", s.duration_count);
        }
        let _ =
            writeln!(out, "# HELP tenant_master_queue_depth Jobs due and waiting, by job type.\n# TYPE tenant_master_queue_depth gauge");
        for d in &queue {
            let _ = writeln!(out, "tenant_master_queue_depth{{type=\"{}\"}} {}", d.job_type, d.due);
        }
        let _ = writeln!(
            out,
            "# HELP tenant_master_queue_oldest_pending_age_seconds Age of the oldest due job, by job type.\n# TYPE tenant_master_queue_oldest_pending_age_seconds gauge"
        );
        for d in &queue {
            let _ = writeln!(out, "tenant_master_queue_oldest_pending_age_seconds{{type=\"{}\"}} {:.3}", d.job_type, d.oldest_due_secs);
        }
        Ok(out)
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>, pool: PgPool) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (metrics, pool) = (metrics.clone(), pool.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => match metrics.render(&pool).await {
                    Ok(text) => ("200 OK", "text/plain; version=0.0.4", text),
                    Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
                },
                // A pool keeps trying to connect until its acquire timeout: answer sooner.
                "/healthz" => match tokio::time::timeout(Duration::from_secs(3), sqlx::query("SELECT 1").execute(&pool)).await {
                    Ok(Ok(_)) => ("200 OK", "text/plain", "ok\n".to_owned()),
                    Ok(Err(e)) => ("503 Service Unavailable", "text/plain", format!("database unreachable: {e}\n")),
                    Err(_) => ("503 Service Unavailable", "text/plain", "database unreachable: no answer within 3 s\n".to_owned()),
                },
                _ => ("404 Not Found", "text/plain", "try /metrics or /healthz\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
