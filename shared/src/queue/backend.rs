//! The apalis side of [`super::feed`]: a [`Backend`] per job type that takes its jobs from
//! the process's feed, and the middleware that acknowledges each attempt through it. The
//! worker keeps apalis's worker, layers and Monitor; only the fetch and the
//! acknowledgements are ours.

use std::{
    convert::Infallible,
    future::Future as _,
    sync::Arc,
    task::{Context, Poll},
};

use apalis::prelude::{AbortError, Backend, BoxDynError, Task, WorkerContext};
use apalis_core::backend::{finalize::Ephemeral, BackendConfig};
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::feed::{Feed, Slot};

/// The jobs of one job type, from the process's [`Feed`].
pub struct FeedBackend {
    feed: Feed,
    slot: Arc<Slot>,
    /// Giving unstarted jobs back at shutdown, once begun (a task: it must finish even if
    /// the worker stops polling us).
    closing: Option<tokio::task::JoinHandle<()>>,
}

impl FeedBackend {
    /// The backend of `job_type`'s worker.
    pub fn new(feed: &Feed, job_type: &str) -> FeedBackend {
        FeedBackend { feed: feed.clone(), slot: feed.slot(job_type), closing: None }
    }
}

impl Backend for FeedBackend {
    type Task = Task<Value>;
    // Database failures are the feed's to wait out (it tries again): a worker never stops
    // because the database restarted.
    type Error = Infallible;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Infallible>> {
        self.feed.attach(&self.slot, worker.name());
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Option<Result<Task<Value>, Infallible>>> {
        match self.feed.next(&self.slot, cx.waker()) {
            Some(task) => Poll::Ready(Some(Ok(task))),
            None => Poll::Pending,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Infallible>> {
        let closing = self.closing.get_or_insert_with(|| {
            let (feed, slot) = (self.feed.clone(), self.slot.clone());
            tokio::spawn(async move { feed.close(&slot).await })
        });
        std::pin::Pin::new(closing).poll(cx).map(|_| Ok(()))
    }
}

impl BackendConfig for FeedBackend {
    type Args = Value;
    type Id = String;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = AckLayer;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> AckLayer {
        AckLayer { feed: self.feed.clone(), slot: self.slot.clone() }
    }
}

/// Acknowledges every attempt through the feed: the job's slot is free only once its
/// outcome is stored, so a drain or a restart never loses one that finished.
#[derive(Clone)]
pub struct AckLayer {
    feed: Feed,
    slot: Arc<Slot>,
}

impl<S> tower_layer::Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService { inner, feed: self.feed.clone(), slot: self.slot.clone() }
    }
}

/// The service [`AckLayer`] wraps around a worker's.
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    feed: Feed,
    slot: Arc<Slot>,
}

impl<S> tower_service::Service<Task<Value>> for AckService<S>
where
    S: tower_service::Service<Task<Value>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: serde::Serialize + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Value>) -> Self::Future {
        let context = task.ctx().clone();
        let running = self.inner.call(task);
        let (feed, slot) = (self.feed.clone(), self.slot.clone());
        Box::pin(async move {
            let outcome = running.await.map_err(Into::into);
            let (status, result) = match &outcome {
                Ok(value) => ("Done", serde_json::json!({ "Ok": value })),
                // Given up (dead): never fetched again.
                Err(e) if e.downcast_ref::<AbortError>().is_some() => {
                    ("Killed", serde_json::json!({ "Err": super::clip_error(&e.to_string()) }))
                }
                // Fetched again once due (the handler stored its backoff in run_at) while
                // attempts remain.
                Err(e) => ("Failed", serde_json::json!({ "Err": super::clip_error(&e.to_string()) })),
            };
            let id = context.task_id().map(ToString::to_string).unwrap_or_default();
            feed.acknowledge(&slot, id, context.attempt(), status, result).await;
            outcome
        })
    }
}
