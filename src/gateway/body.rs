//! Checks 6–7: a PATCH (or PUT) body of at most `server.body_limit_bytes` (413, refused before reading when its
//! length is declared), arriving within `server.body_timeout_ms` (408, and the connection closed),
//! holding one UTF-8 JSON object without duplicate keys (400). A GET's body is not read.

use super::call::Routed;
use super::error::{BoxError, BoxFuture};
use crate::canonical::parse_object;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// The body, as patchbay reads it: too large, cut short, or not one JSON object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the body is larger than the {limit}-byte limit (server.body_limit_bytes)")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    #[error("the body did not arrive within {0} ms (server.body_timeout_ms)")]
    TimedOut(u128),
    #[error("{0}")]
    NotAJsonObject(String),
}

/// A PATCH's or PUT's body once read: its JSON object, and its bytes as they came (whose member order
/// a map does not keep).
pub(crate) struct ReadBody {
    pub object: Map<String, Value>,
    pub bytes: Bytes,
}

/// A routed request's body once read: nothing for a GET.
pub(crate) type JsonBody = Option<ReadBody>;

#[derive(Clone, Copy)]
pub(crate) struct JsonBodyLayer {
    limit: usize,
    timeout: Duration,
}

impl JsonBodyLayer {
    pub fn new(limit: usize, timeout: Duration) -> JsonBodyLayer {
        JsonBodyLayer { limit, timeout }
    }
}

impl<S> Layer<S> for JsonBodyLayer {
    type Service = ReadJsonBody<S>;

    fn layer(&self, inner: S) -> ReadJsonBody<S> {
        ReadJsonBody {
            limit: self.limit,
            timeout: self.timeout,
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct ReadJsonBody<S> {
    limit: usize,
    timeout: Duration,
    inner: S,
}

impl<S, B, T> Service<Routed<B, T>> for ReadJsonBody<S>
where
    T: Send + 'static,
    S: Service<Routed<JsonBody, T>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Routed<B, T>) -> Self::Future {
        let inner = self.inner.clone();
        let (limit, timeout) = (self.limit, self.timeout);
        Box::pin(async move {
            let reads = request.has_body();
            let Routed { head, body, target } = request;
            let object = if reads {
                let bytes = read_body(&head.headers, body, limit, timeout).await?;
                let object = parse_object(&bytes).map_err(BodyError::NotAJsonObject)?;
                Some(ReadBody { object, bytes })
            } else {
                None
            };
            let routed = Routed {
                head,
                body: object,
                target,
            };
            inner.oneshot(routed).await
        })
    }
}

/// Check 6: reads the body, refusing one over `limit` bytes before reading it when its length is declared.
pub(crate) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut collect = pin!(Limited::new(body, limit).collect());
    // Most bodies arrive with their headers and need no timer; a caller that stalls mid-body must not
    // hold the connection and its buffers forever.
    let collected = match poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await {
        Poll::Ready(collected) => collected,
        // Boxed: the timer is large, and every request's future would otherwise carry room for it.
        Poll::Pending => Box::pin(tokio::time::timeout(timeout, collect))
            .await
            .map_err(|_| BodyError::TimedOut(timeout.as_millis()))?,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(error) => Err(BodyError::Unreadable(error.to_string())),
    }
}
