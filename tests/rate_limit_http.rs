//! Rate limits end to end, over real sockets against the sandbox: the 429 and its headers, what a
//! refusal does not consume, provider 429s that pause a credential, wait mode, token calls that count,
//! `GET /quotas`, and replicas sharing one quota through a private `redis-server`.

mod common;

use common::*;
use http::{Method, StatusCode};
use patchbay::config::{Backend, Config, LimitMode, OnStoreError, Secret};
use patchbay::gateway::rate_limit::fingerprint;
use patchbay::sandbox::credentials::JUICE_API_KEY;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn juice() -> String {
    format!("juice:{JUICE_ID}")
}

/// The test config with these windows on Juice (and no other limit).
fn limited(pairs: &[(u32, u64)]) -> Config {
    let mut config = test_config();
    config
        .providers
        .get_mut("juice")
        .unwrap()
        .rate_limit
        .windows = windows(pairs);
    config
}

fn redis_config(config: &mut Config, url: &str) {
    config.rate_limit.backend = Backend::Redis;
    config.rate_limit.redis_url = Some(Secret::new(url));
    config.rate_limit.fingerprint_key = Some(Secret::new("shared-by-the-replicas"));
}

/// A second gateway in front of `sandbox_of`'s sandbox, with its own settings.
async fn replica(sandbox_of: &Harness, mut config: Config) -> Harness {
    config.sandbox.enabled = false;
    patchbay::app::use_sandbox(&mut config, sandbox_of.app.sandbox().unwrap());
    Harness::with_config(config).await
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .header("retry-after")
        .expect("a 429 has Retry-After")
        .parse()
        .unwrap()
}

/// Our own 429: no provider answered.
fn assert_ours(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.body["upstream_status"],
        Value::Null,
        "{:?}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_mode_answers_429_with_headers_and_nothing_reaches_the_provider() {
    let h = Harness::with_config(limited(&[(2, 60)])).await;
    h.clear_log().await;

    // A validation failure consumes nothing.
    let invalid = h.patch(&juice(), &json!({"phone": "not a phone"})).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.header("ratelimit"), None);

    let first = h.get(&juice()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.header("ratelimit-policy"), Some(r#""min";q=2;w=60"#));
    assert_eq!(first.header("ratelimit"), Some(r#""min";r=1;t=60"#));
    let second = h.get(&juice()).await;
    assert_eq!(second.header("ratelimit").unwrap(), r#""min";r=0;t=60"#);

    let refused = h.get(&juice()).await;
    assert_ours(&refused);
    assert!((59..=60).contains(&retry_after(&refused)), "{refused:?}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""min";q=2;w=60"#)
    );
    assert!(refused
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""min";r=0;t="#));
    assert_eq!(refused.body["type"], "urn:patchbay:problem:rate-limited");
    assert_eq!(
        h.log("juice").await.len(),
        2,
        "the refused request reached Juice"
    );

    // Unlimited providers carry no headers.
    let sweet = h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await;
    assert_eq!(
        (sweet.status.as_u16(), sweet.header("ratelimit")),
        (200, None)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_merge_write_reserves_both_calls_or_none() {
    let h = Harness::with_config(limited(&[(2, 60)])).await;
    assert_eq!(h.get(&juice()).await.status, 200);
    h.clear_log().await;
    // A billing address change is a read and a write: one slot left is not enough.
    let patch = json!({"billing_address": {"city": "Abuja"}});
    let refused = h.patch(&juice(), &patch).await;
    assert_ours(&refused);
    assert!(h.log("juice").await.is_empty());
    // The refusal took nothing: the last slot is still there for a one-call request.
    let last = h.get(&juice()).await;
    assert_eq!(last.status, 200, "{:?}", last.body);
    assert_eq!(last.header("ratelimit"), Some(r#""min";r=0;t=60"#));

    // A write that needs more calls than a window ever allows is a configuration problem.
    let h = Harness::with_config(limited(&[(1, 60)])).await;
    let never = h.patch(&juice(), &patch).await;
    assert_eq!(never.status, 503, "{:?}", never.body);
    assert!(h.log("juice").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_429_pauses_the_credential_without_calling_again() {
    let h = Harness::with_config(limited(&[(10, 60)])).await;
    h.fault(
        "juice",
        json!({"status": 429, "headers": {"Retry-After": "30"}, "times": 1}),
    )
    .await;
    h.clear_log().await;
    let theirs = h.get(&juice()).await;
    assert_eq!(theirs.status, 429);
    assert_eq!(theirs.body["upstream_status"], 429);
    assert_eq!(theirs.header("ratelimit"), Some(r#""min";r=0;t=30"#));

    let ours = h.get(&juice()).await;
    assert_ours(&ours);
    assert!((29..=30).contains(&retry_after(&ours)), "{ours:?}");
    assert_eq!(
        h.log("juice").await.len(),
        1,
        "the pause let a call through"
    );

    // Unlimited providers are paused too.
    h.fault("sweetspot", json!({"status": 429, "times": 1}))
        .await;
    let sweet = format!("sweetspot:{SWEETSPOT_ID}");
    assert_eq!(h.get(&sweet).await.body["upstream_status"], 429);
    assert_ours(&h.get(&sweet).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_refreshes_and_retries_count_and_an_unplanned_call_that_does_not_fit_is_not_sent() {
    let count = format!("count:{COUNT_ID}");
    let mut config = test_config();
    config
        .providers
        .get_mut("count")
        .unwrap()
        .rate_limit
        .windows = windows(&[(3, 60)]);
    let h = Harness::with_config(config).await;
    h.expire_tokens().await;
    h.clear_log().await;
    // GET (401) → refresh → GET again: three calls, all counted.
    assert_eq!(h.get(&count).await.status, 200);
    assert_eq!(h.log("count").await.len(), 3);
    assert_ours(&h.get(&count).await);

    let mut config = test_config();
    config
        .providers
        .get_mut("count")
        .unwrap()
        .rate_limit
        .windows = windows(&[(2, 60)]);
    let h = Harness::with_config(config).await;
    h.expire_tokens().await;
    h.clear_log().await;
    // The refresh takes the second slot; the retry finds none and is never sent.
    assert_ours(&h.get(&count).await);
    let calls: Vec<String> = h
        .log("count")
        .await
        .iter()
        .map(|e| format!("{} {}", e["method"], e["path"]))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_mode_queues_callers_in_order_and_bounds_the_queue() {
    let mut config = limited(&[(1, 2)]);
    let settings = &mut config.providers.get_mut("juice").unwrap().rate_limit;
    settings.mode = LimitMode::Wait;
    settings.max_wait_ms = 5_000;
    settings.max_queue = 4;
    let h = Harness::with_config(config).await;
    h.clear_log().await;
    let started = Instant::now();
    let id = juice();
    let (a, b, c) = tokio::join!(h.get(&id), h.get(&id), h.get(&id));
    for answer in [&a, &b, &c] {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    assert!(started.elapsed() >= Duration::from_millis(4_000));
    let at: Vec<u64> = h
        .log("juice")
        .await
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(at.len(), 3);
    assert!(
        at.windows(2).all(|pair| pair[1] - pair[0] >= 2_000),
        "{at:?}"
    );

    // One caller may wait; a third is refused at once. A caller whose calls do not fit within
    // max_wait_ms is refused after waiting that long.
    let mut config = limited(&[(1, 2)]);
    let settings = &mut config.providers.get_mut("juice").unwrap().rate_limit;
    settings.mode = LimitMode::Wait;
    settings.max_queue = 1;
    let h = Harness::with_config(config).await;
    let id = juice();
    let (a, b, c) = tokio::join!(h.get(&id), h.get(&id), h.get(&id));
    let mut statuses = [a.status, b.status, c.status].map(|s| s.as_u16());
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);

    let mut config = limited(&[(1, 60)]);
    let settings = &mut config.providers.get_mut("juice").unwrap().rate_limit;
    settings.mode = LimitMode::Wait;
    settings.max_wait_ms = 500;
    let h = Harness::with_config(config).await;
    assert_eq!(h.get(&juice()).await.status, 200);
    let started = Instant::now();
    let late = h.get(&juice()).await;
    assert_ours(&late);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!((59..=60).contains(&retry_after(&late)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_list_fingerprints_and_what_is_left_never_credentials() {
    let h = Harness::with_config(limited(&[(10, 60), (1000, 86_400)])).await;
    assert_eq!(h.get(&juice()).await.status, 200);
    let answer = h
        .send(
            Method::GET,
            &h.admin_url("/quotas"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(!String::from_utf8_lossy(&answer.raw).contains(JUICE_API_KEY));
    let quotas = answer.body["quotas"].as_array().unwrap();
    assert_eq!(quotas.len(), 1, "only limited credentials: {quotas:?}");
    let juice = &quotas[0];
    assert_eq!(juice["provider"], "juice");
    // A short prefix, keyed per process: not a value to check a guessed key against offline.
    let shown = juice["fingerprint"].as_str().unwrap();
    assert_eq!(shown.len(), 12, "{shown}");
    assert!(shown.bytes().all(|b| b.is_ascii_hexdigit()), "{shown}");
    for public_key in ["patchbay", ""] {
        let guessable = fingerprint(&Secret::new(public_key), JUICE_API_KEY);
        assert!(!guessable.starts_with(shown), "keyed with {public_key:?}");
    }
    assert_eq!(juice["windows"][0]["name"], "min");
    assert_eq!(juice["windows"][0]["remaining"], 9);
    assert_eq!(juice["windows"][1]["remaining"], 999);

    let post = h
        .send(
            Method::POST,
            &h.admin_url("/quotas"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        (post.status.as_u16(), post.header("allow")),
        (405, Some("GET, HEAD"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_fails_closed_or_falls_back_to_a_local_share() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{closed}/");
    let mut config = limited(&[(4, 60)]);
    redis_config(&mut config, &url);
    let h = Harness::with_config(config.clone()).await;
    let answer = h.get(&juice()).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.body["detail"], "shared rate-limit store unreachable");
    // An unlimited provider does not depend on the store.
    assert_eq!(
        h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await.status,
        200
    );

    config.rate_limit.on_store_error = OnStoreError::Local;
    config.rate_limit.replicas = 2;
    let h = Harness::with_config(config).await;
    for _ in 0..2 {
        assert_eq!(h.get(&juice()).await.status, 200);
    }
    assert_ours(&h.get(&juice()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_quota_through_redis() {
    let redis = RedisServer::start();
    let mut config = limited(&[(3, 60)]);
    redis_config(&mut config, &redis.url());
    let a = Harness::with_config(config.clone()).await;
    let b = replica(&a, config).await;
    a.clear_log().await;
    assert_eq!(a.get(&juice()).await.status, 200);
    assert_eq!(b.get(&juice()).await.status, 200);
    let third = a.get(&juice()).await;
    assert_eq!(third.header("ratelimit"), Some(r#""min";r=0;t=60"#));
    assert_ours(&b.get(&juice()).await);
    assert_ours(&a.get(&juice()).await);
    assert_eq!(a.log("juice").await.len(), 3);
}

/// The most calls in any sliding window of `span_ms`.
fn busiest_window(mut at: Vec<u64>, span_ms: u64) -> usize {
    at.sort_unstable();
    let mut first = 0;
    let mut busiest = 0;
    for last in 0..at.len() {
        while at[last] - at[first] >= span_ms {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: three patchbay processes hammer one Juice key through Redis for 75 s"]
async fn three_gateways_sharing_one_key_through_redis_never_exceed_the_quota() {
    let redis = RedisServer::start();
    // The sandbox (with Juice's documented limits) runs in this test; the three gateways are real
    // patchbay processes configured only through the environment, sharing Juice's key through Redis,
    // with Juice's default windows (10 per 60 s and 1000 per 86 400 s).
    let sandbox = Harness::start().await;
    let juice_url = sandbox.app.sandbox().unwrap().base_url("juice").unwrap();
    let redis_url = redis.url();
    let env = [
        ("RUST_LOG", "info"),
        ("PATCHBAY_SANDBOX__ENABLED", "false"),
        ("PATCHBAY_PROVIDERS__JUICE__BASE_URL", juice_url.as_str()),
        ("PATCHBAY_PROVIDERS__JUICE__API_KEY", JUICE_API_KEY),
        ("PATCHBAY_RATE_LIMIT__BACKEND", "redis"),
        ("PATCHBAY_RATE_LIMIT__REDIS_URL", redis_url.as_str()),
        (
            "PATCHBAY_RATE_LIMIT__FINGERPRINT_KEY",
            "shared-by-the-replicas",
        ),
    ];
    let processes: Vec<GatewayProcess> = (0..3).map(|_| GatewayProcess::spawn(&env)).collect();
    let gateways: Vec<String> = processes
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect();
    sandbox.clear_log().await;

    let deadline = Instant::now() + Duration::from_secs(75);
    let customer = format!("/customers/{}", juice());
    let clients: Vec<_> = (0..9)
        .map(|client| {
            let base = gateways[client % 3].clone();
            let url = format!("{base}{customer}");
            tokio::spawn(async move {
                let http = http_client();
                let json = [("content-type", "application/merge-patch+json")];
                let mut seen = Vec::new();
                let mut turn = 0;
                while Instant::now() < deadline {
                    turn += 1;
                    let answer = match (client + turn) % 3 {
                        // A read-merge-write: two calls reserved together.
                        0 => {
                            let city = format!("City {client}-{turn}");
                            let patch = json!({"billing_address": {"city": city}}).to_string();
                            send(&http, Method::PATCH, &url, &json, patch).await
                        }
                        1 => {
                            let patch = json!({"first_name": "Ada"}).to_string();
                            send(&http, Method::PATCH, &url, &json, patch).await
                        }
                        _ => send(&http, Method::GET, &url, &[], "").await,
                    };
                    seen.push((
                        answer.status.as_u16(),
                        answer.body["upstream_status"].clone(),
                    ));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();
    let mut seen: Vec<(u16, Value)> = Vec::new();
    for client in clients {
        seen.extend(client.await.expect("a client ran to the end"));
    }
    let theirs: Vec<&(u16, Value)> = seen.iter().filter(|(_, up)| !up.is_null()).collect();
    assert!(
        theirs.is_empty(),
        "provider answers reached callers: {theirs:?}"
    );
    let unexpected: Vec<&(u16, Value)> = seen
        .iter()
        .filter(|(s, _)| ![200, 429].contains(s))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");

    let at: Vec<u64> = sandbox
        .log("juice")
        .await
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    let busiest = busiest_window(at.clone(), 60_000);
    assert!(
        busiest <= 10,
        "{busiest} calls in one sliding minute: {at:?}"
    );
    // Not starved either: two full minutes' worth within 75 s.
    assert!(at.len() >= 18, "only {} calls in 75 s", at.len());
    let ok = seen.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "{} calls reached Juice, at most {busiest} in one sliding minute; {ok} of {} requests succeeded",
        at.len(),
        seen.len()
    );
    assert!(ok >= 9, "only {ok} successes");
}
