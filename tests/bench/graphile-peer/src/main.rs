//! `graphile-peer DATABASE_URL DRAIN_JOBS PICKUPS`: graphile_worker, tuned as its guide's
//! "throughput-oriented worker" (local queue of 100, completions batched every 5 ms,
//! 500 ms poll) with concurrency 100 like Tenant Master's tuned worker, draining
//! DRAIN_JOBS no-op jobs inserted before it starts, then picking up PICKUPS jobs enqueued
//! one at a time 30 ms apart. Prints one JSON line: jobs/s, pickup p50 and p99 in ms.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use graphile_worker::{IntoTaskHandlerResult, JobSpec, LocalQueueConfig, TaskHandler, WorkerContext, WorkerOptions};
use serde::{Deserialize, Serialize};

/// Latencies seen by the handler (enqueue time in the payload to handler start, same host).
static LATENCIES: Mutex<Vec<f64>> = Mutex::new(Vec::new());

#[derive(Clone, Deserialize, Serialize)]
struct Noop {
    /// Microseconds since the epoch when enqueued; 0 for drain jobs.
    enqueued_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

impl TaskHandler for Noop {
    const IDENTIFIER: &'static str = "bench_noop";

    async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        if self.enqueued_us > 0 {
            LATENCIES.lock().unwrap().push((now_us() - self.enqueued_us) as f64 / 1000.0);
        }
        Ok::<(), String>(())
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, drain, pickups] = &args[..] else { panic!("usage: graphile-peer DATABASE_URL DRAIN_JOBS PICKUPS") };
    let (drain, pickups): (usize, usize) = (drain.parse().unwrap(), pickups.parse().unwrap());
    let worker = WorkerOptions::default()
        .database_url(url)
        .schema("graphile_peer")
        .concurrency(100)
        .poll_interval(Duration::from_millis(500))
        .complete_job_batch_delay(Duration::from_millis(5))
        .fail_job_batch_delay(Duration::from_millis(5))
        .local_queue(LocalQueueConfig::default().with_size(100).with_ttl(Duration::from_secs(60)))
        .define_job::<Noop>()
        .init()
        .await
        .expect("graphile_worker starts");
    let utils = worker.create_utils();
    let spec = JobSpec::default();
    for chunk in vec![Noop { enqueued_us: 0 }; drain].chunks(5_000) {
        let specs: Vec<(Noop, &JobSpec)> = chunk.iter().map(|j| (j.clone(), &spec)).collect();
        utils.add_jobs::<Noop>(&specs).await.expect("jobs added");
    }
    let counter = sqlx::PgPool::connect(url).await.expect("connect");
    let worker = Arc::new(worker);
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    let started = Instant::now();
    wait_until_empty(&counter).await;
    let rate = drain as f64 / started.elapsed().as_secs_f64();
    for _ in 0..pickups {
        utils.add_job(Noop { enqueued_us: now_us() }, JobSpec::default()).await.expect("job added");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    while LATENCIES.lock().unwrap().len() < pickups {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.abort();
    let latencies = LATENCIES.lock().unwrap().clone();
    println!(
        "{}",
        serde_json::json!({ "jobs_per_s": rate, "pickup_p50_ms": percentile(latencies.clone(), 0.5), "pickup_p99_ms": percentile(latencies, 0.99) })
    );
}

/// Waits until the queue holds no job (graphile_worker deletes a job when it completes).
async fn wait_until_empty(pool: &sqlx::PgPool) {
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM graphile_peer._private_jobs").fetch_one(pool).await.expect("count the jobs");
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
