//! Spend: every call a provider sees, token calls and retries included, first spends one call from the
//! request's budget (the credential's rate limit). A call the budget refuses is never sent, and the
//! budget's error goes up as it is.

use super::{BoxError, BoxFuture, Outbound, Response};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// Permission to send one more call with the provider's credential. The gateway's rate limiter
/// implements it; every call asks before it is sent.
pub trait CallBudget: Send + Sync {
    fn spend(&self) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + '_>>;
}

/// The spending layer's service.
#[derive(Clone)]
pub struct Spend<S> {
    inner: S,
}

impl<S> Spend<S> {
    pub fn new(inner: S) -> Spend<S> {
        Spend { inner }
    }
}

impl<S> Service<Outbound> for Spend<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, outbound: Outbound) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(budget) = &outbound.budget {
                budget.spend().await?;
            }
            inner.oneshot(outbound.request).await.map_err(Into::into)
        })
    }
}
