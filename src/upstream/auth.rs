//! Authorize: the outermost layer of a provider's client. It adds the provider's credentials to every
//! call ([`CredentialScheme`], pure, in each provider's module) and does the IO around them: a token is
//! obtained before the first call that needs one and kept until it is due, one fetch at a time however
//! many calls wait, rotated refresh tokens always replace the old one, and after an answer saying the
//! token expired it is refreshed once and the call made again.

use super::{
    BoxError, BoxFuture, CallBudget, CredentialsRefused, Outbound, Response, Upstream, UpstreamCall,
};
use crate::providers::credentials::{CredentialScheme, Outgoing, Token};
use crate::providers::settings::Secret;
use bytes::Bytes;
use futures_util::future::Either;
use http::HeaderValue;
use http::Request;
use http_body_util::Full;
use std::future::{ready, Ready};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tower::{Service, ServiceExt};

/// How a token call is sent: through the same budget, timeout and connections as every other call.
type Sender<'a> = &'a (dyn Fn(Outbound) -> BoxFuture<Response> + Send + Sync);

type Budget = Option<Arc<dyn CallBudget>>;

/// One provider's credentials at run time: its scheme and the tokens it has been given.
pub struct Auth {
    scheme: Box<dyn CredentialScheme>,
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
}

impl Auth {
    pub fn new(scheme: Box<dyn CredentialScheme>) -> Auth {
        let tokens = Tokens {
            access: scheme.initial_token(),
            refresh: scheme.initial_refresh(),
        };
        Auth {
            scheme,
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

    /// Whether [`token`](Auth::token) will make a token call before the next call.
    pub(super) async fn will_fetch_token(&self) -> bool {
        self.scheme.uses_tokens() && self.fresh(&*self.tokens.lock().await).is_none()
    }

    fn fresh(&self, tokens: &Tokens) -> Option<Secret> {
        let token = tokens.access.as_ref()?;
        token
            .is_fresh(SystemTime::now())
            .then(|| token.access.clone())
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
        if let Some(token) = self.fresh(&tokens) {
            return Ok(Some(token));
        }
        // Boxed: the token call's future is kilobytes that every call's future would otherwise carry.
        Box::pin(self.fetch(upstream, &mut tokens, send, budget))
            .await
            .map(Some)
    }

    async fn fetch(
        &self,
        upstream: &Upstream,
        tokens: &mut Tokens,
        send: Sender<'_>,
        budget: &Budget,
    ) -> Result<Secret, BoxError> {
        let provider = upstream.name;
        let now = SystemTime::now();
        let (call, headers) = self
            .scheme
            .token_call(tokens.refresh.as_ref(), now)
            .ok_or_else(|| CredentialsRefused {
                upstream_status: None,
                detail: format!("{provider} issues no tokens"),
            })?;
        let body = call.body.unwrap_or_default();
        let mut request = upstream.request(call.method, &call.path, body)?;
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
        {
            let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
            issued.extend(
                [Some(token.access.clone()), token.refresh.clone()]
                    .into_iter()
                    .flatten(),
            );
            let over = issued.len().saturating_sub(8);
            issued.drain(..over);
        }
        let access = token.access.clone();
        tokens.access = Some(token);
        Ok(access)
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

    /// Forgets `used` if it is still the current token, so the next call obtains a new one.
    async fn invalidate(&self, used: Option<&Secret>) {
        let Some(used) = used else {
            return;
        };
        let mut tokens = self.tokens.lock().await;
        if tokens.access.as_ref().is_some_and(|t| t.access == *used) {
            tokens.access = None;
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

    /// Makes the call a dialect asked for, authenticated and signed; after an answer saying the token
    /// expired, refreshes it once and makes the call again.
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
            let mut refreshed = false;
            loop {
                let token = auth.token(&upstream, &send, &call.budget).await?;
                let mut http =
                    upstream.request(request.method.clone(), &request.path, body.clone())?;
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
                if !refreshed
                    && auth
                        .scheme
                        .is_expired(response.status.as_u16(), &response.body)
                {
                    tracing::debug!(
                        provider = upstream.name,
                        "access token expired; refreshing once"
                    );
                    auth.invalidate(token.as_ref()).await;
                    refreshed = true;
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
        let mut http =
            self.upstream
                .request(request.method.clone(), &request.path, body.clone())?;
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
