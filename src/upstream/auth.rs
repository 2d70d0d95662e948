//! Provider credentials: what each call carries, and how tokens are obtained, kept fresh and replaced.
//!
//! - Sweet Spot: a bearer API key.
//! - COUNT: every request HMAC-signed with the client secret, plus an OAuth access token refreshed shortly
//!   before `accessTokenExpiresAt` or after a 401 `token_expired`. Refresh tokens rotate, so refreshes are
//!   serialised behind one lock and the newest refresh token always replaces the old one.
//! - Juice: the API key as `Bearer <key>` or raw, `Accept: application/json;version=1`, and the caller's
//!   `Idempotency-Key`.
//! - SparkLayer: a client-credentials token from `/api/auth/token`, cached until shortly before it expires
//!   and fetched once however many calls wait for it; `Site-Id` on every call.

use super::{
    signing, BoxError, BoxFuture, CallBudget, CredentialsRefused, Outbound, Response, Upstream,
    UpstreamCall,
};
use crate::config::{AuthScheme, ProviderConfig, Secret};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower::{Service, ServiceExt};

/// How a token call is sent: through the same budget, timeout and connections as every other call.
type Sender<'a> = &'a (dyn Fn(Outbound) -> BoxFuture<Response> + Send + Sync);

/// The authorizing layer's service: the outermost of a provider's client.
#[derive(Clone)]
pub struct Authorize<S> {
    upstream: Arc<Upstream>,
    inner: S,
}

impl<S> Authorize<S> {
    pub fn new(upstream: Arc<Upstream>, inner: S) -> Authorize<S> {
        Authorize { upstream, inner }
    }
}

impl<S> Service<UpstreamCall> for Authorize<S>
where
    S: Service<Outbound, Response = Response, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    /// Makes the call a dialect asked for, authenticated and signed; after an answer saying the token
    /// expired, refreshes it once and makes the call again.
    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        let upstream = self.upstream.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let send = |outbound: Outbound| -> BoxFuture<Response> {
                Box::pin(inner.clone().oneshot(outbound))
            };
            let auth = &upstream.auth;
            let request = &call.request;
            let body = request.body.clone().unwrap_or_default();
            let mut refreshed = false;
            loop {
                let credential = auth.credential(&upstream, &send, &call.budget).await?;
                let mut http =
                    upstream.request(request.method.clone(), &request.path, body.clone())?;
                auth.authorize(
                    &mut http,
                    &request.path,
                    &body,
                    &credential,
                    call.idempotency_key.as_ref(),
                );
                let response = send(Outbound {
                    request: http,
                    budget: call.budget.clone(),
                })
                .await?;
                if !refreshed && auth.is_expired(&response) {
                    tracing::debug!(
                        provider = upstream.name,
                        "access token expired; refreshing once"
                    );
                    auth.invalidate(&credential).await;
                    refreshed = true;
                    continue;
                }
                return Ok(response);
            }
        })
    }
}

type Budget = Option<Arc<dyn CallBudget>>;

const JUICE_ACCEPT: &str = "application/json;version=1";
const COUNT_REFRESH_PATH: &str = "/refresh-user-access-token";
const SPARKLAYER_TOKEN_PATH: &str = "/api/auth/token";

/// How one provider's calls are authenticated.
pub enum Auth {
    SweetSpot {
        api_key: Secret,
        /// The `Authorization` value, built once.
        authorization: HeaderValue,
    },
    Count(CountAuth),
    Juice {
        api_key: Secret,
        authorization: HeaderValue,
        forward_idempotency_key: bool,
    },
    SparkLayer(SparkLayerAuth),
}

/// The token a call was made with, so that a 401 invalidates exactly that one.
#[derive(Clone, Default)]
pub struct Credential {
    token: Option<Secret>,
}

impl Auth {
    /// The provider's auth from its settings; `None` when credentials are missing (the provider is disabled).
    pub fn from_config(provider: &str, config: &ProviderConfig) -> Option<Auth> {
        Some(match provider {
            "sweetspot" => {
                let api_key = config.api_key.clone()?;
                Auth::SweetSpot {
                    authorization: bearer(api_key.expose()),
                    api_key,
                }
            }
            "juice" => {
                let api_key = config.api_key.clone()?;
                Auth::Juice {
                    authorization: match config.auth_scheme {
                        AuthScheme::Bearer => bearer(api_key.expose()),
                        AuthScheme::Raw => sensitive(api_key.expose()),
                    },
                    api_key,
                    forward_idempotency_key: config.forward_idempotency_key,
                }
            }
            "count" => Auth::Count(CountAuth {
                client_id: config.client_id.clone()?,
                client_secret: config.client_secret.clone()?,
                refresh_before: Duration::from_secs(config.refresh_before_expiry_s),
                tokens: tokio::sync::Mutex::new(CountTokens {
                    access: config.access_token.clone().map(|token| (token, None)),
                    refresh: config.refresh_token.clone()?,
                }),
            }),
            "sparklayer" => Auth::SparkLayer(SparkLayerAuth {
                site_id: config.site_id.clone()?,
                client_id: config.client_id.clone()?,
                client_secret: config.client_secret.clone()?,
                leeway: Duration::from_secs(config.token_leeway_s),
                token: moka::future::Cache::builder()
                    .max_capacity(1)
                    .expire_after(TokenExpiry)
                    .build(),
            }),
            _ => return None,
        })
    }

    /// The token to call with, obtaining or refreshing one first when needed (a call that spends from
    /// the budget like any other).
    async fn credential(
        &self,
        upstream: &Upstream,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Credential, BoxError> {
        // The token flows are boxed: their futures (a refresh call, the token cache's) are kilobytes
        // that every call's future would otherwise carry, static keys included.
        match self {
            Auth::SweetSpot { .. } | Auth::Juice { .. } => Ok(Credential::default()),
            Auth::Count(count) => Box::pin(count.access_token(upstream, send, budget)).await,
            Auth::SparkLayer(spark) => Box::pin(spark.token(upstream, send, budget)).await,
        }
    }

    /// The identity the provider's rate limit counts against: the API key, or the client id.
    pub(super) fn credential_id(&self) -> &str {
        match self {
            Auth::SweetSpot { api_key, .. } | Auth::Juice { api_key, .. } => api_key.expose(),
            Auth::Count(count) => &count.client_id,
            Auth::SparkLayer(spark) => &spark.client_id,
        }
    }

    /// Whether [`credential`](Auth::credential) will make a token call before the next call.
    pub(super) async fn will_fetch_token(&self) -> bool {
        match self {
            Auth::SweetSpot { .. } | Auth::Juice { .. } => false,
            Auth::Count(count) => count.fresh(&*count.tokens.lock().await).is_none(),
            Auth::SparkLayer(spark) => !spark.token.contains_key(&()),
        }
    }

    /// Adds the provider's credential headers (and signature) to a request about to be sent.
    fn authorize(
        &self,
        request: &mut Request<Full<Bytes>>,
        path: &str,
        body: &[u8],
        credential: &Credential,
        idempotency_key: Option<&HeaderValue>,
    ) {
        let headers = request.headers_mut();
        match self {
            Auth::SweetSpot { authorization, .. } => {
                headers.insert(AUTHORIZATION, authorization.clone());
            }
            Auth::Juice {
                authorization,
                forward_idempotency_key,
                ..
            } => {
                headers.insert(AUTHORIZATION, authorization.clone());
                headers.insert(ACCEPT, HeaderValue::from_static(JUICE_ACCEPT));
                if let (true, Some(key)) = (forward_idempotency_key, idempotency_key) {
                    headers.insert(HeaderName::from_static("idempotency-key"), key.clone());
                }
            }
            Auth::Count(count) => {
                count.sign(request, path, body);
                if let Some(token) = &credential.token {
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, bearer(token.expose()));
                }
            }
            Auth::SparkLayer(spark) => {
                if let Some(token) = &credential.token {
                    headers.insert(AUTHORIZATION, bearer(token.expose()));
                }
                headers.insert(site_id_header(), header_text(&spark.site_id));
            }
        }
    }

    /// Whether a response says the token used has expired (and one refresh plus one retry may help).
    fn is_expired(&self, response: &Response) -> bool {
        match self {
            Auth::Count(_) => {
                response.status == StatusCode::UNAUTHORIZED
                    && serde_json::from_slice::<Value>(&response.body)
                        .ok()
                        .and_then(|body| body.get("code")?.as_str().map(str::to_owned))
                        .as_deref()
                        == Some("token_expired")
            }
            Auth::SparkLayer(_) => response.status == StatusCode::UNAUTHORIZED,
            Auth::SweetSpot { .. } | Auth::Juice { .. } => false,
        }
    }

    /// Forgets `credential` if it is still the current token, so the next call obtains a new one.
    async fn invalidate(&self, credential: &Credential) {
        let Some(used) = &credential.token else {
            return;
        };
        Box::pin(async move {
            match self {
                Auth::Count(count) => {
                    let mut tokens = count.tokens.lock().await;
                    if tokens
                        .access
                        .as_ref()
                        .is_some_and(|(token, _)| token == used)
                    {
                        tokens.access = None;
                    }
                }
                Auth::SparkLayer(spark) => {
                    if spark.token.get(&()).await.is_some_and(|t| t.token == *used) {
                        spark.token.invalidate(&()).await;
                    }
                }
                Auth::SweetSpot { .. } | Auth::Juice { .. } => {}
            }
        })
        .await
    }
}

fn bearer(token: &str) -> HeaderValue {
    sensitive(&format!("Bearer {token}"))
}

/// A credential header value, marked sensitive so that nothing that prints headers shows it.
fn sensitive(text: &str) -> HeaderValue {
    let mut value = header_text(text);
    value.set_sensitive(true);
    value
}

/// A header from configured text; config values with control characters are not sendable, so they
/// become an empty value that the provider refuses (answered as a 502) rather than a panic.
fn header_text(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn site_id_header() -> HeaderName {
    HeaderName::from_static("site-id")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Reads the JSON body of a token answer, or explains why the provider refused.
fn token_answer(provider: &str, response: Response) -> Result<Value, CredentialsRefused> {
    if response.status.is_success() {
        return serde_json::from_slice(&response.body).map_err(|_| CredentialsRefused {
            upstream_status: Some(response.status.as_u16()),
            detail: format!("{provider} answered the token request with a body that is not JSON"),
        });
    }
    let detail = if response.status.is_server_error() {
        format!("{provider}'s token endpoint failed")
    } else {
        format!("{provider} refused patchbay's client credentials or refresh token")
    };
    Err(CredentialsRefused {
        upstream_status: Some(response.status.as_u16()),
        detail,
    })
}

/// COUNT's HMAC identity and its OAuth tokens.
pub struct CountAuth {
    client_id: String,
    client_secret: Secret,
    refresh_before: Duration,
    /// Held across a refresh: a rotated refresh token works once, so two refreshes must never race.
    tokens: tokio::sync::Mutex<CountTokens>,
}

struct CountTokens {
    /// The access token and when it expires (unknown for a configured one: used until COUNT says so).
    access: Option<(Secret, Option<SystemTime>)>,
    /// Always the newest refresh token COUNT issued.
    refresh: Secret,
}

impl CountAuth {
    /// The HMAC headers over `METHOD:path:timestamp:bodyHash`.
    fn sign(&self, request: &mut Request<Full<Bytes>>, path: &str, body: &[u8]) {
        let timestamp = unix_now();
        let signature = signing::count_signature(
            self.client_secret.expose(),
            request.method().as_str(),
            path,
            timestamp,
            body,
        );
        let headers = request.headers_mut();
        headers.insert(
            HeaderName::from_static("x-client-id"),
            header_text(&self.client_id),
        );
        headers.insert(
            HeaderName::from_static("x-timestamp"),
            HeaderValue::from(timestamp),
        );
        headers.insert(
            HeaderName::from_static("x-signature"),
            sensitive(&signature),
        );
    }

    /// The access token when it is not about to expire.
    fn fresh(&self, tokens: &CountTokens) -> Option<Secret> {
        match &tokens.access {
            Some((token, None)) => Some(token.clone()),
            Some((token, Some(expires))) if *expires > SystemTime::now() + self.refresh_before => {
                Some(token.clone())
            }
            _ => None,
        }
    }

    async fn access_token(
        &self,
        upstream: &Upstream,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Credential, BoxError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = self.fresh(&tokens) {
            return Ok(Credential { token: Some(token) });
        }
        self.refresh(upstream, &mut tokens, send, budget).await?;
        Ok(Credential {
            token: tokens.access.as_ref().map(|(token, _)| token.clone()),
        })
    }

    async fn refresh(
        &self,
        upstream: &Upstream,
        tokens: &mut CountTokens,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<(), BoxError> {
        let body = Bytes::from(json!({ "refreshToken": tokens.refresh.expose() }).to_string());
        let mut request = upstream.request(Method::POST, COUNT_REFRESH_PATH, body.clone())?;
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.sign(&mut request, COUNT_REFRESH_PATH, &body);
        let outbound = Outbound {
            request,
            budget: budget.clone(),
        };
        let answer = token_answer("count", send(outbound).await?)?;
        let data = answer.get("data").unwrap_or(&answer);
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(access), Some(refresh)) = (text("accessToken"), text("refreshToken")) else {
            return Err(CredentialsRefused {
                upstream_status: None,
                detail: "COUNT's token refresh answer has no accessToken/refreshToken".into(),
            }
            .into());
        };
        let expires =
            text("accessTokenExpiresAt").and_then(|at| humantime::parse_rfc3339_weak(&at).ok());
        tracing::info!(
            provider = "count",
            "access token refreshed; refresh token rotated"
        );
        tokens.refresh = Secret::new(refresh);
        tokens.access = Some((Secret::new(access), expires));
        Ok(())
    }
}

/// SparkLayer's client credentials and the cached bearer token.
pub struct SparkLayerAuth {
    site_id: String,
    client_id: String,
    client_secret: Secret,
    leeway: Duration,
    /// One entry; moka runs one fetch for all concurrent callers and drops the token when it expires.
    token: moka::future::Cache<(), Arc<CachedToken>>,
}

struct CachedToken {
    token: Secret,
    lifetime: Duration,
}

struct TokenExpiry;

impl moka::Expiry<(), Arc<CachedToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &(),
        value: &Arc<CachedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

impl SparkLayerAuth {
    async fn token(
        &self,
        upstream: &Upstream,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Credential, BoxError> {
        let cached = self
            .token
            .try_get_with((), self.fetch(upstream, send, budget))
            .await
            .map_err(|shared| -> BoxError { Box::new(SharedError(shared)) })?;
        Ok(Credential {
            token: Some(cached.token.clone()),
        })
    }

    async fn fetch(
        &self,
        upstream: &Upstream,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Arc<CachedToken>, BoxError> {
        let body = Bytes::from(
            json!({
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret.expose(),
            })
            .to_string(),
        );
        let mut request = upstream.request(Method::POST, SPARKLAYER_TOKEN_PATH, body)?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(site_id_header(), header_text(&self.site_id));
        let outbound = Outbound {
            request,
            budget: budget.clone(),
        };
        let answer = token_answer("sparklayer", send(outbound).await?)?;
        let Some(token) = answer.get("access_token").and_then(Value::as_str) else {
            return Err(CredentialsRefused {
                upstream_status: None,
                detail: "SparkLayer's token answer has no access_token".into(),
            }
            .into());
        };
        let expires_in = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let lifetime = Duration::from_secs(expires_in)
            .saturating_sub(self.leeway)
            .max(Duration::from_secs(1));
        tracing::info!(provider = "sparklayer", expires_in, "access token obtained");
        Ok(Arc::new(CachedToken {
            token: Secret::new(token),
            lifetime,
        }))
    }
}

/// One token fetch's failure, shared by every call that waited for it; the failure itself is its source.
#[derive(Debug)]
struct SharedError(Arc<BoxError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}
