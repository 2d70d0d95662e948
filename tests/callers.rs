//! Callers over real sockets against the sandbox: `[[clients]]` bearer tokens (401/403 before anything
//! reaches a provider), each client's own governor quota in front of the provider's sliding log, and
//! `Idempotency-Key` records (replay, 422, one write for concurrent duplicates, replicas through a real
//! `redis-server`), plus the refusal to serve a non-loopback address open.

mod common;

use common::*;
use http::Method;
use patchbay::config::{ClientConfig, ClientRate, Config, Secret, StateBackend};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const BILLING: &str = "tok-billing-9f8e7d6c5b4a";
const CRM: &str = "tok-crm-0a1b2c3d4e5f";

fn client(name: &str, token: &str) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        token_sha256: Some(Secret::new(hex::encode(Sha256::digest(token)))),
        token_sha256_file: None,
        providers: None,
        rate_limit: None,
        provider_rate_limit: Default::default(),
    }
}

fn rate(per_minute: u32, burst: u32) -> Option<ClientRate> {
    Some(ClientRate {
        per_minute,
        burst: Some(burst),
    })
}

/// billing may use every provider; crm only Juice.
fn two_clients() -> Config {
    let mut config = test_config();
    let mut crm = client("crm", CRM);
    crm.providers = Some(vec!["juice".into()]);
    config.clients = vec![client("billing", BILLING), crm];
    config
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A change each provider can store, and its demo customer.
fn change(provider: &str, value: &str) -> (String, Value) {
    let (id, field) = match provider {
        "sweetspot" => (SWEETSPOT_ID, "first_name"),
        "count" => (COUNT_ID, "company_name"),
        "juice" => (JUICE_ID, "first_name"),
        _ => (SPARKLAYER_ID, "first_name"),
    };
    (format!("{provider}:{id}"), json!({ field: value }))
}

async fn patch_as(h: &Harness, token: &str, customer: &str, body: &Value) -> Answer {
    let auth = bearer(token);
    h.patch_with(customer, body, &[("authorization", &auth)])
        .await
}

async fn keyed(h: &Harness, token: &str, key: &str, customer: &str, body: &Value) -> Answer {
    let auth = bearer(token);
    let headers = [("authorization", auth.as_str()), ("idempotency-key", key)];
    h.patch_with(customer, body, &headers).await
}

fn assert_problem(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.body["status"], status);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_clients_token_nothing_reaches_a_provider() {
    let h = Harness::with_config(two_clients()).await;
    h.clear_log().await;
    let (customer, body) = change("sweetspot", "Mallory");
    let url = h.url(&format!("/customers/{customer}"));
    let json_type = ("content-type", "application/merge-patch+json");

    let missing = h.patch(&customer, &body).await;
    assert_problem(&missing, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="patchbay""#)
    );
    let unknown = patch_as(&h, "tok-not-a-client", &customer, &body).await;
    assert_problem(&unknown, 401);
    assert!(unknown
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    for malformed in ["Basic YmlsbGluZzpwdw==", "Bearer", "Bearer a b"] {
        let answer = h
            .send(
                Method::PATCH,
                &url,
                &[json_type, ("authorization", malformed)],
                body.to_string(),
            )
            .await;
        assert_problem(&answer, 401);
        assert!(answer
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_request"));
    }
    // crm may use Juice only.
    let forbidden = patch_as(&h, CRM, &customer, &body).await;
    assert_problem(&forbidden, 403);
    assert!(
        forbidden.body["detail"]
            .as_str()
            .unwrap()
            .contains("crm may not use sweetspot; it may use: juice"),
        "{:?}",
        forbidden.body
    );
    let get = h
        .send(
            Method::GET,
            &url,
            &[("authorization", &bearer(CRM))],
            Vec::new(),
        )
        .await;
    assert_problem(&get, 403);
    // Checks 1–3 come first, check 5 after: a bad id is a 400 and a text body a 401 without a token.
    let bad_id = h.patch("sweetspot:not%20an%20id", &body).await;
    assert_problem(&bad_id, 400);
    let text = h
        .send(Method::PATCH, &url, &[("content-type", "text/plain")], "x")
        .await;
    assert_problem(&text, 401);
    assert!(h.full_log().await.is_empty(), "nothing reached a provider");

    // The token of a client that may: through, named in the metrics.
    let ok = patch_as(&h, BILLING, &customer, &body).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let crm_juice = patch_as(
        &h,
        CRM,
        &change("juice", "Eve").0,
        &change("juice", "Eve").1,
    )
    .await;
    assert_eq!(crm_juice.status, 200, "{:?}", crm_juice.body);
    assert_eq!(writes(&h.full_log().await).len(), 2);
    // (The registry is the process's: other tests of this file count into it too.)
    let metrics = get_text(&h.admin_url("/metrics")).await;
    for series in [
        r#"patchbay_http_requests_total{provider="sweetspot",client="billing",method="PATCH",status="200"} "#,
        r#"patchbay_http_requests_total{provider="juice",client="crm",method="PATCH",status="200"} "#,
        r#"patchbay_http_requests_total{provider="sweetspot",client="crm",method="PATCH",status="403"} "#,
        r#"patchbay_http_requests_total{provider="sweetspot",client="none",method="PATCH",status="401"} "#,
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
}

async fn get_text(url: &str) -> String {
    String::from_utf8(get(url).await.raw.to_vec()).unwrap()
}

/// `n` GETs of the demo Juice customer as `token`: their statuses.
async fn gets(h: &Harness, token: &str, n: usize) -> Vec<u16> {
    let url = h.url(&format!("/customers/juice:{JUICE_ID}"));
    let auth = bearer(token);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let answer = h
            .send(Method::GET, &url, &[("authorization", &auth)], Vec::new())
            .await;
        statuses.push(answer.status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_quota_bursts_refills_and_is_the_clients_own() {
    let mut config = two_clients();
    // 60 a minute: a cell a second, 3 at once.
    config.clients[0].rate_limit = rate(60, 3);
    config.clients[1].rate_limit = rate(60, 3);
    let h = Harness::with_config(config).await;
    h.clear_log().await;
    // Requests refused earlier (422, 415, 401) take nothing from the quota.
    let (customer, _) = change("juice", "");
    let invalid = patch_as(&h, BILLING, &customer, &json!({"email": "not an address"})).await;
    assert_eq!(invalid.status, 422);
    for _ in 0..4 {
        patch_as(&h, BILLING, &customer, &json!({"email": "nope"})).await;
    }
    assert_eq!(gets(&h, BILLING, 4).await, [200, 200, 200, 429]);
    assert_eq!(h.log("juice").await.len(), 3, "the refusal reached nobody");

    let url = h.url(&format!("/customers/juice:{JUICE_ID}"));
    let refused = h
        .send(
            Method::GET,
            &url,
            &[("authorization", &bearer(BILLING))],
            Vec::new(),
        )
        .await;
    assert_problem(&refused, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""client";q=60;w=60"#)
    );
    assert_eq!(refused.header("ratelimit"), Some(r#""client";r=0;t=1"#));
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("client billing is over its own quota"));

    // crm's quota is its own.
    assert_eq!(gets(&h, CRM, 3).await, [200, 200, 200]);
    let metrics = get_text(&h.admin_url("/metrics")).await;
    let series =
        r#"patchbay_client_rate_limit_decisions_total{client="billing",decision="rejected"} "#;
    assert!(metrics.contains(series), "no {series} in\n{metrics}");
    // One cell a second comes back.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(gets(&h, BILLING, 2).await, [200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_refusal_spends_nothing_of_the_providers_quota() {
    let mut config = two_clients();
    config
        .providers
        .get_mut("juice")
        .unwrap()
        .rate_limit
        .windows = windows(&[(3, 60)]);
    config.clients[1].rate_limit = rate(1, 2);
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    // crm: two through, three refused by its own quota.
    assert_eq!(gets(&h, CRM, 5).await, [200, 200, 429, 429, 429]);
    // So Juice's credential has one call left, for billing; then Juice's own quota refuses.
    let statuses = gets(&h, BILLING, 2).await;
    assert_eq!(statuses, [200, 429]);
    let url = h.url(&format!("/customers/juice:{JUICE_ID}"));
    let provider_refusal = h
        .send(
            Method::GET,
            &url,
            &[("authorization", &bearer(BILLING))],
            Vec::new(),
        )
        .await;
    assert_eq!(
        provider_refusal.header("ratelimit-policy"),
        Some(r#""min";q=3;w=60"#)
    );
    assert_eq!(h.log("juice").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_refusal_gives_the_clients_cell_back() {
    let mut config = two_clients();
    config
        .providers
        .get_mut("juice")
        .unwrap()
        .rate_limit
        .windows = windows(&[(1, 2)]);
    // crm: one request a minute.
    config.clients[1].rate_limit = rate(1, 1);
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    assert_eq!(gets(&h, BILLING, 1).await, [200], "Juice's one call in 2 s");
    let url = h.url(&format!("/customers/juice:{JUICE_ID}"));
    let refused = h
        .send(
            Method::GET,
            &url,
            &[("authorization", &bearer(CRM))],
            Vec::new(),
        )
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("ratelimit-policy"), Some(r#""2s";q=1;w=2"#));
    // Juice's window is over; crm's one cell of the minute is still there.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(gets(&h, CRM, 2).await, [200, 429]);
}

/// Replays a keyed PATCH to `provider` and checks what reached it.
async fn replays_for(h: &Harness, provider: &str) {
    h.clear_log().await;
    let key = format!("key-{provider}-1");
    let (customer, body) = change(provider, "Replayed Ltd");
    let first = keyed(h, BILLING, &key, &customer, &body).await;
    assert_eq!(first.status, 200, "{provider}: {:?}", first.body);
    assert!(first.header("idempotent-replayed").is_none());
    let writes_then = writes(&h.log(provider).await).len();
    assert_eq!(writes_then, 1, "{provider}");
    let calls_then = h.log(provider).await.len();

    let again = keyed(h, BILLING, &key, &customer, &body).await;
    assert_eq!(again.status, 200, "{provider}");
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{provider}"
    );
    assert_eq!(again.raw, first.raw, "{provider}: the stored answer");
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(
        h.log(provider).await.len(),
        calls_then,
        "{provider}: no call"
    );

    // The same key with another body is a 422, and nothing is sent.
    let (_, other) = change(provider, "Someone Else");
    let reused = keyed(h, BILLING, &key, &customer, &other).await;
    assert_problem(&reused, 422);
    assert!(reused.body["detail"]
        .as_str()
        .unwrap()
        .contains("used with another request"));
    assert_eq!(h.log(provider).await.len(), calls_then, "{provider}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_patch_is_replayed_for_every_provider() {
    let h = Harness::with_config(two_clients()).await;
    h.lift_limits().await;
    for provider in ["sweetspot", "count", "juice", "sparklayer"] {
        replays_for(&h, provider).await;
    }
    // Juice still receives the caller's key itself.
    h.clear_log().await;
    let (customer, body) = change("juice", "Key Forwarded");
    keyed(&h, BILLING, "forwarded-1", &customer, &body).await;
    let log = h.log("juice").await;
    assert_eq!(writes(&log)[0]["headers"]["idempotency-key"], "forwarded-1");

    // Keys are per client: crm's "key-juice-1" is not billing's.
    h.clear_log().await;
    let (customer, body) = change("juice", "Replayed Ltd");
    let crm = keyed(&h, CRM, "key-juice-1", &customer, &body).await;
    assert_eq!(crm.status, 200);
    assert!(crm.header("idempotent-replayed").is_none());
    assert_eq!(writes(&h.log("juice").await).len(), 1);
    // Member order and spacing do not make another request.
    let url = h.url(&format!("/customers/{customer}"));
    let auth = bearer(CRM);
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "ordered"),
        ("content-type", "application/merge-patch+json"),
    ];
    let mut answers = Vec::new();
    for raw in [
        r#"{"first_name":"Two","last_name":"Fields"}"#,
        r#"{ "last_name": "Fields", "first_name": "Two" }"#,
    ] {
        answers.push(h.send(Method::PATCH, &url, &headers, raw).await);
    }
    assert_eq!(answers[0].status, 200, "{:?}", answers[0].body);
    assert_eq!(answers[1].header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicates_against_a_slow_provider_write_once() {
    let h = Harness::with_config(two_clients()).await;
    h.lift_limits().await;
    h.clear_log().await;
    h.fault("juice", json!({"latency_ms": 600})).await;
    let (customer, body) = change("juice", "Only Once");
    let tries = (0..5).map(|_| keyed(&h, BILLING, "dup-1", &customer, &body));
    let answers = futures_util::future::join_all(tries).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409], "{answers:?}");
    let conflict = answers.iter().find(|a| a.status == 409).unwrap();
    assert_problem(conflict, 409);
    assert_eq!(writes(&h.log("juice").await).len(), 1, "exactly one write");
    // Once answered, the duplicate is a replay.
    let after = keyed(&h, BILLING, "dup-1", &customer, &body).await;
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(writes(&h.log("juice").await).len(), 1);
    // (The registry is the process's: other tests count into it too.)
    let metrics = get_text(&h.admin_url("/metrics")).await;
    for outcome in ["stored", "replayed", "in_flight"] {
        let series = format!("patchbay_idempotency_requests_total{{outcome=\"{outcome}\"}} ");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_a_retry_could_change_is_not_kept() {
    let mut config = two_clients();
    config.clients[0].rate_limit = rate(1, 1);
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    h.clear_log().await;
    let (customer, body) = change("juice", "Retried");
    h.fault("juice", json!({"status": 503})).await;
    let failed = keyed(&h, BILLING, "retry-1", &customer, &body).await;
    assert_problem(&failed, 502);
    h.clear_fault("juice").await;
    // The client's quota refuses the retry (429, not kept either) ...
    let limited = keyed(&h, BILLING, "retry-1", &customer, &body).await;
    assert_problem(&limited, 429);
    assert!(limited.header("idempotent-replayed").is_none());
    // ... and crm, with the same key, is another scope: it runs.
    let crm = keyed(
        &h,
        CRM,
        "retry-1",
        &change("juice", "x").0,
        &change("juice", "x").1,
    )
    .await;
    assert_eq!(crm.status, 200);
    // A 4xx of the provider is kept: Juice's 404 for a customer it does not have.
    let missing = "juice:00000000-0000-4000-8000-000000000000";
    let first = keyed(&h, CRM, "missing-1", missing, &body).await;
    assert_problem(&first, 404);
    let again = keyed(&h, CRM, "missing-1", missing, &body).await;
    assert_problem(&again, 404);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_record_cache_keeps_the_newest() {
    let mut config = two_clients();
    config.idempotency.max_entries = 16;
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    let (customer, body) = change("juice", "Cached");
    let keys: Vec<String> = (0..200).map(|i| format!("cache-{i}")).collect();
    for key in &keys {
        assert_eq!(keyed(&h, BILLING, key, &customer, &body).await.status, 200);
    }
    // moka applies its eviction policy in housekeeping, at most every few hundred milliseconds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    keyed(&h, BILLING, "cache-housekeeping", &customer, &body).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    h.clear_log().await;
    for key in &keys[197..] {
        let again = keyed(&h, BILLING, key, &customer, &body).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{key}");
    }
    assert!(writes(&h.log("juice").await).is_empty());
}

/// A gateway process with `extra` settings over the harness's Juice, its clients from `toml`.
fn replica(h: &Harness, toml: &std::path::Path, extra: &[(&str, &str)]) -> GatewayProcess {
    let mut env: Env = vec![
        ("PATCHBAY_SANDBOX__ENABLED".into(), "false".into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    env.extend(provider_env(h, "juice"));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = toml.display().to_string();
    GatewayProcess::spawn_with(&["--config", &config], &pairs)
}

/// A config file naming billing as a client, removed when dropped.
struct ClientsToml(std::path::PathBuf);

impl ClientsToml {
    fn new(name: &str) -> ClientsToml {
        let path = std::env::temp_dir().join(format!(
            "patchbay-clients-{name}-{}.toml",
            uuid::Uuid::new_v4().simple()
        ));
        let text = format!(
            "[[clients]]\nname = \"billing\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(Sha256::digest(BILLING))
        );
        std::fs::write(&path, text).unwrap();
        ClientsToml(path)
    }
}

impl Drop for ClientsToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Two replicas keeping state in one real redis-server: the harness (and its sandbox, configured by
/// `tweak`) and a patchbay process over the harness's Juice. Fields drop in order: the gateways first.
struct Replicas {
    h: Harness,
    other: GatewayProcess,
    _redis: RedisServer,
    _toml: ClientsToml,
}

async fn replicas(name: &str, tweak: impl FnOnce(&mut Config)) -> Replicas {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut config = two_clients();
    config.state.backend = StateBackend::Redis;
    config.state.redis_url = Some(Secret::new(url.clone()));
    tweak(&mut config);
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    let toml = ClientsToml::new(name);
    let state = [
        ("PATCHBAY_STATE__BACKEND", "redis"),
        ("PATCHBAY_STATE__REDIS_URL", url.as_str()),
    ];
    let other = replica(&h, &toml.0, &state);
    h.clear_log().await;
    Replicas {
        h,
        other,
        _redis: redis,
        _toml: toml,
    }
}

async fn keyed_at(addr: &str, key: &str, body: &Value) -> Answer {
    let auth = bearer(BILLING);
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", key),
        ("content-type", "application/merge-patch+json"),
    ];
    let url = format!("http://{addr}/customers/juice:{JUICE_ID}");
    send(
        &http_client(),
        Method::PATCH,
        &url,
        &headers,
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_replay_each_others_records_through_redis() {
    let Replicas { h, other, .. } = &replicas("replica", |_| {}).await;
    let here = h.app.addr().to_string();
    let there = other.addr();
    let body = json!({"first_name": "Shared"});

    let first = keyed_at(&here, "shared-1", &body).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replayed = keyed_at(&there, "shared-1", &body).await;
    assert_eq!(replayed.status, 200, "{:?}", replayed.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.raw, first.raw);
    let reused = keyed_at(&there, "shared-1", &json!({"first_name": "Other"})).await;
    assert_problem(&reused, 422);
    assert_eq!(writes(&h.log("juice").await).len(), 1);

    // Duplicates at both replicas at once, Juice slow: one write between them.
    h.fault("juice", json!({"latency_ms": 600})).await;
    let body = json!({"first_name": "Raced"});
    let (a, b) = tokio::join!(keyed_at(&here, "raced-1", &body), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keyed_at(&there, "raced-1", &body).await
    });
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    assert_eq!(writes(&h.log("juice").await).len(), 2);
    h.clear_fault("juice").await;
    let later = keyed_at(&there, "raced-1", &body).await;
    assert_eq!(later.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_in_flight_longer_than_its_lock_stays_held() {
    // A keyed PATCH waits ~7 s in Juice's queue: longer than its key's 5 s lock, which it must renew.
    let Replicas { h, other, .. } = &replicas("renew", |config| {
        let juice = config.providers.get_mut("juice").unwrap();
        juice.rate_limit.windows = windows(&[(1, 7)]);
        juice.rate_limit.mode = patchbay::config::LimitMode::Wait;
        juice.rate_limit.max_wait_ms = 9_000;
    })
    .await;
    let there = other.addr();
    let here = h.app.addr().to_string();
    assert_eq!(gets(h, BILLING, 1).await, [200], "Juice's one call in 7 s");
    let body = json!({"first_name": "Patient"});
    let (first, duplicate) = tokio::join!(keyed_at(&here, "slow-1", &body), async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        keyed_at(&there, "slow-1", &body).await
    });
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_problem(&duplicate, 409);
    assert_eq!(writes(&h.log("juice").await).len(), 1, "one write");
    let later = keyed_at(&there, "slow-1", &body).await;
    assert_eq!(later.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_a_keyed_write_whose_caller_left() {
    let Replicas {
        h, other: leaving, ..
    } = &mut replicas("drain", |_| {}).await;
    let there = leaving.addr();
    h.fault("juice", json!({"latency_ms": 1500})).await;
    let body = json!({"first_name": "Finished"});
    // The caller gives up after 300 ms and hangs up; the replica is told to stop right after.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        keyed_at(&there, "left-1", &body),
    )
    .await;
    assert!(gave_up.is_err(), "the caller hung up before the answer");
    leaving.signal("TERM");
    assert_eq!(leaving.exit_code(), Some(0), "{}", leaving.all_output());
    h.clear_fault("juice").await;
    // The write ran to its end and was recorded: the retry, at the other replica, is a replay.
    let retry = keyed_at(&h.app.addr().to_string(), "left-1", &body).await;
    assert_eq!(
        retry.header("idempotent-replayed"),
        Some("true"),
        "{:?}",
        retry.body
    );
    assert_eq!(writes(&h.log("juice").await).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_gateway_refuses_a_non_loopback_address() {
    let open = [("PATCHBAY_SERVER__LISTEN", "0.0.0.0:0")];
    let mut refused = GatewayProcess::spawn(&open);
    assert_eq!(refused.exit_code(), Some(2));
    let said = refused.all_output();
    assert!(
        said.contains("0.0.0.0:0 is not a loopback address and no [[clients]] are configured")
            && said.contains("server.allow_unauthenticated = true"),
        "{said}"
    );
    // On purpose, it serves.
    let allowed =
        GatewayProcess::spawn(&[open[0], ("PATCHBAY_SERVER__ALLOW_UNAUTHENTICATED", "true")]);
    allowed.addr();
    // With clients it serves, and the token never reaches the log, even at debug.
    let toml = ClientsToml::new("open");
    let config = toml.0.display().to_string();
    let guarded =
        GatewayProcess::spawn_with(&["--config", &config], &[open[0], ("RUST_LOG", "debug")]);
    let port = guarded.addr().rsplit(':').next().unwrap().to_owned();
    let addr = format!("127.0.0.1:{port}");
    let answer = keyed_at(&addr, "logged-1", &json!({"first_name": "Logged"})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !guarded.all_output().contains("client=billing") {
        assert!(Instant::now() < deadline, "{}", guarded.all_output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !guarded.all_output().contains(BILLING),
        "the token was logged"
    );
}
