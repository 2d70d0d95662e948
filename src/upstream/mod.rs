//! Upstream calls: one pooled hyper client (rustls for the real providers), per-call timeouts, and each
//! provider's credentials and request signing. Every call a provider sees goes through [`Upstream::send`].

mod auth;
mod pool;
pub mod signing;

pub use auth::Auth;

use crate::canonical::Problem;
use crate::providers::UpstreamRequest;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use pool::{Origin, Pool};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Largest provider response read; anything bigger is not a customer record.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

const AGENT: &str = concat!("patchbay/", env!("CARGO_PKG_VERSION"));

/// Why an upstream call produced no usable HTTP response.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("the connection to the provider failed: {0}")]
    Transport(String),
    /// The provider refused patchbay's own credentials (token exchange or refresh failed).
    #[error("the provider refused patchbay's credentials: {detail}")]
    Credentials {
        upstream_status: Option<u16>,
        detail: String,
    },
    /// The call was not sent: the request's [`CallBudget`] refused it (the credential's rate limit).
    #[error("{}", .0.detail)]
    Refused(Box<Problem>),
}

/// Permission to send one more call with the provider's credential. The gateway's rate limiter
/// implements it; every call asks before it is sent, token refreshes and retries included.
pub trait CallBudget: Send + Sync {
    fn spend(&self) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + '_>>;
}

/// A provider's answer, body read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

thread_local! {
    /// The serving runtime this thread belongs to (see [`set_worker`]).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as serving runtime `index`: its upstream calls use that runtime's own
/// connection pool, so a connection's task and the requests using it stay on one thread.
pub fn set_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

/// The HTTP client every provider shares: how to connect (TLS for the real providers, connect
/// timeout), how to speak HTTP/1.1 on a connection, and the timeout of a whole call.
pub struct HttpClient {
    connector: pool::Connector,
    handshake: hyper::client::conn::http1::Builder,
    timeout: Duration,
    workers: usize,
}

impl HttpClient {
    pub fn new(connect_timeout: Duration, timeout: Duration, workers: usize) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        HttpClient {
            connector,
            handshake: hyper::client::conn::http1::Builder::new(),
            timeout,
            workers: workers.max(1),
        }
    }

    /// Sends one request on `pool`'s connections and reads the whole response, all within the
    /// upstream timeout.
    async fn send(
        &self,
        pool: &Pool,
        request: Request<Full<Bytes>>,
    ) -> Result<Response, CallError> {
        let worker = WORKER.with(std::cell::Cell::get);
        let call = pool.send(&self.connector, &self.handshake, worker, request);
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
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

/// What a caller's request contributes to an upstream call.
#[derive(Clone, Default)]
pub struct CallOptions {
    /// The caller's `Idempotency-Key`, forwarded where the provider honours one.
    pub idempotency_key: Option<HeaderValue>,
    /// What every call of the request spends from before it is sent; `None`: calls are not counted.
    pub budget: Option<Arc<dyn CallBudget>>,
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("idempotency_key", &self.idempotency_key)
            .field("budget", &self.budget.is_some())
            .finish()
    }
}

/// One provider's endpoint: where it lives and how calls to it are authenticated.
pub struct Upstream {
    name: &'static str,
    /// Its connections; an unusable base URL (config validation refuses one) fails every call.
    pool: Result<Pool, String>,
    client: Arc<HttpClient>,
    auth: Auth,
}

impl Upstream {
    pub fn new(
        name: &'static str,
        base_url: &str,
        client: Arc<HttpClient>,
        auth: Auth,
    ) -> Upstream {
        let pool = Origin::parse(base_url).map(|origin| Pool::new(origin, client.workers));
        Upstream {
            name,
            pool,
            client,
            auth,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Closes this serving runtime's connections to the provider that have idled too long.
    pub fn sweep_idle(&self) {
        if let Ok(pool) = &self.pool {
            pool.sweep(WORKER.with(std::cell::Cell::get));
        }
    }

    /// The credential the provider's rate limit belongs to (API key or client id).
    pub fn credential_id(&self) -> &str {
        self.auth.credential_id()
    }

    /// Whether the next call must first obtain or refresh a token (one more call to count).
    pub async fn will_fetch_token(&self) -> bool {
        self.auth.will_fetch_token().await
    }

    /// Makes the call a dialect asked for: authenticated, signed, and retried once after refreshing an
    /// expired token. A write is never repeated otherwise; a GET is repeated once after a connection
    /// error, since reading twice changes nothing.
    pub async fn call(
        &self,
        request: &UpstreamRequest,
        options: &CallOptions,
    ) -> Result<Response, CallError> {
        let body = request.body.clone().unwrap_or_default();
        let mut refreshed = false;
        let mut reconnected = false;
        loop {
            let credential = self.auth.credential(self, options).await?;
            let mut http = self.request(request.method.clone(), &request.path, body.clone())?;
            self.auth
                .authorize(&mut http, &request.path, &body, &credential, options);
            let response = match self.send(http, options).await {
                Err(CallError::Connect(_) | CallError::Transport(_))
                    if request.method == Method::GET && !reconnected =>
                {
                    reconnected = true;
                    continue;
                }
                other => other?,
            };
            if !refreshed && self.auth.is_expired(&response) {
                tracing::debug!(
                    provider = self.name,
                    "access token expired; refreshing once"
                );
                self.auth.invalidate(&credential).await;
                refreshed = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// A request to `path` below the base URL with patchbay's own headers.
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let pool = self
            .pool
            .as_ref()
            .map_err(|e| CallError::Connect(e.clone()))?;
        let uri = pool.origin().uri(path).map_err(CallError::Connect)?;
        let has_body = !body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(request)
    }

    /// The one place every call to the provider passes, token calls included: each spends from the
    /// request's budget first.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        options: &CallOptions,
    ) -> Result<Response, CallError> {
        if let Some(budget) = &options.budget {
            budget.spend().await?;
        }
        let method = request.method().clone();
        let started = std::time::Instant::now();
        let result = match &self.pool {
            Ok(pool) => self.client.send(pool, request).await,
            Err(error) => Err(CallError::Connect(error.clone())),
        };
        match &result {
            Ok(response) => tracing::debug!(
                provider = self.name, %method, status = response.status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64, "upstream call"
            ),
            Err(error) => {
                tracing::debug!(provider = self.name, %method, %error, "upstream call failed")
            }
        }
        result
    }
}
