//! Juice emulator: `GET`/`PATCH /customers/{id}` behind an API key (bearer or raw), where `null` is
//! ignored, `""` clears, `billing_address` must come complete, `Idempotency-Key` answers are replayed
//! and every admitted answer carries `X-RateLimit-*` headers.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};

use super::credentials::JUICE_API_KEY;
use super::exchange::{decode_segment, default_code, ProviderRequest, Reply};
use super::rate_limit::{Admission, Refusal};
use super::state::{record, unix_millis, whole_seconds_up, Customers, Provider, State};
use super::validate::{is_alpha2, is_e164, is_email};

const FIELDS: [&str; 5] = [
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "billing_address",
];
const ADDRESS_KEYS: [&str; 6] = ["line1", "line2", "city", "state", "zip_code", "country"];
const REPLAY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// First answers per `Idempotency-Key`, replayed for 24 h.
pub(crate) struct Replays {
    answers: HashMap<String, (Instant, StatusCode, Bytes)>,
}

impl Replays {
    pub fn new() -> Replays {
        Replays {
            answers: HashMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.answers.clear();
    }

    fn replay(&mut self, key: &str) -> Option<Reply> {
        self.answers
            .retain(|_, (stored_at, _, _)| stored_at.elapsed() < REPLAY_LIFETIME);
        let (_, status, body) = self.answers.get(key)?;
        Some(
            Reply::raw(*status, "application/json", body.clone()).with_header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ),
        )
    }

    fn store(&mut self, key: String, reply: &Reply) {
        self.answers
            .insert(key, (Instant::now(), reply.status, reply.body.clone()));
    }
}

pub(crate) fn seed(now: &str) -> Customers {
    let customer = record(json!({
        "id": "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8",
        "first_name": "Test",
        "last_name": "Customer",
        "email": "test@custom.er",
        "phone_number": "+2348012345678",
        "billing_address": {
            "line1": "123 Test lane",
            "line2": "3456 Mike Drive",
            "city": "Anon",
            "state": "Acme",
            "zip_code": "12345",
            "country": "US",
        },
        "created_at": now,
        "updated_at": now,
    }));
    Customers::from([("6f7e1e7f-93d1-4fcc-b7a4-738f869615c8".to_owned(), customer)])
}

/// `{"error":{code, message, type, details}}` (plus `errors` for validation failures).
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    Reply::json(
        status,
        &json!({ "error": { "code": code, "message": message, "type": kind, "details": {} } }),
    )
}

pub(crate) fn error_reply(status: StatusCode, message: &str) -> Reply {
    error(status, default_code(status), message)
}

fn validation_failed(errors: &[(String, String)]) -> Reply {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(field, message)| json!({ "field": field, "message": message }))
        .collect();
    Reply::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "error": {
            "code": "validation_error",
            "message": "The given data was invalid.",
            "type": "invalid_request_error",
            "details": {},
            "errors": errors,
        } }),
    )
}

/// Unix seconds, rounded up, at which `after` from now has passed.
fn unix_seconds_after(after: Duration) -> u64 {
    let millis = unix_millis(SystemTime::now() + after);
    u64::try_from(millis.div_ceil(1000)).unwrap_or(u64::MAX)
}

fn rate_limited(refusal: &Refusal) -> Reply {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "Too many requests. Slow down and retry later.",
    )
    .with_header(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(refusal.limit),
    )
    .with_header(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(0u32),
    )
    .with_header(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(unix_seconds_after(refusal.retry_after)),
    )
    .with_header(
        http::header::RETRY_AFTER,
        HeaderValue::from(whole_seconds_up(refusal.retry_after)),
    )
}

fn with_limit_headers(reply: Reply, admission: Option<Admission>) -> Reply {
    let Some(admission) = admission else {
        return reply;
    };
    reply
        .with_header(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(admission.limit),
        )
        .with_header(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(admission.remaining),
        )
        .with_header(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(unix_seconds_after(admission.reset_after)),
        )
}

pub(crate) fn handle(state: &mut State, replays: &mut Replays, request: &ProviderRequest) -> Reply {
    // One page of Juice's docs shows `Bearer <key>`, the current docs the raw key: both are accepted.
    let authorized = request.header("authorization") == Some(JUICE_API_KEY)
        || request.bearer_token() == Some(JUICE_API_KEY);
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid or missing API key.",
        );
    }
    let admission = match state.admit(Provider::Juice, JUICE_API_KEY) {
        Ok(admission) => admission,
        Err(refusal) => return rate_limited(&refusal),
    };
    with_limit_headers(route(state, replays, request), admission)
}

fn route(state: &mut State, replays: &mut Replays, request: &ProviderRequest) -> Reply {
    let id = match request.segments().as_slice() {
        ["customers", raw_id] if !raw_id.is_empty() => decode_segment(raw_id).to_ascii_lowercase(),
        _ => return error(StatusCode::NOT_FOUND, "not_found", "Route not found."),
    };
    match request.method {
        Method::GET => match state.customers(Provider::Juice).get(&id) {
            Some(record) => Reply::json(StatusCode::OK, &json!({ "data": record })),
            None => error(StatusCode::NOT_FOUND, "not_found", "Customer not found."),
        },
        Method::PATCH => {
            let key = request
                .header("idempotency-key")
                .filter(|key| !key.is_empty());
            if let Some(replayed) = key.and_then(|key| replays.replay(key)) {
                return replayed;
            }
            let reply = update(state, &id, request);
            if let Some(key) = key {
                replays.store(key.to_owned(), &reply);
            }
            reply
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This endpoint accepts GET and PATCH.",
        ),
    }
}

fn fail(errors: &mut Vec<(String, String)>, field: &str, message: &str) {
    errors.push((field.to_owned(), message.to_owned()));
}

/// The stored value of a string: `""` clears (stored as null).
fn cleared_if_empty(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

/// A `billing_address` object must be complete: all six keys, string values. Returns the stored form.
fn check_address(address: &Map<String, Value>, errors: &mut Vec<(String, String)>) -> Value {
    for key in address.keys() {
        if !ADDRESS_KEYS.contains(&key.as_str()) {
            fail(errors, &format!("billing_address.{key}"), "Unknown field.");
        }
    }
    let mut stored = Map::new();
    for key in ADDRESS_KEYS {
        let field = format!("billing_address.{key}");
        match address.get(key) {
            None => fail(
                errors,
                &field,
                "The field is required: billing_address must be sent complete.",
            ),
            Some(Value::String(text)) => {
                if key == "country" && !text.is_empty() && !is_alpha2(text, false) {
                    fail(errors, &field, "Must be a 2-letter country code.");
                }
                stored.insert(key.to_owned(), cleared_if_empty(text));
            }
            Some(_) => fail(errors, &field, "Must be a string."),
        }
    }
    Value::Object(stored)
}

fn update(state: &mut State, id: &str, request: &ProviderRequest) -> Reply {
    if !state.customers(Provider::Juice).contains_key(id) {
        return error(StatusCode::NOT_FOUND, "not_found", "Customer not found.");
    }
    if request.body_not_declared_json() {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Send the body as application/json.",
        );
    }
    let body = match request.json_object() {
        Ok(body) => body,
        Err(problem) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                problem.message(),
            )
        }
    };
    if let Some(unknown) = body.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("Unknown field: {unknown}."),
        );
    }
    let mut errors = Vec::new();
    let mut changes = Vec::new();
    for (key, value) in body {
        let stored = match (key.as_str(), &value) {
            // Null values are ignored: they neither clear nor get validated.
            (_, Value::Null) => continue,
            ("billing_address", Value::String(text)) if text.is_empty() => Value::Null,
            ("billing_address", Value::Object(address)) => check_address(address, &mut errors),
            ("billing_address", _) => {
                fail(&mut errors, &key, "Must be a complete address object.");
                continue;
            }
            (_, Value::String(text)) if text.is_empty() => Value::Null,
            ("email", Value::String(text)) if !is_email(text) => {
                fail(&mut errors, &key, "Must be a valid email address.");
                continue;
            }
            ("phone_number", Value::String(text)) if !is_e164(text) => {
                fail(
                    &mut errors,
                    &key,
                    "Must be in E.164 format, e.g. +2348012345678.",
                );
                continue;
            }
            (_, Value::String(_)) => value,
            _ => {
                fail(&mut errors, &key, "Must be a string.");
                continue;
            }
        };
        changes.push((key, stored));
    }
    if !errors.is_empty() {
        return validation_failed(&errors);
    }
    let now = state.write_timestamp();
    let Some(record) = state.customers_mut(Provider::Juice).get_mut(id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "Customer not found.");
    };
    record.extend(changes);
    record.insert("updated_at".to_owned(), json!(now));
    Reply::json(StatusCode::OK, &json!({ "data": record }))
}
