//! COUNT partner API emulator: HMAC-signed requests, bearer access tokens with rotating refresh tokens,
//! and customers by UUID v4 whose addresses are replaced whole.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::credentials::{
    COUNT_ACCESS_TOKEN, COUNT_CLIENT_ID, COUNT_CLIENT_SECRET, COUNT_REFRESH_TOKEN,
};
use super::exchange::{decode_segment, default_code, ProviderRequest, Reply};
use super::state::{record, timestamp, Customers, Provider, State};
use super::validate::{is_email, is_uuid_v4};

const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Not published; long enough never to matter in a test run.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Allowed clock skew of `x-timestamp` (not documented by COUNT: an assumption).
const MAX_CLOCK_SKEW_SECS: u64 = 300;
const ADDRESS_KEYS: [&str; 5] = ["street", "city", "state", "zipCode", "country"];

/// Issued tokens with their expiry times. Access tokens live 3600 s; a refresh token works once. With
/// `revoke_on_rotation` (a control setting), a refresh also revokes every access token issued before.
pub(crate) struct Tokens {
    access: HashMap<String, SystemTime>,
    refresh: HashMap<String, SystemTime>,
    revoked: HashSet<String>,
}

impl Tokens {
    pub fn new() -> Tokens {
        let now = SystemTime::now();
        Tokens {
            access: HashMap::from([(COUNT_ACCESS_TOKEN.to_owned(), now + ACCESS_TOKEN_LIFETIME)]),
            refresh: HashMap::from([(
                COUNT_REFRESH_TOKEN.to_owned(),
                now + REFRESH_TOKEN_LIFETIME,
            )]),
            revoked: HashSet::new(),
        }
    }

    /// Every access token issued so far stops working, answered as revoked rather than expired.
    fn revoke_all(&mut self) {
        self.revoked
            .extend(self.access.drain().map(|(token, _)| token));
    }

    /// Expires every access token issued so far; returns how many there were.
    pub fn expire_all(&mut self) -> usize {
        for expiry in self.access.values_mut() {
            *expiry = UNIX_EPOCH;
        }
        self.access.len()
    }
}

pub(crate) fn seed(now: &str) -> Customers {
    let acme = record(json!({
        "uuid": "3b241101-e2bb-4255-8caf-4136c566a962",
        "customer": "Acme Bookkeeping Ltd",
        "email": "billing@acme.example",
        "mainPhone": "+442071838750",
        "website": "https://acme.example",
        "status": "active",
        "billingAddress": {
            "street": "10 Downing Way",
            "city": "London",
            "state": null,
            "zipCode": "SW1A 2AA",
            "country": "GB",
        },
        "shippingAddress": null,
        "contacts": [],
        "createdAt": now,
        "updatedAt": now,
    }));
    let globex = record(json!({
        "uuid": "9c5b94b1-35ad-49bb-b118-8e8fc24abf80",
        "customer": "Globex Corp",
        "email": "ops@globex.example",
        "mainPhone": null,
        "website": null,
        "status": "active",
        "billingAddress": null,
        "shippingAddress": null,
        "contacts": [],
        "createdAt": now,
        "updatedAt": now,
    }));
    Customers::from([
        ("3b241101-e2bb-4255-8caf-4136c566a962".to_owned(), acme),
        ("9c5b94b1-35ad-49bb-b118-8e8fc24abf80".to_owned(), globex),
    ])
}

/// `{"status":"error","message","code"}`.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({ "status": "error", "message": message, "code": code }),
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
        StatusCode::BAD_REQUEST,
        &json!({
            "status": "error",
            "message": "Validation failed",
            "code": "validation_error",
            "errors": errors,
        }),
    )
}

fn success(message: &str, data: Value) -> Reply {
    Reply::json(
        StatusCode::OK,
        &json!({ "status": "success", "message": message, "data": data }),
    )
}

/// Lower-case hex HMAC-SHA256 over `METHOD:path:timestamp:bodyHash`; the body hash is empty for an
/// empty body or exactly `{}`, as in COUNT's sample app.
fn signature(method: &str, path: &str, timestamp: &str, body: &[u8]) -> String {
    let body_hash = if body.is_empty() || body == b"{}" {
        String::new()
    } else {
        hex::encode(Sha256::digest(body))
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(COUNT_CLIENT_SECRET.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(format!("{method}:{path}:{timestamp}:{body_hash}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verify_signature(request: &ProviderRequest) -> Result<(), Reply> {
    let reject = |code: &str, message: &str| Err(error(StatusCode::UNAUTHORIZED, code, message));
    match request.header("x-client-id") {
        Some(COUNT_CLIENT_ID) => {}
        Some(_) => return reject("invalid_signature", "Unknown x-client-id."),
        None => return reject("invalid_signature", "Missing x-client-id header."),
    }
    let Some(sent_at) = request.header("x-timestamp") else {
        return reject("invalid_signature", "Missing x-timestamp header.");
    };
    let Ok(seconds) = sent_at.parse::<u64>() else {
        return reject("invalid_signature", "x-timestamp must be Unix seconds.");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now.abs_diff(seconds) > MAX_CLOCK_SKEW_SECS {
        return reject(
            "timestamp_out_of_range",
            "x-timestamp is more than 300 seconds away from the server clock.",
        );
    }
    let Some(sent) = request.header("x-signature") else {
        return reject("invalid_signature", "Missing x-signature header.");
    };
    let expected = signature(
        request.method.as_str(),
        &request.path,
        sent_at,
        &request.body,
    );
    if sent != expected {
        return reject(
            "invalid_signature",
            "x-signature does not match the request.",
        );
    }
    Ok(())
}

fn verify_access_token(tokens: &Tokens, request: &ProviderRequest) -> Result<(), Reply> {
    let Some(token) = request.bearer_token() else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Missing bearer access token.",
        ));
    };
    if tokens.revoked.contains(token) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The access token was revoked.",
        ));
    }
    match tokens.access.get(token) {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is not valid.",
        )),
        Some(expiry) if *expiry <= SystemTime::now() => Err(error(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "The access token has expired.",
        )),
        Some(_) => Ok(()),
    }
}

pub(crate) fn handle(state: &mut State, tokens: &mut Tokens, request: &ProviderRequest) -> Reply {
    if let Err(reply) = verify_signature(request) {
        return reply;
    }
    // The documented limit is per client id and (conservatively) counts every call.
    if state.admit(Provider::Count, COUNT_CLIENT_ID).is_err() {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Too many requests",
        );
    }
    let method_not_allowed = || {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed on this endpoint.",
        )
    };
    match request.segments().as_slice() {
        ["refresh-user-access-token"] if request.method == Method::POST => {
            refresh(state, tokens, request)
        }
        ["refresh-user-access-token"] => method_not_allowed(),
        ["customers", raw_id] if !raw_id.is_empty() => {
            if request.method != Method::GET && request.method != Method::PUT {
                return method_not_allowed();
            }
            if let Err(reply) = verify_access_token(tokens, request) {
                return reply;
            }
            let id = decode_segment(raw_id);
            if !is_uuid_v4(&id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_uuid",
                    "The customer uuid must be a UUID v4.",
                );
            }
            let id = id.to_ascii_lowercase();
            let Some(record) = state.customers(Provider::Count).get(&id) else {
                return error(StatusCode::NOT_FOUND, "not_found", "Customer not found");
            };
            if request.method == Method::GET {
                success("Customer retrieved", Value::Object(record.clone()))
            } else {
                update(state, &id, request)
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "Route not found"),
    }
}

/// The JSON object a write carries, or COUNT's answer to a body that is not one.
fn json_body(request: &ProviderRequest) -> Result<Map<String, Value>, Reply> {
    if request.body_not_declared_json() {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ));
    }
    request
        .json_object()
        .map_err(|problem| error(StatusCode::BAD_REQUEST, "invalid_json", problem.message()))
}

fn refresh(state: &State, tokens: &mut Tokens, request: &ProviderRequest) -> Reply {
    let body = match json_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let Some(Value::String(used)) = body.get("refreshToken") else {
        return validation_failed(&[(
            "refreshToken".to_owned(),
            "The refreshToken field is required.".to_owned(),
        )]);
    };
    let now = SystemTime::now();
    // Rotation: the refresh token is spent whether or not it was still valid.
    match tokens.refresh.remove(used) {
        Some(expiry) if expiry > now => {}
        _ => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "The refresh token is invalid, expired or already used.",
            )
        }
    }
    let access_token = format!("count_at_{}", Uuid::new_v4().simple());
    let refresh_token = format!("count_rt_{}", Uuid::new_v4().simple());
    let access_expiry = now + ACCESS_TOKEN_LIFETIME;
    let refresh_expiry = now + REFRESH_TOKEN_LIFETIME;
    if state.revoke_on_rotation {
        tokens.revoke_all();
    }
    tokens.access.insert(access_token.clone(), access_expiry);
    tokens.refresh.insert(refresh_token.clone(), refresh_expiry);
    success(
        "Token refreshed",
        json!({
            "accessToken": access_token,
            "refreshToken": refresh_token,
            "accessTokenExpiresAt": timestamp(access_expiry),
            "refreshTokenExpiresAt": timestamp(refresh_expiry),
        }),
    )
}

fn fail(errors: &mut Vec<(String, String)>, field: &str, message: &str) {
    errors.push((field.to_owned(), message.to_owned()));
}

fn text_within(value: &Value, max_chars: usize) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.chars().count() <= max_chars)
}

/// An address is `null` or an object of the five address keys, each a string or null.
fn check_address(field: &str, value: &Value, errors: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Object(address) => {
            for (key, sub_value) in address {
                if !ADDRESS_KEYS.contains(&key.as_str()) {
                    fail(errors, &format!("{field}.{key}"), "Unknown address field.");
                } else if !sub_value.is_null() && !text_within(sub_value, 255) {
                    fail(
                        errors,
                        &format!("{field}.{key}"),
                        "Must be a string of at most 255 characters or null.",
                    );
                }
            }
        }
        _ => fail(errors, field, "Must be an address object or null."),
    }
}

/// The stored form of an address that was sent: the whole object replaced, missing keys null.
fn stored_address(value: Value) -> Value {
    match value {
        Value::Object(mut sent) => {
            let address: Map<String, Value> = ADDRESS_KEYS
                .iter()
                .map(|key| ((*key).to_owned(), sent.remove(*key).unwrap_or(Value::Null)))
                .collect();
            Value::Object(address)
        }
        other => other,
    }
}

fn update(state: &mut State, id: &str, request: &ProviderRequest) -> Reply {
    let body = match json_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let mut errors: Vec<(String, String)> = Vec::new();
    for required in ["customer", "email"] {
        if !body.contains_key(required) {
            fail(
                &mut errors,
                required,
                &format!("The {required} field is required."),
            );
        }
    }
    for (key, value) in &body {
        match key.as_str() {
            "customer" => {
                if !text_within(value, 255) || value.as_str().is_some_and(str::is_empty) {
                    fail(
                        &mut errors,
                        key,
                        "Must be a non-empty string of at most 255 characters.",
                    );
                }
            }
            "email" => {
                if !text_within(value, 255) || !value.as_str().is_some_and(is_email) {
                    fail(
                        &mut errors,
                        key,
                        "Must be a valid email address of at most 255 characters.",
                    );
                }
            }
            "mainPhone" => {
                if !value.is_null() && !text_within(value, 50) {
                    fail(
                        &mut errors,
                        key,
                        "Must be a string of at most 50 characters or null.",
                    );
                }
            }
            "website" => {
                if !value.is_null() && !text_within(value, 255) {
                    fail(
                        &mut errors,
                        key,
                        "Must be a string of at most 255 characters or null.",
                    );
                }
            }
            "status" => {
                if !matches!(value.as_str(), Some("active" | "inactive")) {
                    fail(&mut errors, key, "Must be one of: active, inactive.");
                }
            }
            "billingAddress" | "shippingAddress" => check_address(key, value, &mut errors),
            "contacts" => fail(
                &mut errors,
                key,
                "Contacts cannot be updated via this endpoint.",
            ),
            "uuid" | "createdAt" | "updatedAt" => {
                fail(&mut errors, key, "This field is read-only.")
            }
            _ => fail(&mut errors, key, "Unknown field."),
        }
    }
    if !errors.is_empty() {
        return validation_failed(&errors);
    }
    if let Some(Value::String(email)) = body.get("email") {
        let taken = state
            .customers(Provider::Count)
            .iter()
            .any(|(other, record)| {
                other != id
                    && record
                        .get("email")
                        .and_then(Value::as_str)
                        .is_some_and(|known| known.eq_ignore_ascii_case(email))
            });
        if taken {
            return error(
                StatusCode::CONFLICT,
                "email_exists",
                "A customer with this email already exists in the team.",
            );
        }
    }
    let now = state.write_timestamp();
    let Some(record) = state.customers_mut(Provider::Count).get_mut(id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "Customer not found");
    };
    for (key, value) in body {
        let stored = match key.as_str() {
            "mainPhone" | "website" if value.as_str() == Some("") => Value::Null,
            "billingAddress" | "shippingAddress" => stored_address(value),
            _ => value,
        };
        record.insert(key, stored);
    }
    record.insert("updatedAt".to_owned(), json!(now));
    success("Customer updated", Value::Object(record.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};

    fn request(method: Method, path: &str, bearer: Option<&str>, body: &Value) -> ProviderRequest {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(token) = bearer {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        let body = match body {
            Value::Null => Bytes::new(),
            body => Bytes::from(body.to_string()),
        };
        ProviderRequest {
            method,
            path: path.to_owned(),
            query: None,
            headers,
            body,
        }
    }

    /// Refreshes with `refresh_token`: the new access and refresh tokens.
    fn refreshed(state: &State, tokens: &mut Tokens, refresh_token: &str) -> (String, String) {
        let body = json!({ "refreshToken": refresh_token });
        let call = request(Method::POST, "/refresh-user-access-token", None, &body);
        let reply = refresh(state, tokens, &call);
        assert_eq!(reply.status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        let text = |key: &str| answer["data"][key].as_str().unwrap().to_owned();
        (text("accessToken"), text("refreshToken"))
    }

    fn code_for(tokens: &Tokens, token: &str) -> Option<String> {
        let call = request(Method::GET, "/customers/x", Some(token), &Value::Null);
        let reply = verify_access_token(tokens, &call).err()?;
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        Some(answer["code"].as_str().unwrap().to_owned())
    }

    #[test]
    fn with_revoke_on_rotation_a_refresh_revokes_the_old_access_tokens() {
        let mut state = State::new();
        let mut tokens = Tokens::new();
        let (first, rotated) = refreshed(&state, &mut tokens, COUNT_REFRESH_TOKEN);
        assert_eq!(
            code_for(&tokens, COUNT_ACCESS_TOKEN),
            None,
            "off by default"
        );
        state.revoke_on_rotation = true;
        let (second, _) = refreshed(&state, &mut tokens, &rotated);
        assert_eq!(code_for(&tokens, &second), None);
        for old in [COUNT_ACCESS_TOKEN, first.as_str()] {
            assert_eq!(code_for(&tokens, old).as_deref(), Some("unauthorized"));
        }
        tokens.expire_all();
        assert_eq!(code_for(&tokens, &second).as_deref(), Some("token_expired"));
    }
}
