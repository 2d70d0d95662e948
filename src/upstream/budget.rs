//! Spend: every call a provider sees, token calls and retries included, first spends one call from the
//! request's budget (the credential's rate limit). A call the budget refuses is never sent, and the
//! budget's error goes up as it is.

use super::{BoxError, BoxFuture, Outbound, Response};
use bytes::Bytes;
use futures_util::future::{Either, MapErr};
use futures_util::TryFutureExt;
use http::Request;
use http_body_util::Full;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// Permission to send one more call with the provider's credential. The gateway's rate limiter
/// implements it; every call asks before it is sent.
pub trait CallBudget: Send + Sync {
    /// Spends one of the calls reserved when the request was admitted; `false` when none is left.
    fn spend_planned(&self) -> bool;

    /// Reserves and spends one call beyond those planned (a refresh, a retry), or refuses it.
    fn spend_unplanned(&self) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + '_>>;
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

type Sent<S> = MapErr<
    <S as Service<Request<Full<Bytes>>>>::Future,
    fn(<S as Service<Request<Full<Bytes>>>>::Error) -> BoxError,
>;

impl<S> Service<Outbound> for Spend<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = Response;
    type Error = BoxError;
    /// A planned call goes straight on; only an unplanned one waits for its reservation.
    type Future = Either<Sent<S>, BoxFuture<Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, outbound: Outbound) -> Self::Future {
        let into: fn(S::Error) -> BoxError = Into::into;
        let Some(budget) = outbound.budget.filter(|budget| !budget.spend_planned()) else {
            return Either::Left(self.inner.call(outbound.request).map_err(into));
        };
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            budget.spend_unplanned().await?;
            inner.oneshot(outbound.request).await.map_err(into)
        }))
    }
}
