//! What one rate-limit decision costs: the local store with one key and with 100 000 keys, and the
//! Redis script against a private `redis-server` (started here; install it first, as `.ci/run` does).
//! Every decision admits one call under Juice's quota (10 per 60 s and 1000 per 86 400 s) on an
//! injected clock; with one key, decisions are 87 s apart, so its log holds a full day window's ~1000
//! calls.
//!
//! `cargo bench --bench rate_limit`

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use patchbay::config::Window;
use patchbay::gateway::rate_limit::{LocalStore, Quota, RedisStore, CAPACITY};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

const STEP_MS: u64 = 87_000;

fn juice() -> Quota {
    Quota::new(&[
        Window {
            limit: 10,
            seconds: 60,
        },
        Window {
            limit: 1000,
            seconds: 86_400,
        },
    ])
}

fn local(c: &mut Criterion) {
    let quota = juice();
    let store = LocalStore::new(CAPACITY, Duration::from_secs(3600));
    let now = Cell::new(0);
    for _ in 0..1_000 {
        now.set(now.get() + STEP_MS);
        store.reserve("key", &quota, 1, 0, now.get());
    }
    c.bench_function("local decision, 1 key", |b| {
        b.iter(|| {
            now.set(now.get() + STEP_MS);
            black_box(store.reserve("key", &quota, 1, 0, now.get()))
        })
    });

    const KEYS: u64 = 100_000;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{i:064x}")).collect();
    let store = LocalStore::new(CAPACITY, Duration::from_secs(3600));
    let tick = Cell::new(0u64);
    // Round robin over the keys, 1 ms per decision: each key is visited every 100 s.
    let per_tick = 1;
    for _ in 0..KEYS {
        let i = tick.get();
        store.reserve(&keys[(i % KEYS) as usize], &quota, 1, 0, i * per_tick);
        tick.set(i + 1);
    }
    c.bench_function("local decision, 100 000 keys", |b| {
        b.iter(|| {
            let i = tick.get();
            tick.set(i + 1);
            black_box(store.reserve(&keys[(i % KEYS) as usize], &quota, 1, 0, i * per_tick))
        })
    });
}

fn redis(c: &mut Criterion) {
    let server = common::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = RedisStore::new(&server.url(), Duration::from_secs(2));
    let quota = juice();
    let now = Cell::new(1_000_000);
    let mut id = 0u64;
    let mut decide = || {
        now.set(now.get() + STEP_MS);
        id += 1;
        let reservation = id.to_string();
        runtime
            .block_on(store.reserve("bench", &quota, 1, 0, &reservation, Some(now.get())))
            .expect("redis answers")
    };
    for _ in 0..1_000 {
        decide();
    }
    c.bench_function("redis decision (EVALSHA, loopback)", |b| {
        b.iter(|| black_box(decide()))
    });
}

criterion_group!(benches, local, redis);
criterion_main!(benches);
