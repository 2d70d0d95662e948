//! Problems: every error patchbay answers, as RFC 9457 problem details. Pure data; the gateway's rescue
//! turns one into an HTTP response.

use serde::Serialize;
use serde_json::Value;

/// One bad field, named by its canonical dotted path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The kinds of problem, each with its status, `type` slug and title (docs/api.md, the status table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    RequestTimeout,
    PayloadTooLarge,
    Conflict,
    Unprocessable,
    RateLimited,
    Internal,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 15] = [
        ProblemKind::BadRequest,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RequestTimeout,
        ProblemKind::PayloadTooLarge,
        ProblemKind::Conflict,
        ProblemKind::Unprocessable,
        ProblemKind::RateLimited,
        ProblemKind::Internal,
        ProblemKind::BadGateway,
        ProblemKind::ServiceUnavailable,
        ProblemKind::GatewayTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            ProblemKind::BadRequest => 400,
            ProblemKind::Unauthorized => 401,
            ProblemKind::Forbidden => 403,
            ProblemKind::NotFound => 404,
            ProblemKind::MethodNotAllowed => 405,
            ProblemKind::UnsupportedMediaType => 415,
            ProblemKind::RequestTimeout => 408,
            ProblemKind::PayloadTooLarge => 413,
            ProblemKind::Conflict => 409,
            ProblemKind::Unprocessable => 422,
            ProblemKind::RateLimited => 429,
            ProblemKind::Internal => 500,
            ProblemKind::BadGateway => 502,
            ProblemKind::ServiceUnavailable => 503,
            ProblemKind::GatewayTimeout => 504,
        }
    }

    fn slug_and_title(self) -> (&'static str, &'static str) {
        match self {
            ProblemKind::BadRequest => ("bad-request", "Bad request"),
            ProblemKind::Unauthorized => ("unauthorized", "Not authenticated"),
            ProblemKind::Forbidden => ("forbidden", "Not allowed"),
            ProblemKind::NotFound => ("not-found", "Not found"),
            ProblemKind::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ProblemKind::UnsupportedMediaType => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ProblemKind::RequestTimeout => {
                ("request-timeout", "The request body did not arrive in time")
            }
            ProblemKind::PayloadTooLarge => ("payload-too-large", "Request body too large"),
            ProblemKind::Conflict => ("conflict", "Conflict"),
            ProblemKind::Unprocessable => ("validation", "The patch cannot be applied"),
            ProblemKind::RateLimited => ("rate-limited", "Rate limited"),
            ProblemKind::Internal => ("internal", "Internal error"),
            ProblemKind::BadGateway => ("bad-gateway", "The provider failed"),
            ProblemKind::ServiceUnavailable => ("unavailable", "Service unavailable"),
            ProblemKind::GatewayTimeout => {
                ("upstream-timeout", "The provider did not answer in time")
            }
        }
    }
}

/// A problem to answer: kind, a sentence for humans, the bad fields, and what the provider said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// The provider that was called, when one was.
    pub provider: Option<String>,
    /// The provider's own status, when one answered.
    pub upstream_status: Option<u16>,
    /// Whole seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            provider: None,
            upstream_status: None,
            retry_after: None,
        }
    }

    /// A 422 listing bad fields (the first [`MAX_LISTED`] of them).
    pub fn invalid(errors: Vec<FieldError>) -> Problem {
        let detail = match errors.as_slice() {
            [one] => format!("`{}` {}", shortened(&one.field, MAX_ECHOED), one.message),
            many if many.len() > MAX_LISTED => format!(
                "{} fields are invalid; the first {MAX_LISTED} are listed",
                many.len()
            ),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(ProblemKind::Unprocessable, detail)
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = errors;
        self
    }

    pub fn from_provider(mut self, provider: &str, upstream_status: Option<u16>) -> Problem {
        self.provider = Some(provider.to_owned());
        self.upstream_status = upstream_status;
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The `application/problem+json` body, members in RFC 9457's order.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.body()).expect("problem bodies serialise")
    }

    /// The `application/problem+json` body as written on the wire: RFC 9457's members in its order,
    /// then the extension members.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).expect("problem bodies serialise")
    }

    fn body(&self) -> Body<'_> {
        let (slug, title) = self.kind.slug_and_title();
        let errors = self.errors.iter().take(MAX_LISTED).map(|error| Listed {
            field: shortened(&error.field, MAX_ECHOED),
            message: shortened(&error.message, MAX_ECHOED),
        });
        Body {
            kind: format!("urn:patchbay:problem:{slug}"),
            title,
            status: self.status(),
            detail: shortened(&self.detail, MAX_DETAIL),
            errors: errors.collect(),
            provider: self.provider.as_deref(),
            upstream_status: self.upstream_status,
        }
    }
}

/// At most this many bad fields are listed: a body of thousands of unknown keys gets a small answer.
pub const MAX_LISTED: usize = 50;

/// Longest field name or message echoed back (a name the caller made up), in characters.
const MAX_ECHOED: usize = 200;

/// Longest `detail` (one that relays a provider's message), in characters.
const MAX_DETAIL: usize = 500;

/// `text`, cut to `max` characters with an ellipsis when longer.
fn shortened(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

#[derive(Serialize)]
struct Listed<'a> {
    field: std::borrow::Cow<'a, str>,
    message: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: std::borrow::Cow<'a, str>,
    errors: Vec<Listed<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_body_stays_small_however_much_was_wrong() {
        let errors = (0..6000)
            .map(|i| {
                FieldError::new(
                    format!("{}{i}", "k".repeat(300)),
                    "is not a canonical customer field",
                )
            })
            .collect();
        let problem = Problem::invalid(errors);
        let body = problem.to_json();
        assert_eq!(body["errors"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(
            body["detail"],
            "6000 fields are invalid; the first 50 are listed"
        );
        let field = body["errors"][0]["field"].as_str().unwrap();
        assert_eq!(field.chars().count(), MAX_ECHOED + 1, "{field}");
        assert!(field.ends_with('…'));
        assert!(
            problem.to_bytes().len() < 16 * 1024,
            "{}",
            problem.to_bytes().len()
        );
        let long = Problem::new(ProblemKind::BadGateway, "é".repeat(5000));
        assert_eq!(
            long.to_json()["detail"].as_str().unwrap().chars().count(),
            MAX_DETAIL + 1
        );
    }

    #[test]
    fn renders_rfc9457_members() {
        let problem = Problem::invalid(vec![FieldError::new("phone", "is bad")])
            .from_provider("juice", Some(422));
        let body = problem.to_json();
        assert_eq!(body["status"], 422);
        assert_eq!(body["type"], "urn:patchbay:problem:validation");
        assert_eq!(body["detail"], "`phone` is bad");
        assert_eq!(body["errors"][0]["field"], "phone");
        assert_eq!(body["provider"], "juice");
        assert_eq!(body["upstream_status"], 422);
        let plain = Problem::new(ProblemKind::NotFound, "no such route").to_json();
        assert!(plain.get("provider").is_none() && plain.get("upstream_status").is_none());
        // On the wire, RFC 9457's members come first and in its order.
        let text = String::from_utf8(problem.to_bytes()).unwrap();
        let at = |member: &str| text.find(&format!("\"{member}\":")).unwrap();
        let members = ["type", "title", "status", "detail", "errors", "provider"];
        assert!(
            members.windows(2).all(|pair| at(pair[0]) < at(pair[1])),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), body);
    }
}
