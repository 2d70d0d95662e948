//! Check 10 as a layer: first the client's own quota (one cell per request, governor's GCRA, see
//! `client_quota`), then, before a request's first upstream call, the calls it plans (one more when a
//! token must be fetched first) are reserved in its credential's quota, or it is refused and nothing is
//! consumed. Every call then spends from that reservation; afterwards it is settled. A provider's own
//! 429 pauses the credential. Answers and refusals carry `RateLimit-Policy` and `RateLimit`.

use super::call::{Answer, CustomerCall};
use super::callers::{Caller, Identity};
use super::client_quota::{ClientQuotas, Held, Taken};
use super::customer::ProviderAnswered;
use super::customer_lock::SecondRun;
use super::error::{cause, BoxError, BoxFuture};
use super::metrics::CallCount;
use super::provider::ProviderRuntime;
use super::rate_limit::{Admission, RateLimiter};
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

    fn call(&mut self, call: CustomerCall) -> Self::Future {
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
            let held = take_client_cells(&clients, caller.as_deref(), &[provider.name()])?;
            // Refused here, the request consumes nothing from the client's quota either.
            let admission = admit(&provider, call.planned_calls()).await?;
            held.spend();
            within(admission, inner, call).await
        })
    }
}

/// The client's own cells for a request of `providers`: held until the request is admitted (given back
/// if it is refused or dropped first), or its refusal with the client's quota headers.
pub(crate) fn take_client_cells(
    clients: &Arc<ClientQuotas>,
    caller: Option<&Caller>,
    providers: &[&str],
) -> Result<Held, BoxError> {
    let taken = match caller {
        Some(caller) => clients
            .take(caller.name, &caller.quotas, providers)
            .map_err(|limited| WithQuota {
                headers: limited.headers(),
                source: limited.into(),
            })?,
        None => Taken::default(),
    };
    Ok(Held::new(clients.clone(), taken))
}

/// The calls a request of `provider` plans (one more when a token must be fetched first), reserved in
/// its credential's quota, or the refusal with the quota's headers; `None` for a provider without a
/// limit.
pub(crate) async fn admit(
    provider: &ProviderRuntime,
    planned: u32,
) -> Result<Option<Admitted>, BoxError> {
    let (Some(limiter), Some(upstream)) = (&provider.limiter, &provider.upstream) else {
        return Ok(None);
    };
    let calls = planned + u32::from(upstream.will_fetch_token().await);
    match limiter.admit(calls).await {
        Ok(admission) => Ok(Some(Admitted {
            limiter: limiter.clone(),
            admission,
        })),
        Err(refusal) => {
            let mut headers = HeaderMap::new();
            if let Some(decision) = &refusal.decision {
                limiter.headers(&mut headers, decision);
            }
            let source = refusal.error.into();
            Err(WithQuota { headers, source }.into())
        }
    }
}

/// A request's calls reserved in its credential's quota.
pub(crate) struct Admitted {
    limiter: Arc<RateLimiter>,
    admission: Arc<Admission>,
}

impl Admitted {
    /// Gives back every call reserved: the request is not going upstream after all.
    pub async fn release(self) {
        self.admission.settle().await;
    }
}

/// Runs `call` within its admission: every upstream call spends from it; afterwards it is settled, the
/// answer (or failure) carries the quota's headers, and a provider's own 429 pauses the credential.
pub(crate) async fn within<S>(
    admitted: Option<Admitted>,
    inner: S,
    mut call: CustomerCall,
) -> Result<Answer, BoxError>
where
    S: Service<CustomerCall, Response = Answer, Error = BoxError>,
{
    let Some(Admitted { limiter, admission }) = admitted else {
        return inner.oneshot(call).await;
    };
    call.budget = Some(admission.clone());
    let calls = call.extensions.get::<CallCount>().cloned();
    let result = inner.oneshot(call).await;
    if let Some(calls) = calls {
        calls.add(admission.calls_made());
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
}

/// The wait a provider's own 429 asked for: the credential pauses that long.
fn provider_retry_after(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let answered = cause::<ProviderAnswered>(error)?;
    (answered.status == StatusCode::TOO_MANY_REQUESTS)
        .then_some(answered.retry_after)
        .flatten()
}
