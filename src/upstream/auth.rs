//! Authorize: the outermost layer of a provider's client. It adds the provider's credentials to every
//! call ([`CredentialScheme`], pure, in each provider's module) and does the IO around them: a token is
//! obtained before the first call that needs one and kept until it is due, one fetch at a time however
//! many calls wait, and after a 401 the call is made once more: with the token the store holds now (another
//! replica's, when it rotated the refused one), or with a new one when the store holds the refused token.
//!
//! Tokens live in the state store too ([`Store`]): a rotated refresh token is kept there before the new
//! access token is used for anything, so a restart (or `kill -9`) never leaves only a spent one; with a
//! store that replicas share, one of them refreshes at a time, under the store's lock, and the others
//! read what it obtained instead of refreshing again.

use super::{
    BoxError, BoxFuture, CallBudget, CredentialsRefused, Outbound, Response, Upstream, UpstreamCall,
};
use crate::providers::credentials::{CredentialScheme, Outgoing, Token};
use crate::providers::settings::Secret;
use crate::state::{StateError, Store};
use bytes::Bytes;
use futures_util::future::Either;
use http::HeaderValue;
use http::Request;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::{ready, Ready};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower::{Service, ServiceExt};

/// How a token call is sent: through the same budget, timeout and connections as every other call.
type Sender<'a> = &'a (dyn Fn(Outbound) -> BoxFuture<Response> + Send + Sync);

type Budget = Option<Arc<dyn CallBudget>>;

/// How often a replica waiting for another's refresh looks at the store again.
const POLL: Duration = Duration::from_millis(25);

/// Where a provider's tokens are kept beyond the process, and how long a refresh may hold the lock.
pub struct TokenStore {
    pub store: Arc<Store>,
    /// Longer than a token call can take (its timeouts), so a live holder never loses it.
    pub lock_ttl: Duration,
}

/// One provider's credentials at run time: its scheme and the tokens it has been given.
pub struct Auth {
    scheme: Box<dyn CredentialScheme>,
    store: Arc<Store>,
    /// The store's key for this credential's tokens.
    key: String,
    /// Which configured secret the tokens descend from (a hash): stored tokens of another lineage
    /// predate a re-authorisation and are not used.
    lineage: String,
    lock_ttl: Duration,
    /// The tokens obtained at run time, newest last, for [`Auth::redact`] (a few: a rotated one may
    /// still be echoed by a provider shortly after).
    issued: std::sync::Mutex<Vec<Secret>>,
    /// Held across a token call: a rotated refresh token works once, so two refreshes must never race.
    tokens: tokio::sync::Mutex<Tokens>,
}

struct Tokens {
    access: Option<Token>,
    /// Always the newest refresh token the provider issued (schemes whose tokens rotate).
    refresh: Option<Secret>,
    /// The access token the provider last refused as expired: never taken from the store again.
    refused: Option<Secret>,
    /// Whether the store has been read: until then the configured tokens may be spent ones.
    loaded: bool,
    /// Tokens obtained that the store has not kept yet: nothing uses them until it has.
    unsaved: Option<String>,
}

/// A credential's tokens as the store keeps them.
#[derive(Serialize, Deserialize)]
struct Stored {
    lineage: String,
    access: String,
    /// Unix milliseconds; `None`: until the provider refuses it.
    use_until_ms: Option<u64>,
    refresh: Option<String>,
}

impl Stored {
    fn token(&self) -> Token {
        Token {
            access: Secret::new(self.access.clone()),
            use_until: self
                .use_until_ms
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            refresh: None,
        }
    }
}

fn hex_sha256(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

impl Auth {
    /// Tokens of `provider`'s credential, kept in `store` as well.
    pub fn new(scheme: Box<dyn CredentialScheme>, provider: &str, store: TokenStore) -> Auth {
        let credential = hex_sha256(&["patchbay tokens", provider, scheme.credential_id()]);
        // A rotating scheme's lineage starts from its configured refresh token, another's from its
        // first secret (the client secret its tokens are exchanged for).
        let origin = scheme
            .initial_refresh()
            .or_else(|| scheme.secrets().first().map(|s| (*s).clone()));
        let lineage = hex_sha256(&[
            "patchbay lineage",
            origin.as_ref().map_or("", |s| s.expose()),
        ]);
        let tokens = Tokens {
            access: scheme.initial_token(),
            refresh: scheme.initial_refresh(),
            refused: None,
            loaded: !scheme.uses_tokens(),
            unsaved: None,
        };
        Auth {
            scheme,
            store: store.store,
            key: format!("tokens.{provider}.{}", &credential[..16]),
            lineage,
            lock_ttl: store.lock_ttl,
            issued: std::sync::Mutex::new(Vec::new()),
            tokens: tokio::sync::Mutex::new(tokens),
        }
    }

    /// `text` with every configured secret and every token obtained at run time replaced by
    /// `[redacted]`: what a provider says goes back to callers, and must never carry a credential.
    pub fn redact(&self, text: &str) -> String {
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = text.to_owned();
        for secret in self.scheme.secrets().into_iter().chain(issued.iter()) {
            // A short value (an empty key) would redact everything and protects nothing.
            if secret.expose().len() >= 4 {
                text = text.replace(secret.expose(), "[redacted]");
            }
        }
        text
    }

    /// The identity the provider's rate limit counts against: the API key, or the client id.
    pub(super) fn credential_id(&self) -> &str {
        self.scheme.credential_id()
    }

    /// Whether the configured refresh token is spent by the first refresh (the provider rotates it).
    pub(super) fn rotates(&self) -> bool {
        self.scheme.initial_refresh().is_some()
    }

    /// Reads the stored tokens (start-up does, so a value that does not parse stops it).
    pub(super) async fn load(&self) -> Result<(), StateError> {
        self.load_once(&mut *self.tokens.lock().await).await
    }

    /// Reads the store the first time tokens are needed (or at start-up): until then the configured
    /// tokens may be spent ones.
    async fn load_once(&self, tokens: &mut Tokens) -> Result<(), StateError> {
        if !tokens.loaded {
            self.read_store(tokens).await?;
            tokens.loaded = true;
        }
        Ok(())
    }

    /// A fresh token another process stored (shared stores only), taken as the current one.
    async fn stored_fresh(
        &self,
        upstream: &Upstream,
        tokens: &mut Tokens,
    ) -> Result<Option<Secret>, StateError> {
        if !self.store.is_shared() {
            return Ok(None);
        }
        self.read_store(tokens).await?;
        let fresh = self.fresh(tokens);
        if fresh.is_some() {
            crate::metrics::token_refresh(upstream.name, "shared");
        }
        Ok(fresh)
    }

    /// Whether [`token`](Auth::token) may make a token call before the next call.
    pub(super) async fn will_fetch_token(&self) -> bool {
        self.scheme.uses_tokens() && self.fresh(&*self.tokens.lock().await).is_none()
    }

    fn fresh(&self, tokens: &Tokens) -> Option<Secret> {
        let token = tokens.access.as_ref()?;
        token
            .is_fresh(SystemTime::now())
            .then(|| token.access.clone())
    }

    /// Takes what the store holds for this credential, if it is of this lineage: its refresh token is
    /// the newest, and its access token is used unless it is the one the provider refused.
    async fn read_store(&self, tokens: &mut Tokens) -> Result<(), StateError> {
        let Some(text) = self.store.get(&self.key).await? else {
            return Ok(());
        };
        let stored: Stored =
            serde_json::from_str(&text).map_err(|error| self.store.corrupt(&self.key, error))?;
        if stored.lineage != self.lineage {
            if !tokens.loaded {
                tracing::info!(
                    key = self.key,
                    "the configured credentials changed since the stored tokens were obtained; starting from the configured ones"
                );
            }
            return Ok(());
        }
        if let Some(refresh) = &stored.refresh {
            tokens.refresh = Some(Secret::new(refresh.clone()));
        }
        let token = stored.token();
        if tokens.refused.as_ref() != Some(&token.access) {
            self.remember([Some(token.access.clone()), tokens.refresh.clone()]);
            tokens.access = Some(token);
        }
        Ok(())
    }

    fn remember(&self, secrets: [Option<Secret>; 2]) {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        for secret in secrets.into_iter().flatten() {
            if !issued.contains(&secret) {
                issued.push(secret);
            }
        }
        let over = issued.len().saturating_sub(8);
        issued.drain(..over);
    }

    /// The token to call with (none for a scheme without tokens), obtaining one first when needed: a
    /// call that spends from the budget like any other.
    async fn token(
        &self,
        upstream: &Upstream,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Option<Secret>, BoxError> {
        if !self.scheme.uses_tokens() {
            return Ok(None);
        }
        let mut tokens = self.tokens.lock().await;
        self.load_once(&mut tokens).await?;
        if let Some(unsaved) = tokens.unsaved.clone() {
            self.store.put(&self.key, unsaved).await?;
            tokens.unsaved = None;
        }
        if let Some(token) = self.fresh(&tokens) {
            return Ok(Some(token));
        }
        // Boxed: the token call's future is kilobytes that every call's future would otherwise carry.
        Box::pin(self.fetch(upstream, &mut tokens, send, budget))
            .await
            .map(Some)
    }

    /// A fresh token: another replica's from the store when it has one, else one obtained here, under
    /// the store's lock and kept in the store before it is returned.
    async fn fetch(
        &self,
        upstream: &Upstream,
        tokens: &mut Tokens,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Secret, BoxError> {
        let give_up = tokio::time::Instant::now() + self.lock_ttl + Duration::from_secs(1);
        let lock = loop {
            if let Some(token) = self.stored_fresh(upstream, tokens).await? {
                return Ok(token);
            }
            if let Some(lock) = self.store.lock(&self.key, self.lock_ttl).await? {
                break lock;
            }
            if tokio::time::Instant::now() > give_up {
                return Err(StateError::Unavailable {
                    store: self.store.name(),
                    detail: format!(
                        "another replica held the token lock of {} for over {} s",
                        self.key,
                        self.lock_ttl.as_secs()
                    ),
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        };
        // Another replica may have refreshed between the last look and the lock.
        match self.stored_fresh(upstream, tokens).await {
            Ok(None) => {}
            Ok(Some(token)) => {
                self.store.unlock(lock).await;
                return Ok(token);
            }
            Err(error) => {
                self.store.unlock(lock).await;
                return Err(error.into());
            }
        }
        let called = self.token_call(upstream, tokens, send, budget).await;
        let outcome = match &called {
            Ok(_) => "obtained",
            Err(error) => match error.downcast_ref::<CredentialsRefused>() {
                Some(refused) if refused.upstream_status.is_some_and(|s| s < 500) => "refused",
                _ => "failed",
            },
        };
        crate::metrics::token_refresh(upstream.name, outcome);
        let token = match called {
            Ok(token) => token,
            Err(error) => {
                self.store.unlock(lock).await;
                return Err(error);
            }
        };
        let stored = Stored {
            lineage: self.lineage.clone(),
            access: token.access.expose().to_owned(),
            use_until_ms: token.use_until.map(|until| {
                until
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64
            }),
            refresh: tokens.refresh.as_ref().map(|r| r.expose().to_owned()),
        };
        let stored = serde_json::to_string(&stored).expect("tokens serialise");
        if let Err(error) = self.store.put(&self.key, stored.clone()).await {
            // The new refresh token exists only here: keep it, use nothing until the store has it,
            // and leave the lock to expire so no other replica refreshes from the spent one meanwhile.
            tracing::error!(%error, key = self.key, "the refreshed tokens could not be stored; calls wait until they are");
            tokens.unsaved = Some(stored);
            return Err(error.into());
        }
        self.store.unlock(lock).await;
        Ok(token.access)
    }

    /// Obtains a token from the provider with the newest refresh token, and takes it (and its rotated
    /// refresh token) as the current ones.
    async fn token_call(
        &self,
        upstream: &Upstream,
        tokens: &mut Tokens,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Token, BoxError> {
        let provider = upstream.name;
        let now = SystemTime::now();
        let (call, headers) = self
            .scheme
            .token_call(tokens.refresh.as_ref(), now)
            .ok_or_else(|| CredentialsRefused {
                upstream_status: None,
                detail: format!("{provider} issues no tokens"),
            })?;
        let mut request = upstream.request(&call)?;
        request.headers_mut().extend(headers);
        let outbound = Outbound {
            request,
            budget: budget.clone(),
        };
        let response = send(outbound).await?;
        if !response.status.is_success() {
            let detail = match response.status.is_server_error() {
                true => format!("{provider}'s token endpoint failed"),
                false => {
                    format!("{provider} refused patchbay's client credentials or refresh token")
                }
            };
            return Err(CredentialsRefused {
                upstream_status: Some(response.status.as_u16()),
                detail,
            }
            .into());
        }
        let token = self
            .scheme
            .read_token(&response.body, now)
            .map_err(|refused| CredentialsRefused {
                upstream_status: refused.upstream_status,
                detail: refused.detail,
            })?;
        tracing::info!(
            provider,
            rotated = token.refresh.is_some(),
            "access token obtained"
        );
        if let Some(refresh) = &token.refresh {
            tokens.refresh = Some(refresh.clone());
        }
        self.remember([Some(token.access.clone()), token.refresh.clone()]);
        tokens.access = Some(token.clone());
        tokens.refused = None;
        Ok(token)
    }

    /// Adds the provider's credential headers (and signature) to a request about to be sent.
    fn authorize(
        &self,
        request: &mut Request<Full<Bytes>>,
        path: &str,
        body: &[u8],
        token: Option<&Secret>,
        idempotency_key: Option<&HeaderValue>,
    ) {
        let method = request.method().clone();
        let call = Outgoing {
            method: &method,
            path,
            body,
            headers: request.headers_mut(),
            idempotency_key,
            now: SystemTime::now(),
        };
        self.scheme.authorize(call, token);
    }

    /// Forgets `used` if it is still the current token, so the next call obtains a new one (or takes
    /// a newer one from the store, never `used` again).
    async fn invalidate(&self, used: Option<&Secret>) {
        let Some(used) = used else {
            return;
        };
        let mut tokens = self.tokens.lock().await;
        if tokens.access.as_ref().is_some_and(|t| t.access == *used) {
            tokens.access = None;
            tokens.refused = Some(used.clone());
        }
    }
}

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
    /// A scheme without tokens signs and sends at once; one with tokens may fetch one first.
    type Future = Either<Ready<Result<Response, BoxError>>, Either<S::Future, BoxFuture<Response>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    /// Makes the call a dialect asked for, authenticated and signed; after a 401, makes it once more
    /// with the store's token or a new one.
    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        if !self.upstream.auth.scheme.uses_tokens() {
            return match self.sign(&call) {
                Ok(request) => Either::Right(Either::Left(self.inner.call(Outbound {
                    request,
                    budget: call.budget,
                }))),
                Err(error) => Either::Left(ready(Err(error.into()))),
            };
        }
        let upstream = self.upstream.clone();
        let inner = self.inner.clone();
        Either::Right(Either::Right(Box::pin(async move {
            let send = |outbound: Outbound| -> BoxFuture<Response> {
                Box::pin(inner.clone().oneshot(outbound))
            };
            let auth = &upstream.auth;
            let request = &call.request;
            let body = request.body.clone().unwrap_or_default();
            let mut retried = false;
            loop {
                let token = auth.token(&upstream, &send, &call.budget).await?;
                let mut http = upstream.request(request)?;
                auth.authorize(
                    &mut http,
                    &request.path,
                    &body,
                    token.as_ref(),
                    call.idempotency_key.as_ref(),
                );
                let response = send(Outbound {
                    request: http,
                    budget: call.budget.clone(),
                })
                .await?;
                // Any 401 for a token: it expired, or the provider revoked it when another replica
                // rotated it. The token is forgotten and the call made once more, with the token the
                // store holds now, or a new one when the store holds the refused one.
                if !retried && response.status == http::StatusCode::UNAUTHORIZED {
                    tracing::debug!(
                        provider = upstream.name,
                        "access token refused; trying the stored or a new one once"
                    );
                    auth.invalidate(token.as_ref()).await;
                    retried = true;
                    continue;
                }
                return Ok(response);
            }
        })))
    }
}

impl<S> Authorize<S> {
    /// The call as an HTTP request, signed with a scheme that uses no token.
    fn sign(&self, call: &UpstreamCall) -> Result<Request<Full<Bytes>>, super::CallError> {
        let request = &call.request;
        let body = request.body.clone().unwrap_or_default();
        let mut http = self.upstream.request(request)?;
        self.upstream.auth.authorize(
            &mut http,
            &request.path,
            &body,
            None,
            call.idempotency_key.as_ref(),
        );
        Ok(http)
    }
}
