//! The per-customer lock, the one place a customer is locked: two patches of one customer through one
//! patchbay never interleave their read-merge-write, so neither can overwrite the other's change with a
//! stale copy. A serialised write holds its customer's lock (by the primary id, once known); other calls
//! pass. A write that finds, reading, that it named its customer by another id ([`NeedsLock`]) takes
//! the primary id's lock too and runs again under both.

use super::call::CustomerCall;
use super::customer::NeedsLock;
use super::error::{cause, BoxError, BoxFuture};
use futures_util::future::Either;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

/// Marks the second run of a call: its client's quota was charged by the first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecondRun;

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
    S: Service<CustomerCall, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<S::Future, BoxFuture<S::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: CustomerCall) -> Self::Future {
        if !call.serialises() {
            return Either::Left(self.inner.call(call));
        }
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let provider = call.provider.clone();
            let key = provider.lock_key(&call.id);
            let (_customer, waited) = provider.locks.lock(&key).await;
            if waited {
                crate::metrics::read_merge_write_wait(provider.name());
            }
            // Kept only while the id may turn out to be another name of its customer.
            let again = (key == call.id).then(|| call.clone());
            call.locked = Some(key);
            let error = match inner.clone().oneshot(call).await {
                Err(error) if cause::<NeedsLock>(&*error).is_some() => error,
                answered => return answered,
            };
            let (Some(primary), Some(mut call)) = (cause::<NeedsLock>(&*error), again) else {
                return Err(error);
            };
            // The alias lock first, then the primary's: a holder of a primary lock waits for no
            // other, so two writers never wait for each other.
            let (_primary, _) = provider.locks.lock(&primary.primary).await;
            call.locked = Some(primary.primary.clone());
            call.extensions.insert(SecondRun);
            inner.oneshot(call).await
        }))
    }
}
