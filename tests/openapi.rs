//! The OpenAPI document (`src/gateway/openapi.json`) against the code: the served document is the
//! committed one; every provider has its path with both methods; each PATCH schema names exactly the
//! fields and address parts that provider can store, clearable exactly where the provider can clear;
//! each answer schema names exactly what a real answer carries; every status patchbay answers is
//! documented. `.ci/run` then runs schemathesis against the served document.

mod common;

use common::{Harness, COUNT_ID, JUICE_ID, SPARKLAYER_ID, SWEETSPOT_ID};
use http::Method;
use patchbay::canonical::ProblemKind;
use serde_json::Value;
use std::collections::BTreeSet;

fn document() -> Value {
    serde_json::from_str(patchbay::gateway::document::OPENAPI).expect("the document is JSON")
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local references only");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} exists")),
            )
        }
        None => value,
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether a property's schema lets `null` through (a clear).
fn allows_null(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    schema["anyOf"]
        .as_array()
        .is_some_and(|options| options.iter().any(|o| resolve(doc, o)["type"] == "null"))
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let h = Harness::start().await;
    let served = h.send(Method::GET, &h.url("/openapi.json"), &[], "").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.raw, patchbay::gateway::document::OPENAPI.as_bytes());
    assert_eq!(document()["openapi"], "3.1.0");
    let post = h.send(Method::POST, &h.url("/openapi.json"), &[], "").await;
    assert_eq!(
        (post.status.as_u16(), post.header("allow")),
        (405, Some("GET, HEAD"))
    );
}

#[test]
fn every_provider_has_its_path_and_each_patch_schema_is_what_it_can_store() {
    let doc = document();
    let paths = keys(&doc["paths"]);
    let mut expected: BTreeSet<String> = patchbay::providers::all()
        .iter()
        .map(|p| format!("/customers/{}:{{customer_id}}", p.name()))
        .collect();
    expected.extend(["/links/{link_id}", "/customers/{link_id}"].map(String::from));
    assert_eq!(
        paths, expected,
        "one path per provider and the links', nothing else"
    );
    let link = &doc["paths"]["/links/{link_id}"];
    assert_eq!(
        keys(link),
        ["delete", "get", "parameters", "put"]
            .map(String::from)
            .into()
    );
    let linked = resolve(
        &doc,
        &doc["paths"]["/customers/{link_id}"]["patch"]["requestBody"]["content"]
            ["application/merge-patch+json"]["schema"],
    );
    let mut every: BTreeSet<String> = patchbay::canonical::Field::ALL
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    every.extend(["billing_address", "shipping_address", "provider_fields"].map(String::from));
    assert_eq!(
        keys(&linked["properties"]),
        every,
        "a linked patch names every field"
    );
    let providers: BTreeSet<String> = patchbay::providers::all()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    let link_schema = resolve(
        &doc,
        &link["put"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(
        keys(&link_schema["properties"]),
        providers,
        "a link names any provider"
    );
    for provider in patchbay::providers::all() {
        let name = provider.name();
        let path = &doc["paths"][format!("/customers/{name}:{{customer_id}}")];
        let id = &path["parameters"][0]["schema"]["pattern"];
        assert_eq!(
            link_schema["properties"][name]["pattern"], *id,
            "{name}: a link's id"
        );
        assert_eq!(
            keys(path),
            ["get", "parameters", "patch"].map(String::from).into(),
            "{name}"
        );
        let body = &path["patch"]["requestBody"]["content"];
        assert_eq!(
            keys(body),
            ["application/json", "application/merge-patch+json"]
                .map(String::from)
                .into()
        );
        let schema = resolve(&doc, &body["application/merge-patch+json"]["schema"]);
        assert_eq!(schema["additionalProperties"], false, "{name}");
        let capabilities = provider.capabilities();
        let mut storable: BTreeSet<String> = capabilities
            .fields
            .iter()
            .map(|(f, _)| f.name().to_owned())
            .collect();
        storable.extend(
            capabilities
                .addresses
                .iter()
                .map(|a| a.kind.name().to_owned()),
        );
        assert_eq!(
            keys(&schema["properties"]),
            storable,
            "{name}: the fields it can store"
        );
        for (field, clearable) in capabilities.fields {
            let property = &schema["properties"][field.name()];
            assert_eq!(
                allows_null(&doc, property),
                *clearable,
                "{name}.{}",
                field.name()
            );
        }
        for address in capabilities.addresses {
            let property = &schema["properties"][address.kind.name()];
            assert_eq!(
                allows_null(&doc, property),
                address.removable,
                "{name} address removal"
            );
            let object = match resolve(&doc, property)["anyOf"].as_array() {
                Some(options) => options.iter().find(|o| o["type"] == "object").unwrap(),
                None => resolve(&doc, property),
            };
            let parts: BTreeSet<String> =
                address.parts.iter().map(|p| p.name().to_owned()).collect();
            assert_eq!(
                keys(&object["properties"]),
                parts,
                "{name} {} parts",
                address.kind.name()
            );
        }
    }
}

#[test]
fn every_status_patchbay_answers_is_documented() {
    let doc = document();
    let documented = keys(&doc["components"]["responses"]);
    for kind in ProblemKind::ALL {
        let status = kind.status();
        assert!(
            documented.contains(&status.to_string()),
            "{status} is not documented"
        );
        for (name, path) in doc["paths"].as_object().unwrap() {
            if name.starts_with("/links/") {
                continue;
            }
            assert!(
                path["patch"]["responses"].get(status.to_string()).is_some(),
                "PATCH {name} {status}"
            );
            // Check 4 answers GETs too.
            if matches!(status, 401 | 403) {
                assert!(path["get"]["responses"].get(status.to_string()).is_some());
            }
        }
    }
    for path in doc["paths"].as_object().unwrap().values() {
        for method in ["get", "patch", "put"]
            .into_iter()
            .filter(|m| path.get(m).is_some())
        {
            let ok = &path[method]["responses"]["200"];
            assert_eq!(
                ok["headers"]["X-Request-Id"]["$ref"],
                "#/components/headers/X-Request-Id"
            );
        }
    }
}

#[tokio::test]
async fn each_answer_schema_names_what_a_real_answer_carries() {
    let h = Harness::start().await;
    let doc = document();
    for (name, id) in [
        ("sweetspot", SWEETSPOT_ID),
        ("count", COUNT_ID),
        ("juice", JUICE_ID),
        ("sparklayer", SPARKLAYER_ID),
    ] {
        let answer = h.get(&format!("{name}:{id}")).await;
        assert_eq!(answer.status, 200);
        let path = &doc["paths"][format!("/customers/{name}:{{customer_id}}")];
        let schema = resolve(
            &doc,
            &path["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        );
        assert_eq!(keys(&answer.body), keys(&schema["properties"]), "{name}");
    }
    // The sandbox's demo link names every provider: its read carries every member there is.
    let linked = h.get("demo").await;
    assert_eq!(linked.status, 200, "{:?}", linked.body);
    let path = &doc["paths"]["/customers/{link_id}"];
    let schema = resolve(
        &doc,
        &path["get"]["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert_eq!(
        keys(&linked.body),
        keys(&schema["properties"]),
        "a linked read"
    );
}
