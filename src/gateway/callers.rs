//! Check 4, the caller: with `[[clients]]` configured, every request names a client by its bearer
//! token (found by its SHA-256), and that client may use the provider it names (401
//! with `WWW-Authenticate: Bearer`, 403). The token is read once, outermost, so that the metrics and the
//! access line can name the client of every answer; it is enforced here, at check 4, after the route.
//! With no clients configured nobody is asked (the listener is then loopback-only unless
//! `server.allow_unauthenticated`).

use super::call::Routed;
use super::client_quota::{CallerQuotas, ClientQuotas};
use super::error::BoxError;
use super::route::LinkTarget;
use crate::config::ClientConfig;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use tower::filter::Predicate;
use tower::{Layer, Service};

/// One configured client.
pub(crate) struct Caller {
    /// Validated by config (`[A-Za-z0-9_.-]{1,64}`), so it goes into labels and log lines as it is.
    pub name: &'static str,
    token_sha256: [u8; 32],
    /// The providers it may use; `None`: all.
    providers: Option<Vec<String>>,
    /// Its own quotas, checked at check 10.
    pub quotas: CallerQuotas,
}

impl Caller {
    fn may_use(&self, provider: &str) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == provider))
    }
}

/// Who a request says it is, read from `Authorization` before any check.
#[derive(Clone)]
pub(crate) enum Identity {
    /// No `Authorization` header.
    Missing,
    /// Not one `Bearer <token>`.
    Malformed,
    /// A token no client has.
    Unknown,
    Known(Arc<Caller>),
}

impl Identity {
    /// The client's name for metrics and logs: `none` unless a client was recognised.
    pub fn label(identity: Option<&Identity>) -> &'static str {
        match identity {
            Some(Identity::Known(caller)) => caller.name,
            _ => "none",
        }
    }
}

/// The configured clients; none: patchbay is open.
#[derive(Default)]
pub(crate) struct Callers {
    clients: Vec<Arc<Caller>>,
    /// Each client by the SHA-256 of its token: a lookup costs the same however many clients there are.
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
    /// Tokens that named a client, so that its next requests skip the SHA-256: at most one per client
    /// (a token no client has is never kept), so it cannot grow with what callers send.
    seen: RwLock<HashMap<Box<[u8]>, Arc<Caller>>>,
    pub quotas: Arc<ClientQuotas>,
}

impl Callers {
    /// The clients of the configuration (validated: every token hash is 64 hex digits).
    pub fn new(configured: &[ClientConfig], providers: &[&'static str]) -> Callers {
        let mut quotas = ClientQuotas::default();
        let clients: Vec<Arc<Caller>> = configured
            .iter()
            .enumerate()
            .map(|(index, client)| {
                let hash = client.token_sha256.as_ref().map(|h| h.expose());
                let mut token_sha256 = [0; 32];
                // An invalid hash (only tests build one) matches no token.
                let _ = hex::decode_to_slice(hash.unwrap_or(""), &mut token_sha256);
                Arc::new(Caller {
                    name: Box::leak(client.name.clone().into_boxed_str()),
                    token_sha256,
                    providers: client.providers.clone(),
                    quotas: quotas.add(index, client, providers),
                })
            })
            .collect();
        let by_hash = clients
            .iter()
            .map(|client| (client.token_sha256, client.clone()))
            .collect();
        Callers {
            clients,
            by_hash,
            seen: RwLock::default(),
            quotas: Arc::new(quotas),
        }
    }

    pub fn is_open(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client `headers` name: by its token, when that token named it before, else by the token's
    /// SHA-256. Neither reveals anything of a token: what is looked up is what the caller sent, or its
    /// hash, and no configured token is ever held.
    pub fn identify(&self, headers: &HeaderMap) -> Identity {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return match headers.contains_key(AUTHORIZATION) {
                true => Identity::Malformed,
                false => Identity::Missing,
            };
        };
        let Some(token) = bearer_token(value.as_bytes()) else {
            return Identity::Malformed;
        };
        let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = seen.get(token) {
            return Identity::Known(client.clone());
        }
        drop(seen);
        let presented: [u8; 32] = Sha256::digest(token).into();
        let Some(client) = self.by_hash.get(&presented) else {
            return Identity::Unknown;
        };
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        seen.insert(token.into(), client.clone());
        Identity::Known(client.clone())
    }
}

/// The token of `Bearer <token>` (RFC 6750 §2.1: the scheme in any case, then one or more spaces).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    let b64token = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
    (!token.is_empty() && token.iter().all(b64token)).then_some(token)
}

/// Reads the caller's identity into the request's extensions (nothing when patchbay is open).
#[derive(Clone)]
pub(crate) struct IdentifyLayer {
    callers: Arc<Callers>,
}

impl IdentifyLayer {
    pub fn new(callers: Arc<Callers>) -> IdentifyLayer {
        IdentifyLayer { callers }
    }
}

impl<S> Layer<S> for IdentifyLayer {
    type Service = Identify<S>;

    fn layer(&self, inner: S) -> Identify<S> {
        Identify {
            callers: self.callers.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Identify<S> {
    callers: Arc<Callers>,
    inner: S,
}

impl<S, B> Service<Request<B>> for Identify<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        if !self.callers.is_open() {
            let identity = self.callers.identify(request.headers());
            tracing::Span::current().record("client", Identity::label(Some(&identity)));
            request.extensions_mut().insert(identity);
        }
        self.inner.call(request)
    }
}

/// Why check 4 refused a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallerError {
    #[error("authentication required: send `Authorization: Bearer <token>` with a client's token")]
    Missing,
    #[error("the Authorization header is not one `Bearer <token>`")]
    Malformed,
    #[error("the bearer token is not one of a configured client")]
    Unknown,
    #[error("client {client} may not use {providers}; it may use: {allowed}")]
    Forbidden {
        client: &'static str,
        /// The providers it asked for and may not use.
        providers: String,
        allowed: String,
    },
}

impl Caller {
    /// Whether it may use every one of `providers` (403 naming those it may not).
    pub fn may_use_all(&self, providers: &[&str]) -> Result<(), CallerError> {
        let refused: Vec<&str> = providers
            .iter()
            .copied()
            .filter(|provider| !self.may_use(provider))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(CallerError::Forbidden {
            client: self.name,
            providers: refused.join(", "),
            allowed: self.providers.as_deref().unwrap_or_default().join(", "),
        })
    }
}

/// The client a request names: `None` when patchbay is open; 401 when none is recognised.
pub(crate) fn caller_of(
    extensions: &http::Extensions,
) -> Result<Option<&Arc<Caller>>, CallerError> {
    match extensions.get::<Identity>() {
        None => Ok(None),
        Some(Identity::Known(caller)) => Ok(Some(caller)),
        Some(Identity::Missing) => Err(CallerError::Missing),
        Some(Identity::Malformed) => Err(CallerError::Malformed),
        Some(Identity::Unknown) => Err(CallerError::Unknown),
    }
}

/// Check 4 (a `tower::filter` predicate): a known client (401) allowed the provider (403). For a
/// link, the client only: which providers it names is known once the link is read.
#[derive(Clone, Copy, Default)]
pub(crate) struct Authorize;

impl<B> Predicate<Routed<B>> for Authorize {
    type Request = Routed<B>;

    fn check(&mut self, request: Routed<B>) -> Result<Routed<B>, BoxError> {
        if let Some(caller) = caller_of(&request.head.extensions)? {
            caller.may_use_all(&[request.target.provider.name()])?;
        }
        Ok(request)
    }
}

impl<B> Predicate<Routed<B, LinkTarget>> for Authorize {
    type Request = Routed<B, LinkTarget>;

    fn check(&mut self, request: Routed<B, LinkTarget>) -> Result<Routed<B, LinkTarget>, BoxError> {
        caller_of(&request.head.extensions)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use http::HeaderValue;

    fn client(name: &str, token: &str, providers: Option<Vec<&str>>) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            token_sha256: Some(Secret::new(hex::encode(Sha256::digest(token)))),
            token_sha256_file: None,
            providers: providers.map(|list| list.into_iter().map(String::from).collect()),
            rate_limit: None,
            provider_rate_limit: Default::default(),
        }
    }

    fn identify(callers: &Callers, authorization: &[&str]) -> Identity {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        callers.identify(&headers)
    }

    #[test]
    fn a_token_names_its_client_by_hash() {
        let callers = Callers::new(
            &[
                client("billing", "tok-billing", None),
                client("crm", "tok-crm", Some(vec!["juice"])),
            ],
            &["juice", "count"],
        );
        let name = |identity: Identity| Identity::label(Some(&identity));
        assert_eq!(name(identify(&callers, &["Bearer tok-crm"])), "crm");
        assert_eq!(
            name(identify(&callers, &["bearer   tok-billing"])),
            "billing"
        );
        assert!(matches!(identify(&callers, &[]), Identity::Missing));
        assert!(matches!(
            identify(&callers, &["Bearer tok-nobody"]),
            Identity::Unknown
        ));
        for malformed in [
            &["Basic dG9rOng="][..],
            &["Bearer"],
            &["Bearertok-crm"],
            &["Bearer tok crm"],
            &["Bearer tok-crm", "Bearer tok-crm"],
        ] {
            assert!(
                matches!(identify(&callers, malformed), Identity::Malformed),
                "{malformed:?}"
            );
        }
        // Only tokens that named a client are remembered, once each.
        for i in 0..100 {
            identify(&callers, &[&format!("Bearer tok-stranger-{i}")]);
        }
        identify(&callers, &["Bearer tok-crm"]);
        assert_eq!(callers.seen.read().unwrap().len(), 2, "billing and crm");
        let Identity::Known(crm) = identify(&callers, &["Bearer tok-crm"]) else {
            panic!("crm is known");
        };
        assert!(crm.may_use("juice") && !crm.may_use("count"));
    }
}
