//! End to end over real sockets: the canonical API against the sandbox, checking both what the caller gets
//! and what exactly reached each provider (the sandbox's request log).

mod common;

use common::*;
use serde_json::{json, Value};

fn customer(provider: &str, id: &str) -> String {
    format!("{provider}:{id}")
}

#[tokio::test(flavor = "multi_thread")]
async fn get_answers_the_canonical_shape_for_every_provider() {
    let h = Harness::start().await;
    let sweet = h.get(&customer("sweetspot", SWEETSPOT_ID)).await;
    assert_eq!(sweet.status, 200, "{:?}", sweet.body);
    assert_eq!(sweet.body["id"], "sweetspot:cus_demo_alice");
    assert_eq!(sweet.body["provider"], "sweetspot");
    assert_eq!(sweet.body["first_name"], "Alice");
    assert_eq!(sweet.body["billing_address"]["postal_code"], "94105");
    // Fields Sweet Spot cannot store are absent; read-only upstream fields land in provider_fields.
    assert!(sweet.body.get("email").is_none());
    assert!(sweet.body.get("shipping_address").is_none());
    assert_eq!(
        sweet.body["provider_fields"]["sweetspot"]["creditStatus"],
        "passed"
    );

    let count = h.get(&customer("count", COUNT_ID)).await;
    assert_eq!(count.status, 200, "{:?}", count.body);
    assert_eq!(count.body["company_name"], "Acme Bookkeeping Ltd");
    assert_eq!(count.body["billing_address"]["line1"], "10 Downing Way");
    assert!(
        count.body["billing_address"].get("line2").is_none(),
        "COUNT has no line2"
    );
    assert_eq!(count.body["shipping_address"], Value::Null);

    let juice = h.get(&customer("juice", &JUICE_ID.to_uppercase())).await;
    assert_eq!(juice.status, 200, "{:?}", juice.body);
    assert_eq!(juice.body["id"], format!("juice:{JUICE_ID}"));
    assert_eq!(juice.body["phone"], "+2348012345678");

    let spark = h.get(&customer("sparklayer", SPARKLAYER_ID)).await;
    assert_eq!(spark.status, 200, "{:?}", spark.body);
    assert_eq!(spark.body["id"], "sparklayer:cu_demo_jones");
    assert!(spark.body["billing_address"].is_object());
    assert!(spark.body["provider_fields"]["sparklayer"]["addresses"].is_array());
}

#[tokio::test(flavor = "multi_thread")]
async fn sweetspot_patch_sends_only_the_changed_fields_with_null_clearing() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &customer("sweetspot", SWEETSPOT_ID),
            &json!({"first_name": "Alicia", "phone": "", "billing_address": {"city": "Oakland", "line2": null}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["first_name"], "Alicia");
    assert_eq!(answer.body["phone"], Value::Null);
    assert_eq!(answer.body["billing_address"]["city"], "Oakland");
    assert_eq!(answer.body["billing_address"]["line2"], Value::Null);
    assert_eq!(answer.body["billing_address"]["line1"], "1 Market St");
    let log = h.log("sweetspot").await;
    assert_eq!(log.len(), 1, "one PUT, no read: {log:?}");
    assert_eq!(log[0]["method"], "PUT");
    assert_eq!(log[0]["path"], "/v1/customers/cus_demo_alice");
    assert_eq!(
        log[0]["body"],
        json!({"firstName": "Alicia", "phone": null, "address2": null, "city": "Oakland"})
    );
    assert_eq!(
        log[0]["headers"]["authorization"],
        format!(
            "Bearer {}",
            patchbay::sandbox::credentials::SWEETSPOT_API_KEY
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sweetspot_address_removal_is_six_nulls() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &customer("sweetspot", SWEETSPOT_ID),
            &json!({"billing_address": null}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["billing_address"], Value::Null);
    let log = h.log("sweetspot").await;
    assert_eq!(
        log[0]["body"],
        json!({"address1": null, "address2": null, "city": null, "state": null, "zip": null, "country": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn count_writes_carry_customer_and_email_and_whole_addresses() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &customer("count", COUNT_ID),
            &json!({"phone": "+44 20 7183 8751", "billing_address": {"city": "Leeds"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["phone"], "+442071838751");
    assert_eq!(answer.body["billing_address"]["city"], "Leeds");
    assert_eq!(answer.body["billing_address"]["line1"], "10 Downing Way");
    let log = h.log("count").await;
    let methods: Vec<&str> = log.iter().map(|e| e["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["GET", "PUT"], "read-merge-write: {log:?}");
    let put = &log[1];
    assert_eq!(put["path"], format!("/customers/{COUNT_ID}"));
    assert_eq!(
        put["body"],
        json!({
            "mainPhone": "+442071838751",
            "customer": "Acme Bookkeeping Ltd",
            "email": "billing@acme.example",
            "billingAddress": {"street": "10 Downing Way", "city": "Leeds", "state": null, "zipCode": "SW1A 2AA", "country": "GB"}
        })
    );
    for header in ["x-client-id", "x-timestamp", "x-signature", "authorization"] {
        assert!(put["headers"].get(header).is_some(), "{header} missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn count_refuses_clearing_required_fields_and_line2() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &customer("count", COUNT_ID),
            &json!({"email": null, "company_name": "", "first_name": "X", "billing_address": {"line2": "b"}}),
        )
        .await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.error_fields(),
        [
            "billing_address.line2",
            "company_name",
            "email",
            "first_name"
        ]
    );
    assert!(h.log("count").await.is_empty(), "nothing may reach COUNT");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_email_conflict_is_a_409() {
    let h = Harness::start().await;
    let answer = h
        .patch(
            &customer("count", COUNT_ID),
            &json!({"email": "ops@globex.example"}),
        )
        .await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert_eq!(answer.body["provider"], "count");
    assert_eq!(answer.body["upstream_status"], 409);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn juice_clears_with_empty_strings_and_sends_the_address_whole() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch_with(
            &customer("juice", JUICE_ID),
            &json!({"last_name": null, "billing_address": {"line2": null, "city": "Lagos"}}),
            &[
                ("idempotency-key", "key-123"),
                ("authorization", "Bearer caller-secret"),
                ("cookie", "a=b"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["last_name"], Value::Null);
    assert_eq!(answer.body["billing_address"]["line2"], Value::Null);
    assert_eq!(answer.body["billing_address"]["city"], "Lagos");
    assert_eq!(answer.body["billing_address"]["line1"], "123 Test lane");
    let log = h.log("juice").await;
    assert_eq!(log.len(), 2, "GET then PATCH: {log:?}");
    let patch = &log[1];
    assert_eq!(patch["method"], "PATCH");
    assert_eq!(
        patch["body"],
        json!({"last_name": "", "billing_address": {"line1": "123 Test lane", "line2": "", "city": "Lagos", "state": "Acme", "zip_code": "12345", "country": "US"}})
    );
    assert_eq!(patch["headers"]["idempotency-key"], "key-123");
    assert!(
        log[0]["headers"].get("idempotency-key").is_none(),
        "the key goes with the write only, not with the read before it: {:?}",
        log[0]["headers"]
    );
    assert_eq!(patch["headers"]["accept"], "application/json;version=1");
    assert_eq!(
        patch["headers"]["authorization"],
        format!("Bearer {}", patchbay::sandbox::credentials::JUICE_API_KEY)
    );
    assert!(
        patch["headers"].get("cookie").is_none(),
        "caller cookies never reach a provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn juice_refuses_removing_its_address_and_unknown_fields() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch(
            &customer("juice", JUICE_ID),
            &json!({"billing_address": null, "website": "https://x.example"}),
        )
        .await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.error_fields(), ["billing_address", "website"]);
    assert!(h.log("juice").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn lenient_skips_what_the_provider_cannot_store() {
    let h = Harness::start().await;
    h.clear_log().await;
    let answer = h
        .patch_with(
            &customer("juice", JUICE_ID),
            &json!({"first_name": "Ada", "website": "https://ada.example", "shipping_address": {"city": "X"}}),
            &[("prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["first_name"], "Ada");
    assert_eq!(
        answer.header("preference-applied"),
        Some("handling=lenient")
    );
    assert_eq!(
        answer.header("patchbay-skipped"),
        Some("website, shipping_address")
    );
    let log = h.log("juice").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["body"], json!({"first_name": "Ada"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_patch_reads_once_and_writes_nothing() {
    let h = Harness::start().await;
    h.clear_log().await;
    for (provider, id) in [
        ("sweetspot", SWEETSPOT_ID),
        ("count", COUNT_ID),
        ("juice", JUICE_ID),
        ("sparklayer", SPARKLAYER_ID),
    ] {
        let answer = h.patch(&customer(provider, id), &json!({})).await;
        assert_eq!(answer.status, 200, "{provider}: {:?}", answer.body);
        assert_eq!(answer.body, h.get(&customer(provider, id)).await.body);
    }
    let log = h.full_log().await;
    assert!(writes(&log).is_empty(), "no writes: {log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sparklayer_address_patch_rewrites_the_list_and_external_ids_work() {
    let h = Harness::start().await;
    h.clear_log().await;
    let by_external = h.get("sparklayer:JONES-001").await;
    assert_eq!(by_external.status, 200, "{:?}", by_external.body);
    assert_eq!(by_external.body["id"], "sparklayer:cu_demo_jones");

    let before = h.get(&customer("sparklayer", SPARKLAYER_ID)).await.body;
    let answer = h
        .patch(
            "sparklayer:JONES-001",
            &json!({"company_name": "Jones Ropes", "shipping_address": {"city": "Leeds"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["id"], "sparklayer:cu_demo_jones");
    assert_eq!(answer.body["company_name"], "Jones Ropes");
    assert_eq!(answer.body["shipping_address"]["city"], "Leeds");
    assert_eq!(
        answer.body["billing_address"], before["billing_address"],
        "billing untouched"
    );
    let log = h.log("sparklayer").await;
    let patch = log
        .iter()
        .find(|e| e["method"] == "PATCH")
        .expect("a PATCH reached SparkLayer");
    let addresses = patch["body"]["addresses"]
        .as_array()
        .expect("the whole list is sent");
    assert!(addresses
        .iter()
        .all(|a| a.get("id").is_some() || a.get("external_id").is_some()));
    assert!(patch["headers"].get("site-id").is_some());
}

/// A first contact by external id, racing a patch by the primary id: the write that learns, reading,
/// whose customer it names takes that customer's lock and reads again, so neither change is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_contact_by_external_id_shares_the_primary_ids_lock() {
    let h = std::sync::Arc::new(Harness::start().await);
    // A token first, through another customer, so that nothing has taught the gateway JONES-001 yet.
    assert_eq!(h.get("sparklayer:cu_demo_reed").await.status, 200);
    h.fault("sparklayer", json!({"latency_ms": 300})).await;
    let by_external = {
        let h = h.clone();
        tokio::spawn(async move {
            let patch = json!({"shipping_address": {"city": "Whitby"}});
            h.patch("sparklayer:JONES-001", &patch).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let patch = json!({"shipping_address": {"postal_code": "YO21 1AA"}});
    let by_primary = h
        .patch(&customer("sparklayer", SPARKLAYER_ID), &patch)
        .await;
    let by_external = by_external.await.unwrap();
    assert_eq!(by_primary.status, 200, "{:?}", by_primary.body);
    assert_eq!(by_external.status, 200, "{:?}", by_external.body);
    h.clear_fault("sparklayer").await;
    let after = h.get(&customer("sparklayer", SPARKLAYER_ID)).await.body;
    assert_eq!(
        (
            &after["shipping_address"]["city"],
            &after["shipping_address"]["postal_code"]
        ),
        (&json!("Whitby"), &json!("YO21 1AA")),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_of_one_customer_lose_no_update() {
    let h = std::sync::Arc::new(Harness::start().await);
    let parts = [
        ("line1", "9 Elm St"),
        ("state", "Lagos State"),
        ("postal_code", "100001"),
        ("city", "Ikeja"),
    ];
    let tasks: Vec<_> = parts
        .iter()
        .map(|(part, value)| {
            let h = h.clone();
            let body = json!({ "billing_address": { *part: *value } });
            tokio::spawn(async move { h.patch(&format!("juice:{JUICE_ID}"), &body).await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let after = h.get(&format!("juice:{JUICE_ID}")).await.body;
    for (part, value) in parts {
        assert_eq!(
            after["billing_address"][part], value,
            "{part} was lost: {after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_email_change_is_not_reverted_by_a_concurrent_address_patch() {
    let h = std::sync::Arc::new(Harness::start().await);
    // Slow COUNT down so that an address patch's GET and PUT are far apart: without per-customer
    // serialisation the email change lands in between and the PUT writes the old email back.
    h.fault("count", json!({"latency_ms": 150})).await;
    let id = format!("count:{COUNT_ID}");
    let address = {
        let h = h.clone();
        let id = id.clone();
        tokio::spawn(async move {
            h.patch(&id, &json!({"billing_address": {"city": "York"}}))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let email = h
        .patch(
            &id,
            &json!({"company_name": "Acme Two", "email": "two@acme.example"}),
        )
        .await;

    assert_eq!(email.status, 200, "{:?}", email.body);
    assert_eq!(address.await.unwrap().status, 200);
    h.clear_fault("count").await;
    let after = h.get(&id).await.body;
    assert_eq!(
        after["email"], "two@acme.example",
        "the email change was lost: {after}"
    );
    assert_eq!(after["company_name"], "Acme Two");
    assert_eq!(after["billing_address"]["city"], "York");
}
