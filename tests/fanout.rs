//! Linked customers over real sockets against the sandbox: links (`PUT`/`GET`/`DELETE /links/{id}`),
//! one canonical PATCH fanned out to every provider a link names, each in its own dialect, admitted
//! all or none, resumable with an `Idempotency-Key`, the reads merged; replicas sharing links and
//! records through a real `redis-server`, links surviving a restart of a real process.

mod common;

use common::*;
use http::Method;
use patchbay::config::{ClientConfig, Secret};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const CT: (&str, &str) = ("content-type", "application/merge-patch+json");

/// The four demo customers, in this order.
fn all_four() -> Value {
    json!({"sweetspot": SWEETSPOT_ID, "count": COUNT_ID, "juice": JUICE_ID, "sparklayer": SPARKLAYER_ID})
}

async fn put_link(h: &Harness, id: &str, body: &Value) -> Answer {
    let headers = [("content-type", "application/json")];
    h.send(
        Method::PUT,
        &h.url(&format!("/links/{id}")),
        &headers,
        body.to_string(),
    )
    .await
}

async fn patch_link(h: &Harness, id: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![CT];
    all.extend_from_slice(headers);
    let url = h.url(&format!("/customers/{id}"));
    h.send(Method::PATCH, &url, &all, body.to_string()).await
}

/// A harness with the sandbox's limits lifted and its log empty.
async fn harness() -> Harness {
    let h = Harness::start().await;
    h.lift_limits().await;
    h
}

/// What reached `provider` besides token calls: (method, path, body).
async fn calls(h: &Harness, provider: &str) -> Vec<(String, String, Value)> {
    h.log(provider)
        .await
        .into_iter()
        .filter(|entry| {
            let path = entry["path"].as_str().unwrap_or("");
            !path.ends_with("auth/token") && !path.ends_with("refresh-user-access-token")
        })
        .map(|entry| {
            let text = |key: &str| entry[key].as_str().unwrap_or("").to_owned();
            (text("method"), text("path"), entry["body"].clone())
        })
        .collect()
}

const PROVIDERS: [&str; 4] = ["sweetspot", "count", "juice", "sparklayer"];

#[tokio::test(flavor = "multi_thread")]
async fn each_leg_sends_exactly_what_its_own_patch_would() {
    let h = harness().await;
    // A patch every provider can store: one address part, merged into each one's own shape.
    let patch = json!({"billing_address": {"city": "Leeds"}});
    let mut alone = Vec::new();
    for (provider, id) in [
        ("sweetspot", SWEETSPOT_ID),
        ("count", COUNT_ID),
        ("juice", JUICE_ID),
        ("sparklayer", SPARKLAYER_ID),
    ] {
        h.reset().await;
        h.lift_limits().await;
        h.clear_log().await;
        let answer = h.patch(&format!("{provider}:{id}"), &patch).await;
        assert_eq!(answer.status, 200, "{provider}: {:?}", answer.body);
        alone.push(calls(&h, provider).await);
    }
    h.reset().await;
    h.lift_limits().await;
    assert_eq!(put_link(&h, "acme", &all_four()).await.status, 201);
    h.clear_log().await;
    let answer = patch_link(&h, "acme", &patch, &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["id"], "acme");
    for (provider, alone) in PROVIDERS.into_iter().zip(alone) {
        assert_eq!(calls(&h, provider).await, alone, "{provider}");
        let customer = &answer.body["customers"][provider];
        assert_eq!(customer["billing_address"]["city"], "Leeds", "{provider}");
        assert_eq!(customer["provider"], provider);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leg_that_cannot_be_admitted_writes_nothing_anywhere() {
    let mut config = test_config();
    // Juice: two calls a minute; COUNT: four.
    config
        .providers
        .get_mut("juice")
        .unwrap()
        .rate_limit
        .windows = windows(&[(2, 60)]);
    config
        .providers
        .get_mut("count")
        .unwrap()
        .rate_limit
        .windows = windows(&[(4, 60)]);
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    assert_eq!(put_link(&h, "acme", &all_four()).await.status, 201);
    for _ in 0..2 {
        assert_eq!(h.get(&format!("juice:{JUICE_ID}")).await.status, 200);
    }
    h.clear_log().await;
    let answer = patch_link(
        &h,
        "acme",
        &json!({"billing_address": {"city": "Leeds"}}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 429, "{:?}", answer.body);
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(answer.body["detail"].as_str().unwrap().contains("juice"));
    let log = h.full_log().await;
    assert!(log.is_empty(), "nothing reached any provider: {log:?}");
    // COUNT's reservation (a read-merge-write: two calls) was given back: four calls still fit.
    for _ in 0..4 {
        let answer = h.get(&format!("count:{COUNT_ID}")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_faulted_leg_is_a_207_and_a_keyed_retry_runs_only_that_leg() {
    let h = harness().await;
    assert_eq!(put_link(&h, "acme", &all_four()).await.status, 201);
    h.fault("juice", json!({"status": 503})).await;
    h.clear_log().await;
    let patch = json!({"billing_address": {"city": "Leeds"}});
    let key = [("idempotency-key", "retry-me-1")];
    let answer = patch_link(&h, "acme", &patch, &key).await;
    assert_eq!(answer.status, 207, "{:?}", answer.body);
    let legs = &answer.body["legs"];
    assert_eq!(legs["juice"]["status"], 502);
    assert_eq!(legs["juice"]["problem"]["provider"], "juice");
    for provider in ["sweetspot", "count", "sparklayer"] {
        assert_eq!(legs[provider]["status"], 200, "{provider}");
        assert_eq!(
            legs[provider]["customer"]["billing_address"]["city"],
            "Leeds"
        );
        assert!(
            !writes(&h.log(provider).await).is_empty(),
            "{provider} written"
        );
    }
    h.clear_fault("juice").await;
    h.clear_log().await;
    let retried = patch_link(&h, "acme", &patch, &key).await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(
        retried.body["customers"]["juice"]["billing_address"]["city"],
        "Leeds"
    );
    for provider in ["sweetspot", "count", "sparklayer"] {
        assert!(
            calls(&h, provider).await.is_empty(),
            "{provider} called again"
        );
    }
    assert_eq!(writes(&h.log("juice").await).len(), 1, "juice written once");
    // Every leg done: the whole answer again, nothing called.
    h.clear_log().await;
    let replayed = patch_link(&h, "acme", &patch, &key).await;
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert!(h.full_log().await.is_empty());
    // Another body under the key is refused.
    let other = patch_link(
        &h,
        "acme",
        &json!({"billing_address": {"city": "York"}}),
        &key,
    )
    .await;
    assert_eq!(other.status, 422, "{:?}", other.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_names_every_provider_that_cannot_store_a_field_and_lenient_skips_per_leg() {
    let h = harness().await;
    assert_eq!(put_link(&h, "acme", &all_four()).await.status, 201);
    h.clear_log().await;
    let patch = json!({"first_name": "Ada", "website": "https://ada.example"});
    let strict = patch_link(&h, "acme", &patch, &[]).await;
    assert_eq!(strict.status, 422, "{:?}", strict.body);
    let messages: Vec<&str> = strict.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    for provider in ["sweetspot", "juice", "sparklayer"] {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("{provider} cannot store"))),
            "{provider}: {messages:?}"
        );
    }
    assert!(
        messages.iter().any(|m| m.starts_with("count cannot store")),
        "first_name"
    );
    assert!(h.full_log().await.is_empty(), "nothing sent");
    let lenient = patch_link(&h, "acme", &patch, &[("prefer", "handling=lenient")]).await;
    assert_eq!(lenient.status, 200, "{:?}", lenient.body);
    assert_eq!(
        lenient.header("preference-applied"),
        Some("handling=lenient")
    );
    assert_eq!(lenient.body["skipped"]["count"], json!(["first_name"]));
    assert_eq!(lenient.body["skipped"]["juice"], json!(["website"]));
    assert_eq!(
        lenient.body["customers"]["count"]["website"],
        "https://ada.example"
    );
    assert_eq!(lenient.body["customers"]["juice"]["first_name"], "Ada");
    // An invalid value is named once, not once per leg.
    let invalid = patch_link(&h, "acme", &json!({"phone": "12"}), &[]).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.error_fields(), ["phone"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_merges_the_legs_by_precedence_and_lists_conflicts() {
    let mut config = test_config();
    config.links.precedence = vec!["count".into(), "juice".into()];
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    let link = json!({"sweetspot": SWEETSPOT_ID, "juice": JUICE_ID, "count": COUNT_ID});
    assert_eq!(put_link(&h, "acme", &link).await.status, 201);
    let read = h.get("acme").await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    let body = &read.body;
    assert_eq!(body["id"], "acme");
    // links.precedence first, then the link's own order.
    assert_eq!(body["providers"], json!(["count", "juice", "sweetspot"]));
    // Sweet Spot and Juice disagree on first_name; COUNT does not store it: Juice comes first.
    let juice = h.get(&format!("juice:{JUICE_ID}")).await.body;
    let sweetspot = h.get(&format!("sweetspot:{SWEETSPOT_ID}")).await.body;
    let count = h.get(&format!("count:{COUNT_ID}")).await.body;
    assert_eq!(body["first_name"], juice["first_name"]);
    assert_eq!(body["phone"], count["phone"]);
    let conflicts = body["conflicts"].as_array().unwrap();
    let first_name = conflicts
        .iter()
        .find(|c| c["field"] == "first_name")
        .unwrap();
    assert_eq!(
        first_name["values"],
        json!({"juice": juice["first_name"], "sweetspot": sweetspot["first_name"]})
    );
    assert!(
        !conflicts.iter().any(|c| c["field"] == "website"),
        "only COUNT stores it"
    );
    assert_eq!(
        body["provider_fields"]["sweetspot"],
        sweetspot["provider_fields"]["sweetspot"]
    );
    assert_eq!(body["legs"]["count"], json!({"status": 200}));
    // One leg failing: 207 with the others.
    h.fault("count", json!({"status": 500})).await;
    let partly = h.get("acme").await;
    assert_eq!(partly.status, 207, "{:?}", partly.body);
    assert_eq!(partly.body["legs"]["count"]["status"], 502);
    assert_eq!(
        partly.body["phone"], juice["phone"],
        "the next in precedence"
    );
    // Every leg failing: the worst status, every leg's problem.
    for provider in ["sweetspot", "juice"] {
        h.fault(provider, json!({"status": 503})).await;
    }
    let failed = h.get("acme").await;
    assert_eq!(failed.status, 502);
    assert_eq!(
        failed.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(failed.body["legs"].as_object().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_are_checked_like_everything_else() {
    let h = harness().await;
    let bad = put_link(
        &h,
        "acme",
        &json!({"count": "not-a-uuid", "mystery": "x", "juice": 5}),
    )
    .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(bad.error_fields(), ["count", "juice", "mystery"]);
    assert_eq!(put_link(&h, "acme", &json!({})).await.status, 422);
    let colon = h
        .send(
            Method::PUT,
            &h.url("/links/a%3Ab"),
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(colon.status, 400, "{:?}", colon.body);
    assert_eq!(colon.error_fields(), ["link_id"]);
    let text = h
        .send(
            Method::PUT,
            &h.url("/links/acme"),
            &[("content-type", "text/plain")],
            "{}",
        )
        .await;
    assert_eq!(text.status, 415);
    let post = h.send(Method::POST, &h.url("/links/acme"), &[], "").await;
    assert_eq!(
        (post.status.as_u16(), post.header("allow")),
        (405, Some("GET, PUT, DELETE"))
    );
    let delete = h
        .send(Method::DELETE, &h.url("/customers/acme"), &[], "")
        .await;
    assert_eq!(
        (delete.status.as_u16(), delete.header("allow")),
        (405, Some("GET, PATCH"))
    );
    assert_eq!(h.get("nobody").await.status, 404);
    assert_eq!(patch_link(&h, "nobody", &json!({}), &[]).await.status, 404);
    assert_eq!(
        h.get("juice:not-a-uuid").await.status,
        400,
        "still a provider's path"
    );
    // Created, read back in its own order, replaced, deleted.
    let link = format!(r#"{{"sweetspot":"{SWEETSPOT_ID}","juice":"{JUICE_ID}"}}"#);
    let url = h.url("/links/acme");
    let created = h
        .send(
            Method::PUT,
            &url,
            &[("content-type", "application/json")],
            link.clone(),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/links/acme"));
    let read = h.send(Method::GET, &h.url("/links/acme"), &[], "").await;
    assert_eq!(String::from_utf8_lossy(&read.raw), link);
    assert_eq!(
        put_link(&h, "acme", &json!({"juice": JUICE_ID}))
            .await
            .status,
        200
    );
    let gone = h.send(Method::DELETE, &h.url("/links/acme"), &[], "").await;
    assert_eq!(gone.status, 204);
    assert_eq!(
        h.send(Method::GET, &h.url("/links/acme"), &[], "")
            .await
            .status,
        404
    );
    assert!(h
        .full_log()
        .await
        .iter()
        .all(|e| e["method"] == "GET" || e["method"] == "POST"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_may_link_and_write_only_its_own_providers() {
    let token = "tok-links-3c2b1a";
    let mut config = test_config();
    config.clients = vec![ClientConfig {
        name: "crm".into(),
        token_sha256: Some(Secret::new(hex::encode(Sha256::digest(token)))),
        token_sha256_file: None,
        providers: Some(vec!["juice".into(), "sweetspot".into()]),
        rate_limit: None,
        provider_rate_limit: Default::default(),
    }];
    let h = Harness::with_config(config).await;
    h.lift_limits().await;
    let auth = format!("Bearer {token}");
    let json_type = ("content-type", "application/json");
    let h = &h;
    let put = |link: Value| {
        let url = h.url("/links/acme");
        let headers = [
            ("authorization", auth.clone()),
            (json_type.0, json_type.1.to_owned()),
        ];
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.send(Method::PUT, &url, &headers, link.to_string()).await
        }
    };
    let anonymous = h
        .send(Method::PUT, &h.url("/links/acme"), &[json_type], "{}")
        .await;
    assert_eq!(anonymous.status, 401);
    let refused = put(all_four()).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("count, sparklayer"), "{detail}");
    assert_eq!(put(json!({"juice": JUICE_ID})).await.status, 201);
    let headers = [("authorization", auth.as_str()), CT];
    let url = h.url("/customers/acme");
    let written = h
        .send(Method::PATCH, &url, &headers, r#"{"first_name":"Ada"}"#)
        .await;
    assert_eq!(written.status, 200, "{:?}", written.body);
    // The demo link names every provider: neither read nor written by this client.
    let demo = h
        .send(Method::GET, &h.url("/customers/demo"), &headers[..1], "")
        .await;
    assert_eq!(demo.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_fanouts_never_lose_an_update_and_never_deadlock() {
    let h = std::sync::Arc::new(harness().await);
    // The same two customers, linked in the two orders; every write a read-merge-write.
    let json_type = [("content-type", "application/json")];
    for (id, link) in [
        (
            "one",
            format!(r#"{{"juice":"{JUICE_ID}","count":"{COUNT_ID}"}}"#),
        ),
        (
            "two",
            format!(r#"{{"count":"{COUNT_ID}","juice":"{JUICE_ID}"}}"#),
        ),
    ] {
        let url = h.url(&format!("/links/{id}"));
        assert_eq!(
            h.send(Method::PUT, &url, &json_type, link).await.status,
            201
        );
    }
    h.fault("juice", json!({"latency_ms": 150})).await;
    h.fault("count", json!({"latency_ms": 150})).await;
    // A write of each customer alone holds its lock first: a fan-out that took one customer's lock
    // and waits for the other's would then meet one doing the opposite, unless both take them in
    // the same order.
    let alone: Vec<_> = [format!("juice:{JUICE_ID}"), format!("count:{COUNT_ID}")]
        .into_iter()
        .map(|customer| {
            let h = h.clone();
            let patch = json!({"billing_address": {"state": "Lagos State"}});
            tokio::spawn(async move { h.patch(&customer, &patch).await.status.as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let parts = [
        ("one", "line1", "9 Elm St"),
        ("two", "postal_code", "100001"),
        ("one", "city", "Ikeja"),
        ("two", "country", "NG"),
    ];
    let tasks: Vec<_> = parts
        .iter()
        .map(|(link, part, value)| {
            let h = h.clone();
            let patch = json!({ "billing_address": { *part: *value } });
            let link = link.to_string();
            tokio::spawn(async move { patch_link(&h, &link, &patch, &[]).await.status.as_u16() })
        })
        .collect();
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        let mut statuses = Vec::new();
        for task in alone.into_iter().chain(tasks) {
            statuses.push(task.await.unwrap());
        }
        statuses
    })
    .await
    .expect("no fan-out waits forever for another");
    assert_eq!(answered, [200; 6], "every write done");
    h.clear_fault("juice").await;
    h.clear_fault("count").await;
    for customer in [format!("juice:{JUICE_ID}"), format!("count:{COUNT_ID}")] {
        let address = h.get(&customer).await.body["billing_address"].clone();
        for (part, value) in [
            ("state", "Lagos State"),
            ("line1", "9 Elm St"),
            ("postal_code", "100001"),
            ("city", "Ikeja"),
            ("country", "NG"),
        ] {
            assert_eq!(address[part], value, "{customer}: {address}");
        }
    }
}

/// The real binary, sandbox off, every provider pointed at the harness's sandbox, `extra` settings.
fn process(h: &Harness, extra: &[(&str, &str)]) -> GatewayProcess {
    let mut env: Env = vec![
        ("PATCHBAY_SANDBOX__ENABLED".into(), "false".into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    for provider in PROVIDERS {
        env.extend(provider_env(h, provider));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    GatewayProcess::spawn(&pairs)
}

async fn send_to(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let body = match method {
        Method::GET | Method::DELETE => String::new(),
        _ => body.to_string(),
    };
    send(
        &http_client(),
        method,
        &format!("http://{addr}{path}"),
        headers,
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_access_line_name_each_leg() {
    let h = harness().await;
    let gateway = process(&h, &[]);
    let addr = gateway.addr();
    let json_type = [("content-type", "application/json")];
    let link = json!({"juice": JUICE_ID, "count": COUNT_ID});
    assert_eq!(
        send_to(&addr, Method::PUT, "/links/acme", &json_type, &link)
            .await
            .status,
        201
    );
    h.fault("count", json!({"status": 500, "times": 1})).await;
    let patch = json!({"billing_address": {"city": "Leeds"}});
    let answer = send_to(&addr, Method::PATCH, "/customers/acme", &[CT], &patch).await;
    assert_eq!(answer.status, 207, "{:?}", answer.body);
    let metrics = get(&format!("http://{}/metrics", gateway.admin_addr())).await;
    let metrics = String::from_utf8(metrics.raw.to_vec()).unwrap();
    for line in [
        r#"patchbay_fanout_legs_total{provider="juice",outcome="ok"} 1"#,
        r#"patchbay_fanout_legs_total{provider="count",outcome="failed"} 1"#,
        r#"patchbay_http_requests_total{provider="link",client="none",method="PATCH",status="207"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gateway.all_output().contains("legs=count:502,juice:200") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            gateway.all_output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_links_and_resume_each_others_fanouts() {
    let h = harness().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let state = [
        ("PATCHBAY_STATE__BACKEND", "redis"),
        ("PATCHBAY_STATE__REDIS_URL", url.as_str()),
    ];
    let (a, b) = (process(&h, &state), process(&h, &state));
    let (a, b) = (a.addr(), b.addr());
    let json_type = [("content-type", "application/json")];
    let created = send_to(&a, Method::PUT, "/links/acme", &json_type, &all_four()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let read = send_to(&b, Method::GET, "/links/acme", &[], &Value::Null).await;
    assert_eq!(read.status, 200, "the other replica reads it");
    h.fault("sparklayer", json!({"status": 502})).await;
    let patch = json!({"billing_address": {"city": "Leeds"}});
    let keyed = [CT, ("idempotency-key", "shared-1")];
    let first = send_to(&a, Method::PATCH, "/customers/acme", &keyed, &patch).await;
    assert_eq!(first.status, 207, "{:?}", first.body);
    h.clear_fault("sparklayer").await;
    h.clear_log().await;
    let retried = send_to(&b, Method::PATCH, "/customers/acme", &keyed, &patch).await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    for provider in ["sweetspot", "count", "juice"] {
        assert!(
            calls(&h, provider).await.is_empty(),
            "{provider} replayed, not called"
        );
    }
    assert_eq!(writes(&h.log("sparklayer").await).len(), 1);
    let gone = send_to(&b, Method::DELETE, "/links/acme", &[], &Value::Null).await;
    assert_eq!(gone.status, 204);
    let after = send_to(&a, Method::GET, "/customers/acme", &[], &Value::Null).await;
    assert_eq!(after.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_survive_a_restart_with_the_file_store() {
    let h = harness().await;
    let dir =
        std::env::temp_dir().join(format!("patchbay-links-{}", uuid::Uuid::new_v4().simple()));
    let dir_text = dir.display().to_string();
    let state = [
        ("PATCHBAY_STATE__BACKEND", "file"),
        ("PATCHBAY_STATE__DIR", dir_text.as_str()),
    ];
    let link = json!({"juice": JUICE_ID, "sweetspot": SWEETSPOT_ID});
    {
        let first = process(&h, &state);
        let addr = first.addr();
        let json_type = [("content-type", "application/json")];
        let created = send_to(&addr, Method::PUT, "/links/acme", &json_type, &link).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let second = process(&h, &state);
    let addr = second.addr();
    let read = send_to(&addr, Method::GET, "/links/acme", &[], &Value::Null).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body, link);
    let customer = send_to(&addr, Method::GET, "/customers/acme", &[], &Value::Null).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_admit_a_fanout_through_the_shared_quota() {
    let h = harness().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let settings = [
        ("PATCHBAY_STATE__BACKEND", "redis"),
        ("PATCHBAY_STATE__REDIS_URL", url.as_str()),
        ("PATCHBAY_RATE_LIMIT__BACKEND", "redis"),
        ("PATCHBAY_RATE_LIMIT__REDIS_URL", url.as_str()),
        ("PATCHBAY_RATE_LIMIT__FINGERPRINT_KEY", "test-fingerprints"),
        (
            "PATCHBAY_PROVIDERS__JUICE__RATE_LIMIT__WINDOWS",
            "[{limit=2,seconds=60}]",
        ),
    ];
    let (a, b) = (process(&h, &settings), process(&h, &settings));
    let (a, b) = (a.addr(), b.addr());
    let json_type = [("content-type", "application/json")];
    let created = send_to(&a, Method::PUT, "/links/acme", &json_type, &all_four()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Juice's two calls a minute spent at one replica...
    for _ in 0..2 {
        let path = format!("/customers/juice:{JUICE_ID}");
        assert_eq!(
            send_to(&a, Method::GET, &path, &[], &Value::Null)
                .await
                .status,
            200
        );
    }
    h.clear_log().await;
    // ...refuse the fan-out at the other, before anything is written anywhere.
    let patch = json!({"billing_address": {"city": "Leeds"}});
    let refused = send_to(&b, Method::PATCH, "/customers/acme", &[CT], &patch).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert!(refused.header("retry-after").is_some());
    let log = h.full_log().await;
    assert!(log.is_empty(), "nothing reached any provider: {log:?}");
}
