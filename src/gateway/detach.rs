//! Detach: a write that serialises with others of its customer runs as its own task, so that a caller
//! who hangs up cannot cut it short. Dropped halfway, it could release the customer's lock with its
//! write still in flight, and a concurrent read-merge-write would then read a record about to change.
//! Reads and writes that hold no lock stay in the caller's task: cut short, they leave nothing
//! half-guarded.

use super::customer::{Answer, CustomerCall};
use super::BoxError;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use std::task::{Context, Poll};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::task::TaskTracker;
use tower::{Layer, Service, ServiceExt};

/// The detached write's task ended without an answer (it panicked).
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

impl<S> Service<CustomerCall> for Detach<S>
where
    S: Service<CustomerCall, Response = Answer, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Either<S::Future, Map<JoinHandle<Result<Answer, BoxError>>, Joined>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: CustomerCall) -> Self::Future {
        if !call.serialises() {
            return Either::Left(self.inner.call(call));
        }
        let task = self.writes.spawn(self.inner.clone().oneshot(call));
        Either::Right(task.map(joined))
    }
}

type Joined = fn(Result<Result<Answer, BoxError>, JoinError>) -> Result<Answer, BoxError>;

/// The write task's answer, or why it has none.
fn joined(result: Result<Result<Answer, BoxError>, JoinError>) -> Result<Answer, BoxError> {
    result.unwrap_or_else(|error| {
        tracing::error!(%error, "a write task failed");
        Err(WriteTaskFailed(error.to_string()).into())
    })
}
