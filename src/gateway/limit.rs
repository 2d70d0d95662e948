//! Check 10 as a layer: first the client's own quota (one cell per request, governor's GCRA, see
//! `client_quota`), then, before a request's first upstream call, the calls it plans (one more when a
//! token must be fetched first) are reserved in its credential's quota, or it is refused and nothing is
//! consumed. Every call then spends from that reservation; afterwards it is settled. A provider's own
//! 429 pauses the credential. Answers and refusals carry `RateLimit-Policy` and `RateLimit`.

use super::call::{Answer, CustomerCall};
use super::callers::Identity;
use super::client_quota::{ClientQuotas, Held, Taken};
use super::customer::ProviderAnswered;
use super::customer_lock::SecondRun;
use super::error::{cause, BoxError, BoxFuture};
use super::metrics::CallCount;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

/// A failure of a request that went through a limited credential, with the quota headers its answer
/// carries if the rescue makes it a 429.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub(crate) struct WithQuota {
    pub headers: HeaderMap,
    #[source]
    pub source: BoxError,
}

#[derive(Clone)]
pub(crate) struct RateLimitLayer {
    clients: Arc<ClientQuotas>,
}

impl RateLimitLayer {
    pub fn new(clients: Arc<ClientQuotas>) -> RateLimitLayer {
        RateLimitLayer { clients }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            clients: self.clients.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    clients: Arc<ClientQuotas>,
    inner: S,
}

impl<S> Service<CustomerCall> for RateLimit<S>
where
    S: Service<CustomerCall, Response = Answer, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: CustomerCall) -> Self::Future {
        let inner = self.inner.clone();
        let clients = self.clients.clone();
        Box::pin(async move {
            let provider = call.provider.clone();
            // The client's own quota first: its refusal consumes nothing from the provider's. Its
            // cells come back unless the request is admitted (refused, or dropped while it waits).
            let caller = match call.extensions.get::<Identity>() {
                Some(Identity::Known(caller)) if call.extensions.get::<SecondRun>().is_none() => {
                    Some(caller.clone())
                }
                _ => None,
            };
            let taken = match &caller {
                Some(caller) => clients
                    .take(caller.name, &caller.quotas, provider.name())
                    .map_err(|limited| WithQuota {
                        headers: limited.headers(),
                        source: limited.into(),
                    })?,
                None => Taken::default(),
            };
            let held = Held::new(clients, taken);
            let (Some(limiter), Some(upstream)) = (&provider.limiter, &provider.upstream) else {
                held.spend();
                return inner.oneshot(call).await;
            };
            let calls = call.planned_calls() + u32::from(upstream.will_fetch_token().await);
            let admission = match limiter.admit(calls).await {
                Ok(admission) => {
                    held.spend();
                    admission
                }
                Err(refusal) => {
                    // Refused here, the request consumes nothing from the client's quota either.
                    drop(held);
                    let mut headers = HeaderMap::new();
                    if let Some(decision) = &refusal.decision {
                        limiter.headers(&mut headers, decision);
                    }
                    let source = refusal.error.into();
                    return Err(WithQuota { headers, source }.into());
                }
            };
            call.budget = Some(admission.clone());
            let calls = call.extensions.get::<CallCount>().cloned();
            let result = inner.oneshot(call).await;
            if let Some(calls) = calls {
                calls.set(admission.calls_made());
            }
            admission.settle().await;
            let mut decision = admission.decision();
            match result {
                Ok(mut answer) => {
                    limiter.headers(&mut answer.headers, &decision);
                    Ok(answer)
                }
                Err(source) => {
                    if let Some(seconds) = provider_retry_after(&*source) {
                        decision = limiter.pause(seconds).await;
                    }
                    let mut headers = HeaderMap::new();
                    limiter.headers(&mut headers, &decision);
                    Err(WithQuota { headers, source }.into())
                }
            }
        })
    }
}

/// The wait a provider's own 429 asked for: the credential pauses that long.
fn provider_retry_after(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let answered = cause::<ProviderAnswered>(error)?;
    (answered.status == StatusCode::TOO_MANY_REQUESTS)
        .then_some(answered.retry_after)
        .flatten()
}
