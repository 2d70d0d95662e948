//! `GET /openapi.json`: the canonical API's OpenAPI 3.1 document (`openapi.json` beside this file,
//! kept in step with the code by `tests/openapi.rs`). Any other path goes on down the stack.

use super::error::BoxError;
use super::route::RouteError;
use bytes::Bytes;
use futures_util::future::{ready, Either, Ready};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::Full;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The document, as served.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone, Copy)]
pub(crate) struct DocumentLayer;

impl<S> Layer<S> for DocumentLayer {
    type Service = Document<S>;

    fn layer(&self, inner: S) -> Document<S> {
        Document { inner }
    }
}

#[derive(Clone)]
pub(crate) struct Document<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Document<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Either<Ready<Result<Response<Full<Bytes>>, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() != "/openapi.json" {
            return Either::Right(self.inner.call(request));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let method = request.method().clone();
            let refused = RouteError::Method {
                method,
                allow: "GET, HEAD",
            };
            return Either::Left(ready(Err(refused.into())));
        }
        let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Either::Left(ready(Ok(response)))
    }
}
