//! Sweet Spot emulator: `GET`/`PUT /v1/customers/{id}` behind a bearer API key, with Stripe-shaped errors.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::credentials::SWEETSPOT_API_KEY;
use super::exchange::{decode_segment, default_code, ProviderRequest, Reply};
use super::state::{record, Customers, Provider, State};
use super::validate::is_alpha2;

/// The fields `PUT` accepts; everything else in the record is read-only.
const WRITABLE: [&str; 9] = [
    "firstName",
    "lastName",
    "phone",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "country",
];

pub(crate) fn seed(now: &str) -> Customers {
    let alice = record(json!({
        "id": "cus_demo_alice",
        "userId": "usr_demo_alice",
        "createdAt": now,
        "updatedAt": now,
        "creditStatus": "passed",
        "identityVerificationStatus": "verified",
        "firstName": "Alice",
        "lastName": "Walker",
        "phone": "+14155550101",
        "address1": "1 Market St",
        "address2": "Suite 5",
        "city": "San Francisco",
        "state": "CA",
        "zip": "94105",
        "country": "US",
    }));
    Customers::from([("cus_demo_alice".to_owned(), alice)])
}

/// `{"error":{type, code, message, param?}}`: `api_error` for 5xx, `invalid_request_error` otherwise.
fn error(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Reply {
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    let mut error = json!({ "type": kind, "code": code, "message": message });
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    Reply::json(status, &json!({ "error": error }))
}

pub(crate) fn error_reply(status: StatusCode, message: &str) -> Reply {
    error(status, default_code(status), message, None)
}

pub(crate) fn handle(state: &mut State, request: &ProviderRequest) -> Reply {
    match request.bearer_token() {
        Some(SWEETSPOT_API_KEY) => {}
        Some(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Invalid API key provided.",
                None,
            )
        }
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "api_key_missing",
                "You did not provide an API key. Send it as `Authorization: Bearer <key>`.",
                None,
            )
        }
    }
    if state.admit(Provider::SweetSpot, SWEETSPOT_API_KEY).is_err() {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit",
            "Too many requests hit the API too quickly.",
            None,
        );
    }
    let id = match request.segments().as_slice() {
        ["v1", "customers", id] if !id.is_empty() => decode_segment(id),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "url_invalid",
                "Unrecognized request URL.",
                None,
            )
        }
    };
    if request.method != Method::GET && request.method != Method::PUT {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This endpoint accepts GET and PUT.",
            None,
        );
    }
    let Some(record) = state.customers(Provider::SweetSpot).get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            &format!("No such customer: '{id}'"),
            Some("id"),
        );
    };
    if request.method == Method::GET {
        return Reply::json(StatusCode::OK, &Value::Object(record.clone()));
    }
    update(state, &id, request)
}

fn update(state: &mut State, id: &str, request: &ProviderRequest) -> Reply {
    if request.body_not_declared_json() {
        return error(
            StatusCode::BAD_REQUEST,
            "content_type_invalid",
            "Send the body as application/json.",
            None,
        );
    }
    let body = match request.json_object() {
        Ok(body) => body,
        Err(problem) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body_invalid",
                problem.message(),
                None,
            )
        }
    };
    if let Some(unknown) = body.keys().find(|key| !WRITABLE.contains(&key.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_unknown",
            &format!("Received unknown parameter: {unknown}"),
            Some(unknown),
        );
    }
    if let Some((key, _)) = body
        .iter()
        .find(|(_, value)| !value.is_string() && !value.is_null())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_invalid_string",
            &format!("Invalid string: {key} must be a string or null."),
            Some(key),
        );
    }
    if let Some(Value::String(country)) = body.get("country") {
        if !is_alpha2(country, true) {
            return error(
                StatusCode::BAD_REQUEST,
                "country_code_invalid",
                "country must be a two-letter upper-case ISO 3166-1 code.",
                Some("country"),
            );
        }
    }
    let now = state.write_timestamp();
    let customers = state.customers_mut(Provider::SweetSpot);
    let Some(record) = customers.get_mut(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            &format!("No such customer: '{id}'"),
            Some("id"),
        );
    };
    // Only provided fields change; `null` is stored and so clears the field.
    record.extend(body);
    record.insert("updatedAt".to_owned(), json!(now));
    Reply::json(StatusCode::OK, &Value::Object(record.clone()))
}
