//! The metrics layer: every answered request is counted (provider from the path, `link` for linked
//! customers, `none` when it names no known one; the client, `none` when none was recognised; method, status, latency) and, when
//! `patchbay::access` logs at info, written as one access line with the request id and the upstream
//! calls it made. Outside the panic catcher, so a panic's 500 counts too.

use super::callers::Identity;
use super::request::is_link_path;
use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// The upstream calls a request made, filled in by the rate limiter for the access line (it travels in
/// the request's extensions).
#[derive(Clone, Default)]
pub(crate) struct CallCount(Arc<AtomicU32>);

impl CallCount {
    /// Adds the calls of one provider's part of the request (a fan-out has several).
    pub fn add(&self, calls: u32) {
        self.0.fetch_add(calls, Ordering::AcqRel);
    }

    fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// The legs of a request to linked customers and their statuses, for the access line (it travels in
/// the request's extensions).
#[derive(Clone, Default)]
pub(crate) struct LegReport(Arc<std::sync::Mutex<String>>);

impl LegReport {
    /// `provider:status`, one more leg.
    pub fn add(&self, provider: &str, status: u16) {
        use std::fmt::Write as _;
        let mut legs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !legs.is_empty() {
            legs.push(',');
        }
        let _ = write!(legs, "{provider}:{status}");
    }

    /// The legs so far; `None` before any leg ran.
    fn text(&self) -> Option<String> {
        let legs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!legs.is_empty()).then(|| legs.clone())
    }
}

/// What the access line says beyond the metrics' labels.
struct Access {
    request_id: Option<http::HeaderValue>,
    calls: CallCount,
    legs: Option<LegReport>,
}

#[derive(Clone)]
pub(crate) struct MetricsLayer {
    names: Arc<[&'static str]>,
}

impl MetricsLayer {
    pub fn new(names: Arc<[&'static str]>) -> MetricsLayer {
        MetricsLayer { names }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            names: self.names.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Metrics<S> {
    names: Arc<[&'static str]>,
    inner: S,
}

/// The provider a canonical path names: `/customers/{provider}:{id}`.
fn provider_of(names: &[&'static str], path: &str) -> &'static str {
    let named = path
        .strip_prefix("/customers/")
        .and_then(|rest| rest.split_once(':'))
        .map(|(provider, _)| provider);
    named
        .and_then(|provider| names.iter().find(|name| **name == provider).copied())
        .unwrap_or("none")
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

impl<S, B, R> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let linked = is_link_path(path);
        let provider = match linked {
            true => "link",
            false => provider_of(&self.names, path),
        };
        let client = Identity::label(request.extensions().get::<Identity>());
        let method = method_label(request.method());
        // Only when someone reads the line: a formatted line per request is not free.
        let access = super::access::enabled().then(|| {
            let calls = CallCount::default();
            request.extensions_mut().insert(calls.clone());
            let legs = linked.then(LegReport::default);
            if let Some(legs) = &legs {
                request.extensions_mut().insert(legs.clone());
            }
            Box::new(Access {
                request_id: request.headers().get("x-request-id").cloned(),
                calls,
                legs,
            })
        });
        Recorded {
            provider,
            client,
            method,
            started: Instant::now(),
            access,
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub(crate) struct Recorded<F> {
        provider: &'static str,
        client: &'static str,
        method: &'static str,
        started: Instant,
        access: Option<Box<Access>>,
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        if let Ok(response) = &answered {
            let status = response.status().as_u16();
            let took = this.started.elapsed();
            crate::metrics::http_request(this.provider, this.client, this.method, status, took);
            if let Some(access) = this.access.take() {
                let route = match *this.provider {
                    "none" => "unknown",
                    "link" => "/customers/{link_id} or /links/{link_id}",
                    _ => "/customers/{provider}:{id}",
                };
                let legs = access.legs.as_ref().and_then(LegReport::text);
                let request_id = access.request_id.as_ref().and_then(|id| id.to_str().ok());
                super::access::write(&super::access::Line {
                    method: this.method,
                    route,
                    provider: this.provider,
                    client: this.client,
                    status,
                    latency_us: took.as_micros() as u64,
                    request_id: request_id.unwrap_or(""),
                    upstream_calls: access.calls.get(),
                    legs: legs.as_deref(),
                });
            }
        }
        Poll::Ready(answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_provider_becomes_a_label() {
        let names: &[&'static str] = &["juice", "count"];
        assert_eq!(provider_of(names, "/customers/juice:123"), "juice");
        assert_eq!(provider_of(names, "/customers/evil:123"), "none");
        assert_eq!(provider_of(names, "/customers/juice"), "none");
        assert_eq!(provider_of(names, "/openapi.json"), "none");
    }
}
