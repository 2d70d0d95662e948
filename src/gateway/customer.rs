//! Check 11, the innermost service: one customer's upstream calls. A read is one GET; a write is the
//! dialect's call, after reading the current record when the dialect merges into it (read-merge-write),
//! and the provider's answer translated back. What the provider answered, when it is not a customer,
//! goes up as a [`ProviderAnswered`] for the rescue to read.

use super::call::{Answer, CustomerCall, Op};
use super::error::{BoxError, BoxFuture};
use super::provider::ProviderRuntime;
use crate::canonical::{CustomerPatch, FieldError};
use crate::providers::{Record, UpstreamRequest};
use crate::upstream::{CallBudget, Client, Response, UpstreamCall};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tower::{Service, ServiceExt};

/// A provider answered, and not with a customer: its status and what its error body said.
#[derive(Debug, thiserror::Error)]
#[error("{provider} answered {status}")]
pub(crate) struct ProviderAnswered {
    pub provider: &'static str,
    pub status: StatusCode,
    /// The provider's own message, when it gave one.
    pub message: Option<String>,
    /// Field errors, named by canonical paths.
    pub errors: Vec<FieldError>,
    /// Whole seconds from its `Retry-After` or `X-RateLimit-Reset`, when a 429 said.
    pub retry_after: Option<u64>,
}

/// A provider answered success with a body that is not a customer record.
#[derive(Debug, thiserror::Error)]
#[error("{provider} answered {status} with a body that is not a customer record")]
pub(crate) struct NotARecord {
    pub provider: &'static str,
    pub status: StatusCode,
}

/// The merged record is one the provider would refuse (e.g. an address without a city).
#[derive(Debug, thiserror::Error)]
#[error("the merged {provider} record is invalid")]
pub(crate) struct MergeRefused {
    pub provider: &'static str,
    pub errors: Vec<FieldError>,
}

/// A read-merge-write read a customer first contacted by another name (an external id): its lock must
/// be held by the primary id the record gave, and the write read again under it.
#[derive(Debug, thiserror::Error)]
#[error("the customer's primary id is {primary}: its lock is needed")]
pub(crate) struct NeedsLock {
    pub primary: String,
}

/// An upstream call failed without an answer: which provider, and why.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {source}")]
pub(crate) struct CallFailed {
    pub provider: &'static str,
    #[source]
    pub source: BoxError,
}

/// The innermost service: one runtime's clients, one per provider (`None` for a disabled one).
#[derive(Clone)]
pub(crate) struct CustomerService {
    clients: Arc<[Option<Client>]>,
}

impl CustomerService {
    pub fn new(clients: Arc<[Option<Client>]>) -> CustomerService {
        CustomerService { clients }
    }
}

impl Service<CustomerCall> for CustomerService {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CustomerCall) -> Self::Future {
        let client = self.clients[call.provider.index].clone();
        Box::pin(async move {
            let client = client.expect("the route refuses a provider without credentials");
            let flow = Flow {
                provider: &call.provider,
                client,
                idempotency_key: call.idempotency_key,
                budget: call.budget,
                locked: call.locked.as_deref(),
            };
            let record = match &call.op {
                Op::Read => flow.read(&call.id).await?,
                Op::Write(patch) => flow.write(&call.id, patch).await?,
            };
            Ok(Answer {
                customer: call.provider.dialect.to_canonical(record),
                lenient: call.lenient,
                headers: HeaderMap::new(),
            })
        })
    }
}

/// One request's calls to its provider.
struct Flow<'a> {
    provider: &'a ProviderRuntime,
    client: Client,
    idempotency_key: Option<HeaderValue>,
    budget: Option<Arc<dyn CallBudget>>,
    /// The customer's lock this call holds, by name.
    locked: Option<&'a str>,
}

impl Flow<'_> {
    fn name(&self) -> &'static str {
        self.provider.name()
    }

    /// One call; the caller's `Idempotency-Key` goes with a write only, never with a read.
    async fn send(&self, request: UpstreamRequest) -> Result<Response, BoxError> {
        let writes = request.method != http::Method::GET;
        let call = UpstreamCall {
            request,
            idempotency_key: self.idempotency_key.clone().filter(|_| writes),
            budget: self.budget.clone(),
        };
        self.client.clone().oneshot(call).await.map_err(|source| {
            tracing::warn!(provider = self.name(), error = %source, "upstream call failed");
            CallFailed {
                provider: self.name(),
                source,
            }
            .into()
        })
    }

    /// One upstream read of the native record.
    async fn read(&self, id: &str) -> Result<Record, BoxError> {
        let response = self.send(self.provider.dialect.read(id)).await?;
        self.record(id, response, None, None)
    }

    /// Applies `patch`, reading the current record first when the dialect merges into it.
    async fn write(&self, id: &str, patch: &CustomerPatch) -> Result<Record, BoxError> {
        let provider = self.provider;
        let current = if provider.dialect.needs_current(patch) {
            let record = self.read(id).await?;
            let primary = provider.dialect.record_id(&record);
            if let (Some(locked), Some(primary)) = (self.locked, primary) {
                if primary != locked {
                    return Err(NeedsLock { primary }.into());
                }
            }
            Some(record)
        } else {
            None
        };
        self.write_over(id, patch, current).await
    }

    async fn write_over(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<Record>,
    ) -> Result<Record, BoxError> {
        let provider = self.provider;
        let request = provider
            .dialect
            .write(id, patch, current.as_ref())
            .map_err(|errors| MergeRefused {
                provider: self.name(),
                errors,
            })?;
        let sent = request.body.clone();
        let response = self.send(request).await?;
        self.record(id, response, sent.as_deref(), current.as_ref())
            .map_err(|error| name_raw_fields(error, provider.name(), &patch.provider_fields))
    }

    /// The native record in a provider's answer, or what its status and body mean.
    fn record(
        &self,
        id: &str,
        response: Response,
        sent: Option<&[u8]>,
        current: Option<&Record>,
    ) -> Result<Record, BoxError> {
        let provider = self.provider;
        let name = self.name();
        let status = response.status;
        // UTF-8 checked once for the whole body: parsing from `&str` skips the check of every string.
        let text = std::str::from_utf8(&response.body).ok();
        if status.is_success() {
            let record = text.and_then(|text| Record::parse(text, provider.dialect.record_at()));
            let Some(record) = record else {
                tracing::warn!(
                    provider = name,
                    status = status.as_u16(),
                    "unexpected answer body"
                );
                return Err(NotARecord {
                    provider: name,
                    status,
                }
                .into());
            };
            if let Some(primary) = provider.dialect.record_id(&record).filter(|p| p != id) {
                provider.aliases.insert(id.to_owned(), primary);
            }
            return Ok(record);
        }
        let body: Option<Value> = text.and_then(|text| serde_json::from_str(text).ok());
        let failure = body
            .as_ref()
            .map(|b| provider.dialect.failure(b, sent, current))
            .unwrap_or_default();
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            retry_after(&response.headers, SystemTime::now())
                .unwrap_or(provider.fallback_retry_after)
        });
        // What the provider said goes back to the caller: never one of our credentials in it.
        let redact = |text: &str| match &provider.upstream {
            Some(upstream) => upstream.redact(text),
            None => text.to_owned(),
        };
        let errors = failure
            .errors
            .into_iter()
            .map(|error| FieldError::new(error.field, redact(&error.message)))
            .collect();
        Err(ProviderAnswered {
            provider: name,
            status,
            message: failure.message.as_deref().map(redact),
            errors,
            retry_after,
        }
        .into())
    }
}

/// A provider's refusal of a field the caller sent raw through `provider_fields` names it by its
/// canonical path, `provider_fields.<provider>.<key>`, like every other error field.
fn name_raw_fields(mut error: BoxError, provider: &str, raw: &Map<String, Value>) -> BoxError {
    if let Some(answered) = error.downcast_mut::<ProviderAnswered>() {
        for field in &mut answered.errors {
            if raw.contains_key(&field.field) {
                field.field = format!("provider_fields.{provider}.{}", field.field);
            }
        }
    }
    error
}

/// Whole seconds, rounded up, from a provider's `Retry-After` (seconds or HTTP date) or, failing that,
/// its `X-RateLimit-Reset` (Unix seconds).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let until = |at: SystemTime| {
        let wait = at.duration_since(now).unwrap_or_default();
        wait.as_millis().div_ceil(1000).max(1) as u64
    };
    if let Some(value) = text("retry-after") {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.max(1));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(until(at));
        }
    }
    let reset = text("x-ratelimit-reset")?.parse::<u64>().ok()?;
    Some(until(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(reset),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn retry_after_reads_seconds_dates_and_resets() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1700000042"));
        assert_eq!(retry_after(&headers, now), Some(42));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Tue, 14 Nov 2023 22:13:27 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(7));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, now), Some(3));
    }
}
