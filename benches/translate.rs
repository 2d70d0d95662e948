//! One canonical PATCH per provider through parse → validate → translate → serialise, beside a baseline
//! measured in the same run: serde_json parsing the same body into a `Value` and writing it back.
//! The figure to read is each provider's time as a multiple of the baseline (target: at most 3×).
//!
//! Both run on the gateway binary's allocator (mimalloc), as they would inside it.
//!
//! On a shared machine the two criterion estimates of one provider can be taken seconds apart under
//! different neighbours, which moved single ratios by ±40 % here. So the bench ends with paired rounds:
//! each round times a batch of baseline round trips and a batch of patches back to back (alternating
//! which goes first), and the median of the per-round ratios is printed. Read that line.
//!
//!   cargo bench --bench translate

use criterion::{criterion_group, Criterion};
use patchbay::canonical::{parse_object, CustomerPatch};
use patchbay::providers::{self, Dialect, Record};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A realistic patch per provider, with the current record a read-merge-write would have read.
fn cases() -> Vec<(&'static str, &'static str, Value, Option<Value>)> {
    vec![
        (
            "sweetspot",
            "cus_demo_alice",
            json!({"first_name": "Alicia", "phone": "+1 (415) 555-0101", "billing_address": {"city": "Oakland", "line2": null}}),
            None,
        ),
        (
            "count",
            "3b241101-e2bb-4255-8caf-4136c566a962",
            json!({"phone": "+44 20 7183 8751", "website": "https://acme.example", "billing_address": {"city": "Leeds"}}),
            Some(
                json!({"uuid": "3b241101-e2bb-4255-8caf-4136c566a962", "customer": "Acme Bookkeeping Ltd",
                "email": "billing@acme.example", "mainPhone": null, "website": null, "status": "active",
                "billingAddress": {"street": "10 Downing Way", "city": "London", "state": null, "zipCode": "SW1A 2AA", "country": "GB"},
                "shippingAddress": null, "contacts": [], "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"}),
            ),
        ),
        (
            "juice",
            "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8",
            json!({"email": "test@custom.er", "last_name": null, "billing_address": {"city": "Lagos", "country": "ng"}}),
            Some(
                json!({"id": "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8", "first_name": "Test", "last_name": "Customer",
                "email": "test@custom.er", "phone_number": "+2348012345678",
                "billing_address": {"line1": "123 Test lane", "line2": "3456 Mike Drive", "city": "Anon", "state": "Acme", "zip_code": "12345", "country": "US"},
                "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"}),
            ),
        ),
        (
            "sparklayer",
            "cu_demo_jones",
            json!({"company_name": "Jones Ropes", "status": "active", "shipping_address": {"city": "York"}}),
            Some(
                json!({"id": "cu_demo_jones", "external_id": "JONES-001", "first_name": "Tom", "last_name": "Jones",
                "email": "tom@climbing.example", "company_name": "Tom Jones Climbing Ltd", "status": "active", "group": "base",
                "addresses": [
                    {"id": "ca_office", "address_line1": "1 Crag Rd", "address_line2": null, "city": "Sheffield", "region_code": null, "postal_code": "S1 1AA", "country_code": "GB"},
                    {"id": "ca_depot", "address_line1": "2 Rope Walk", "address_line2": null, "city": "Leeds", "region_code": null, "postal_code": "LS1 1AA", "country_code": "GB"}],
                "default_billing_address_id": "ca_office", "default_shipping_address_id": "ca_depot",
                "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"}),
            ),
        ),
    ]
}

/// The request path of one PATCH, as the gateway runs it between reading the body and sending upstream.
fn translate(
    dialect: &dyn Dialect,
    names: &[&str],
    id: &str,
    body: &[u8],
    current: Option<&Record>,
) -> bytes::Bytes {
    let object = parse_object(body).expect("valid JSON");
    let patch = CustomerPatch::parse(object, dialect.name(), names).expect("valid patch");
    let (patch, _) = patch
        .restrict(dialect.capabilities(), dialect.name(), false)
        .expect("storable fields");
    let request = dialect.write(id, &patch, current).expect("a write");
    request.body.expect("a body")
}

/// The baseline: serde_json parsing the same body into a `Value` and writing it back.
fn round_trip(body: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(body).unwrap();
    serde_json::to_vec(&value).unwrap()
}

fn benches(c: &mut Criterion) {
    let dialects = providers::all();
    let names: Vec<&str> = dialects.iter().map(|d| d.name()).collect();
    let mut group = c.benchmark_group("translate");
    for (provider, id, patch, current) in cases() {
        let body = serde_json::to_vec(&patch).unwrap();
        let current = current.map(|c| serde_json::from_value::<Record>(c).unwrap());
        let dialect = dialects.iter().find(|d| d.name() == provider).unwrap();
        group.bench_function(format!("{provider}/baseline serde_json round trip"), |b| {
            b.iter(|| round_trip(black_box(&body)))
        });
        group.bench_function(format!("{provider}/patch"), |b| {
            b.iter(|| {
                translate(
                    dialect.as_ref(),
                    &names,
                    id,
                    black_box(&body),
                    current.as_ref(),
                )
            })
        });
    }
    group.finish();
}

/// Median, first and third quartile of the per-round ratios patch ÷ baseline.
fn paired_ratio(mut baseline: impl FnMut(), mut patch: impl FnMut()) -> (f64, f64, f64) {
    const ROUNDS: usize = 400;
    const BATCH: u32 = 100;
    let time = |run: &mut dyn FnMut()| -> Duration {
        let start = Instant::now();
        for _ in 0..BATCH {
            run();
        }
        start.elapsed()
    };
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let (b, p) = if round % 2 == 0 {
                let b = time(&mut baseline);
                (b, time(&mut patch))
            } else {
                let p = time(&mut patch);
                (time(&mut baseline), p)
            };
            p.as_secs_f64() / b.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 4],
        ratios[ROUNDS * 3 / 4],
    )
}

fn paired_rounds() {
    let dialects = providers::all();
    let names: Vec<&str> = dialects.iter().map(|d| d.name()).collect();
    println!("\npaired rounds (patch ÷ baseline, median and interquartile range of 400 rounds of 100 each):");
    for (provider, id, patch, current) in cases() {
        let body = serde_json::to_vec(&patch).unwrap();
        let current = current.map(|c| serde_json::from_value::<Record>(c).unwrap());
        let dialect = dialects.iter().find(|d| d.name() == provider).unwrap();
        let (median, q1, q3) = paired_ratio(
            || {
                black_box(round_trip(black_box(&body)));
            },
            || {
                black_box(translate(
                    dialect.as_ref(),
                    &names,
                    id,
                    black_box(&body),
                    current.as_ref(),
                ));
            },
        );
        println!("  {provider:<11} {median:.2}x  ({q1:.2}–{q3:.2})");
    }
}

criterion_group!(translate_benches, benches);

fn main() {
    translate_benches();
    let args: Vec<String> = std::env::args().collect();
    let measuring = !args
        .iter()
        .any(|a| a == "--list" || a == "--profile-time" || a == "--test");
    if measuring {
        paired_rounds();
    }
    Criterion::default().configure_from_args().final_summary();
}
