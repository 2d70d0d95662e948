//! Check 5: a PATCH carries `application/merge-patch+json` or `application/json`, parameters such as
//! `charset=utf-8` allowed, and no `Content-Encoding` but `identity` (415 otherwise). A GET has no body
//! to check.

use super::call::Routed;
use super::error::BoxError;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;
use tower::filter::Predicate;

/// The body is not in a media type patchbay reads.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnsupportedMediaType(pub String);

/// The media-type check (a `tower::filter` predicate).
#[derive(Clone, Copy, Default)]
pub(crate) struct ContentType;

impl<B, T> Predicate<Routed<B, T>> for ContentType {
    type Request = Routed<B, T>;

    fn check(&mut self, request: Routed<B, T>) -> Result<Routed<B, T>, BoxError> {
        if request.has_body() {
            let headers = &request.head.headers;
            check_content_type(headers)?;
            check_encoding(headers)?;
        }
        Ok(request)
    }
}

/// Check 5: a JSON merge patch or plain JSON, parameters (such as `charset`) allowed.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), UnsupportedMediaType> {
    let value = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = value
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if essence.eq_ignore_ascii_case("application/merge-patch+json")
        || essence.eq_ignore_ascii_case("application/json")
    {
        return Ok(());
    }
    let detail = match value {
        None => "send the patch with `Content-Type: application/merge-patch+json`".to_owned(),
        Some(other) => format!(
            "`{other}` is not accepted: send `application/merge-patch+json` or `application/json`"
        ),
    };
    Err(UnsupportedMediaType(detail))
}

/// No compressed bodies: a gzip patch would otherwise reach the JSON parser as binary.
fn check_encoding(headers: &HeaderMap) -> Result<(), UnsupportedMediaType> {
    let mut encodings = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
    match encodings.next() {
        None => Ok(()),
        Some(encoding) => Err(UnsupportedMediaType(format!(
            "`Content-Encoding: {encoding}` is not accepted: send the patch uncompressed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_err());
        for ok in [
            "application/merge-patch+json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_content_type(&headers).is_ok(), "{ok}");
        }
        for ok in ["identity", ""] {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(ok));
            assert!(check_encoding(&headers).is_ok(), "{ok}");
        }
        for compressed in ["gzip", "identity, br"] {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(compressed));
            assert!(check_encoding(&headers).is_err(), "{compressed}");
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&headers).is_err());
    }
}
