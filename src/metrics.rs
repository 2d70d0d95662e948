//! Prometheus metrics, counted where things happen and served by the admin listener's `/metrics` in
//! the OpenMetrics text format. Labels are bounded: provider names, configured client names, methods,
//! statuses, window names and a few fixed words — never an id, a credential or a fingerprint.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::cell::RefCell;
use std::fmt::Write;
use std::sync::LazyLock;
use std::time::Duration;

/// An HTTP status, or why there is none.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Status {
    Code(u16),
    /// The connection failed, or the answer could not be read.
    Error,
    /// No answer within `server.upstream_timeout_ms`.
    Timeout,
}

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Status::Code(code) => write!(encoder, "{code}"),
            Status::Error => encoder.write_str("error"),
            Status::Timeout => encoder.write_str("timeout"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    provider: &'static str,
    client: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderMethod {
    provider: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Upstream {
    provider: &'static str,
    status: Status,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    provider: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientDecision {
    client: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyOutcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Window {
    provider: &'static str,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    provider: &'static str,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, 1 ms to ~16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    request_seconds: Histograms<ProviderMethod>,
    upstream: Family<Upstream, Counter>,
    upstream_seconds: Histograms<Provider>,
    decisions: Family<Decision, Counter>,
    remaining: Family<Window, Gauge>,
    refreshes: Family<Outcome, Counter>,
    waits: Family<Provider, Counter>,
    client_decisions: Family<ClientDecision, Counter>,
    keyed: Family<KeyOutcome, Counter>,
    legs: Family<Outcome, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("patchbay");
    let metrics = Metrics {
        registry: Registry::default(),
        requests: Family::default(),
        request_seconds: Family::new_with_constructor(latency),
        upstream: Family::default(),
        upstream_seconds: Family::new_with_constructor(latency),
        decisions: Family::default(),
        remaining: Family::default(),
        refreshes: Family::default(),
        waits: Family::default(),
        client_decisions: Family::default(),
        keyed: Family::default(),
        legs: Family::default(),
    };
    registry.register(
        "http_requests",
        "Requests answered on the canonical API",
        metrics.requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time from a request's headers to its answer",
        metrics.request_seconds.clone(),
    );
    registry.register(
        "upstream_requests",
        "Calls made to providers, token calls included",
        metrics.upstream.clone(),
    );
    registry.register(
        "upstream_request_duration_seconds",
        "Time of one call to a provider",
        metrics.upstream_seconds.clone(),
    );
    registry.register(
        "rate_limit_decisions",
        "The provider rate limit's decisions: admitted, rejected, queued, paused",
        metrics.decisions.clone(),
    );
    registry.register(
        "rate_limit_remaining",
        "Calls left in each window of a provider's quota, read at each scrape",
        metrics.remaining.clone(),
    );
    registry.register(
        "token_refreshes",
        "Token calls and their outcome: obtained, refused, failed, or shared (taken from the state store)",
        metrics.refreshes.clone(),
    );
    registry.register(
        "read_merge_write_waits",
        "Writes that waited for an earlier write to the same customer",
        metrics.waits.clone(),
    );
    registry.register(
        "client_rate_limit_decisions",
        "A client's own quota's decisions: admitted, rejected (clients with a quota only)",
        metrics.client_decisions.clone(),
    );
    registry.register(
        "idempotency_requests",
        "PATCHes with an Idempotency-Key: stored, replayed, reused (422), in_flight (409), not_kept (a 5xx, 409 or 429)",
        metrics.keyed.clone(),
    );
    registry.register(
        "fanout_legs",
        "The legs of requests to linked customers, by provider: ok, failed, replayed (an Idempotency-Key's stored outcome)",
        metrics.legs.clone(),
    );
    Metrics {
        registry,
        ..metrics
    }
});

/// Every metric in the OpenMetrics text format.
pub fn encode() -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &METRICS.registry)
        .expect("writing to a String cannot fail");
    text
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The series a thread recorded last, each with its handle (which shares the series' value), so that a
/// request finds its series without hashing its labels or taking the family's lock. A handful at most.
type Recent<K, M> = RefCell<Vec<(K, M)>>;

const RECENT: usize = 32;

/// Records into the series `labels` of `family` through this thread's `recent` handles.
fn record<K, M, C>(
    recent: &'static std::thread::LocalKey<Recent<K, M>>,
    family: &Family<K, M, C>,
    labels: K,
    apply: impl FnOnce(&M),
) where
    K: Clone + Eq + std::hash::Hash,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    recent.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some((_, metric)) = recent.iter().find(|(known, _)| *known == labels) {
            return apply(metric);
        }
        let metric = family.get_or_create(&labels).clone();
        apply(&metric);
        if recent.len() == RECENT {
            recent.clear();
        }
        recent.push((labels, metric));
    });
}

thread_local! {
    static REQUESTS: Recent<Request, Counter> = const { RefCell::new(Vec::new()) };
    static REQUEST_SECONDS: Recent<ProviderMethod, Histogram> = const { RefCell::new(Vec::new()) };
    static UPSTREAM: Recent<Upstream, Counter> = const { RefCell::new(Vec::new()) };
    static UPSTREAM_SECONDS: Recent<Provider, Histogram> = const { RefCell::new(Vec::new()) };
}

/// One answered request: `provider` is `none` when the path named none, `client` a configured client's
/// name or `none`.
pub fn http_request(
    provider: &'static str,
    client: &'static str,
    method: &'static str,
    status: u16,
    took: Duration,
) {
    let labels = Request {
        provider,
        client,
        method,
        status,
    };
    record(&REQUESTS, &METRICS.requests, labels, |counter| {
        counter.inc();
    });
    let labels = ProviderMethod { provider, method };
    record(
        &REQUEST_SECONDS,
        &METRICS.request_seconds,
        labels,
        |seconds| seconds.observe(took.as_secs_f64()),
    );
}

/// One call to a provider.
pub fn upstream_call(provider: &'static str, status: Status, took: Duration) {
    record(
        &UPSTREAM,
        &METRICS.upstream,
        Upstream { provider, status },
        |counter| {
            counter.inc();
        },
    );
    record(
        &UPSTREAM_SECONDS,
        &METRICS.upstream_seconds,
        Provider { provider },
        |seconds| seconds.observe(took.as_secs_f64()),
    );
}

/// One decision of a provider's rate limit.
pub fn rate_limit_decision(provider: &'static str, decision: &'static str) {
    METRICS
        .decisions
        .get_or_create(&Decision { provider, decision })
        .inc();
}

/// A client's own quota admitted or refused a request.
pub fn client_rate_limit_decision(client: &'static str, decision: &'static str) {
    METRICS
        .client_decisions
        .get_or_create(&ClientDecision { client, decision })
        .inc();
}

/// What became of a PATCH with an `Idempotency-Key`.
pub fn idempotency_request(outcome: &'static str) {
    METRICS.keyed.get_or_create(&KeyOutcome { outcome }).inc();
}

/// What is left in one window of a provider's quota.
pub fn rate_limit_remaining(provider: &'static str, window: &str, remaining: i64) {
    let labels = Window {
        provider,
        window: window.to_owned(),
    };
    METRICS.remaining.get_or_create(&labels).set(remaining);
}

/// A token call (or a token taken from the state store instead).
pub fn token_refresh(provider: &'static str, outcome: &'static str) {
    METRICS
        .refreshes
        .get_or_create(&Outcome { provider, outcome })
        .inc();
}

/// A write that waited for an earlier one to the same customer.
pub fn read_merge_write_wait(provider: &'static str) {
    METRICS.waits.get_or_create(&Provider { provider }).inc();
}

/// One leg of a request to linked customers, and what became of it.
pub fn fanout_leg(provider: &'static str, outcome: &'static str) {
    METRICS
        .legs
        .get_or_create(&Outcome { provider, outcome })
        .inc();
}
