//! Numbers passed through `provider_fields` keep their digits, both ways: what a caller writes reaches
//! the provider with every digit, sign and decimal point, and what a provider's record holds comes back
//! the same way (no rounding through `f64`: a 30-digit integer, `1e-999`, `-0`, `0.10` stay as they are).
//! An exponent is spelled the one way serde_json writes it, `e` with its sign (`1E2` → `1e+2`).

mod common;

use common::*;
use proptest::prelude::*;
use std::sync::OnceLock;

/// One gateway and sandbox for every case, on a runtime of their own.
fn harness() -> &'static (tokio::runtime::Runtime, Harness) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Harness)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = runtime.block_on(Harness::start());
        (runtime, h)
    })
}

/// `text` with its exponent as serde_json writes one.
fn spelled(text: &str) -> String {
    match text.find(['e', 'E']) {
        None => text.to_owned(),
        Some(at) => {
            let exponent = &text[at + 1..];
            let sign = if exponent.starts_with(['+', '-']) {
                ""
            } else {
                "+"
            };
            format!("{}e{sign}{exponent}", &text[..at])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn numbers_keep_their_digits_both_ways(
        text in r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?"
    ) {
        let (runtime, h) = harness();
        let (sent, read) = runtime.block_on(async {
            // Written: the provider receives it (Sweet Spot refuses the unknown field, after the log).
            h.clear_log().await;
            let patch: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"provider_fields": {{"sweetspot": {{"loyaltyPoints": {text}}}}}}}"#
            )).unwrap();
            h.patch("sweetspot:cus_numbers", &patch).await;
            let log = h.log("sweetspot").await;
            let sent = log.last().map(|call| call["body"]["loyaltyPoints"].to_string());
            // Read: a record holding it answers it.
            let record = serde_json::from_str(&format!(
                r#"{{"id": "cus_numbers", "firstName": "N", "loyaltyPoints": {text}}}"#
            )).unwrap();
            h.store("sweetspot", "cus_numbers", record).await;
            let answer = h.get("sweetspot:cus_numbers").await;
            (sent, String::from_utf8_lossy(&answer.raw).into_owned())
        });
        let expected = spelled(&text);
        prop_assert_eq!(sent.as_deref(), Some(expected.as_str()));
        let member = format!("\"loyaltyPoints\":{expected}");
        prop_assert!(read.contains(&member), "{} not in {}", member, read);
    }
}

#[test]
fn the_spelling_rule_is_the_only_change() {
    assert_eq!(spelled("1E2"), "1e+2");
    assert_eq!(spelled("-1.5e-7"), "-1.5e-7");
    assert_eq!(
        spelled("12345678901234567890123"),
        "12345678901234567890123"
    );
}
