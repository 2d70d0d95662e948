//! The two shapes every emulator speaks: a provider request read in full, and the reply it answers.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// A request that reached one provider's routes, with its body already read.
pub(crate) struct ProviderRequest {
    pub method: Method,
    /// Path relative to the provider's base URL, raw as received (percent-encoding kept), no query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a body is not the JSON object a write needs.
pub(crate) enum BodyError {
    NotJson,
    NotAnObject,
}

impl BodyError {
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::NotJson => "The request body is not valid JSON.",
            BodyError::NotAnObject => "The request body must be a JSON object.",
        }
    }
}

impl ProviderRequest {
    /// A header as text; a value that is not visible ASCII counts as absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The path's segments, still percent-encoded: `/v1/customers/x` gives `["v1", "customers", "x"]`.
    pub fn segments(&self) -> Vec<&str> {
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        path.split('/').collect()
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
    pub fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// True when a body is present but not declared as JSON: every provider speaks only JSON,
    /// so a gateway that forgets `Content-Type` must fail here as it would upstream.
    pub fn body_not_declared_json(&self) -> bool {
        if self.body.is_empty() {
            return false;
        }
        let content_type = self.header("content-type").unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        !essence.eq_ignore_ascii_case("application/json")
    }

    pub fn json_object(&self) -> Result<Map<String, Value>, BodyError> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(BodyError::NotAnObject),
            Err(_) => Err(BodyError::NotJson),
        }
    }
}

/// A path segment percent-decoded (ids are looked up decoded; the log keeps them raw).
pub(crate) fn decode_segment(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// The machine-readable code an emulator uses when nothing more specific applies (and for faults).
pub(crate) fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        415 => "unsupported_media_type",
        422 => "validation_error",
        429 => "rate_limit_exceeded",
        500..=599 => "server_error",
        _ => "error",
    }
}

/// What an emulator answers: status, body and any extra headers.
pub(crate) struct Reply {
    pub status: StatusCode,
    content_type: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: StatusCode, body: &Value) -> Reply {
        Reply::raw(status, "application/json", Bytes::from(body.to_string()))
    }

    /// An RFC 9457 problem document (SparkLayer's error shape).
    pub fn problem(status: StatusCode, body: &Value) -> Reply {
        Reply::raw(
            status,
            "application/problem+json",
            Bytes::from(body.to_string()),
        )
    }

    pub fn raw(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header; one with the same name (even `content-type`) replaces the earlier value.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
