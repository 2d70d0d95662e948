//! The rescue: the one place an error becomes an HTTP answer, for the canonical API and the admin
//! listener alike. Layers fail with small typed errors, erased to [`BoxError`] on the way up; here each
//! is found again by its type anywhere in the chain ([`cause`]) and given its status, its headers
//! (`Allow`, `Retry-After`, `WWW-Authenticate`, the quota's) and its problem+json body. No other code
//! picks a status for a failure.

use super::body::BodyError;
use super::callers::CallerError;
use super::client_quota::ClientLimited;
use super::content::UnsupportedMediaType;
use super::customer::{CallFailed, MergeRefused, NotARecord, ProviderAnswered};
use super::detach::WriteTaskFailed;
use super::error::{cause, BoxError};
use super::idempotency::KeyError;
use super::limit::WithQuota;
use super::links::LinkError;
use super::operations::NotReady;
use super::rate_limit::RateLimitError;
use super::route::RouteError;
use super::validate::{BadIdempotencyKey, Invalid};
use crate::canonical::{FieldError, Problem, ProblemKind};
use crate::state::StateError;
use crate::upstream::{CallError, CredentialsRefused};
use bytes::Bytes;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::error::Error;
use std::future::Ready;
use std::task::{ready, Context, Poll};
use tower::timeout::error::Elapsed;
use tower::{Layer, Service};

/// The rescue as a layer of the stack: below it every failure is an error, above it an answer.
#[derive(Clone, Copy, Default)]
pub(crate) struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            not_ready: None,
        }
    }
}

pub(crate) struct Rescue<S> {
    inner: S,
    /// The inner service's readiness failure, answered to the next request.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Rescue<S> {
        Rescue {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

type Answered = Result<Response<Full<Bytes>>, Infallible>;

impl<S, R> Service<R> for Rescue<S>
where
    S: Service<R, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Either<
        Ready<Answered>,
        Map<S::Future, fn(Result<Response<Full<Bytes>>, BoxError>) -> Answered>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if let Err(error) = ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(error);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        if let Some(error) = self.not_ready.take() {
            return Either::Left(std::future::ready(Ok(rescue(error))));
        }
        let answer: fn(Result<Response<Full<Bytes>>, BoxError>) -> Answered =
            |result| Ok(result.unwrap_or_else(rescue));
        Either::Right(self.inner.call(request).map(answer))
    }
}

/// The answer to a request whose handling panicked: a 500 that says nothing of the inside.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Full<Bytes>> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    tracing::error!(panic = message, "request handling panicked");
    render(&Problem::new(ProblemKind::Internal, "internal error"))
}

/// The answer to a failed request (the admin listener's too).
pub(crate) fn rescue(error: BoxError) -> Response<Full<Bytes>> {
    let error: &(dyn Error + 'static) = &*error;
    let problem = problem(error);
    let mut response = render(&problem);
    if problem.kind == ProblemKind::RequestTimeout {
        // The rest of a stalled body is not worth waiting for: hyper closes after this answer.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(RouteError::Method { allow, .. }) = cause::<RouteError>(error) {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(refused) = cause::<CallerError>(error) {
        let challenge = match refused {
            CallerError::Missing => Some(r#"Bearer realm="patchbay""#),
            CallerError::Malformed => Some(r#"Bearer realm="patchbay", error="invalid_request""#),
            CallerError::Unknown => Some(r#"Bearer realm="patchbay", error="invalid_token""#),
            CallerError::Forbidden { .. } => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
    }
    if problem.kind == ProblemKind::RateLimited {
        if let Some(quota) = cause::<WithQuota>(error) {
            response.headers_mut().extend(quota.headers.clone());
        }
    }
    response
}

/// A problem as `application/problem+json`, with `Retry-After` on a 429.
pub(crate) fn render(problem: &Problem) -> Response<Full<Bytes>> {
    let body = Bytes::from(problem.to_bytes());
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(problem.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(seconds) = problem.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The status table: which problem each failure is.
fn problem(error: &(dyn Error + 'static)) -> Problem {
    // The admin listener's readiness probe.
    if let Some(not_ready) = cause::<NotReady>(error) {
        return Problem::new(ProblemKind::ServiceUnavailable, not_ready.to_string());
    }
    // A link, and what a link names.
    if let Some(link) = cause::<LinkError>(error) {
        return match link {
            LinkError::NotFound(_) => Problem::new(ProblemKind::NotFound, link.to_string()),
            LinkError::Invalid(errors) => Problem::invalid(errors.clone()),
        };
    }
    // Checks 1–3.
    if let Some(route) = cause::<RouteError>(error) {
        let kind = match route {
            RouteError::Host(_) => ProblemKind::BadRequest,
            RouteError::NotFound(_) | RouteError::UnknownProvider(_) => ProblemKind::NotFound,
            RouteError::NotConfigured { .. } => ProblemKind::ServiceUnavailable,
            RouteError::Method { .. } => ProblemKind::MethodNotAllowed,
            RouteError::InvalidId { message, .. } => {
                return Problem::new(ProblemKind::BadRequest, route.to_string())
                    .with_errors(vec![FieldError::new("id", message.clone())]);
            }
            RouteError::InvalidLinkId(message) => {
                return Problem::new(ProblemKind::BadRequest, route.to_string())
                    .with_errors(vec![FieldError::new("link_id", message.clone())]);
            }
        };
        return Problem::new(kind, route.to_string());
    }
    // Check 4.
    if let Some(refused) = cause::<CallerError>(error) {
        let kind = match refused {
            CallerError::Forbidden { .. } => ProblemKind::Forbidden,
            _ => ProblemKind::Unauthorized,
        };
        return Problem::new(kind, refused.to_string());
    }
    // Checks 5–9.
    if let Some(media) = cause::<UnsupportedMediaType>(error) {
        return Problem::new(ProblemKind::UnsupportedMediaType, media.to_string());
    }
    if let Some(body) = cause::<BodyError>(error) {
        let kind = match body {
            BodyError::TooLarge { .. } => ProblemKind::PayloadTooLarge,
            BodyError::TimedOut(_) => ProblemKind::RequestTimeout,
            BodyError::Unreadable(_) | BodyError::NotAJsonObject(_) => ProblemKind::BadRequest,
        };
        return Problem::new(kind, body.to_string());
    }
    if let Some(key) = cause::<BadIdempotencyKey>(error) {
        return Problem::new(ProblemKind::BadRequest, key.to_string());
    }
    if let Some(invalid) = cause::<Invalid>(error) {
        return Problem::invalid(invalid.errors.clone());
    }
    // Idempotency-Key records.
    if let Some(key) = cause::<KeyError>(error) {
        let kind = match key {
            KeyError::Reused => ProblemKind::Unprocessable,
            KeyError::InFlight => ProblemKind::Conflict,
        };
        return Problem::new(kind, key.to_string());
    }
    // Check 10, before the upstream failures: a call the budget refused was never sent.
    if let Some(limited) = cause::<ClientLimited>(error) {
        let mut problem = Problem::new(ProblemKind::RateLimited, limited.to_string());
        problem.retry_after = Some(limited.retry_after);
        return problem;
    }
    if let Some(limited) = cause::<RateLimitError>(error) {
        return match limited {
            RateLimitError::Refused {
                detail,
                retry_after,
            } => {
                let mut problem = Problem::new(ProblemKind::RateLimited, detail.clone());
                problem.retry_after = Some(*retry_after);
                problem
            }
            RateLimitError::Exceeds { .. } | RateLimitError::StoreUnavailable => {
                Problem::new(ProblemKind::ServiceUnavailable, limited.to_string())
            }
        };
    }
    // Check 11: what the provider answered, or why it did not.
    if let Some(merge) = cause::<MergeRefused>(error) {
        return Problem::invalid(merge.errors.clone()).from_provider(merge.provider, None);
    }
    if let Some(answered) = cause::<ProviderAnswered>(error) {
        return provider_problem(answered);
    }
    if let Some(answer) = cause::<NotARecord>(error) {
        return Problem::new(ProblemKind::BadGateway, answer.to_string())
            .from_provider(answer.provider, Some(answer.status.as_u16()));
    }
    if let Some(failed) = cause::<CallFailed>(error) {
        let provider = failed.provider;
        // patchbay's own state, not the provider: nothing was sent with a token it could not keep.
        if let Some(state) = cause::<StateError>(error) {
            let kind = match state {
                StateError::Unavailable { .. } => ProblemKind::ServiceUnavailable,
                StateError::Corrupt { .. } => ProblemKind::Internal,
            };
            tracing::error!(provider, error = %state, "state store failed");
            return Problem::new(kind, format!("{provider}: {state}"));
        }
        if let Some(refused) = cause::<CredentialsRefused>(error) {
            return Problem::new(ProblemKind::BadGateway, format!("{provider}: {refused}"))
                .from_provider(provider, refused.upstream_status);
        }
        if cause::<Elapsed>(error).is_some() {
            let detail = format!("{provider} did not answer within server.upstream_timeout_ms");
            return Problem::new(ProblemKind::GatewayTimeout, detail).from_provider(provider, None);
        }
        if let Some(call) = cause::<CallError>(error) {
            return Problem::new(ProblemKind::BadGateway, format!("{provider}: {call}"))
                .from_provider(provider, None);
        }
    }
    // The state store's Idempotency-Key records could not be read or claimed: nothing was sent.
    if let Some(state) = cause::<StateError>(error) {
        let kind = match state {
            StateError::Unavailable { .. } => ProblemKind::ServiceUnavailable,
            StateError::Corrupt { .. } => ProblemKind::Internal,
        };
        tracing::error!(error = %state, "state store failed (idempotency records)");
        return Problem::new(kind, format!("Idempotency-Key records: {state}"));
    }
    if cause::<WriteTaskFailed>(error).is_some() {
        return Problem::new(ProblemKind::Internal, "the write failed inside patchbay");
    }
    tracing::error!(%error, "unexpected error");
    Problem::new(ProblemKind::Internal, "internal error")
}

/// A provider's non-success status as the caller's problem: its validation answers are the caller's
/// 422, its refusal of patchbay's own credentials a 502 (never a 401 to the caller), its 5xx a 502.
fn provider_problem(answered: &ProviderAnswered) -> Problem {
    let provider = answered.provider;
    let said = answered
        .message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let code = answered.status.as_u16();
    let problem = match code {
        400 | 422 => Problem::new(
            ProblemKind::Unprocessable,
            format!("{provider} refused the change{said}"),
        )
        .with_errors(answered.errors.clone()),
        401 | 403 => Problem::new(
            ProblemKind::BadGateway,
            format!(
                "{provider} rejected patchbay's credentials ({code}); check the providers.{provider} settings"
            ),
        ),
        404 => Problem::new(
            ProblemKind::NotFound,
            format!("{provider} has no such customer{said}"),
        ),
        409 => Problem::new(
            ProblemKind::Conflict,
            format!("{provider} reported a conflict{said}"),
        ),
        429 => {
            let mut limited = Problem::new(
                ProblemKind::RateLimited,
                format!("{provider} is rate limiting patchbay's credential"),
            );
            limited.retry_after = answered.retry_after;
            limited
        }
        _ => Problem::new(
            ProblemKind::BadGateway,
            format!("{provider} failed with status {code}{said}"),
        ),
    };
    if problem.kind == ProblemKind::BadGateway {
        tracing::warn!(provider, status = code, "provider failed");
    }
    problem.from_provider(provider, Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<u64>) -> BoxError {
        let failed = ProviderAnswered {
            provider: "count",
            status: StatusCode::from_u16(status).unwrap(),
            message: None,
            errors: Vec::new(),
            retry_after,
        };
        Box::new(failed)
    }

    #[test]
    fn credentials_refused_upstream_are_a_502_never_a_401() {
        let problem = problem(&*answered(401, None));
        assert_eq!(problem.status(), 502);
        assert_eq!(problem.upstream_status, Some(401));
        let limited = problem_of(answered(429, Some(60)));
        assert_eq!((limited.status(), limited.retry_after), (429, Some(60)));
    }

    fn problem_of(error: BoxError) -> Problem {
        problem(&*error)
    }

    #[test]
    fn a_cause_is_found_under_wrappers() {
        let timeout = CallFailed {
            provider: "juice",
            source: Box::new(Elapsed::new()),
        };
        let wrapped: BoxError = Box::new(WithQuota {
            headers: Default::default(),
            source: Box::new(timeout),
        });
        let problem = problem_of(wrapped);
        assert_eq!(problem.status(), 504);
        assert_eq!(problem.provider.as_deref(), Some("juice"));
        // A refusal of the budget inside an upstream call is the rate limit's 429, not a 502.
        let refused = CallFailed {
            provider: "juice",
            source: Box::new(RateLimitError::Refused {
                detail: "no room".into(),
                retry_after: 7,
            }),
        };
        let problem = problem_of(Box::new(refused));
        assert_eq!((problem.status(), problem.retry_after), (429, Some(7)));
        // Anything unforeseen is a 500 that says nothing of the inside.
        let odd = problem_of("something odd".into());
        assert_eq!((odd.status(), odd.detail.as_str()), (500, "internal error"));
    }
}
