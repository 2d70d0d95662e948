//! Records every answered request in the metrics: provider (from the path, `none` when it names no
//! known one), method, status and latency. Outside the panic catcher, so a panic's 500 counts too.

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone)]
pub(crate) struct RecordLayer {
    names: Arc<[&'static str]>,
}

impl RecordLayer {
    pub fn new(names: Arc<[&'static str]>) -> RecordLayer {
        RecordLayer { names }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            names: self.names.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Record<S> {
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

impl<S, B, R> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Recorded {
            provider: provider_of(&self.names, request.uri().path()),
            method: method_label(request.method()),
            started: Instant::now(),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub(crate) struct Recorded<F> {
        provider: &'static str,
        method: &'static str,
        started: Instant,
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
            crate::metrics::http_request(
                this.provider,
                this.method,
                status,
                this.started.elapsed(),
            );
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
