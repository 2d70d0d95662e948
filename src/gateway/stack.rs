//! The request path, top to bottom, in one function: read [`stack`] to see the order of the checks.
//! Layers listed first are outermost; a request passes them in order and the first that fails answers.
//! Nothing reaches a provider before the last service.

use super::body::JsonBodyLayer;
use super::build::Gateway;
use super::call::{Answer, CustomerCall};
use super::callers::{Authorize, IdentifyLayer};
use super::content::ContentType;
use super::customer::CustomerService;
use super::customer_lock::CustomerLockLayer;
use super::detach::DetachLayer;
use super::document::DocumentLayer;
use super::error::BoxError;
use super::fanout::{LinkParts, LinkService};
use super::idempotency::{IdempotencyLayer, Reply};
use super::limit::RateLimitLayer;
use super::metrics::MetricsLayer;
use super::rescue::{self, RescueLayer};
use super::route::{LinkRoute, Route};
use super::split::SplitLayer;
use super::validate::Validate;
use crate::upstream::Client;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, COOKIE};
use http::{Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Service, ServiceBuilder};
use tower_http::body::UnsyncBoxBody;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The canonical API for one serving runtime: `gateway`'s shared providers, and `clients`, this
/// runtime's own upstream clients (one per provider, `None` for a disabled one).
pub fn stack<B>(
    gateway: &Gateway,
    clients: Arc<[Option<Client>]>,
) -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    over(gateway, CustomerService::new(clients))
}

/// The stack over `customers`, its innermost service (check 11); tests put their own there.
pub(crate) fn over<B, S>(
    gateway: &Gateway,
    customers: S,
) -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<CustomerCall, Response = Answer, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let shared = &gateway.inner;
    // The links branch: links and the customers they name, their checks in the same order.
    let links = ServiceBuilder::new()
        // Checks 1–3: one Host (400), a link id (400), a method the path answers (405).
        .filter(LinkRoute)
        // Check 4: with `[[clients]]`, a known client's bearer token (401); whether it may use the
        // link's providers (403) is known once the link is read.
        .filter(Authorize)
        // Check 5: a PUT or PATCH body in a JSON media type (415).
        .filter(ContentType)
        // Checks 6–7: at most `server.body_limit_bytes` (413), in time (408), one JSON object (400).
        .layer(JsonBodyLayer::new(shared.body_limit, shared.body_timeout))
        // The link from the state store (404), the client's providers (403); a patch valid for every
        // leg (422), every leg admitted or none (429), then every leg at once (checks 8–11 per leg).
        .service(LinkService::new(
            LinkParts {
                links: shared.links.clone(),
                clients: shared.callers.quotas.clone(),
                records: shared.fanouts.clone(),
                writes: shared.writes.clone(),
                render: rescue::rescue,
                precedence: shared.precedence.clone(),
            },
            customers.clone(),
        ));
    ServiceBuilder::new()
        // Credentials in the caller's headers are marked sensitive before anything below can log them
        // (the providers' credential headers are made sensitive where they are built).
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        // The caller's `X-Request-Id`, or a new UUID, set before the span that records it.
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        // One span per request (method, route, provider, status, latency; never bodies or headers),
        // only when the log filter records debug: a span nobody reads is not free.
        .option_layer(tracing::enabled!(tracing::Level::DEBUG).then(|| {
            ServiceBuilder::new()
                .map_response(one_body_type)
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(on_response)
                        .on_body_chunk(())
                        .on_eos(())
                        .on_failure(()),
                )
                .into_inner()
        }))
        // The request id on every answer, panics and problems included: outside both.
        .layer(PropagateRequestIdLayer::x_request_id())
        // Who is calling, read from the bearer token for the metrics and logs; enforced at check 4.
        .layer(IdentifyLayer::new(shared.callers.clone()))
        // Metrics of every answer (provider, client, method, status, latency), a panic's 500 included,
        // and the access line, with the upstream calls the request made.
        .layer(MetricsLayer::new(shared.names.clone()))
        // A panic below answers 500 problem+json; the connection and the process keep serving.
        .layer(CatchPanicLayer::custom(rescue::panicked))
        // The rescue: every error below becomes its problem+json answer here, and only here.
        .layer(RescueLayer)
        // `GET /openapi.json`: the canonical API's OpenAPI document.
        .layer(DocumentLayer)
        // The one fork: a link's paths go down the links branch above; the rest goes on below.
        .layer(SplitLayer::new(links))
        // The canonical customer as JSON, with the headers layers added, or an answer the idempotency
        // layer rendered.
        .map_response(Reply::into_response)
        // Checks 1–3: one Host (400), a customer path of a known (404), configured (503) provider,
        // GET or PATCH (405), an id the provider could have (400).
        .filter(Route::new(shared.providers.clone()))
        // Check 4: with `[[clients]]`, a known client's bearer token (401) allowed this provider (403).
        .filter(Authorize)
        // Check 5: a PATCH body in a JSON media type (415).
        .filter(ContentType)
        // Checks 6–7: at most `server.body_limit_bytes` (413), in time (408), one JSON object (400).
        .layer(JsonBodyLayer::new(shared.body_limit, shared.body_timeout))
        // Checks 8–9: a valid canonical patch, of what this provider can store (422; lenient skips).
        .filter(Validate::new(shared.names.clone()))
        // The one spawn: a serialised write or a keyed PATCH runs as its own task, to its end, even if
        // its caller hangs up; shutdown waits for these tasks.
        .layer(DetachLayer::new(shared.writes.clone()))
        // A PATCH with an `Idempotency-Key`: its stored answer again, or run once and recorded (a
        // failure recorded as the rescue renders it).
        .layer(IdempotencyLayer::new(
            shared.idempotency.clone(),
            rescue::rescue,
        ))
        // The one place a customer is locked: one read-merge-write of a customer at a time, so no
        // update is lost; a lock taken before check 10, so waiting for it reserves nothing.
        .layer(CustomerLockLayer)
        // Check 10, both quotas: a cell of the client's own (governor's GCRA), then the calls the
        // request plans reserved in the credential's sliding log (429); refused, neither is spent.
        .layer(RateLimitLayer::new(shared.callers.quotas.clone()))
        // Check 11: read, merge, write, and the provider's answer translated back.
        .service(customers)
}

/// The traced answer's body boxed like the untraced one, so that the stack has one body type.
fn one_body_type<B>(response: Response<B>) -> Response<UnsyncBoxBody<Bytes, BoxError>>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    response.map(UnsyncBoxBody::new)
}

/// A new request id: a random UUID, written straight into the header value.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// The request's span, at debug level only: formatting a span's fields for every request is a large
/// share of a request's work. Its `provider` is recorded once the route knows it.
fn request_span<B>(request: &Request<B>) -> Span {
    let path = request.uri().path();
    let route = match path {
        _ if path.starts_with("/customers/") => "/customers/{provider}:{id}",
        _ => "unknown",
    };
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or("");
    tracing::debug_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        provider = tracing::field::Empty,
        client = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    )
}

fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record("latency_us", latency.as_micros() as u64);
    tracing::debug!(
        status = response.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "request"
    );
}
