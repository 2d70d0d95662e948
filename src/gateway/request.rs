//! Reading the caller's request: the customer path, content type, `Prefer` and body limits. Each check
//! fails with its layer's typed error; the rescue gives it its status.

use super::body::BodyError;
use super::content::UnsupportedMediaType;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use percent_encoding::percent_decode_str;

/// `/customers/{provider}:{id}`, split and percent-decoded. The provider part is checked by the caller
/// (404 when unknown); the id is only guaranteed to be UTF-8 here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CustomerPath {
    pub provider: String,
    pub id: Result<String, String>,
}

/// Parses the path of a customer request; `None` when it is not one (a 404).
pub(crate) fn customer_path(path: &str) -> Option<CustomerPath> {
    let segment = path.strip_prefix("/customers/")?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    let colon = decoded.iter().position(|b| *b == b':')?;
    let provider = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    let id = String::from_utf8(decoded[colon + 1..].to_vec())
        .map_err(|_| "the id is not valid UTF-8 once percent-decoded".to_owned());
    Some(CustomerPath { provider, id })
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

/// `Prefer: handling=lenient` (RFC 7240), among any other preferences, names case-insensitive.
pub(crate) fn prefers_lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|preference| {
            let pair = preference.split(';').next()?.trim();
            let (name, value) = pair.split_once('=')?;
            Some((
                name.trim().to_owned(),
                value.trim().trim_matches('"').to_owned(),
            ))
        })
        .any(|(name, value)| {
            name.eq_ignore_ascii_case("handling") && value.eq_ignore_ascii_case("lenient")
        })
}

/// Check 6: reads the body, refusing one over `limit` bytes before reading it when its length is declared.
pub(crate) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(error) => Err(BodyError::Unreadable(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn customer_paths() {
        let path = customer_path("/customers/juice:6F7E1E7F-93d1-4fcc-b7a4-738f869615c8").unwrap();
        assert_eq!(path.provider, "juice");
        assert_eq!(path.id.unwrap(), "6F7E1E7F-93d1-4fcc-b7a4-738f869615c8");
        let encoded = customer_path("/customers/sweetspot%3A..%2F..%2Fadmin").unwrap();
        assert_eq!(
            (encoded.provider.as_str(), encoded.id.unwrap().as_str()),
            ("sweetspot", "../../admin")
        );
        assert!(customer_path("/customers/juice:%ff").unwrap().id.is_err());
        for not_one in [
            "/customers/",
            "/customers/juice",
            "/customers/a:b/c",
            "/customer/a:b",
            "/",
        ] {
            assert_eq!(customer_path(not_one), None, "{not_one}");
        }
    }

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
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&headers).is_err());
    }

    #[test]
    fn prefer_lenient() {
        let mut headers = HeaderMap::new();
        assert!(!prefers_lenient(&headers));
        headers.insert(
            "prefer",
            HeaderValue::from_static("respond-async, Handling=\"lenient\""),
        );
        assert!(prefers_lenient(&headers));
        headers.insert("prefer", HeaderValue::from_static("handling=strict"));
        assert!(!prefers_lenient(&headers));
    }
}
