//! The rate limiter's guarantee, on a fake clock: over three simulated days of random bursts no sliding
//! window of a quota's length ever holds more admitted calls than the quota, a refusal changes nothing,
//! a call at the exact (unrounded) ready time is admitted and one a millisecond earlier is not, and
//! greedy callers still get ≥ 95 % of what the quota allows. The same laws hold for the Redis script
//! (driven with an injected clock against a private `redis-server`), and the checker is shown to catch
//! the limiters that break them: plain governor `Quota::per_minute(10)` and a fixed-window counter.

mod common;

use common::RedisServer;
use governor::clock::FakeRelativeClock;
use patchbay::config::Window;
use patchbay::gateway::rate_limit::{Decision, LocalStore, Quota, RedisStore, SlidingLog, Verdict};
use proptest::prelude::*;
use std::num::NonZeroU32;
use std::time::Duration;

const MINUTE: u64 = 60_000;
const DAY: u64 = 86_400_000;

fn quota(pairs: &[(u32, u64)]) -> Quota {
    let windows: Vec<Window> = pairs
        .iter()
        .map(|&(limit, seconds)| Window { limit, seconds })
        .collect();
    Quota::new(&windows)
}

fn juice() -> Quota {
    quota(&[(10, 60), (1000, 86_400)])
}

// ---------------------------------------------------------------------------------------------------
// The checker

/// The most admitted calls in any sliding window of `span_ms`: calls at `a` and `b` share one when
/// `b - a < span_ms` (the provider's own rule).
fn busiest_window(stamps: &[u64], span_ms: u64) -> usize {
    let mut sorted = stamps.to_vec();
    sorted.sort_unstable();
    let mut busiest = 0;
    let mut first = 0;
    for last in 0..sorted.len() {
        while sorted[last] - sorted[first] >= span_ms {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

/// Every window of `quota` that some sliding window overfills: (seconds, calls seen, limit).
fn violations(stamps: &[u64], quota: &Quota) -> Vec<(u64, usize, u32)> {
    quota
        .windows()
        .iter()
        .map(|w| (w.seconds, busiest_window(stamps, w.seconds * 1000), w.limit))
        .filter(|&(_, seen, limit)| seen > limit as usize)
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Limiters under test

#[derive(Debug, PartialEq)]
enum Outcome {
    Admitted,
    /// Refused; ready again after this many ms, when the limiter says.
    Refused(Option<u64>),
}

trait Limiter {
    /// Decides for `calls` calls at `now` and records them when admitted (calls take no time).
    fn reserve(&mut self, now: u64, calls: u32) -> Outcome;
    /// Decides without recording.
    fn check(&mut self, now: u64, calls: u32) -> Outcome;
    /// Everything the limiter remembers, to show that a refusal changed none of it.
    fn state(&mut self) -> State;
}

#[derive(Debug, PartialEq)]
enum State {
    Log(SlidingLog),
    /// Redis's count of writes.
    Writes(String),
    /// A negative control: not inspected.
    Opaque,
}

fn outcome(decision: &Decision) -> Outcome {
    match decision.verdict {
        Verdict::Admitted => Outcome::Admitted,
        Verdict::Refused { retry_ms } => Outcome::Refused(Some(retry_ms)),
        Verdict::Exceeds => Outcome::Refused(None),
    }
}

/// patchbay's sliding log, as the local store keeps it.
struct Local {
    log: SlidingLog,
    quota: Quota,
}

impl Limiter for Local {
    fn reserve(&mut self, now: u64, calls: u32) -> Outcome {
        outcome(&self.log.reserve(&self.quota, now, calls, 0))
    }
    fn check(&mut self, now: u64, calls: u32) -> Outcome {
        outcome(&self.log.check(&self.quota, now, calls))
    }
    fn state(&mut self) -> State {
        State::Log(self.log.clone())
    }
}

/// The Redis script, on the injected clock.
struct Shared<'a> {
    store: &'a RedisStore,
    raw: redis::Connection,
    runtime: &'a tokio::runtime::Runtime,
    fingerprint: String,
    quota: Quota,
}

impl<'a> Shared<'a> {
    fn new(
        server: &RedisServer,
        store: &'a RedisStore,
        runtime: &'a tokio::runtime::Runtime,
        quota: Quota,
    ) -> Shared<'a> {
        let raw = redis::Client::open(server.url())
            .and_then(|client| client.get_connection())
            .expect("redis answers");
        Shared {
            store,
            raw,
            runtime,
            fingerprint: uuid::Uuid::new_v4().simple().to_string(),
            quota,
        }
    }
}

impl Limiter for Shared<'_> {
    fn reserve(&mut self, now: u64, calls: u32) -> Outcome {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let decision = self.runtime.block_on(self.store.reserve(
            &self.fingerprint,
            &self.quota,
            calls,
            0,
            &id,
            Some(now),
        ));
        outcome(&decision.expect("redis answers"))
    }
    fn check(&mut self, now: u64, calls: u32) -> Outcome {
        let decision = self.runtime.block_on(self.store.check(
            &self.fingerprint,
            &self.quota,
            calls,
            Some(now),
        ));
        outcome(&decision.expect("redis answers"))
    }
    fn state(&mut self) -> State {
        // Redis counts every write since the last save (never, here): unchanged means nothing written.
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut self.raw)
            .expect("redis answers");
        let writes = info
            .lines()
            .find(|line| line.starts_with("rdb_changes_since_last_save:"))
            .expect("INFO persistence has the write counter");
        State::Writes(writes.to_owned())
    }
}

/// Plain GCRA: governor's `Quota::per_minute(10)` (the negative control).
struct Gcra {
    limiter: governor::RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        FakeRelativeClock,
        governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
    >,
    clock: FakeRelativeClock,
    at: u64,
}

impl Gcra {
    fn per_minute(calls: u32) -> Gcra {
        let clock = FakeRelativeClock::default();
        let quota = governor::Quota::per_minute(NonZeroU32::new(calls).unwrap());
        Gcra {
            limiter: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            at: 0,
        }
    }
}

impl Limiter for Gcra {
    fn reserve(&mut self, now: u64, calls: u32) -> Outcome {
        self.clock.advance(Duration::from_millis(now - self.at));
        self.at = now;
        match self.limiter.check_n(NonZeroU32::new(calls).unwrap()) {
            Ok(Ok(())) => Outcome::Admitted,
            Ok(Err(not_until)) => {
                use governor::clock::Clock;
                let wait = not_until.wait_time_from(self.clock.now());
                Outcome::Refused(Some(wait.as_millis() as u64))
            }
            Err(_) => Outcome::Refused(None),
        }
    }
    fn check(&mut self, _now: u64, _calls: u32) -> Outcome {
        unreachable!("only used as a negative control")
    }
    fn state(&mut self) -> State {
        State::Opaque
    }
}

/// A counter per clock-aligned minute (the other classic mistake).
struct FixedWindow {
    limit: u32,
    minute: u64,
    count: u32,
}

impl Limiter for FixedWindow {
    fn reserve(&mut self, now: u64, calls: u32) -> Outcome {
        if now / MINUTE != self.minute {
            self.minute = now / MINUTE;
            self.count = 0;
        }
        if self.count + calls > self.limit {
            return Outcome::Refused(Some(MINUTE - now % MINUTE));
        }
        self.count += calls;
        Outcome::Admitted
    }
    fn check(&mut self, _now: u64, _calls: u32) -> Outcome {
        unreachable!("only used as a negative control")
    }
    fn state(&mut self) -> State {
        State::Opaque
    }
}

// ---------------------------------------------------------------------------------------------------
// Workloads

/// splitmix64: the bursts of one proptest case, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random bursts for `duration_ms`: quiet gaps from milliseconds to an hour, then up to 40 requests of
/// one or two calls within a second. Dense enough that Juice's day window binds (with gaps of up to
/// three hours a day held ~650 calls, and the day window was never reached). Every refusal is checked to have changed nothing and, with
/// `probe`, to be exact: refused 1 ms before its ready time, admitted at it. Returns every admitted
/// call's time (a two-call request counts twice).
fn bursts(limiter: &mut dyn Limiter, seed: u64, duration_ms: u64, probe: bool) -> Vec<u64> {
    let mut rng = Rng(seed);
    let mut admitted = Vec::new();
    let mut now = 1;
    while now < duration_ms {
        now += match rng.below(10) {
            0..=3 => rng.below(2_000),
            4..=6 => rng.below(MINUTE),
            7..=8 => rng.below(10 * MINUTE),
            _ => rng.below(60 * MINUTE),
        };
        for _ in 0..=rng.below(40) {
            now += rng.below(50);
            let calls = if rng.below(4) == 0 { 2 } else { 1 };
            let before = if probe {
                limiter.state()
            } else {
                State::Opaque
            };
            match limiter.reserve(now, calls) {
                Outcome::Admitted => admitted.extend(std::iter::repeat_n(now, calls as usize)),
                Outcome::Refused(ready) if probe => {
                    assert_eq!(
                        limiter.state(),
                        before,
                        "a refusal at {now} changed the state"
                    );
                    let ready = ready.expect("a retry time: no request exceeds a window");
                    assert!(ready > 0, "refused with nothing to wait for at {now}");
                    assert_ne!(
                        limiter.check(now + ready - 1, calls),
                        Outcome::Admitted,
                        "admitted 1 ms before its ready time {ready} ms after {now}"
                    );
                    assert_eq!(
                        limiter.check(now + ready, calls),
                        Outcome::Admitted,
                        "refused at its exact ready time {ready} ms after {now}"
                    );
                }
                Outcome::Refused(_) => {}
            }
        }
    }
    admitted
}

/// `callers` greedy callers for `duration_ms`: each calls again at once after a success, and after a
/// refusal waits the `Retry-After` it would be told (whole seconds, rounded up). Returns the times of
/// the admitted calls.
fn greedy(limiter: &mut dyn Limiter, callers: u64, duration_ms: u64, start: u64) -> Vec<u64> {
    let mut next: Vec<u64> = (0..callers).map(|i| start + i * 337).collect();
    let mut admitted = Vec::new();
    loop {
        let (caller, &now) = next.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
        if now >= start + duration_ms {
            return admitted;
        }
        match limiter.reserve(now, 1) {
            Outcome::Admitted => admitted.push(now),
            Outcome::Refused(ready) => {
                let ready = ready.expect("one call fits every window");
                next[caller] = now + ready.div_ceil(1000) * 1000;
            }
        }
    }
}

/// Calls the quota allows in `duration_ms` at best: each window's limit once per window length.
fn sustainable(quota: &Quota, duration_ms: u64) -> u64 {
    quota
        .windows()
        .iter()
        .map(|w| u64::from(w.limit) * duration_ms.div_ceil(w.seconds * 1000))
        .min()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------
// The local sliding log

/// Whether the bursts of `seed` ask more of some day than Juice's day window allows: under the minute
/// window alone they would have more than 1 000 calls admitted in one sliding day. Only then can the
/// day window be reached; the properties assume it (nearly every schedule does).
fn bursts_overfill_a_day(seed: u64) -> bool {
    let mut minute_only = Local {
        log: SlidingLog::default(),
        quota: quota(&[(10, 60)]),
    };
    busiest_window(&bursts(&mut minute_only, seed, 3 * DAY, false), DAY) > 1000
}

/// The day window was reached: some sliding day holds at least 999 admitted calls. If the day window
/// never refused a request, the juice limiter decided exactly as the minute window alone would, and
/// for bursts that overfill a day that admits over 1 000; so it refused one, and a refusal of at most
/// two calls means the day held at least 999.
fn reached_the_day_window(admitted: &[u64]) -> bool {
    busiest_window(admitted, DAY) >= 999
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn three_days_of_bursts_never_overfill_a_window(seed in any::<u64>()) {
        prop_assume!(bursts_overfill_a_day(seed));
        let quota = juice();
        let mut local = Local { log: SlidingLog::default(), quota: quota.clone() };
        let admitted = bursts(&mut local, seed, 3 * DAY, true);
        prop_assert!(violations(&admitted, &quota).is_empty(), "{:?}", violations(&admitted, &quota));
        prop_assert!(
            reached_the_day_window(&admitted),
            "the day window was never reached: busiest day {}",
            busiest_window(&admitted, DAY)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn greedy_callers_get_at_least_95_percent_of_the_quota(
        limit in 1u32..=100,
        seconds in 30u64..=3_600,
        callers in 1u64..=4,
        start in 0u64..1_000,
    ) {
        let quota = quota(&[(limit, seconds)]);
        let duration = 100 * seconds * 1000;
        let mut local = Local { log: SlidingLog::default(), quota: quota.clone() };
        let admitted = greedy(&mut local, callers, duration, start);
        prop_assert!(violations(&admitted, &quota).is_empty());
        let best = sustainable(&quota, duration);
        prop_assert!(admitted.len() as u64 * 100 >= best * 95, "{} of {best}", admitted.len());
    }

    /// Calls take time: each reaches the provider somewhere between its admission and the moment its
    /// reservation settles. Logged at their deadline until then, they are never under-counted.
    #[test]
    fn calls_in_flight_are_counted_until_they_settle(seed in any::<u64>()) {
        let quota = quota(&[(5, 10)]);
        let mut rng = Rng(seed);
        let mut log = SlidingLog::default();
        let mut in_flight: Vec<(u64, u64, u32, u64)> = Vec::new(); // (settles at, stamp, calls, admitted at)
        let mut arrivals = Vec::new();
        let mut now = 0;
        for _ in 0..3_000 {
            now += rng.below(400);
            in_flight.sort_unstable();
            while in_flight.first().is_some_and(|f| f.0 <= now) {
                let (done, stamp, calls, admitted) = in_flight.remove(0);
                let made = rng.below(u64::from(calls) + 1) as u32;
                log.settle(stamp, calls, made, done);
                for _ in 0..made {
                    arrivals.push(admitted + rng.below(done - admitted + 1));
                }
            }
            let calls = 1 + rng.below(2) as u32;
            let hold = 3_000;
            if log.reserve(&quota, now, calls, hold).admitted() {
                in_flight.push((now + rng.below(hold + 1), now + hold, calls, now));
            }
        }
        prop_assert!(violations(&arrivals, &quota).is_empty(), "{:?}", violations(&arrivals, &quota));
    }
}

#[test]
fn greedy_callers_get_the_whole_juice_quota_over_three_days() {
    let quota = juice();
    let mut local = Local {
        log: SlidingLog::default(),
        quota: quota.clone(),
    };
    let admitted = greedy(&mut local, 3, 3 * DAY, 0);
    assert!(violations(&admitted, &quota).is_empty());
    assert!(admitted.len() as u64 * 100 >= sustainable(&quota, 3 * DAY) * 95);
    assert_eq!(busiest_window(&admitted, MINUTE), 10);
}

#[test]
fn the_checker_flags_plain_gcra_per_minute() {
    let mut gcra = Gcra::per_minute(10);
    let admitted = greedy(&mut gcra, 1, 10 * MINUTE, 0);
    // A full bucket of 10, then one every 6 s: 19 in the first sliding minute.
    assert_eq!(busiest_window(&admitted, MINUTE), 19);
    assert!(!violations(&admitted, &quota(&[(10, 60)])).is_empty());
    // Random bursts catch it too.
    let admitted = bursts(&mut Gcra::per_minute(10), 7, DAY, false);
    assert!(!violations(&admitted, &quota(&[(10, 60)])).is_empty());
}

#[test]
fn the_checker_flags_a_fixed_window_counter() {
    let mut fixed = FixedWindow {
        limit: 10,
        minute: 0,
        count: 0,
    };
    let admitted = greedy(&mut fixed, 2, 10 * MINUTE, 30_000);
    // 10 at the end of one minute and 10 at the start of the next.
    assert_eq!(busiest_window(&admitted, MINUTE), 20);
}

#[test]
#[ignore = "long: fills the local store with more keys than it may keep"]
fn a_million_keys_stay_bounded() {
    let store = LocalStore::new(
        patchbay::gateway::rate_limit::CAPACITY,
        Duration::from_secs(3600),
    );
    let quota = juice();
    for i in 0..1_100_000u64 {
        store.reserve(&format!("{i:016x}"), &quota, 1, 0, i);
    }
    assert!(
        store.len() <= patchbay::gateway::rate_limit::CAPACITY,
        "{} keys",
        store.len()
    );
}

// ---------------------------------------------------------------------------------------------------
// The Redis script

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "long: three simulated days, three times, through a real Redis"]
fn the_redis_script_keeps_the_laws_over_three_days_of_bursts() {
    let server = RedisServer::start();
    let runtime = runtime();
    let store = RedisStore::new(&server.url(), Duration::from_secs(2));
    for seed in [1, 2, 3] {
        assert!(
            bursts_overfill_a_day(seed),
            "seed {seed} never asks for a full day"
        );
        let quota = juice();
        let mut shared = Shared::new(&server, &store, &runtime, quota.clone());
        let admitted = bursts(&mut shared, seed, 3 * DAY, true);
        assert!(
            violations(&admitted, &quota).is_empty(),
            "seed {seed}: {:?}",
            violations(&admitted, &quota)
        );
        assert!(
            reached_the_day_window(&admitted),
            "seed {seed}: the day window was never reached"
        );
    }
    let quota = juice();
    let mut shared = Shared::new(&server, &store, &runtime, quota.clone());
    let admitted = greedy(&mut shared, 3, 3 * DAY, 0);
    assert!(violations(&admitted, &quota).is_empty());
    assert!(admitted.len() as u64 * 100 >= sustainable(&quota, 3 * DAY) * 95);
}

/// The script and the sliding log are one rule: every decision, hold, settlement and pause gives the
/// same answer in both.
#[test]
fn the_redis_script_decides_exactly_as_the_sliding_log() {
    let server = RedisServer::start();
    let runtime = runtime();
    let store = RedisStore::new(&server.url(), Duration::from_secs(2));
    for seed in 0..6 {
        let mut rng = Rng(seed);
        let quota = quota(&[(4, 10), (9, 60)]);
        let fingerprint = format!("parity-{seed}");
        let mut log = SlidingLog::default();
        let mut open: Vec<(String, u64, u32)> = Vec::new();
        let mut now = 1_000;
        for step in 0..400 {
            now += rng.below(3_000);
            match rng.below(10) {
                0 if !open.is_empty() => {
                    let (id, stamp, calls) = open.remove(rng.below(open.len() as u64) as usize);
                    let made = rng.below(u64::from(calls) + 1) as u32;
                    log.settle(stamp, calls, made, now);
                    runtime
                        .block_on(store.settle(&fingerprint, &quota, &id, calls, made, Some(now)))
                        .unwrap();
                }
                1 => {
                    let ms = rng.below(20_000);
                    log.pause(now, ms);
                    runtime
                        .block_on(store.pause(&fingerprint, ms, Some(now)))
                        .unwrap();
                }
                _ => {
                    let calls = rng.below(3) as u32;
                    let hold = rng.below(5_000);
                    let id = format!("r{step}");
                    let expected = log.reserve(&quota, now, calls, hold);
                    let actual = runtime
                        .block_on(store.reserve(&fingerprint, &quota, calls, hold, &id, Some(now)))
                        .unwrap();
                    assert_eq!(actual, expected, "seed {seed} step {step} at {now}");
                    if expected.admitted() && calls > 0 {
                        open.push((id, now + hold, calls));
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_decision() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::new(
        &format!("redis://127.0.0.1:{port}/"),
        Duration::from_millis(300),
    );
    let error = store.check("k", &juice(), 1, None).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("shared rate-limit store unreachable"),
        "{error}"
    );
}
