//! RetryGet: a GET that failed on the connection (nothing answered) is sent once more, since reading
//! twice changes nothing. A write is never repeated here: it may have reached the provider.

use super::{BoxError, BoxFuture, CallError, Outbound, Response};
use bytes::Bytes;
use futures_util::future::Either;
use http::{Method, Request};
use http_body_util::Full;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// The retrying layer's service.
#[derive(Clone)]
pub struct RetryGet<S> {
    inner: S,
}

impl<S> RetryGet<S> {
    pub fn new(inner: S) -> RetryGet<S> {
        RetryGet { inner }
    }
}

impl<S> Service<Outbound> for RetryGet<S>
where
    S: Service<Outbound, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = BoxError;
    /// A write goes straight on; only a GET keeps what it needs to be sent again.
    type Future = Either<S::Future, BoxFuture<Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, outbound: Outbound) -> Self::Future {
        if outbound.request.method() != Method::GET {
            return Either::Left(self.inner.call(outbound));
        }
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let again = Outbound {
                request: copy(&outbound.request),
                budget: outbound.budget.clone(),
            };
            match inner.clone().oneshot(outbound).await {
                Err(error) if error.is::<CallError>() => inner.oneshot(again).await,
                other => other,
            }
        }))
    }
}

/// A GET's request again: method, URI, headers and (empty) body.
fn copy(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(request.body().clone());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.headers_mut() = request.headers().clone();
    again
}
