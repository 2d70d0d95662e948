//! The request path's one fork: a link's paths (`/links/{id}`, `/customers/{id}` without a colon) go
//! down the links branch; every other request goes on down the per-provider checks.

use super::error::BoxError;
use super::request::is_link_path;
use futures_util::future::Either;
use http::Request;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

#[derive(Clone)]
pub(crate) struct SplitLayer<L> {
    links: L,
}

impl<L> SplitLayer<L> {
    pub fn new(links: L) -> SplitLayer<L> {
        SplitLayer { links }
    }
}

impl<L: Clone, S> Layer<S> for SplitLayer<L> {
    type Service = Split<L, S>;

    fn layer(&self, inner: S) -> Split<L, S> {
        Split {
            links: self.links.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Split<L, S> {
    links: L,
    inner: S,
}

impl<L, S, B> Service<Request<B>> for Split<L, S>
where
    L: Service<Request<B>, Response = S::Response, Error = BoxError>,
    S: Service<Request<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<L::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        ready!(self.links.poll_ready(cx))?;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match is_link_path(request.uri().path()) {
            true => Either::Left(self.links.call(request)),
            false => Either::Right(self.inner.call(request)),
        }
    }
}
