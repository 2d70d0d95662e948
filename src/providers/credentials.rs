//! Credential schemes (pure): how a provider's calls are authenticated. A scheme says which headers a
//! call carries (and signs it), which call obtains or refreshes a token and how to read its answer. The IO
//! around it — caching the token, one refresh at a time, the call made once more after a 401 — is
//! generic, in `upstream`.

use super::settings::Secret;
use super::UpstreamRequest;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{HeaderMap, Method};
use std::time::{Duration, SystemTime};

/// A call about to be sent: what a scheme reads to sign it, and the headers it adds to.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// The path below the base URL, as the dialect asked for it.
    pub path: &'a str,
    pub body: &'a [u8],
    pub headers: &'a mut HeaderMap,
    /// The caller's `Idempotency-Key`, for the providers that honour one.
    pub idempotency_key: Option<&'a HeaderValue>,
    pub now: SystemTime,
}

/// A token a scheme obtained: the access token, until when to use it, and a rotated refresh token.
#[derive(Clone, Debug)]
pub struct Token {
    pub access: Secret,
    /// When to stop using it (already less the scheme's safety margin); `None`: until refused.
    pub use_until: Option<SystemTime>,
    /// The refresh token that replaces the previous one, when the provider rotates them.
    pub refresh: Option<Secret>,
}

impl Token {
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.use_until.is_none_or(|until| until > now)
    }
}

/// The provider refused or garbled a token call: said in words, with its status.
#[derive(Clone, Debug)]
pub struct TokenRefused {
    pub upstream_status: Option<u16>,
    pub detail: String,
}

/// How one provider's calls are authenticated.
pub trait CredentialScheme: Send + Sync {
    /// The identity the provider's rate limit counts against: an API key or a client id.
    fn credential_id(&self) -> &str;

    /// Every configured secret, so that none is ever relayed back (a provider may echo one in an error).
    fn secrets(&self) -> Vec<&Secret>;

    /// Adds the credential headers (and signature) to a call; `token` is the current access token
    /// of a scheme that uses tokens.
    fn authorize(&self, call: Outgoing<'_>, token: Option<&Secret>);

    /// Whether calls carry a token that [`token_call`](Self::token_call) obtains.
    fn uses_tokens(&self) -> bool {
        false
    }

    /// The token to start from: one configured, before any call obtained one.
    fn initial_token(&self) -> Option<Token> {
        None
    }

    /// The refresh token configured, for schemes whose refresh tokens rotate.
    fn initial_refresh(&self) -> Option<Secret> {
        None
    }

    /// The call that obtains a token, with its headers, given the newest refresh token.
    fn token_call(
        &self,
        _refresh: Option<&Secret>,
        _now: SystemTime,
    ) -> Option<(UpstreamRequest, HeaderMap)> {
        None
    }

    /// Reads a successful token call's answer.
    fn read_token(&self, _body: &[u8], _now: SystemTime) -> Result<Token, TokenRefused> {
        Err(TokenRefused {
            upstream_status: None,
            detail: "this provider issues no tokens".into(),
        })
    }
}

/// `Bearer <token>`, marked sensitive.
pub(crate) fn bearer(token: &str) -> HeaderValue {
    sensitive(&format!("Bearer {token}"))
}

/// A credential header value, marked sensitive so that nothing that prints headers shows it.
pub(crate) fn sensitive(text: &str) -> HeaderValue {
    let mut value = header_text(text);
    value.set_sensitive(true);
    value
}

/// A header from configured text; config values with control characters are not sendable, so they
/// become an empty value that the provider refuses (answered as a 502) rather than a panic.
pub(crate) fn header_text(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Sets `Authorization: Bearer <token>` when there is a token.
pub(crate) fn authorize_bearer(headers: &mut HeaderMap, token: Option<&Secret>) {
    if let Some(token) = token {
        headers.insert(AUTHORIZATION, bearer(token.expose()));
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A JSON token call's headers.
pub(crate) fn json_headers(extra: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// `now + seconds - leeway`, at least a second from now: a token used until just before it expires.
pub(crate) fn use_until(now: SystemTime, seconds: u64, leeway: Duration) -> SystemTime {
    now + Duration::from_secs(seconds)
        .saturating_sub(leeway)
        .max(Duration::from_secs(1))
}
