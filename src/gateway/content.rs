//! Check 5: a PATCH carries `application/merge-patch+json` or `application/json`, parameters such as
//! `charset=utf-8` allowed (415 otherwise). A GET has no body to check.

use super::request::check_content_type;
use super::route::Routed;
use super::BoxError;
use futures_util::future::Either;
use http::Method;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The body is not in a media type patchbay reads.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnsupportedMediaType(pub String);

#[derive(Clone, Copy, Default)]
pub(crate) struct ContentTypeLayer;

impl<S> Layer<S> for ContentTypeLayer {
    type Service = ContentType<S>;

    fn layer(&self, inner: S) -> ContentType<S> {
        ContentType { inner }
    }
}

#[derive(Clone)]
pub(crate) struct ContentType<S> {
    inner: S,
}

impl<S, B> Service<Routed<B>> for ContentType<S>
where
    S: Service<Routed<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<Ready<Result<S::Response, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Routed<B>) -> Self::Future {
        if request.head.method == Method::PATCH {
            if let Err(error) = check_content_type(&request.head.headers) {
                return Either::Left(ready(Err(error.into())));
            }
        }
        Either::Right(self.inner.call(request))
    }
}
