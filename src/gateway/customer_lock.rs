//! The per-customer lock: two patches of one customer through one patchbay never interleave their
//! read-merge-write, so neither can overwrite the other's change with a stale copy. The lock is held
//! (by the customer's primary id, once known) around a write that needs it; other calls pass.

use super::customer::{Answer, CustomerCall};
use super::{BoxError, BoxFuture};
use futures_util::future::Either;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, Copy, Default)]
pub(crate) struct CustomerLockLayer;

impl<S> Layer<S> for CustomerLockLayer {
    type Service = CustomerLock<S>;

    fn layer(&self, inner: S) -> CustomerLock<S> {
        CustomerLock { inner }
    }
}

#[derive(Clone)]
pub(crate) struct CustomerLock<S> {
    inner: S,
}

impl<S> Service<CustomerCall> for CustomerLock<S>
where
    S: Service<CustomerCall, Response = Answer, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Either<S::Future, BoxFuture<Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: CustomerCall) -> Self::Future {
        if !call.serialises() {
            return Either::Left(self.inner.call(call));
        }
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let key = call.provider.lock_key(&call.id);
            let (_customer, waited) = call.provider.locks.lock(&key).await;
            if waited {
                crate::metrics::read_merge_write_wait(call.provider.name());
            }
            inner.oneshot(call).await
        }))
    }
}
