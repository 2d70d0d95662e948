//! Upstream calls, as one tower stack per provider and serving runtime (built in [`client`]): the
//! provider's credentials and signing, with one token refresh after an expired token → a GET repeated
//! once after a connection error → the request's rate-limit budget → the per-call timeout → this
//! runtime's keep-alive connections. Every call a provider sees, token calls included, passes the last
//! four.

mod auth;
mod budget;
mod pool;
mod retry;

pub use auth::{Auth, Authorize, TokenStore};
pub use budget::{CallBudget, Spend};
pub use retry::RetryGet;

use crate::metrics::Status;
use crate::providers::UpstreamRequest;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use pool::{Origin, Pool};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::timeout::Timeout;
use tower::ServiceBuilder;

/// Errors between layers, as tower erases them; the gateway's rescue finds the leaf again.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Largest provider response read; anything bigger is not a customer record.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

const AGENT: &str = concat!("patchbay/", env!("CARGO_PKG_VERSION"));

/// A call that produced no HTTP answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("the connection to the provider failed: {0}")]
    Transport(String),
}

/// The provider refused patchbay's own credentials: its token exchange or refresh failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the provider refused patchbay's credentials: {detail}")]
pub struct CredentialsRefused {
    pub upstream_status: Option<u16>,
    pub detail: String,
}

/// A provider's answer, body read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A call a dialect asked for, with what the caller's request adds to it.
pub struct UpstreamCall {
    pub request: UpstreamRequest,
    /// The caller's `Idempotency-Key`, forwarded where the provider honours one.
    pub idempotency_key: Option<HeaderValue>,
    /// What every call of the request spends from before it is sent; `None`: calls are not counted.
    pub budget: Option<Arc<dyn CallBudget>>,
}

/// One HTTP request on its way to the provider, and the budget it spends from before it is sent.
pub struct Outbound {
    pub request: Request<Full<Bytes>>,
    pub budget: Option<Arc<dyn CallBudget>>,
}

/// Shared by every serving runtime: where a provider lives and how its calls are authenticated.
pub struct Upstream {
    name: &'static str,
    /// An unusable base URL (config validation refuses one) fails every call.
    origin: Result<Arc<Origin>, String>,
    auth: Auth,
}

impl Upstream {
    pub fn new(name: &'static str, base_url: &str, auth: Auth) -> Upstream {
        Upstream {
            name,
            origin: Origin::parse(base_url).map(Arc::new),
            auth,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The credential the provider's rate limit belongs to (API key or client id).
    pub fn credential_id(&self) -> &str {
        self.auth.credential_id()
    }

    /// `text` without any credential of this provider's (see [`Auth::redact`]).
    pub fn redact(&self, text: &str) -> String {
        self.auth.redact(text)
    }

    /// Whether the provider's refresh token is spent by each refresh (so only a durable store keeps
    /// a restarted gateway working).
    pub fn rotates_refresh_tokens(&self) -> bool {
        self.auth.rotates()
    }

    /// Reads the tokens the state store holds for this provider's credential.
    pub async fn load_tokens(&self) -> Result<(), crate::state::StateError> {
        self.auth.load().await
    }

    /// Whether the next call must first obtain or refresh a token (one more call to count).
    pub async fn will_fetch_token(&self) -> bool {
        self.auth.will_fetch_token().await
    }

    /// The dialect's call as an HTTP request below the base URL, with patchbay's own headers.
    fn request(&self, call: &UpstreamRequest) -> Result<Request<Full<Bytes>>, CallError> {
        let origin = self
            .origin
            .as_ref()
            .map_err(|e| CallError::Connect(e.clone()))?;
        let uri = origin.uri(&call.path).map_err(CallError::Connect)?;
        let mut request = Request::new(Full::new(call.body.clone().unwrap_or_default()));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let (Some(content_type), Some(_)) = (call.content_type, &call.body) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        Ok(request)
    }
}

/// How a runtime's clients connect and how long a call may take.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
}

/// One runtime's client for one provider.
pub type Client = Authorize<RetryGet<Spend<Timeout<Connections>>>>;

/// Builds one runtime's client for `upstream`: its own connections, the shared credentials.
pub fn client(upstream: Arc<Upstream>, settings: ClientSettings) -> (Client, Connections) {
    let connections = Connections::new(&upstream, settings.connect_timeout);
    let client = ServiceBuilder::new()
        // Credentials and signing; an expired token is refreshed once and the call made again.
        .layer_fn(|inner| Authorize::new(upstream.clone(), inner))
        // A GET is repeated once after a connection error: reading twice changes nothing.
        .layer_fn(RetryGet::new)
        // Every call, token calls and that retry included, spends from the request's budget first.
        .layer_fn(Spend::new)
        // The longest one call may take, from sending it to the last byte of the answer.
        .timeout(settings.call_timeout)
        .service(connections.clone());
    (client, connections)
}

/// How patchbay connects to providers: TLS for the real ones (webpki roots), plain HTTP for the sandbox,
/// with a connect timeout and no Nagle delay.
pub(crate) fn connector(connect_timeout: Duration) -> pool::Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// This runtime's keep-alive connections to one provider: the innermost service of its client.
#[derive(Clone)]
pub struct Connections {
    name: &'static str,
    pool: Result<Arc<Pool>, String>,
}

impl Connections {
    fn new(upstream: &Upstream, connect_timeout: Duration) -> Connections {
        let pool = upstream
            .origin
            .clone()
            .map(|origin| Arc::new(Pool::new(origin, connector(connect_timeout))));
        Connections {
            name: upstream.name,
            pool,
        }
    }

    /// Closes the connections that have idled too long.
    pub fn sweep_idle(&self) {
        if let Ok(pool) = &self.pool {
            pool.sweep();
        }
    }
}

impl tower::Service<Request<Full<Bytes>>> for Connections {
    type Response = Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let pool = self.pool.clone();
        let name = self.name;
        Box::pin(async move {
            let pool = pool.map_err(CallError::Connect)?;
            let method = request.method().clone();
            let started = std::time::Instant::now();
            let mut timing = Timing {
                provider: name,
                started,
                status: Status::Timeout,
            };
            let result = pool.send(request).await;
            timing.status = match &result {
                Ok(response) => Status::Code(response.status.as_u16()),
                Err(_) => Status::Error,
            };
            match &result {
                Ok(response) => tracing::debug!(
                    provider = name, %method, status = response.status.as_u16(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "upstream call"
                ),
                Err(error) => {
                    tracing::debug!(provider = name, %method, %error, "upstream call failed")
                }
            }
            result
        })
    }
}

/// Records one call when it ends: with its status, or as a timeout when the call's timeout drops it first.
struct Timing {
    provider: &'static str,
    started: std::time::Instant,
    status: Status,
}

impl Drop for Timing {
    fn drop(&mut self) {
        crate::metrics::upstream_call(self.provider, self.status, self.started.elapsed());
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
