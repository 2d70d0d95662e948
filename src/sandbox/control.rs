//! The control API under `/_control` (tests drive the sandbox through it): request log, stored
//! records, reset, token expiry and revocation, rate limits, and injected faults.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::exchange::{decode_segment, ProviderRequest, Reply};
use super::fault::Fault;
use super::rate_limit::Window;
use super::state::{unix_millis, Provider, State};
use super::world::World;

/// The log keeps at most this many requests; the oldest go first. A sandbox left running as the
/// out-of-the-box default must not grow without bound.
const LOG_CAPACITY: usize = 10_000;

/// The provider's fault to apply to the request that just arrived, counting down `times`.
pub(crate) fn take_fault(state: &mut State, provider: Provider) -> Option<Fault> {
    let slot = &mut state.faults[provider as usize];
    let fault = slot.clone()?;
    if let Some(times) = fault.times {
        match times {
            0 | 1 => *slot = None,
            _ => {
                if let Some(stored) = slot.as_mut() {
                    stored.times = Some(times - 1);
                }
            }
        }
    }
    Some(fault)
}

/// Records a request that reached a provider route; `arrived` is when its head arrived.
pub(crate) fn log_request(
    state: &mut State,
    provider: Provider,
    request: &ProviderRequest,
    arrived: SystemTime,
) {
    let mut headers = serde_json::Map::new();
    for name in request.headers.keys() {
        // Repeated headers are joined as one field value, as RFC 9110 allows.
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), json!(values.join(", ")));
    }
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&request.body)))
    };
    let at_ms = u64::try_from(unix_millis(arrived)).unwrap_or(u64::MAX);
    if state.log.len() >= LOG_CAPACITY {
        // Drop a tenth at once so the shift is paid rarely.
        state.log.drain(..LOG_CAPACITY / 10);
    }
    state.log.push(json!({
        "provider": provider.name(),
        "method": request.method.as_str(),
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "body": body,
        "at_ms": at_ms,
    }));
}

/// `{"revoke_on_rotation": bool}` in and out of `/_control/tokens`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSettings {
    revoke_on_rotation: bool,
}

/// `{"windows": [...]}` in and out of `/_control/limits/{provider}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    windows: Vec<Window>,
}

fn message(status: StatusCode, text: &str) -> Reply {
    Reply::json(status, &json!({ "error": text }))
}

fn bad_request(text: &str) -> Reply {
    message(StatusCode::BAD_REQUEST, text)
}

fn no_content() -> Reply {
    Reply::raw(StatusCode::NO_CONTENT, "application/json", Bytes::new())
}

fn method_not_allowed(allow: &'static str) -> Reply {
    message(StatusCode::METHOD_NOT_ALLOWED, &format!("allowed: {allow}"))
        .with_header(http::header::ALLOW, HeaderValue::from_static(allow))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("invalid body: {e}")))
}

fn provider(name: &str) -> Result<Provider, Reply> {
    Provider::from_name(name).ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            &format!("unknown provider {name:?}; one of sweetspot, count, juice, sparklayer"),
        )
    })
}

/// Answers a control request; `path` is what follows `/_control`.
pub(crate) fn handle(
    world: &mut World,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match segments.as_slice() {
        ["log"] => log(&mut world.state, method, query),
        ["reset"] if method == Method::POST => {
            world.reset();
            Ok(no_content())
        }
        ["reset"] => Ok(method_not_allowed("POST")),
        ["tokens", "expire"] if method == Method::POST => {
            let expired = world.expire_tokens();
            Ok(Reply::json(StatusCode::OK, &json!({ "expired": expired })))
        }
        ["tokens", "expire"] => Ok(method_not_allowed("POST")),
        ["tokens"] => tokens(&mut world.state, method, body),
        ["customers", name, id] if !id.is_empty() => provider(name).and_then(|provider| {
            customers(
                &mut world.state,
                method,
                provider,
                &decode_segment(id),
                body,
            )
        }),
        ["limits", name] => {
            provider(name).and_then(|provider| limits(&mut world.state, method, provider, body))
        }
        ["faults", name] => {
            provider(name).and_then(|provider| faults(&mut world.state, method, provider, body))
        }
        _ => Err(message(StatusCode::NOT_FOUND, "no such control endpoint")),
    };
    result.unwrap_or_else(|reply| reply)
}

fn log(state: &mut State, method: &Method, query: Option<&str>) -> Result<Reply, Reply> {
    match *method {
        Method::GET => {
            let mut only = None;
            for pair in query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
            {
                match pair.split_once('=') {
                    Some(("provider", name)) => {
                        only = Some(
                            provider(name)
                                .map_err(|_| bad_request(&format!("unknown provider {name:?}")))?,
                        )
                    }
                    _ => return Err(bad_request(&format!("unknown query parameter {pair:?}"))),
                }
            }
            let entries: Vec<&Value> = state
                .log
                .iter()
                .filter(|entry| only.is_none_or(|p| entry["provider"] == p.name()))
                .collect();
            Ok(Reply::json(StatusCode::OK, &json!(entries)))
        }
        Method::DELETE => {
            state.log.clear();
            Ok(no_content())
        }
        _ => Ok(method_not_allowed("GET, DELETE")),
    }
}

/// Where each provider keeps a record's primary id.
fn id_field(provider: Provider) -> &'static str {
    match provider {
        Provider::Count => "uuid",
        Provider::SweetSpot | Provider::Juice | Provider::SparkLayer => "id",
    }
}

fn customers(
    state: &mut State,
    method: &Method,
    provider: Provider,
    id: &str,
    body: &[u8],
) -> Result<Reply, Reply> {
    // COUNT and Juice look customers up by lower-cased UUID.
    let id = match provider {
        Provider::Count | Provider::Juice => id.to_ascii_lowercase(),
        Provider::SweetSpot | Provider::SparkLayer => id.to_owned(),
    };
    match *method {
        Method::GET => match state.customers(provider).get(&id) {
            Some(record) => Ok(Reply::json(StatusCode::OK, &Value::Object(record.clone()))),
            None => Err(message(StatusCode::NOT_FOUND, "no such customer")),
        },
        Method::PUT => {
            let Value::Object(mut record) = parse::<Value>(body)? else {
                return Err(bad_request("the record must be a JSON object"));
            };
            let field = id_field(provider);
            match record.get(field) {
                None => {
                    record.insert(field.to_owned(), json!(id));
                }
                Some(Value::String(stored)) if stored.eq_ignore_ascii_case(&id) => {}
                Some(_) => {
                    return Err(bad_request(&format!(
                        "the record's {field} differs from the path"
                    )))
                }
            }
            state.customers_mut(provider).insert(id, record);
            Ok(no_content())
        }
        _ => Ok(method_not_allowed("GET, PUT")),
    }
}

fn tokens(state: &mut State, method: &Method, body: &[u8]) -> Result<Reply, Reply> {
    match *method {
        Method::GET => {
            let settings = TokenSettings {
                revoke_on_rotation: state.revoke_on_rotation,
            };
            Ok(Reply::json(StatusCode::OK, &json!(settings)))
        }
        Method::PUT => {
            let settings: TokenSettings = parse(body)?;
            state.revoke_on_rotation = settings.revoke_on_rotation;
            Ok(no_content())
        }
        _ => Ok(method_not_allowed("GET, PUT")),
    }
}

fn limits(
    state: &mut State,
    method: &Method,
    provider: Provider,
    body: &[u8],
) -> Result<Reply, Reply> {
    match *method {
        Method::GET => {
            let limits = Limits {
                windows: state.windows(provider).to_vec(),
            };
            Ok(Reply::json(StatusCode::OK, &json!(limits)))
        }
        Method::PUT => {
            let limits: Limits = parse(body)?;
            if limits
                .windows
                .iter()
                .any(|w| w.limit == 0 || w.seconds == 0)
            {
                return Err(bad_request(
                    "every window needs limit >= 1 and seconds >= 1",
                ));
            }
            state.set_windows(provider, limits.windows);
            Ok(no_content())
        }
        _ => Ok(method_not_allowed("GET, PUT")),
    }
}

fn faults(
    state: &mut State,
    method: &Method,
    provider: Provider,
    body: &[u8],
) -> Result<Reply, Reply> {
    let slot = &mut state.faults[provider as usize];
    match *method {
        Method::GET => Ok(Reply::json(StatusCode::OK, &json!(slot))),
        Method::PUT => {
            let fault: Fault = parse(body)?;
            fault.validate().map_err(|e| bad_request(&e))?;
            *slot = Some(fault);
            Ok(no_content())
        }
        Method::DELETE => {
            *slot = None;
            Ok(no_content())
        }
        _ => Ok(method_not_allowed("GET, PUT, DELETE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::world::error_reply;

    fn control(state: &mut World, method: Method, path: &str, body: &str) -> Reply {
        handle(state, &method, path, None, body.as_bytes())
    }

    #[test]
    fn a_fault_with_times_applies_to_that_many_requests() {
        let mut state = World::new();
        let reply = control(
            &mut state,
            Method::PUT,
            "/faults/juice",
            r#"{"status": 503, "times": 2, "headers": {"Retry-After": "7"}}"#,
        );
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        for _ in 0..2 {
            let fault = take_fault(&mut state.state, Provider::Juice).expect("faulted");
            let reply = fault.add_headers(
                fault
                    .reply(|status| error_reply(Provider::Juice, status, "x"))
                    .unwrap(),
            );
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            let response = reply.into_response();
            assert_eq!(response.headers()["retry-after"], "7");
        }
        assert_eq!(take_fault(&mut state.state, Provider::Juice), None);
        // Other providers were never affected.
        assert_eq!(take_fault(&mut state.state, Provider::Count), None);
    }

    #[test]
    fn a_fault_without_times_stays_until_cleared() {
        let mut state = World::new();
        let body = r#"{"latency_ms": 50}"#;
        control(&mut state, Method::PUT, "/faults/count", body);
        for _ in 0..3 {
            let fault = take_fault(&mut state.state, Provider::Count).unwrap();
            assert_eq!(fault.latency_ms, Some(50));
            assert!(
                fault
                    .reply(|status| error_reply(Provider::Count, status, "x"))
                    .is_none(),
                "latency alone keeps the real answer"
            );
        }
        let reply = control(&mut state, Method::DELETE, "/faults/count", "");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(take_fault(&mut state.state, Provider::Count), None);
    }

    #[test]
    fn bad_control_input_is_a_400() {
        let mut state = World::new();
        for (path, body) in [
            ("/faults/juice", r#"{"status": 42}"#),
            ("/faults/juice", r#"{"times": 0}"#),
            ("/faults/juice", r#"{"stauts": 500}"#),
            ("/faults/juice", r#"{"headers": {"bad name": "x"}}"#),
            (
                "/limits/juice",
                r#"{"windows": [{"limit": 0, "seconds": 60}]}"#,
            ),
            ("/limits/juice", "not json"),
            ("/customers/juice/x", "[]"),
        ] {
            let reply = control(&mut state, Method::PUT, path, body);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {body}");
        }
        let reply = control(
            &mut state,
            Method::PUT,
            "/limits/nobody",
            r#"{"windows": []}"#,
        );
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn limits_and_records_round_trip() {
        let mut state = World::new();
        let body = r#"{"windows": [{"limit": 1, "seconds": 60}]}"#;
        assert_eq!(
            control(&mut state, Method::PUT, "/limits/sparklayer", body).status,
            StatusCode::NO_CONTENT
        );
        let reply = control(&mut state, Method::GET, "/limits/sparklayer", "");
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer, json!({"windows": [{"limit": 1, "seconds": 60}]}));

        let path = "/customers/juice/0F8FAD5B-D9CB-469F-A165-70867728950E";
        let reply = control(&mut state, Method::PUT, path, r#"{"first_name": "Zed"}"#);
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let reply = control(&mut state, Method::GET, path, "");
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer["id"], "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(answer["first_name"], "Zed");
    }
}
