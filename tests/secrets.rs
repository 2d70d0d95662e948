//! No configured secret and no token obtained at run time ever appears in patchbay's output, at any log
//! level: the real binary runs at `RUST_LOG=trace` in sandbox mode, its tokens are refreshed and rotated,
//! and every credential the sandbox saw is then searched for in everything the process printed.

mod common;

use bytes::Bytes;
use common::GatewayProcess;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

const FINGERPRINT_KEY: &str = "fp-key-7d1c0e5a9b";

async fn call(method: Method, url: &str, body: &str) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/merge-patch+json")
        .header("idempotency-key", "idem-1")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.expect("answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every credential value the sandbox received: bearer tokens, raw keys, signatures' secrets' products,
/// refresh tokens in bodies and client secrets in token requests.
fn credentials_seen(log: &[Value]) -> Vec<String> {
    let mut seen = Vec::new();
    for entry in log {
        if let Some(auth) = entry["headers"]["authorization"].as_str() {
            seen.push(auth.trim_start_matches("Bearer ").to_owned());
        }
        for key in ["refreshToken", "client_secret"] {
            if let Some(value) = entry["body"][key].as_str() {
                seen.push(value.to_owned());
            }
        }
    }
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_appears_in_the_logs_at_trace() {
    no_secret_or_token_in_logs("text").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_appears_in_json_logs_at_trace() {
    no_secret_or_token_in_logs("json").await;
}

async fn no_secret_or_token_in_logs(format: &str) {
    let gateway = GatewayProcess::spawn(&[
        ("RUST_LOG", "trace"),
        ("PATCHBAY_LOG__FORMAT", format),
        ("PATCHBAY_SANDBOX__ENABLED", "true"),
        ("PATCHBAY_RATE_LIMIT__FINGERPRINT_KEY", FINGERPRINT_KEY),
    ]);
    let sandbox = gateway.addr_after("sandbox emulators listening");
    let api = gateway.addr();
    let customers = [
        "sweetspot:cus_demo_alice",
        "count:3b241101-e2bb-4255-8caf-4136c566a962",
        "juice:6f7e1e7f-93d1-4fcc-b7a4-738f869615c8",
        "sparklayer:cu_demo_jones",
    ];
    // Three rounds with token expiry after each: COUNT refreshes twice (so its first rotated refresh
    // token is sent, and logged by the sandbox), SparkLayer fetches twice.
    for _ in 0..3 {
        for customer in customers {
            let (status, body) = call(
                Method::GET,
                &format!("http://{api}/customers/{customer}"),
                "",
            )
            .await;
            assert_eq!(status, 200, "{customer}: {body}");
        }
        let (status, _) = call(
            Method::PATCH,
            &format!("http://{api}/customers/{}", customers[2]),
            r#"{"first_name": "Trace"}"#,
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = call(
            Method::POST,
            &format!("http://{sandbox}/_control/tokens/expire"),
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    let (_, log) = call(Method::GET, &format!("http://{sandbox}/_control/log"), "").await;
    let log = log.as_array().cloned().expect("the sandbox log");
    let sent = credentials_seen(&log);
    let mut secrets = sent.clone();
    secrets.push(FINGERPRINT_KEY.to_owned());
    secrets.extend(
        [
            patchbay::sandbox::credentials::COUNT_CLIENT_SECRET,
            patchbay::sandbox::credentials::SPARKLAYER_CLIENT_SECRET,
        ]
        .map(str::to_owned),
    );
    // Runtime tokens: COUNT's refreshed access and rotated refresh tokens, SparkLayer's access tokens.
    let runtime_tokens = secrets
        .iter()
        .filter(|s| s.starts_with("count_at_") || s.starts_with("count_rt_"))
        .count();
    assert!(
        runtime_tokens >= 2,
        "refreshes must have happened: {secrets:?}"
    );
    assert!(
        secrets.len() >= 9,
        "too few credentials collected: {secrets:?}"
    );

    std::thread::sleep(Duration::from_millis(200));
    let output = gateway.all_output();
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "logs were not captured at trace"
    );
    for secret in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a secret leaked into the logs: {secret}"
        );
    }
    // The search is not vacuous: the values that were sent are found where they do belong. (COUNT's client
    // secret and the fingerprint key are never sent anywhere: they only key HMACs.)
    let raw_log = serde_json::to_string(&log).unwrap();
    for secret in &sent {
        assert!(
            raw_log.contains(secret.as_str()),
            "{secret} not in the sandbox log"
        );
    }
}

/// At debug, every request has its span, and what is logged inside it carries the request's id: the
/// caller's own, and a generated one otherwise. (At the default level the span is left out of the stack.)
#[tokio::test(flavor = "multi_thread")]
async fn at_debug_what_a_request_logs_carries_its_request_id() {
    let gateway =
        GatewayProcess::spawn(&[("RUST_LOG", "debug"), ("PATCHBAY_SANDBOX__ENABLED", "true")]);
    let api = gateway.addr();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .uri(format!(
            "http://{api}/customers/juice:6f7e1e7f-93d1-4fcc-b7a4-738f869615c8"
        ))
        .header("x-request-id", "trace-me-42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.expect("answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    std::thread::sleep(Duration::from_millis(200));
    let output = gateway.all_output();
    let upstream_call = output
        .lines()
        .find(|line| line.contains("trace-me-42") && line.contains("upstream call"))
        .unwrap_or_else(|| panic!("no upstream call logged in the request's span:\n{output}"));
    assert!(
        upstream_call.contains("provider=\"juice\""),
        "{upstream_call}"
    );
    assert!(
        !output.contains('\u{1b}'),
        "no colour codes when the output is not a terminal"
    );
}
