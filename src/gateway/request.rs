//! Reading the caller's request: the customer and link paths, and `Prefer`.

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// `/customers/{provider}:{id}`, split and percent-decoded. The provider part is checked by the caller
/// (404 when unknown); the id is only guaranteed to be UTF-8 here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CustomerPath<'a> {
    pub provider: Cow<'a, str>,
    pub id: Result<Cow<'a, str>, String>,
}

/// Parses the path of a customer request; `None` when it is not one (a 404). A path without
/// percent-escapes (the usual one) is split where it lies, copying nothing.
pub(crate) fn customer_path(path: &str) -> Option<CustomerPath<'_>> {
    let segment = path.strip_prefix("/customers/")?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    if !segment.contains('%') {
        let (provider, id) = segment.split_once(':')?;
        return Some(CustomerPath {
            provider: Cow::Borrowed(provider),
            id: Ok(Cow::Borrowed(id)),
        });
    }
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    let colon = decoded.iter().position(|b| *b == b':')?;
    let provider = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    let id = String::from_utf8(decoded[colon + 1..].to_vec())
        .map(Cow::Owned)
        .map_err(|_| "the id is not valid UTF-8 once percent-decoded".to_owned());
    Some(CustomerPath {
        provider: Cow::Owned(provider),
        id,
    })
}

/// What a link's path names: the link itself (`/links/{id}`), or its customer (`/customers/{id}`, an
/// id without a colon).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkPart {
    Link,
    Customer,
}

/// `/links/{id}` or `/customers/{id}` whose id, percent-decoded, has no colon; the id only guaranteed
/// to be UTF-8 here. `None`: not a link's path.
pub(crate) fn link_path(path: &str) -> Option<(LinkPart, Result<String, String>)> {
    let (part, segment) = match path.strip_prefix("/links/") {
        Some(segment) => (LinkPart::Link, segment),
        None => (LinkPart::Customer, path.strip_prefix("/customers/")?),
    };
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    if part == LinkPart::Customer && decoded.contains(&b':') {
        return None;
    }
    let id = String::from_utf8(decoded)
        .map_err(|_| "the id is not valid UTF-8 once percent-decoded".to_owned());
    Some((part, id))
}

/// Whether `path` is one of a link's, as [`link_path`] reads it, without decoding anything: a
/// decoded colon is a `:` or a `%3A`.
pub(crate) fn is_link_path(path: &str) -> bool {
    let (customer, segment) = match path.strip_prefix("/links/") {
        Some(segment) => (false, segment),
        None => match path.strip_prefix("/customers/") {
            Some(segment) => (true, segment),
            None => return false,
        },
    };
    let colon = || {
        segment.contains(':')
            || segment
                .as_bytes()
                .windows(3)
                .any(|w| w[0] == b'%' && w[1] == b'3' && w[2].eq_ignore_ascii_case(&b'a'))
    };
    let names_a_colon = customer && colon();
    !(segment.is_empty() || segment.contains('/') || names_a_colon)
}

/// `Prefer: handling=lenient` (RFC 7240), among any other preferences, names case-insensitive. A
/// preference given more than once counts by its first instance only (RFC 7240 §2), across every
/// `Prefer` header in order.
pub(crate) fn prefers_lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|preference| {
            let pair = preference.split(';').next()?.trim();
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            name.trim()
                .eq_ignore_ascii_case("handling")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .next()
        .is_some_and(|value| value.eq_ignore_ascii_case("lenient"))
}

/// `Prefer`, built once.
const PREFER: http::HeaderName = http::HeaderName::from_static("prefer");

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn customer_paths() {
        let path = customer_path("/customers/juice:6F7E1E7F-93d1-4fcc-b7a4-738f869615c8").unwrap();
        assert_eq!(path.provider, "juice");
        assert_eq!(path.id.unwrap(), "6F7E1E7F-93d1-4fcc-b7a4-738f869615c8");
        let encoded = customer_path("/customers/juice%3Aabc").unwrap();
        assert_eq!(
            (&*encoded.provider, encoded.id.as_deref()),
            ("juice", Ok("abc"))
        );
        let encoded = customer_path("/customers/sweetspot%3A..%2F..%2Fadmin").unwrap();
        assert_eq!(
            (&*encoded.provider, encoded.id.unwrap().as_ref()),
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
    fn link_paths() {
        assert_eq!(
            link_path("/links/acme"),
            Some((LinkPart::Link, Ok("acme".to_owned())))
        );
        assert_eq!(
            link_path("/customers/acme%2Dco"),
            Some((LinkPart::Customer, Ok("acme-co".to_owned())))
        );
        for path in [
            "/links/acme",
            "/links/a%3Ab",
            "/customers/acme%2Dco",
            "/customers/juice:1",
            "/customers/juice%3a1",
            "/customers/juice%3A1",
            "/customers/%",
            "/links/",
            "/links/a/b",
            "/x",
        ] {
            assert_eq!(is_link_path(path), link_path(path).is_some(), "{path}");
        }
        for not_one in [
            "/customers/juice:1",
            "/customers/juice%3A1",
            "/customers/",
            "/links/",
            "/links/a/b",
            "/customer/acme",
        ] {
            assert_eq!(link_path(not_one), None, "{not_one}");
        }
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
        // The first instance of a preference counts, within one header and across headers.
        headers.insert(
            "prefer",
            HeaderValue::from_static("handling=strict, handling=lenient"),
        );
        assert!(!prefers_lenient(&headers));
        headers.insert("prefer", HeaderValue::from_static("handling=lenient"));
        headers.append("prefer", HeaderValue::from_static("handling=strict"));
        assert!(prefers_lenient(&headers));
    }
}
