//! The patch law, through the real HTTP stack against the sandbox, for every provider: for a random stored
//! customer C and a random valid patch P over that provider's fields, `GET` after `PATCH P` equals
//! `merge(C, P)`; and when the provider refuses P, `GET` still equals C.

mod common;

use common::*;
use patchbay::canonical::{merge, AddressPart, Capabilities, CustomerPatch, Field};
use patchbay::providers::{self, Dialect};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

const CASES: u32 = 24;

/// Canonical keys the law compares: everything but timestamps and raw provider fields.
fn comparable(customer: &Value) -> Map<String, Value> {
    let mut map = customer.as_object().cloned().unwrap_or_default();
    for key in ["created_at", "updated_at", "provider_fields"] {
        map.remove(key);
    }
    map
}

fn text_value(field: Field) -> BoxedStrategy<Value> {
    match field {
        Field::FirstName | Field::LastName | Field::CompanyName => {
            "[A-Z][a-z]{1,8}( [A-Z][a-z]{1,6})?"
                .prop_map(Value::from)
                .boxed()
        }
        Field::Email => "[a-z]{3,10}\\.[a-z]{2,6}@example\\.com"
            .prop_map(Value::from)
            .boxed(),
        Field::Phone => ("[1-9][0-9]{2}", "[0-9]{3}", "[0-9]{4}")
            .prop_map(|(a, b, c)| Value::from(format!("+1 ({a}) {b}-{c}")))
            .boxed(),
        Field::Website => "https://[a-z]{3,10}\\.example(/[a-z]{1,5})?"
            .prop_map(Value::from)
            .boxed(),
        Field::Status => prop_oneof![Just(json!("active")), Just(json!("inactive"))].boxed(),
    }
}

fn part_value(part: AddressPart) -> BoxedStrategy<Value> {
    match part {
        AddressPart::Country => prop_oneof![
            Just(json!("US")),
            Just(json!("gb")),
            Just(json!("NG")),
            Just(json!("de"))
        ]
        .boxed(),
        _ => "[A-Z0-9][a-z0-9 ]{0,12}[a-z0-9]"
            .prop_map(Value::from)
            .boxed(),
    }
}

/// Either clearing form: `null` or `""`.
fn clear() -> BoxedStrategy<Value> {
    prop_oneof![Just(Value::Null), Just(json!(""))].boxed()
}

/// A random valid patch over what `caps` can store: each field absent, set, or (where allowed) cleared.
fn patch_strategy(caps: &'static Capabilities) -> BoxedStrategy<Value> {
    let mut entries: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    for (field, clearable) in caps.fields {
        let name = field.name().to_owned();
        let set = text_value(*field);
        let value = if *clearable {
            prop_oneof![3 => set, 1 => clear()].boxed()
        } else {
            set
        };
        entries.push(
            proptest::option::weighted(0.5, value.prop_map(move |v| (name.clone(), v))).boxed(),
        );
    }
    for support in caps.addresses {
        let name = support.kind.name().to_owned();
        let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = support
            .parts
            .iter()
            .map(|part| {
                let key = part.name().to_owned();
                let value = prop_oneof![4 => part_value(*part), 1 => clear()];
                proptest::option::weighted(0.6, value.prop_map(move |v| (key.clone(), v))).boxed()
            })
            .collect();
        let merge = parts
            .prop_map(|parts| Value::Object(parts.into_iter().flatten().collect()))
            .boxed();
        let change = if support.removable {
            prop_oneof![5 => merge, 1 => Just(Value::Null)].boxed()
        } else {
            merge
        };
        entries.push(
            proptest::option::weighted(0.6, change.prop_map(move |v| (name.clone(), v))).boxed(),
        );
    }
    entries
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

/// The law for one PATCH: `answer` and `after` are what PATCH and the following GET returned.
fn check_law(
    dialect: &dyn Dialect,
    before: &Value,
    patch: &Value,
    status: u16,
    answer: &Value,
    after: &Value,
) -> Result<(), TestCaseError> {
    if status != 200 {
        prop_assert_eq!(
            status,
            422,
            "only a provider-side refusal may fail: {}",
            answer
        );
        prop_assert_eq!(
            comparable(after),
            comparable(before),
            "a refused patch changed the customer"
        );
        return Ok(());
    }
    let names: Vec<&str> = providers::all().iter().map(|d| d.name()).collect();
    let parsed = CustomerPatch::parse(patch.as_object().unwrap().clone(), dialect.name(), &names)
        .map_err(|e| {
        TestCaseError::fail(format!("the generator made an invalid patch: {e:?}"))
    })?;
    let expected = merge(&comparable(before), &parsed, dialect.capabilities());
    prop_assert_eq!(
        &comparable(after),
        &expected,
        "GET after PATCH {} is not merge(C, P)",
        patch
    );
    prop_assert_eq!(
        &comparable(answer),
        &expected,
        "the PATCH answer is not merge(C, P)"
    );
    Ok(())
}

fn customers() -> [(&'static str, &'static str); 4] {
    [
        ("sweetspot", SWEETSPOT_ID),
        ("count", COUNT_ID),
        ("juice", JUICE_ID),
        ("sparklayer", SPARKLAYER_ID),
    ]
}

#[test]
fn get_after_patch_is_merge_of_before_and_patch() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h = runtime.block_on(Harness::start());
    runtime.block_on(h.lift_limits());
    for (provider, id) in customers() {
        let dialect = providers::all()
            .into_iter()
            .find(|d| d.name() == provider)
            .unwrap();
        let seed = runtime.block_on(h.stored(provider, id));
        let customer = format!("{provider}:{id}");
        let strategy = (
            patch_strategy(dialect.capabilities()),
            patch_strategy(dialect.capabilities()),
        );
        let mut runner = TestRunner::new(RunnerConfig {
            cases: CASES,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        runner
            .run(&strategy, |(setup, patch)| {
                runtime.block_on(async {
                    // A random stored customer C: the demo record, stored again, then a random patch.
                    h.store(provider, id, seed.clone()).await;
                    h.patch(&customer, &setup).await;
                    let before = h.get(&customer).await.body;
                    let answer = h.patch(&customer, &patch).await;
                    let after = h.get(&customer).await.body;
                    check_law(
                        dialect.as_ref(),
                        &before,
                        &patch,
                        answer.status.as_u16(),
                        &answer.body,
                        &after,
                    )
                })
            })
            .unwrap_or_else(|failure| panic!("{provider}: {failure}"));
    }
}

/// The law's checker is not vacuous: a lost update, a wrong clear and a refused-but-changed customer are
/// each caught.
#[test]
fn the_law_catches_violations() {
    let dialect = providers::all()
        .into_iter()
        .find(|d| d.name() == "juice")
        .unwrap();
    let before = json!({"id": "juice:x", "provider": "juice", "first_name": "A", "last_name": "B",
        "email": null, "phone": null, "billing_address": {"line1": "1", "line2": null, "city": "C",
        "state": null, "postal_code": null, "country": "US"}});
    let patch = json!({"first_name": "Z", "billing_address": {"city": "D"}});
    let mut good = before.clone();
    good["first_name"] = json!("Z");
    good["billing_address"]["city"] = json!("D");
    assert!(check_law(dialect.as_ref(), &before, &patch, 200, &good, &good).is_ok());

    let mut lost = good.clone();
    lost["billing_address"]["city"] = json!("C");
    assert!(check_law(dialect.as_ref(), &before, &patch, 200, &good, &lost).is_err());
    let mut wiped = good.clone();
    wiped["billing_address"]["line1"] = Value::Null;
    assert!(check_law(dialect.as_ref(), &before, &patch, 200, &wiped, &wiped).is_err());
    assert!(check_law(dialect.as_ref(), &before, &patch, 422, &json!({}), &good).is_err());
    assert!(check_law(dialect.as_ref(), &before, &patch, 502, &json!({}), &before).is_err());
}
