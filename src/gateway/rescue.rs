//! The rescue: the one place an error becomes an HTTP answer, and the one place an upstream failure
//! becomes a problem. Everything the caller sees about a failure is decided here.

use crate::canonical::{Problem, ProblemKind};
use crate::upstream::CallError;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A problem as `application/problem+json`, with `Allow` on a 405 and `Retry-After` on a 429.
pub(crate) fn rescue(problem: &Problem) -> Response<Full<Bytes>> {
    let body = Bytes::from(problem.to_bytes());
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(problem.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if problem.kind == ProblemKind::MethodNotAllowed {
        headers.insert(ALLOW, HeaderValue::from_static("GET, PATCH"));
    }
    if let Some(seconds) = problem.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A call that produced no HTTP answer: a timeout is a 504, a call the rate limit refused its 429 (or
/// 503), everything else a 502.
pub(crate) fn call_problem(provider: &str, error: &CallError) -> Problem {
    let (kind, upstream_status) = match error {
        // Not sent: the rate limit's own answer, as it is.
        CallError::Refused(problem) => return (**problem).clone(),
        CallError::Timeout(_) => (ProblemKind::GatewayTimeout, None),
        CallError::Connect(_) | CallError::Transport(_) => (ProblemKind::BadGateway, None),
        CallError::Credentials {
            upstream_status, ..
        } => (ProblemKind::BadGateway, *upstream_status),
    };
    tracing::warn!(provider, %error, "upstream call failed");
    Problem::new(kind, format!("{provider}: {error}")).from_provider(provider, upstream_status)
}

/// A provider's non-success status as a problem (DESIGN §1 status table). `failure` is what the dialect
/// read from the error body; `fallback_retry_after` answers a 429 that names no time.
pub(crate) fn status_problem(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    message: Option<&str>,
    fallback_retry_after: u64,
) -> Problem {
    let said = message.map(|m| format!(": {m}")).unwrap_or_default();
    let code = status.as_u16();
    let mut problem = match code {
        400 | 422 => Problem::new(
            ProblemKind::Unprocessable,
            format!("{provider} refused the change{said}"),
        ),
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
            limited.retry_after =
                Some(retry_after(headers, SystemTime::now()).unwrap_or(fallback_retry_after));
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
    problem = problem.from_provider(provider, Some(code));
    problem
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
    Some(until(UNIX_EPOCH + Duration::from_secs(reset)))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn credentials_refused_upstream_are_a_502_never_a_401() {
        let problem = status_problem(
            "count",
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            None,
            60,
        );
        assert_eq!(problem.status(), 502);
        assert_eq!(problem.upstream_status, Some(401));
        let limited = status_problem(
            "juice",
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            None,
            60,
        );
        assert_eq!((limited.status(), limited.retry_after), (429, Some(60)));
    }
}
