//! A provider that hangs, is down, fails or answers garbage: the caller gets the right status with a problem
//! body, within the timeout, and patchbay's own credentials problems are never a 401 to the caller.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_provider_is_a_504_within_the_timeout() {
    let mut config = test_config();
    config.server.upstream_timeout_ms = 300;
    let h = Harness::with_config(config).await;
    h.fault("sweetspot", json!({"latency_ms": 3000})).await;
    let started = Instant::now();
    let answer = h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await;
    assert_eq!(answer.status, 504, "{:?}", answer.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(answer.body["provider"], "sweetspot");
    assert!(answer.body.get("upstream_status").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_is_down_is_a_502() {
    let mut config = test_config();
    config.sandbox.enabled = false;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let juice = config.providers.get_mut("juice").unwrap();
    juice.base_url = format!("http://127.0.0.1:{port}");
    juice.api_key = Some(patchbay::config::Secret::new("test_key"));
    let h = Harness::with_config(config).await;
    let answer = h.get(&format!("juice:{JUICE_ID}")).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.body["provider"], "juice");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_garbage_and_dropped_connections_are_502() {
    let h = Harness::start().await;
    let id = format!("sweetspot:{SWEETSPOT_ID}");
    h.fault("sweetspot", json!({"status": 503})).await;
    let answer = h.patch(&id, &json!({"first_name": "B"})).await;
    assert_eq!(
        (
            answer.status.as_u16(),
            answer.body["upstream_status"].as_u64()
        ),
        (502, Some(503))
    );

    h.fault(
        "sweetspot",
        json!({"status": 200, "body": "<html>oops</html>"}),
    )
    .await;
    let answer = h.get(&id).await;
    assert_eq!(
        (
            answer.status.as_u16(),
            answer.body["upstream_status"].as_u64()
        ),
        (502, Some(200))
    );

    h.fault(
        "sweetspot",
        json!({"status": 200, "body": "{\"unexpected\": true"}),
    )
    .await;
    assert_eq!(h.patch(&id, &json!({"first_name": "B"})).await.status, 502);

    h.fault("sweetspot", json!({"drop": true})).await;
    h.clear_log().await;
    let answer = h.patch(&id, &json!({"first_name": "B"})).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(
        h.log("sweetspot").await.len(),
        1,
        "a write is never repeated on its own"
    );

    h.clear_log().await;
    assert_eq!(h.get(&id).await.status, 502);
    assert_eq!(
        h.log("sweetspot").await.len(),
        2,
        "a GET is repeated once after a dropped connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_credentials_are_a_502_never_a_401() {
    let h = Harness::start().await;
    for (provider, id) in [("sweetspot", SWEETSPOT_ID), ("juice", JUICE_ID)] {
        h.fault(provider, json!({"status": 401})).await;
        let answer = h.get(&format!("{provider}:{id}")).await;
        assert_eq!(answer.status, 502, "{provider}: {:?}", answer.body);
        assert_eq!(answer.body["upstream_status"], 401);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_a_502() {
    let sandbox_harness = Harness::start().await;
    let base = sandbox_harness
        .app
        .sandbox()
        .unwrap()
        .base_url("sweetspot")
        .unwrap();
    let mut config = test_config();
    config.sandbox.enabled = false;
    let sweet = config.providers.get_mut("sweetspot").unwrap();
    sweet.base_url = base;
    sweet.api_key = Some(patchbay::config::Secret::new("sk_test_wrong"));
    let h = Harness::with_config(config).await;
    let answer = h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.body["upstream_status"], 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_429_is_a_429_with_retry_after() {
    let h = Harness::start().await;
    h.fault(
        "sweetspot",
        json!({"status": 429, "headers": {"Retry-After": "7"}}),
    )
    .await;
    let answer = h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await;
    assert_eq!(answer.status, 429, "{:?}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.body["upstream_status"], 429);

    // Juice's own limit: its 429 carries Retry-After and X-RateLimit-Reset.
    h.clear_fault("sweetspot").await;
    h.set_limits("juice", json!([{"limit": 1, "seconds": 60}]))
        .await;
    assert_eq!(h.get(&format!("juice:{JUICE_ID}")).await.status, 200);
    let limited = h.get(&format!("juice:{JUICE_ID}")).await;
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    let seconds: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_refreshed_once_and_the_call_retried() {
    let h = Harness::start().await;
    // Both providers obtain tokens first.
    assert_eq!(h.get(&format!("count:{COUNT_ID}")).await.status, 200);
    assert_eq!(
        h.get(&format!("sparklayer:{SPARKLAYER_ID}")).await.status,
        200
    );
    h.expire_tokens().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &format!("count:{COUNT_ID}"),
            &json!({"company_name": "Acme Two", "email": "two@acme.example"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let calls = |log: Vec<serde_json::Value>| -> Vec<String> {
        log.iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        calls(h.log("count").await),
        [
            format!("PUT /customers/{COUNT_ID}"),
            "POST /refresh-user-access-token".to_owned(),
            format!("PUT /customers/{COUNT_ID}"),
        ]
    );
    // The rotated refresh token was kept: a second expiry refreshes again successfully.
    h.expire_tokens().await;
    assert_eq!(h.get(&format!("count:{COUNT_ID}")).await.status, 200);

    h.clear_log().await;
    let answer = h.get(&format!("sparklayer:{SPARKLAYER_ID}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        calls(h.log("sparklayer").await),
        [
            format!("GET /api/v1/customers/{SPARKLAYER_ID}"),
            "POST /api/auth/token".to_owned(),
            format!("GET /api/v1/customers/{SPARKLAYER_ID}"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_401_is_refreshed_once_only() {
    let h = Harness::start().await;
    assert_eq!(
        h.get(&format!("sparklayer:{SPARKLAYER_ID}")).await.status,
        200
    );
    h.fault("sparklayer", json!({"status": 401})).await;
    h.clear_log().await;
    let answer = h
        .patch(
            &format!("sparklayer:{SPARKLAYER_ID}"),
            &json!({"first_name": "T"}),
        )
        .await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    let log = h.log("sparklayer").await;
    assert!(log.len() <= 3, "PATCH, token, PATCH at most: {log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_who_hangs_up_does_not_cut_a_write_short() {
    let h = Harness::start().await;
    h.lift_limits().await;
    h.fault("juice", json!({"latency_ms": 300})).await;
    h.clear_log().await;
    let customer = format!("juice:{JUICE_ID}");
    let body = json!({"billing_address": {"city": "Hung Up"}});
    // The caller gives up while patchbay is still reading the record: its connection closes.
    let hung_up = tokio::time::timeout(Duration::from_millis(100), h.patch(&customer, &body)).await;
    assert!(hung_up.is_err(), "the patch should still have been running");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.clear_fault("juice").await;
    let calls: Vec<String> = h
        .log("juice")
        .await
        .iter()
        .map(|e| e["method"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        calls,
        ["GET", "PATCH"],
        "the read-merge-write was cut short"
    );
    assert_eq!(
        h.stored("juice", JUICE_ID).await["billing_address"]["city"],
        "Hung Up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_message_never_relays_our_credentials_and_stays_short() {
    let h = Harness::start().await;
    let key = patchbay::sandbox::credentials::JUICE_API_KEY;
    let message = format!(
        "key {key} is not allowed to change this customer {}",
        "!".repeat(5000)
    );
    let body = json!({"error": {"message": message, "errors": [
        {"field": "phone_number", "message": format!("rejected for {key}")}
    ]}});
    h.fault(
        "juice",
        json!({"status": 422, "body": body.to_string(), "times": 1}),
    )
    .await;
    let answer = h
        .patch(
            "juice:6f7e1e7f-93d1-4fcc-b7a4-738f869615c8",
            &json!({"first_name": "Ada"}),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 422, "{:?}", answer.body);
    let text = String::from_utf8_lossy(&answer.raw);
    assert!(
        !text.contains(key),
        "our key went back to the caller: {text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    assert_eq!(answer.body["errors"][0]["field"], "phone");
    assert!(answer.raw.len() < 2048, "{} bytes", answer.raw.len());
}
