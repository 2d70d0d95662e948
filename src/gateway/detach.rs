//! Detach: a call that must outlive its caller ([`CustomerCall::outlives_caller`]: a serialised write, a
//! keyed PATCH) runs as its own task, tracked so that shutdown waits for it. Dropped halfway, a
//! serialised write could free its customer's lock with its write still in flight, and a keyed one
//! leave its write done and its record not kept. Other calls stay in the caller's task: cut short,
//! they leave nothing half-done. The one place the request path spawns.

use super::call::CustomerCall;
use super::error::BoxError;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use std::task::{Context, Poll};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::task::TaskTracker;
use tower::{Layer, Service, ServiceExt};

/// The detached call's task ended without an answer (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("a write task failed: {0}")]
pub(crate) struct WriteTaskFailed(String);

/// Its tasks are tracked in `writes`, which shutdown waits for.
#[derive(Clone)]
pub(crate) struct DetachLayer {
    writes: TaskTracker,
}

impl DetachLayer {
    pub fn new(writes: TaskTracker) -> DetachLayer {
        DetachLayer { writes }
    }
}

impl<S> Layer<S> for DetachLayer {
    type Service = Detach<S>;

    fn layer(&self, inner: S) -> Detach<S> {
        Detach {
            writes: self.writes.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Detach<S> {
    writes: TaskTracker,
    inner: S,
}

pub(crate) type Joined<R> = fn(Result<Result<R, BoxError>, JoinError>) -> Result<R, BoxError>;

impl<S> Service<CustomerCall> for Detach<S>
where
    S: Service<CustomerCall, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        Either<S::Future, Map<JoinHandle<Result<S::Response, BoxError>>, Joined<S::Response>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: CustomerCall) -> Self::Future {
        if !call.outlives_caller() {
            return Either::Left(self.inner.call(call));
        }
        Either::Right(detached(&self.writes, self.inner.clone().oneshot(call)))
    }
}

/// Runs `work` as its own task, tracked in `writes`: it goes on to its end if its caller is dropped.
pub(crate) fn detached<R, F>(
    writes: &TaskTracker,
    work: F,
) -> Map<JoinHandle<Result<R, BoxError>>, Joined<R>>
where
    F: std::future::Future<Output = Result<R, BoxError>> + Send + 'static,
    R: Send + 'static,
{
    writes.spawn(work).map(joined::<R>)
}

/// The task's answer, or why it has none.
fn joined<R>(result: Result<Result<R, BoxError>, JoinError>) -> Result<R, BoxError> {
    result.unwrap_or_else(|error| {
        tracing::error!(%error, "a write task failed");
        Err(WriteTaskFailed(error.to_string()).into())
    })
}
