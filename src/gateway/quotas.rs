//! `GET /quotas`: every limited credential by fingerprint, with what is left in each window. Any other
//! path goes on down the stack.

use super::customer::ProviderRuntime;
use super::route::RouteError;
use super::{BoxError, BoxFuture};
use bytes::Bytes;
use futures_util::future::Either;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::Full;
use serde_json::json;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone)]
pub(crate) struct QuotasLayer {
    providers: Arc<[Arc<ProviderRuntime>]>,
}

impl QuotasLayer {
    pub fn new(providers: Arc<[Arc<ProviderRuntime>]>) -> QuotasLayer {
        QuotasLayer { providers }
    }
}

impl<S> Layer<S> for QuotasLayer {
    type Service = Quotas<S>;

    fn layer(&self, inner: S) -> Quotas<S> {
        Quotas {
            providers: self.providers.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Quotas<S> {
    providers: Arc<[Arc<ProviderRuntime>]>,
    inner: S,
}

impl<S, B> Service<Request<B>> for Quotas<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Either<BoxFuture<Response<Full<Bytes>>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() != "/quotas" {
            return Either::Right(self.inner.call(request));
        }
        let providers = self.providers.clone();
        let method = request.method().clone();
        Either::Left(Box::pin(async move { quotas(&providers, &method).await }))
    }
}

async fn quotas(
    providers: &[Arc<ProviderRuntime>],
    method: &Method,
) -> Result<Response<Full<Bytes>>, BoxError> {
    if method != Method::GET {
        return Err(RouteError::OnlyGet(method.clone()).into());
    }
    let mut quotas = Vec::new();
    for limiter in providers.iter().filter_map(|p| p.limiter.as_ref()) {
        if !limiter.quota().is_unlimited() {
            quotas.push(limiter.describe().await?);
        }
    }
    let body = serde_json::to_vec(&json!({ "quotas": quotas })).expect("JSON serialises");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
