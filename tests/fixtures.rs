//! Fixture tables per provider: every file under `tests/fixtures/<provider>/` is one
//! canonical patch, the provider-native record it starts from, and the exact upstream calls it must cause
//! (method, path, the headers the case lists with secrets masked, body), with the caller's answer.
//!
//! Each case runs end to end on one shared harness per provider: reset the sandbox, lift its limits,
//! store the case's record, clear the log, PATCH through the real gateway, then compare. A case file that
//! does not parse, or has a key the runner does not know, fails the test: a typo cannot skip a check.
//!
//! Besides what a case states, the runner always checks: an error answer is `application/problem+json`
//! with its status in the body and lists its `errors` (the case must say which, `[]` included); a success
//! lists none; `Patchbay-Skipped` is present exactly when the case names `skipped`; and a successful
//! lenient request answers `Preference-Applied: handling=lenient` (and a strict one does not).

mod common;

use common::*;
use patchbay::sandbox::credentials;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One fixture file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What rule of the provider's mapping the case proves.
    about: String,
    /// The provider-native record to store before patching; `None` leaves the demo record.
    #[serde(default)]
    current: Option<Map<String, Value>>,
    /// The id in the canonical URL; `None` is the provider's demo customer.
    #[serde(default)]
    id: Option<String>,
    /// The canonical merge patch sent.
    patch: Map<String, Value>,
    /// Caller headers sent with the PATCH (besides its content type).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: Expect,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// Every call that reached the provider, in order.
    calls: Vec<Call>,
    /// The problem's `errors[].field`, sorted; required for an error answer, refused for a success.
    #[serde(default)]
    errors: Option<Vec<String>>,
    /// A subset of the answer body: objects compare key by key, everything else exactly.
    #[serde(default)]
    response: Option<Value>,
    /// Dotted paths the answer body must not have (fields the provider cannot store, `provider` on a
    /// problem that no provider answered).
    #[serde(default)]
    absent: Vec<String>,
    /// `Patchbay-Skipped`, compared as a set of comma-separated canonical paths; `None`: no such header.
    #[serde(default)]
    skipped: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    method: String,
    /// Relative to the provider's root, with `?query` when there is one.
    path: String,
    /// Only these headers are compared, after masking; `null` means the header must not be sent.
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    /// The JSON body exactly; absent means no body.
    #[serde(default)]
    body: Option<Value>,
}

/// What one PATCH produced: the caller's answer and the sandbox's log of provider calls.
struct Outcome {
    answer: Answer,
    log: Vec<Value>,
}

fn fixture_dir(provider: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(provider)
}

/// A case from its JSON text; unknown keys are an error.
fn parse_case(text: &str) -> Result<Case, String> {
    let case: Case = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if case.about.trim().is_empty() {
        return Err("`about` is empty".into());
    }
    Ok(case)
}

/// Every case of a provider's folder, sorted by file name. Anything that is not a well-formed
/// `<nn>-<name>.json` case fails the test rather than being passed over.
fn load(provider: &str) -> Vec<(String, Case)> {
    let dir = fixture_dir(provider);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry reads")
                .file_name()
                .into_string()
                .expect("fixture names are UTF-8")
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{}: no fixtures", dir.display());
    names
        .into_iter()
        .map(|name| {
            let numbered = name.len() > 3
                && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
                && name.as_bytes()[2] == b'-';
            assert!(
                numbered && name.ends_with(".json"),
                "{provider}/{name}: fixture files are named <nn>-<name>.json"
            );
            let text = std::fs::read_to_string(dir.join(&name))
                .unwrap_or_else(|e| panic!("{provider}/{name}: {e}"));
            let case = parse_case(&text).unwrap_or_else(|e| panic!("{provider}/{name}: {e}"));
            (format!("{provider}/{name}"), case)
        })
        .collect()
}

fn demo_id(provider: &str) -> &'static str {
    match provider {
        "sweetspot" => SWEETSPOT_ID,
        "count" => COUNT_ID,
        "juice" => JUICE_ID,
        "sparklayer" => SPARKLAYER_ID,
        other => panic!("unknown provider {other}"),
    }
}

/// Where a provider-native record keeps its primary id.
fn id_field(provider: &str) -> &'static str {
    match provider {
        "count" => "uuid",
        _ => "id",
    }
}

/// The names the cases use for customers besides the demo id: SparkLayer's external id.
fn other_names(provider: &str) -> &'static [&'static str] {
    match provider {
        "sparklayer" => &["JONES-001"],
        _ => &[],
    }
}

/// A harness in its steady state, so that a case's log holds only what its patch causes: the provider's
/// token is already obtained, and the gateway has met each customer under every name the cases use
/// (its first contact through a second name reads once more under the primary id's lock, a gateway
/// concern that the e2e tests cover, not a dialect's).
async fn warmed_harness(provider: &str) -> Harness {
    let h = Harness::start().await;
    for id in std::iter::once(demo_id(provider)).chain(other_names(provider).iter().copied()) {
        let warm = h.get(&format!("{provider}:{id}")).await;
        assert_eq!(warm.status, 200, "warming {provider}:{id}: {:?}", warm.body);
    }
    h
}

/// Runs one case on `h`: reset, lift limits, store the record, clear the log, PATCH, read the log.
async fn run_case(h: &Harness, provider: &str, case: &Case) -> Outcome {
    h.reset().await;
    h.lift_limits().await;
    let id = case.id.as_deref().unwrap_or(demo_id(provider));
    if let Some(current) = &case.current {
        let primary = current
            .get(id_field(provider))
            .and_then(Value::as_str)
            .unwrap_or(id);
        h.store(provider, primary, Value::Object(current.clone()))
            .await;
    }
    h.clear_log().await;
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let answer = h
        .patch_with(
            &format!("{provider}:{id}"),
            &Value::Object(case.patch.clone()),
            &headers,
        )
        .await;
    let log = h.log(provider).await;
    Outcome { answer, log }
}

/// Every credential the sandbox issues to the gateway, longest first so none is masked piecemeal.
fn configured_credentials() -> Vec<&'static str> {
    let mut all = vec![
        credentials::SWEETSPOT_API_KEY,
        credentials::COUNT_CLIENT_ID,
        credentials::COUNT_CLIENT_SECRET,
        credentials::COUNT_ACCESS_TOKEN,
        credentials::COUNT_REFRESH_TOKEN,
        credentials::JUICE_API_KEY,
        credentials::SPARKLAYER_SITE_ID,
        credentials::SPARKLAYER_CLIENT_ID,
        credentials::SPARKLAYER_CLIENT_SECRET,
    ];
    all.sort_by_key(|c| std::cmp::Reverse(c.len()));
    all
}

/// A logged header value as fixtures state it: configured credentials and runtime bearer tokens become
/// `***`, as do `x-timestamp` (digits) and `x-signature` (64 lower-case hex). A value the caller sent is
/// never masked, so a caller's credential leaking upstream shows. A malformed signature or timestamp is
/// left as it is, so that it mismatches.
fn mask(name: &str, value: &str, caller_values: &BTreeSet<String>) -> String {
    match name {
        "x-signature" => {
            let hex = value.len() == 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            return if hex {
                "***".into()
            } else {
                format!("(not 64 lower-case hex) {value}")
            };
        }
        "x-timestamp" => {
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            return if digits {
                "***".into()
            } else {
                format!("(not Unix seconds) {value}")
            };
        }
        _ => {}
    }
    let mut masked = value.to_owned();
    for credential in configured_credentials() {
        masked = masked.replace(credential, "***");
    }
    if let Some(token) = masked.strip_prefix("Bearer ") {
        if token != "***" && !caller_values.contains(token) {
            masked = "Bearer ***".into();
        }
    }
    masked
}

/// The values the caller sent, bare and after `Bearer `: these are never masked.
fn caller_values(case: &Case) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for value in case.headers.values() {
        values.insert(value.clone());
        if let Some(token) = value.strip_prefix("Bearer ") {
            values.insert(token.to_owned());
        }
    }
    values
}

/// A call as the comparison sees it; `headers` are the listed ones only (each `null` when not sent).
fn call_json(method: &str, path: &str, headers: Map<String, Value>, body: &Value) -> Value {
    let mut call = Map::new();
    call.insert("method".into(), json!(method));
    call.insert("path".into(), json!(path));
    if !headers.is_empty() {
        call.insert("headers".into(), Value::Object(headers));
    }
    call.insert("body".into(), body.clone());
    Value::Object(call)
}

/// The expected calls and the logged ones, in the same shape, the logged headers reduced to the ones
/// each expected call lists.
fn calls_to_compare(case: &Case, log: &[Value]) -> (Value, Value) {
    let callers = caller_values(case);
    let expected: Vec<Value> = case
        .expect
        .calls
        .iter()
        .map(|call| {
            let headers = call
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_ascii_lowercase(),
                        value.clone().map_or(Value::Null, Value::String),
                    )
                })
                .collect();
            call_json(
                &call.method,
                &call.path,
                headers,
                call.body.as_ref().unwrap_or(&Value::Null),
            )
        })
        .collect();
    let actual: Vec<Value> = log
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let mut path = entry["path"].as_str().unwrap_or_default().to_owned();
            if let Some(query) = entry["query"].as_str() {
                path = format!("{path}?{query}");
            }
            let listed = case.expect.calls.get(i).map(|c| &c.headers);
            let headers = listed
                .into_iter()
                .flat_map(BTreeMap::keys)
                .map(|name| {
                    let name = name.to_ascii_lowercase();
                    let value = entry["headers"][&name]
                        .as_str()
                        .map_or(Value::Null, |v| Value::String(mask(&name, v, &callers)));
                    (name, value)
                })
                .collect();
            call_json(
                entry["method"].as_str().unwrap_or_default(),
                &path,
                headers,
                &entry["body"],
            )
        })
        .collect();
    (Value::Array(expected), Value::Array(actual))
}

/// The JSON pointers at which two values differ (`subset`: keys of `actual` that `expected` does not
/// name are ignored).
fn differences(expected: &Value, actual: &Value, at: &str, subset: bool, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{at}/{key}");
                match a.get(key) {
                    Some(found) => differences(value, found, &here, subset, out),
                    None => out.push(format!("{here}: expected {value}, missing")),
                }
            }
            if !subset {
                for (key, value) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                    out.push(format!("{at}/{key}: not expected, got {value}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(ev, av, &format!("{at}/{i}"), false, out);
            }
            if e.len() != a.len() {
                out.push(format!("{at}: expected {} items, got {}", e.len(), a.len()));
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!("{at}: expected {expected}, got {actual}")),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise")
}

/// A readable report of `what` differing: the differing pointers, then both sides pretty-printed.
fn diff_report(what: &str, expected: &Value, actual: &Value, subset: bool) -> Option<String> {
    let mut out = Vec::new();
    differences(expected, actual, "", subset, &mut out);
    if out.is_empty() {
        return None;
    }
    Some(format!(
        "{what} differ:\n    {}\n  expected:\n{}\n  actual:\n{}",
        out.join("\n    "),
        indent(&pretty(expected)),
        indent(&pretty(actual)),
    ))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn path_set(list: &str) -> BTreeSet<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn prefers_lenient(case: &Case) -> bool {
    case.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("prefer")
            && value
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"))
    })
}

/// Compares an outcome with its case; `Err` holds every mismatch, readable.
fn check(name: &str, case: &Case, outcome: &Outcome) -> Result<(), String> {
    let expect = &case.expect;
    let answer = &outcome.answer;
    let mut problems = Vec::new();
    let status = answer.status.as_u16();
    if status != expect.status {
        problems.push(format!(
            "status: expected {}, got {status}; body:\n{}",
            expect.status,
            indent(&pretty(&answer.body))
        ));
    }
    let (expected_calls, actual_calls) = calls_to_compare(case, &outcome.log);
    problems.extend(diff_report(
        "upstream calls",
        &expected_calls,
        &actual_calls,
        false,
    ));
    let is_error = expect.status >= 400;
    match (&expect.errors, is_error) {
        (Some(errors), true) => {
            let actual = answer.error_fields();
            if &actual != errors {
                problems.push(format!(
                    "errors: expected {errors:?}, got {actual:?}; body:\n{}",
                    indent(&pretty(&answer.body))
                ));
            }
        }
        (None, true) => {
            problems.push("the case expects an error answer but lists no `errors`".into())
        }
        (Some(_), false) => problems.push("the case expects a success but lists `errors`".into()),
        (None, false) => {}
    }
    if is_error && status == expect.status {
        if answer.header("content-type") != Some("application/problem+json") {
            problems.push(format!(
                "an error must be application/problem+json, got {:?}",
                answer.header("content-type")
            ));
        }
        if answer.body["status"] != json!(status) {
            problems.push(format!(
                "the problem's status is {}, not {status}",
                answer.body["status"]
            ));
        }
    }
    if let Some(response) = &expect.response {
        problems.extend(diff_report("response", response, &answer.body, true));
    }
    for path in &expect.absent {
        let found = path
            .split('.')
            .try_fold(&answer.body, |value, key| value.get(key));
        if let Some(value) = found {
            problems.push(format!("response: {path} must be absent, got {value}"));
        }
    }
    let skipped = answer.header("patchbay-skipped");
    match (&expect.skipped, skipped) {
        (None, None) => {}
        (Some(expected), Some(actual)) if path_set(expected) == path_set(actual) => {}
        (expected, actual) => problems.push(format!(
            "Patchbay-Skipped: expected {expected:?}, got {actual:?}"
        )),
    }
    if !is_error && status == expect.status {
        let applied = answer.header("preference-applied");
        let wanted = prefers_lenient(case).then_some("handling=lenient");
        if applied != wanted {
            problems.push(format!(
                "Preference-Applied: expected {wanted:?}, got {applied:?}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name} ({}):\n  {}",
            case.about,
            problems.join("\n  ")
        ))
    }
}

/// Runs every case of a provider on one harness: each mismatch, and how many cases ran.
async fn run_fixtures(provider: &str) -> (Vec<String>, usize) {
    let cases = load(provider);
    let h = warmed_harness(provider).await;
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let outcome = run_case(&h, provider, case).await;
        if let Err(report) = check(name, case, &outcome) {
            failures.push(report);
        }
    }
    (failures, cases.len())
}

/// Every provider of the gateway has its table, each on its own harness at once, and every table
/// names a provider; every mismatch is reported together.
#[tokio::test(flavor = "multi_thread")]
async fn every_provider_passes_its_fixtures() {
    let providers: Vec<&'static str> = patchbay::providers::all()
        .iter()
        .map(|provider| provider.name())
        .collect();
    let tables: BTreeSet<String> = std::fs::read_dir(fixture_dir(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    let expected: BTreeSet<String> = providers.iter().map(|p| p.to_string()).collect();
    assert_eq!(tables, expected, "one fixture table per provider");
    let runs: Vec<_> = providers
        .into_iter()
        .map(|provider| tokio::spawn(run_fixtures(provider)))
        .collect();
    let (mut failures, mut total) = (Vec::new(), 0);
    for run in runs {
        let (failed, cases) = run.await.unwrap();
        failures.extend(failed);
        total += cases;
    }
    assert!(
        failures.is_empty(),
        "{} of {total} fixtures failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The table is not vacuous: a case that passes as written is reported once its expectations are
/// altered the way a mapping mistake would alter them.
#[tokio::test(flavor = "multi_thread")]
async fn fixture_runner_catches_a_wrong_expectation() {
    let (name, case) = load("sweetspot")
        .into_iter()
        .find(|(name, _)| name.ends_with("-address-merge-one-field.json"))
        .expect("the sweetspot address merge fixture exists");
    let h = warmed_harness("sweetspot").await;
    let outcome = run_case(&h, "sweetspot", &case).await;
    check(&name, &case, &outcome).expect("the fixture passes as written");

    // The whole address sent instead of the one sub-field that changed.
    let mut whole_address = case.clone();
    let put = whole_address.expect.calls.last_mut().expect("a PUT");
    put.body
        .as_mut()
        .and_then(Value::as_object_mut)
        .expect("a body")
        .insert("address1".into(), json!("1 Market St"));
    let report = check(&name, &whole_address, &outcome).expect_err("an extra field is caught");
    assert!(report.contains("/0/body/address1"), "{report}");
    assert!(report.contains(&name), "{report}");

    // A read-merge-write where Sweet Spot needs none.
    let mut extra_read = case.clone();
    extra_read.expect.calls.insert(
        0,
        Call {
            method: "GET".into(),
            path: "/v1/customers/cus_demo_alice".into(),
            headers: BTreeMap::new(),
            body: None,
        },
    );
    let report = check(&name, &extra_read, &outcome).expect_err("a missing call is caught");
    assert!(report.contains("expected 2 items, got 1"), "{report}");

    // The bearer key under another scheme.
    let mut scheme = case.clone();
    scheme.expect.calls[0]
        .headers
        .insert("authorization".into(), Some("***".into()));
    let report = check(&name, &scheme, &outcome).expect_err("a header mismatch is caught");
    assert!(report.contains("/0/headers/authorization"), "{report}");

    // A skipped header that was never sent.
    let mut skipped = case;
    skipped.expect.skipped = Some("email".into());
    let report = check(&name, &skipped, &outcome).expect_err("a missing skip is caught");
    assert!(report.contains("Patchbay-Skipped"), "{report}");
}

#[test]
fn a_case_with_an_unknown_key_is_refused() {
    let case = r#"{"about": "x", "patch": {}, "expect": {"status": 200, "calls": []}}"#;
    assert!(parse_case(case).is_ok());
    for typo in [
        r#"{"about": "x", "patch": {}, "expect": {"status": 200, "calls": [], "respones": {}}}"#,
        r#"{"about": "x", "patch": {}, "expcet": {"status": 200, "calls": []}}"#,
        r#"{"about": "x", "patch": {}, "expect": {"status": 200, "calls": [{"method": "GET", "path": "/", "bdy": {}}]}}"#,
        r#"{"about": "x", "patch": {}, "expect": {"status": 200}}"#,
        r#"{"about": " ", "patch": {}, "expect": {"status": 200, "calls": []}}"#,
    ] {
        assert!(parse_case(typo).is_err(), "accepted: {typo}");
    }
}

#[test]
fn masking_hides_credentials_but_not_what_the_caller_sent() {
    let none = BTreeSet::new();
    let key = format!("Bearer {}", credentials::SWEETSPOT_API_KEY);
    assert_eq!(mask("authorization", &key, &none), "Bearer ***");
    assert_eq!(
        mask("authorization", "Bearer sl_at_0123", &none),
        "Bearer ***"
    );
    assert_eq!(
        mask("site-id", credentials::SPARKLAYER_SITE_ID, &none),
        "***"
    );
    assert_eq!(mask("x-signature", &"ab12".repeat(16), &none), "***");
    assert_ne!(mask("x-signature", &"AB12".repeat(16), &none), "***");
    assert_ne!(mask("x-timestamp", "soon", &none), "***");
    let caller = BTreeSet::from(["caller-secret".to_owned()]);
    assert_eq!(
        mask("authorization", "Bearer caller-secret", &caller),
        "Bearer caller-secret"
    );
}
