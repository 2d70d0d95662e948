//! SparkLayer emulator: a client-credentials token exchange (bearer tokens live 3600 s, no refresh),
//! `GET`/`PATCH /api/v1/customers/{id}` by `cu_…` id or external id behind `Site-Id`, an `addresses`
//! list that a PATCH replaces whole, and RFC 7807 problem answers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::credentials::{SPARKLAYER_CLIENT_ID, SPARKLAYER_CLIENT_SECRET, SPARKLAYER_SITE_ID};
use super::exchange::{decode_segment, ProviderRequest, Reply};
use super::state::{record, whole_seconds_up, Customers, Provider, Record, State};
use super::validate::{is_alpha2, is_email};

const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

const ROLES: [&str; 4] = ["main", "limited-customer", "sales-agent", "sales-admin"];
/// Every field of an address entry; a stored entry has all of them (`null` when empty).
const ADDRESS_KEYS: [&str; 15] = [
    "id",
    "external_id",
    "title",
    "first_name",
    "last_name",
    "company",
    "address_line1",
    "address_line2",
    "city",
    "region_code",
    "postal_code",
    "country_code",
    "phone",
    "mobile",
    "nickname",
];
const REQUIRED_ADDRESS_KEYS: [&str; 3] = ["address_line1", "city", "country_code"];
const DEFAULT_ADDRESS_IDS: [&str; 2] =
    ["default_billing_address_id", "default_shipping_address_id"];

/// Bearer tokens issued by the exchange, with their expiry times; with `revoke_on_rotation`, a new token
/// revokes every one issued before.
pub(crate) struct Tokens {
    issued: HashMap<String, SystemTime>,
    revoked: HashSet<String>,
}

impl Tokens {
    pub fn new() -> Tokens {
        Tokens {
            issued: HashMap::new(),
            revoked: HashSet::new(),
        }
    }

    fn issue(&mut self, now: SystemTime, revoke_others: bool) -> String {
        if revoke_others {
            self.revoked
                .extend(self.issued.drain().map(|(token, _)| token));
        }
        // Expired tokens can never become valid again; dropping them keeps the map small.
        self.issued.retain(|_, expiry| *expiry > now);
        let token = format!("sl_at_{}", Uuid::new_v4().simple());
        self.issued.insert(token.clone(), now + TOKEN_LIFETIME);
        token
    }

    /// Expires every token still valid; returns how many there were.
    pub fn expire_all(&mut self) -> usize {
        let now = SystemTime::now();
        let mut expired = 0;
        for expiry in self.issued.values_mut().filter(|expiry| **expiry > now) {
            *expiry = UNIX_EPOCH;
            expired += 1;
        }
        expired
    }
}

pub(crate) fn seed(now: &str) -> Customers {
    let jones = record(json!({
        "id": "cu_demo_jones",
        "created_at": now,
        "updated_at": now,
        "title": "Mr",
        "first_name": "Tom",
        "last_name": "Jones",
        "email": "tom.jones@climbing.example",
        "company_name": "Tom Jones Climbing Ltd",
        "external_id": "JONES-001",
        "accounting_id": "ACC-JONES-001",
        "status": "active",
        "group": "base",
        "role": "main",
        "addresses": [
            {
                "id": "ca_demo_jones_office",
                "external_id": "JONES-OFFICE",
                "title": null,
                "first_name": "Tom",
                "last_name": "Jones",
                "company": "Tom Jones Climbing Ltd",
                "address_line1": "1 Crag Road",
                "address_line2": "Unit 4",
                "city": "Sheffield",
                "region_code": "SYK",
                "postal_code": "S1 2AB",
                "country_code": "GB",
                "phone": "+441142000001",
                "mobile": null,
                "nickname": "Office",
            },
            {
                "id": "ca_demo_jones_depot",
                "external_id": "JONES-DEPOT",
                "title": null,
                "first_name": null,
                "last_name": null,
                "company": "Tom Jones Climbing Ltd",
                "address_line1": "7 Boulder Lane",
                "address_line2": null,
                "city": "Leeds",
                "region_code": "WYK",
                "postal_code": "LS1 4XY",
                "country_code": "GB",
                "phone": null,
                "mobile": null,
                "nickname": "Depot",
            },
        ],
        "default_billing_address_id": "ca_demo_jones_office",
        "default_shipping_address_id": "ca_demo_jones_depot",
        "available_shipping_addresses": [],
        "currency_code": "gbp",
        "sales_agent_groups": [],
        "price_lists": [],
        "vatin_numbers": [],
        "discount_percentage": 0.0,
        "tax_exempt": false,
        "payment_by_invoice": true,
        "payment_on_account": null,
        "metadata": {},
        "parent_customer": null,
    }));
    // One entry serving as both billing and shipping address: the case a gateway must split.
    let reed = record(json!({
        "id": "cu_demo_reed",
        "created_at": now,
        "updated_at": now,
        "title": "Ms",
        "first_name": "Ada",
        "last_name": "Reed",
        "email": "ada@reed-outdoor.example",
        "company_name": "Reed Outdoor GmbH",
        "external_id": "REED-002",
        "accounting_id": null,
        "status": "active",
        "group": "wholesale",
        "role": "limited-customer",
        "addresses": [
            {
                "id": "ca_demo_reed_main",
                "external_id": null,
                "title": null,
                "first_name": "Ada",
                "last_name": "Reed",
                "company": "Reed Outdoor GmbH",
                "address_line1": "Bergstrasse 12",
                "address_line2": null,
                "city": "Munich",
                "region_code": "BY",
                "postal_code": "80331",
                "country_code": "DE",
                "phone": null,
                "mobile": null,
                "nickname": null,
            },
        ],
        "default_billing_address_id": "ca_demo_reed_main",
        "default_shipping_address_id": "ca_demo_reed_main",
        "available_shipping_addresses": [],
        "currency_code": "eur",
        "sales_agent_groups": [],
        "price_lists": [],
        "vatin_numbers": ["DE123456789"],
        "discount_percentage": 5.0,
        "tax_exempt": false,
        "payment_by_invoice": false,
        "payment_on_account": null,
        "metadata": {},
        "parent_customer": null,
    }));
    Customers::from([
        ("cu_demo_jones".to_owned(), jones),
        ("cu_demo_reed".to_owned(), reed),
    ])
}

/// One entry of a problem's `errors` list.
struct Invalid {
    property: String,
    code: &'static str,
    message: String,
}

fn invalid(errors: &mut Vec<Invalid>, property: &str, code: &'static str, message: &str) {
    errors.push(Invalid {
        property: property.to_owned(),
        code,
        message: message.to_owned(),
    });
}

/// `{title, status, detail, errors?:[{code, message, property}]}` as `application/problem+json`.
fn problem(status: StatusCode, detail: &str, errors: &[Invalid]) -> Reply {
    let mut body = json!({
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if !errors.is_empty() {
        body["errors"] = errors
            .iter()
            .map(|e| json!({ "code": e.code, "message": e.message, "property": e.property }))
            .collect();
    }
    Reply::problem(status, &body)
}

pub(crate) fn error_reply(status: StatusCode, message: &str) -> Reply {
    problem(status, message, &[])
}

/// Every call counts against the one client id, token exchanges included; no limit is published,
/// so this only refuses when the control API set one.
fn admit(state: &mut State) -> Result<(), Reply> {
    state
        .admit(Provider::SparkLayer, SPARKLAYER_CLIENT_ID)
        .map(|_| ())
        .map_err(|refusal| {
            error_reply(StatusCode::TOO_MANY_REQUESTS, "Too many requests.").with_header(
                header::RETRY_AFTER,
                HeaderValue::from(whole_seconds_up(refusal.retry_after)),
            )
        })
}

pub(crate) fn handle(state: &mut State, tokens: &mut Tokens, request: &ProviderRequest) -> Reply {
    if request.segments().as_slice() == ["api", "auth", "token"] {
        return token(state, tokens, request);
    }
    if let Err(reply) = authorize(tokens, request) {
        return reply;
    }
    if let Err(reply) = admit(state) {
        return reply;
    }
    match request.segments().as_slice() {
        ["api", "v1", "customers", raw_id] if !raw_id.is_empty() => {
            customer(state, request, &decode_segment(raw_id))
        }
        _ => error_reply(StatusCode::NOT_FOUND, "No route matches the request."),
    }
}

fn has_site_id(request: &ProviderRequest) -> bool {
    request.header("site-id") == Some(SPARKLAYER_SITE_ID)
}

fn token(state: &mut State, tokens: &mut Tokens, request: &ProviderRequest) -> Reply {
    if request.method != Method::POST {
        return error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint accepts POST.",
        );
    }
    if !has_site_id(request) {
        return error_reply(
            StatusCode::UNAUTHORIZED,
            "Unknown or missing Site-Id header.",
        );
    }
    if request.body_not_declared_json() {
        return error_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the body as application/json.",
        );
    }
    let body = match request.json_object() {
        Ok(body) => body,
        Err(problem) => return error_reply(StatusCode::BAD_REQUEST, problem.message()),
    };
    if body.get("grant_type").and_then(Value::as_str) != Some("client_credentials") {
        return problem(
            StatusCode::BAD_REQUEST,
            "Only the client_credentials grant is supported.",
            &[Invalid {
                property: "grant_type".to_owned(),
                code: "unsupported_grant_type",
                message: "grant_type must be client_credentials.".to_owned(),
            }],
        );
    }
    let client_id = body.get("client_id").and_then(Value::as_str);
    let client_secret = body.get("client_secret").and_then(Value::as_str);
    if client_id != Some(SPARKLAYER_CLIENT_ID) || client_secret != Some(SPARKLAYER_CLIENT_SECRET) {
        return error_reply(StatusCode::UNAUTHORIZED, "Invalid client credentials.");
    }
    if let Err(reply) = admit(state) {
        return reply;
    }
    let access_token = tokens.issue(SystemTime::now(), state.revoke_on_rotation);
    Reply::json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }),
    )
}

fn authorize(tokens: &Tokens, request: &ProviderRequest) -> Result<(), Reply> {
    let unauthorized = |detail: &str| Err(error_reply(StatusCode::UNAUTHORIZED, detail));
    if !has_site_id(request) {
        return unauthorized("Unknown or missing Site-Id header.");
    }
    let Some(token) = request.bearer_token() else {
        return unauthorized("Missing bearer token.");
    };
    if tokens.revoked.contains(token) {
        return unauthorized("The access token was revoked.");
    }
    match tokens.issued.get(token) {
        None => unauthorized("The access token is not valid."),
        Some(expiry) if *expiry <= SystemTime::now() => {
            unauthorized("The access token has expired.")
        }
        Some(_) => Ok(()),
    }
}

/// The primary (`cu_…`) id of the customer named by its id or its external id.
fn find(state: &State, id: &str) -> Option<String> {
    let customers = state.customers(Provider::SparkLayer);
    if customers.contains_key(id) {
        return Some(id.to_owned());
    }
    customers
        .iter()
        .find(|(_, record)| record.get("external_id").and_then(Value::as_str) == Some(id))
        .map(|(key, _)| key.clone())
}

fn customer(state: &mut State, request: &ProviderRequest, id: &str) -> Reply {
    if request.method != Method::GET && request.method != Method::PATCH {
        return error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint accepts GET and PATCH.",
        );
    }
    let Some(key) = find(state, id) else {
        return error_reply(StatusCode::NOT_FOUND, "Customer not found.");
    };
    if request.method == Method::GET {
        let record = &state.customers(Provider::SparkLayer)[&key];
        return Reply::json(StatusCode::OK, &Value::Object(record.clone()));
    }
    update(state, &key, request)
}

fn check_nullable(
    errors: &mut Vec<Invalid>,
    key: &str,
    value: &Value,
    ok: fn(&Value) -> bool,
    expected: &str,
) {
    if !value.is_null() && !ok(value) {
        invalid(
            errors,
            key,
            "invalid_type",
            &format!("Must be {expected} or null."),
        );
    }
}

fn is_string_list(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.iter().all(Value::is_string))
}

/// Type and value checks of the top-level fields; `addresses` and the default ids are checked
/// against the resulting address list later.
fn check_fields(body: &Map<String, Value>, errors: &mut Vec<Invalid>) {
    for (key, value) in body {
        match key.as_str() {
            "id" | "created_at" | "updated_at" => {
                invalid(errors, key, "read_only", "This field is read-only.")
            }
            "title" | "first_name" | "last_name" | "company_name" | "accounting_id" | "group" => {
                check_nullable(errors, key, value, Value::is_string, "a string")
            }
            "email" => match value.as_str() {
                Some(email) if is_email(email) => {}
                Some(_) => invalid(
                    errors,
                    key,
                    "invalid_email",
                    "Must be a valid email address.",
                ),
                None => invalid(
                    errors,
                    key,
                    "required",
                    "Email is required and cannot be cleared.",
                ),
            },
            "external_id" => match value {
                Value::Null => {}
                Value::String(text) if text.is_empty() => {
                    invalid(errors, key, "invalid", "Must not be empty.")
                }
                Value::String(text) if text.starts_with("cu_") => {
                    invalid(errors, key, "invalid", "Must not start with cu_.")
                }
                Value::String(_) => {}
                _ => invalid(errors, key, "invalid_type", "Must be a string or null."),
            },
            "status" => {
                if !matches!(value.as_str(), Some("active" | "inactive")) {
                    invalid(
                        errors,
                        key,
                        "invalid_choice",
                        "Must be one of: active, inactive.",
                    );
                }
            }
            "role" => {
                if !value.is_null() && !value.as_str().is_some_and(|role| ROLES.contains(&role)) {
                    invalid(
                        errors,
                        key,
                        "invalid_choice",
                        "Must be one of: main, limited-customer, sales-agent, sales-admin.",
                    );
                }
            }
            "currency_code" => {
                let iso_4217 = |value: &Value| {
                    value.as_str().is_some_and(|code| {
                        code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic())
                    })
                };
                check_nullable(errors, key, value, iso_4217, "an ISO 4217 code")
            }
            "available_shipping_addresses"
            | "sales_agent_groups"
            | "price_lists"
            | "vatin_numbers" => {
                check_nullable(errors, key, value, is_string_list, "a list of strings")
            }
            "discount_percentage" => {
                check_nullable(errors, key, value, Value::is_number, "a number")
            }
            "tax_exempt" | "payment_by_invoice" => {
                check_nullable(errors, key, value, Value::is_boolean, "a boolean")
            }
            "payment_on_account" | "metadata" | "parent_customer" => {
                check_nullable(errors, key, value, Value::is_object, "an object")
            }
            "addresses" => check_nullable(errors, key, value, Value::is_array, "a list"),
            "default_billing_address_id" | "default_shipping_address_id" => {
                check_nullable(errors, key, value, Value::is_string, "a string")
            }
            _ => invalid(errors, key, "unknown_field", "Unknown field."),
        }
    }
}

/// The stored list that replaces the customer's addresses: every entry complete, entries with an
/// `id` keep it (it must be one of the customer's), entries without one get a new `ca_…` id.
fn replace_addresses(current: &[Value], sent: &[Value], errors: &mut Vec<Invalid>) -> Vec<Value> {
    let known: HashSet<&str> = current
        .iter()
        .filter_map(|entry| entry.get("id").and_then(Value::as_str))
        .collect();
    let mut ids = HashSet::new();
    let mut external_ids = HashSet::new();
    let mut stored_list = Vec::new();
    for (n, entry) in sent.iter().enumerate() {
        let at = |key: &str| format!("addresses.{n}.{key}");
        let Some(entry) = entry.as_object() else {
            invalid(
                errors,
                &format!("addresses.{n}"),
                "invalid_type",
                "Must be an address object.",
            );
            continue;
        };
        for key in entry
            .keys()
            .filter(|key| !ADDRESS_KEYS.contains(&key.as_str()))
        {
            invalid(errors, &at(key), "unknown_field", "Unknown field.");
        }
        let mut stored = Map::new();
        for key in ADDRESS_KEYS {
            let value = entry.get(key).cloned().unwrap_or(Value::Null);
            if !value.is_null() && !value.is_string() {
                invalid(
                    errors,
                    &at(key),
                    "invalid_type",
                    "Must be a string or null.",
                );
            }
            stored.insert(key.to_owned(), value);
        }
        for key in REQUIRED_ADDRESS_KEYS {
            if stored[key].as_str().is_none_or(str::is_empty) {
                invalid(errors, &at(key), "required", "This field is required.");
            }
        }
        if let Some(country) = stored["country_code"].as_str() {
            if !country.is_empty() && !is_alpha2(country, false) {
                invalid(
                    errors,
                    &at("country_code"),
                    "invalid",
                    "Must be an ISO 3166-1 alpha-2 code.",
                );
            }
        }
        if let Some(external_id) = stored["external_id"].as_str() {
            if external_id.starts_with("ca_") {
                invalid(
                    errors,
                    &at("external_id"),
                    "invalid",
                    "Must not start with ca_.",
                );
            } else if !external_ids.insert(external_id.to_owned()) {
                invalid(
                    errors,
                    &at("external_id"),
                    "duplicate",
                    "External ids must be unique.",
                );
            }
        }
        let id = match stored["id"].as_str() {
            None => format!("ca_{}", Uuid::new_v4().simple()),
            Some(id) if !known.contains(id) => {
                invalid(
                    errors,
                    &at("id"),
                    "not_found",
                    "No address of this customer has this id.",
                );
                id.to_owned()
            }
            Some(id) => id.to_owned(),
        };
        if !ids.insert(id.clone()) {
            invalid(
                errors,
                &at("id"),
                "duplicate",
                "Address ids must be unique.",
            );
        }
        stored.insert("id".to_owned(), json!(id));
        stored_list.push(Value::Object(stored));
    }
    stored_list
}

/// The `ca_…` id of the entry whose `id` or `external_id` is `name`.
fn resolve_address(addresses: &[Value], name: &str) -> Option<Value> {
    addresses
        .iter()
        .find(|entry| {
            entry.get("id").and_then(Value::as_str) == Some(name)
                || entry.get("external_id").and_then(Value::as_str) == Some(name)
        })
        .and_then(|entry| entry.get("id").cloned())
}

fn taken_by_other(state: &State, key: &str, field: &str, value: &str, ignore_case: bool) -> bool {
    state
        .customers(Provider::SparkLayer)
        .iter()
        .filter(|(other, _)| other.as_str() != key)
        .filter_map(|(_, record)| record.get(field).and_then(Value::as_str))
        .any(|known| {
            if ignore_case {
                known.eq_ignore_ascii_case(value)
            } else {
                known == value
            }
        })
}

fn update(state: &mut State, key: &str, request: &ProviderRequest) -> Reply {
    if request.body_not_declared_json() {
        return error_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the body as application/json.",
        );
    }
    let body = match request.json_object() {
        Ok(body) => body,
        Err(problem) => return error_reply(StatusCode::BAD_REQUEST, problem.message()),
    };
    let mut errors = Vec::new();
    check_fields(&body, &mut errors);

    let current: &Record = &state.customers(Provider::SparkLayer)[key];
    let current_addresses = current
        .get("addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // `null` clears the list like any other field; the stored shape stays a list.
    let addresses = match body.get("addresses") {
        Some(Value::Array(sent)) => Some(replace_addresses(&current_addresses, sent, &mut errors)),
        Some(Value::Null) => Some(Vec::new()),
        _ => None,
    };
    let resulting = addresses.as_ref().unwrap_or(&current_addresses);
    let mut defaults = Vec::new();
    for field in DEFAULT_ADDRESS_IDS {
        let resolved = match body.get(field) {
            Some(Value::String(name)) => match resolve_address(resulting, name) {
                Some(id) => id,
                None => {
                    invalid(
                        &mut errors,
                        field,
                        "not_found",
                        "No address of this customer has this id or external id.",
                    );
                    continue;
                }
            },
            Some(Value::Null) => Value::Null,
            Some(_) => continue,
            // A new list must still hold the entry a default that was not sent names.
            None => match (&addresses, current.get(field).and_then(Value::as_str)) {
                (Some(list), Some(id)) if resolve_address(list, id).is_none() => {
                    invalid(
                        &mut errors,
                        field,
                        "not_found",
                        "The addresses sent no longer contain this default address.",
                    );
                    continue;
                }
                _ => continue,
            },
        };
        defaults.push((field, resolved));
    }
    if !errors.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The request body is invalid.",
            &errors,
        );
    }

    if let Some(Value::String(email)) = body.get("email") {
        if taken_by_other(state, key, "email", email, true) {
            return error_reply(
                StatusCode::CONFLICT,
                "A customer with this email already exists.",
            );
        }
    }
    if let Some(Value::String(external_id)) = body.get("external_id") {
        if taken_by_other(state, key, "external_id", external_id, false) {
            return error_reply(
                StatusCode::CONFLICT,
                "A customer with this external id already exists.",
            );
        }
    }

    let now = state.write_timestamp();
    let Some(record) = state.customers_mut(Provider::SparkLayer).get_mut(key) else {
        return error_reply(StatusCode::NOT_FOUND, "Customer not found.");
    };
    for (field, value) in body {
        if field != "addresses" && !DEFAULT_ADDRESS_IDS.contains(&field.as_str()) {
            record.insert(field, value);
        }
    }
    if let Some(addresses) = addresses {
        record.insert("addresses".to_owned(), Value::Array(addresses));
    }
    for (field, id) in defaults {
        record.insert(field.to_owned(), id);
    }
    record.insert("updated_at".to_owned(), json!(now));
    Reply::json(StatusCode::OK, &Value::Object(record.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    /// The shared state with SparkLayer's own tokens beside it, as the sandbox holds them.
    struct State {
        shared: super::State,
        sparklayer_tokens: Tokens,
    }

    impl State {
        fn new() -> State {
            State {
                shared: super::super::world::World::new().state,
                sparklayer_tokens: Tokens::new(),
            }
        }
    }

    impl std::ops::Deref for State {
        type Target = super::State;
        fn deref(&self) -> &super::State {
            &self.shared
        }
    }

    impl std::ops::DerefMut for State {
        fn deref_mut(&mut self) -> &mut super::State {
            &mut self.shared
        }
    }

    fn handle(state: &mut State, request: &ProviderRequest) -> Reply {
        super::handle(&mut state.shared, &mut state.sparklayer_tokens, request)
    }

    fn request(
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> ProviderRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        ProviderRequest {
            method,
            path: path.to_owned(),
            query: None,
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn json_body(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    fn exchange(state: &mut State) -> String {
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": SPARKLAYER_CLIENT_ID,
            "client_secret": SPARKLAYER_CLIENT_SECRET,
        });
        let reply = handle(
            state,
            &request(
                Method::POST,
                "/api/auth/token",
                &[
                    ("site-id", SPARKLAYER_SITE_ID),
                    ("content-type", "application/json"),
                ],
                &body.to_string(),
            ),
        );
        assert_eq!(reply.status, StatusCode::OK);
        let answer = json_body(&reply);
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3600);
        answer["access_token"].as_str().unwrap().to_owned()
    }

    fn call(state: &mut State, token: &str, method: Method, id: &str, body: &Value) -> Reply {
        let bearer = format!("Bearer {token}");
        let body = if method == Method::GET {
            String::new()
        } else {
            body.to_string()
        };
        handle(
            state,
            &request(
                method,
                &format!("/api/v1/customers/{id}"),
                &[
                    ("site-id", SPARKLAYER_SITE_ID),
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                &body,
            ),
        )
    }

    fn properties(reply: &Reply) -> Vec<String> {
        json_body(reply)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["property"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn token_exchange_guards_the_customer_routes() {
        let mut state = State::new();
        let wrong_secret = json!({
            "grant_type": "client_credentials",
            "client_id": SPARKLAYER_CLIENT_ID,
            "client_secret": "nope",
        });
        let headers = [
            ("site-id", SPARKLAYER_SITE_ID),
            ("content-type", "application/json"),
        ];
        let reply = handle(
            &mut state,
            &request(
                Method::POST,
                "/api/auth/token",
                &headers,
                &wrong_secret.to_string(),
            ),
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        let token = exchange(&mut state);
        let reply = call(
            &mut state,
            &token,
            Method::GET,
            "cu_demo_jones",
            &Value::Null,
        );
        assert_eq!(reply.status, StatusCode::OK);
        let reply = call(
            &mut state,
            "forged",
            Method::GET,
            "cu_demo_jones",
            &Value::Null,
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let no_site = request(
            Method::GET,
            "/api/v1/customers/cu_demo_jones",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        );
        assert_eq!(
            handle(&mut state, &no_site).status,
            StatusCode::UNAUTHORIZED
        );

        assert_eq!(state.sparklayer_tokens.expire_all(), 1);
        let reply = call(
            &mut state,
            &token,
            Method::GET,
            "cu_demo_jones",
            &Value::Null,
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(json_body(&reply)["detail"], "The access token has expired.");
    }

    #[test]
    fn with_revoke_on_rotation_a_new_token_revokes_the_old_ones() {
        let mut state = State::new();
        let get = |state: &mut State, token: &str| {
            call(state, token, Method::GET, "cu_demo_jones", &Value::Null)
        };
        let first = exchange(&mut state);
        let second = exchange(&mut state);
        assert_eq!(
            get(&mut state, &first).status,
            StatusCode::OK,
            "off by default"
        );
        state.revoke_on_rotation = true;
        let third = exchange(&mut state);
        assert_eq!(get(&mut state, &third).status, StatusCode::OK);
        for old in [first, second] {
            let reply = get(&mut state, &old);
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(json_body(&reply)["detail"], "The access token was revoked.");
        }
    }

    #[test]
    fn external_id_names_the_same_customer() {
        let mut state = State::new();
        let token = exchange(&mut state);
        // Percent-encoded in the path, decoded for the lookup.
        let reply = call(&mut state, &token, Method::GET, "JONES%2D001", &Value::Null);
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(json_body(&reply)["id"], "cu_demo_jones");

        let reply = call(
            &mut state,
            &token,
            Method::PATCH,
            "JONES-001",
            &json!({"first_name": "Thomas"}),
        );
        assert_eq!(reply.status, StatusCode::OK);
        let record = &state.customers(Provider::SparkLayer)["cu_demo_jones"];
        assert_eq!(record["first_name"], "Thomas");
        assert_ne!(record["updated_at"], record["created_at"]);

        let reply = call(&mut state, &token, Method::GET, "NOBODY", &Value::Null);
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn addresses_are_replaced_whole_and_defaults_stored_as_ca_ids() {
        let mut state = State::new();
        let token = exchange(&mut state);
        let patch = json!({
            "addresses": [
                {"id": "ca_demo_jones_office", "address_line1": "2 Crag Road", "city": "Sheffield", "country_code": "GB"},
                {"external_id": "JONES-NEW", "address_line1": "9 Ridge St", "city": "York", "country_code": "GB"},
            ],
            "default_shipping_address_id": "JONES-NEW",
        });
        let reply = call(&mut state, &token, Method::PATCH, "cu_demo_jones", &patch);
        assert_eq!(reply.status, StatusCode::OK);
        let answer = json_body(&reply);
        let addresses = answer["addresses"].as_array().unwrap();
        assert_eq!(addresses.len(), 2, "the depot entry is gone");
        let office = &addresses[0];
        assert_eq!(office["id"], "ca_demo_jones_office");
        assert_eq!(office["address_line1"], "2 Crag Road");
        // Replaced, not merged: fields not sent are empty now.
        assert_eq!(office["postal_code"], Value::Null);
        assert_eq!(office["external_id"], Value::Null);
        let new_id = addresses[1]["id"].as_str().unwrap();
        assert!(new_id.starts_with("ca_"), "{new_id}");
        assert_eq!(answer["default_shipping_address_id"], new_id);
        assert_eq!(answer["default_billing_address_id"], "ca_demo_jones_office");
    }

    #[test]
    fn invalid_patches_name_each_property() {
        let mut state = State::new();
        let token = exchange(&mut state);
        let patch = json!({
            "addresses": [
                {"id": "ca_demo_jones_office", "address_line1": "1 Crag Road", "city": "Sheffield", "country_code": "GB"},
                {"id": "ca_demo_jones_depot", "address_line1": "7 Boulder Lane", "city": "", "country_code": "GB"},
            ],
            "default_billing_address_id": "NOT-THERE",
        });
        let reply = call(&mut state, &token, Method::PATCH, "cu_demo_jones", &patch);
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            properties(&reply),
            ["addresses.1.city", "default_billing_address_id"]
        );

        // Dropping the entry a default names, without moving the default, is refused too.
        let patch = json!({"addresses": [
            {"id": "ca_demo_jones_office", "address_line1": "1 Crag Road", "city": "Sheffield", "country_code": "GB"},
        ]});
        let reply = call(&mut state, &token, Method::PATCH, "cu_demo_jones", &patch);
        assert_eq!(properties(&reply), ["default_shipping_address_id"]);

        let patch = json!({"email": null, "updated_at": "2020-01-01T00:00:00Z", "colour": "red"});
        let reply = call(&mut state, &token, Method::PATCH, "cu_demo_jones", &patch);
        // In the body's member order as parsed (serde_json's maps sort their keys).
        assert_eq!(properties(&reply), ["colour", "email", "updated_at"]);

        let patch = json!({"email": "ADA@reed-outdoor.example"});
        let reply = call(&mut state, &token, Method::PATCH, "cu_demo_jones", &patch);
        assert_eq!(reply.status, StatusCode::CONFLICT);
    }
}
