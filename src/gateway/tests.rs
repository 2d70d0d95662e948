//! The stack driven with `oneshot`, no socket: the order of the checks, the rescue's statuses, request
//! ids, and panics. The innermost service is a stand-in that counts what reaches it, so a check that
//! let a request through shows as a call.

use super::call::{Answer, CustomerCall};
use super::error::{BoxError, BoxFuture};
use super::stack::over;
use super::Gateway;
use crate::config::{Config, Secret};
use crate::providers::{Record, RecordAt};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

const JUICE_ID: &str = "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8";

/// Juice and Sweet Spot configured (never called: the stand-in answers), COUNT and SparkLayer not.
fn gateway() -> Gateway {
    let mut config = Config::default();
    config.sandbox.enabled = false;
    for name in ["juice", "sweetspot"] {
        let provider = config.providers.get_mut(name).unwrap();
        provider.api_key = Some(Secret::new("test-key"));
        provider.base_url = "http://127.0.0.1:9".to_owned();
    }
    Gateway::new(&config)
}

/// The innermost service's stand-in: answers the customer the dialect reads from a fixed record, and
/// panics for the id `panic`.
#[derive(Clone, Default)]
struct Customers {
    calls: Arc<AtomicUsize>,
}

impl Service<CustomerCall> for Customers {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CustomerCall) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            assert_ne!(call.id, "panic", "a bug below the checks");
            let at = call.provider.dialect.record_at();
            let record = format!(r#"{{"id":"{}","first_name":"Ada"}}"#, call.id);
            let record = match at {
                RecordAt::Top => record,
                RecordAt::Data => format!(r#"{{"data":{record}}}"#),
            };
            let record = Record::parse(&record, at).unwrap();
            Ok(Answer {
                customer: call.provider.dialect.to_canonical(record),
                lenient: call.lenient,
                headers: HeaderMap::new(),
            })
        })
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(customers: &Customers, request: Request<Full<Bytes>>) -> Reply {
    let stack = over(&gateway(), customers.clone());
    let response = stack.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn request(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "patchbay.test");
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

const JSON: Option<&str> = Some("application/merge-patch+json");

#[tokio::test]
async fn the_first_failing_check_answers_and_nothing_goes_below() {
    let juice = format!("/customers/juice:{JUICE_ID}");
    let big = format!(r#"{{"first_name":"{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, Request<Full<Bytes>>, u16)> = vec![
        // 1: route, then provider, before the method.
        ("no route", request("DELETE", "/nowhere", None, ""), 404),
        (
            "unknown provider",
            request("DELETE", "/customers/acme:1", None, ""),
            404,
        ),
        (
            "not configured",
            request("DELETE", "/customers/count:1", None, ""),
            503,
        ),
        // 2: the method before the id.
        (
            "method",
            request("DELETE", "/customers/juice:not-a-uuid", None, ""),
            405,
        ),
        // 3: the id before the content type.
        (
            "id",
            request(
                "PATCH",
                "/customers/juice:not-a-uuid",
                Some("text/plain"),
                "{",
            ),
            400,
        ),
        // 5: the content type before the size and the JSON.
        (
            "content type",
            request("PATCH", &juice, Some("text/plain"), &big),
            415,
        ),
        ("no content type", request("PATCH", &juice, None, "{}"), 415),
        // 6: the size before the JSON.
        (
            "too large",
            request("PATCH", &juice, JSON, &format!("{big}{{")),
            413,
        ),
        // 7: one JSON object before validation.
        (
            "malformed",
            request("PATCH", &juice, JSON, r#"{"phone": 12,"#),
            400,
        ),
        ("not an object", request("PATCH", &juice, JSON, "[1]"), 400),
        (
            "duplicate keys",
            request("PATCH", &juice, JSON, r#"{"a":1,"a":2}"#),
            400,
        ),
        // 8: canonical validation, every field at once.
        (
            "invalid",
            request("PATCH", &juice, JSON, r#"{"phone":"12","email":"x"}"#),
            422,
        ),
        // 9: a field Juice cannot store.
        (
            "unsupported",
            request("PATCH", &juice, JSON, r#"{"website":"https://a.example"}"#),
            422,
        ),
    ];
    let with = |mut request: Request<Full<Bytes>>, headers: &[(&'static str, &str)]| {
        for (name, value) in headers {
            request.headers_mut().append(*name, value.parse().unwrap());
        }
        request
    };
    let mut no_host = request("GET", &juice, None, "");
    no_host.headers_mut().remove("host");
    let two_hosts = with(request("GET", "/nowhere", None, ""), &[("host", "b.test")]);
    let long_key = "k".repeat(256);
    let mut cases = cases;
    cases.extend([
        // A malformed request before anything else.
        ("no host", no_host, 400),
        ("two hosts", two_hosts, 400),
        // Compressed bodies with the content type (5).
        (
            "gzip",
            with(
                request("PATCH", &juice, JSON, "{}"),
                &[("content-encoding", "gzip")],
            ),
            415,
        ),
        // A bad Idempotency-Key with the body's checks (before validation).
        (
            "two keys",
            with(
                request("PATCH", &juice, JSON, "{}"),
                &[("idempotency-key", "a"), ("idempotency-key", "b")],
            ),
            400,
        ),
        (
            "long key",
            with(
                request("PATCH", &juice, JSON, "{}"),
                &[("idempotency-key", &long_key)],
            ),
            400,
        ),
    ]);
    let customers = Customers::default();
    for (name, request, status) in cases {
        let reply = send(&customers, request).await;
        assert_eq!(reply.status.as_u16(), status, "{name}: {:?}", reply.body);
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{name}"
        );
        assert_eq!(reply.body["status"], status, "{name}");
        assert_eq!(
            customers.calls.load(Ordering::SeqCst),
            0,
            "{name} went below"
        );
    }
    let reply = send(&customers, request("DELETE", &juice, None, "")).await;
    assert_eq!(reply.headers["allow"], "GET, PATCH");
    let invalid = request("PATCH", &juice, JSON, r#"{"phone":"12","email":"x"}"#);
    let reply = send(&customers, invalid).await;
    assert_eq!(
        reply.body["errors"].as_array().unwrap().len(),
        2,
        "{:?}",
        reply.body
    );
}

#[tokio::test]
async fn what_passes_every_check_reaches_the_customer_service() {
    let customers = Customers::default();
    let juice = format!("/customers/juice:{JUICE_ID}");
    let reply = send(&customers, request("GET", &juice, None, "")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["id"], format!("juice:{JUICE_ID}"));
    // Juice is limited: the answer carries its quota.
    assert!(reply.headers.contains_key("ratelimit-policy"));
    let patch = request("PATCH", &juice, JSON, r#"{"first_name":"Ada"}"#);
    let lenient = {
        let mut patch = request("PATCH", &juice, JSON, r#"{"website":"https://a.example"}"#);
        patch
            .headers_mut()
            .insert("prefer", "handling=lenient".parse().unwrap());
        patch
    };
    assert_eq!(send(&customers, patch).await.status, StatusCode::OK);
    let reply = send(&customers, lenient).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["patchbay-skipped"], "website");
    assert_eq!(customers.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn every_answer_carries_the_request_id() {
    let customers = Customers::default();
    let mut mine = request("GET", "/nowhere", None, "");
    mine.headers_mut()
        .insert("x-request-id", "caller-42".parse().unwrap());
    assert_eq!(
        send(&customers, mine).await.headers["x-request-id"],
        "caller-42"
    );
    let generated = send(&customers, request("GET", "/nowhere", None, "")).await;
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let ok = send(
        &customers,
        request("GET", &format!("/customers/juice:{JUICE_ID}"), None, ""),
    )
    .await;
    assert!(ok.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_panic_is_a_500_problem_and_the_next_request_is_served() {
    let customers = Customers::default();
    let stack = over(&gateway(), customers.clone());
    let panicking = request("GET", "/customers/sweetspot:panic", None, "");
    let response = stack.clone().oneshot(panicking).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["detail"], "internal error",
        "nothing of the inside: {body}"
    );
    let next = request("GET", "/customers/sweetspot:cus_1", None, "");
    let response = stack.oneshot(next).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(customers.calls.load(Ordering::SeqCst), 2);
}
