//! Check 10, first half: each client's own quota, `clients[].rate_limit` and
//! `clients[].provider_rate_limit.<p>`, enforced with governor's keyed GCRA
//! (`Quota::per_minute(N).allow_burst(B)`), one cell per request. GCRA is the right tool here: it
//! smooths callers fairly in front of the provider's exact sliding log, which stays the only guarantee
//! of what a provider sees (GCRA cannot both burst and never exceed a sliding window).
//!
//! Clients with the same quota share one keyed limiter, keyed by client (and provider). The cells live
//! in [`Cells`], a governor state store that can also give a cell back: a request the provider's quota
//! then refuses consumes nothing from the client's either.

use super::rate_limit::retry_after_seconds;
use crate::config::{ClientConfig, ClientRate};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

/// A limiter's key: the client's place in `[[clients]]`, and the provider for a per-provider quota.
type Key = (usize, Option<&'static str>);

/// GCRA state per key (each key's theoretical arrival time), behind one lock.
#[derive(Clone, Default)]
pub(crate) struct Cells(Arc<Mutex<HashMap<Key, Nanos>>>);

thread_local! {
    /// The arrival time the last admitted cell on this thread left behind, read right after the check.
    static ADMITTED_UNTIL: std::cell::Cell<Nanos> = const { std::cell::Cell::new(Nanos::new(0)) };
}

impl StateStore for Cells {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut cells = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (outcome, next) = f(cells.get(key).copied())?;
        cells.insert(*key, next);
        ADMITTED_UNTIL.set(next);
        Ok(outcome)
    }
}

impl Cells {
    /// Undoes one admitted cell, the one whose admission moved the key's arrival time to `until`.
    /// GCRA adds one emission interval per cell, and time pays the oldest cells off first: of this one,
    /// only what is still unpaid at `now` comes back — nothing once the burst has refilled past it, or
    /// later requests would get cells on top of a full burst.
    fn give_back(&self, key: &Key, interval: Nanos, until: Nanos, now: Nanos) {
        let unpaid = until.saturating_sub(now).min(interval);
        let mut cells = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(arrival) = cells.get_mut(key) {
            *arrival = arrival.saturating_sub(unpaid);
        }
    }
}

type Gcra<C> = governor::RateLimiter<Key, Cells, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One quota's keyed limiter.
struct Limiter<C: Clock> {
    gcra: Gcra<C>,
    cells: Cells,
    interval: Nanos,
    /// Taken just before the limiter's own start, which its arrival times count from: "now" measured
    /// from here is never earlier than governor's, so a cell given back is never more than its due.
    start: C::Instant,
}

/// Every client quota of the configuration, one keyed limiter per distinct `{ per_minute, burst }`.
pub(crate) struct ClientQuotas<C: Clock = DefaultClock> {
    limiters: Vec<Limiter<C>>,
    by_rate: BTreeMap<ClientRate, usize>,
    clock: C,
}

impl Default for ClientQuotas<DefaultClock> {
    fn default() -> Self {
        ClientQuotas::with_clock(DefaultClock::default())
    }
}

/// One of a client's quotas: which limiter, under which key, and how its headers name it.
pub(crate) struct Policy {
    limiter: usize,
    key: Key,
    /// `client`, or `client-<provider>`.
    name: String,
    rate: ClientRate,
}

/// A client's quotas: across providers, and per provider.
#[derive(Default)]
pub(crate) struct CallerQuotas {
    overall: Option<Policy>,
    by_provider: Vec<(&'static str, Policy)>,
}

/// A client's request was over one of its quotas.
#[derive(Debug, thiserror::Error)]
#[error("client {client} is over its own quota ({policy}: {per_minute}/min, burst {burst}); retry in {retry_after} s")]
pub(crate) struct ClientLimited {
    pub client: &'static str,
    pub policy: String,
    pub per_minute: u32,
    pub burst: u32,
    pub retry_after: u64,
}

impl ClientLimited {
    /// `RateLimit-Policy` and `RateLimit` naming the client's own policy.
    pub fn headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let fields = [
            (
                "ratelimit-policy",
                format!("\"{}\";q={};w=60", self.policy, self.per_minute),
            ),
            (
                "ratelimit",
                format!("\"{}\";r=0;t={}", self.policy, self.retry_after),
            ),
        ];
        for (name, value) in fields {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(http::HeaderName::from_static(name), value);
            }
        }
        headers
    }
}

/// Cells a request took (limiter, key, the arrival time it left), given back with
/// [`ClientQuotas::give_back`] when it is refused later.
#[derive(Debug, Default)]
pub(crate) struct Taken(Vec<(usize, Key, Nanos)>);

impl<C: Clock + Clone> ClientQuotas<C> {
    pub fn with_clock(clock: C) -> ClientQuotas<C> {
        ClientQuotas {
            limiters: Vec::new(),
            by_rate: BTreeMap::new(),
            clock,
        }
    }

    /// The quotas of `client`, the `index`th of `[[clients]]` (validated: rates are more than 0).
    pub fn add(
        &mut self,
        index: usize,
        client: &ClientConfig,
        providers: &[&'static str],
    ) -> CallerQuotas {
        let overall = client
            .rate_limit
            .map(|rate| self.policy(rate, (index, None), "client".into()));
        let by_provider = client
            .provider_rate_limit
            .iter()
            .filter_map(|(name, rate)| {
                let provider = *providers.iter().find(|p| **p == name)?;
                let key = (index, Some(provider));
                Some((
                    provider,
                    self.policy(*rate, key, format!("client-{provider}")),
                ))
            })
            .collect();
        CallerQuotas {
            overall,
            by_provider,
        }
    }

    fn policy(&mut self, rate: ClientRate, key: Key, name: String) -> Policy {
        let next = self.limiters.len();
        let limiter = *self.by_rate.entry(rate).or_insert(next);
        if limiter == next {
            let one = NonZeroU32::MIN;
            let quota =
                governor::Quota::per_minute(NonZeroU32::new(rate.per_minute).unwrap_or(one))
                    .allow_burst(NonZeroU32::new(rate.burst()).unwrap_or(one));
            let cells = Cells::default();
            let start = self.clock.now();
            let gcra: Gcra<C> =
                governor::RateLimiter::new(quota, cells.clone(), self.clock.clone());
            self.limiters.push(Limiter {
                gcra,
                cells,
                interval: Nanos::from(quota.replenish_interval()),
                start,
            });
        }
        Policy {
            limiter,
            key,
            name,
            rate,
        }
    }

    /// One cell from each of the client's quotas that apply to a request of `providers` (its overall
    /// quota once, however many providers one request reaches), or none at all.
    pub fn take(
        &self,
        client: &'static str,
        quotas: &CallerQuotas,
        providers: &[&str],
    ) -> Result<Taken, ClientLimited> {
        let per_provider = quotas
            .by_provider
            .iter()
            .filter(|(name, _)| providers.contains(name))
            .map(|(_, policy)| policy);
        let mut taken = Taken::default();
        for policy in quotas.overall.iter().chain(per_provider) {
            let limiter = &self.limiters[policy.limiter];
            if let Err(not_until) = limiter.gcra.check_key(&policy.key) {
                self.give_back(taken);
                crate::metrics::client_rate_limit_decision(client, "rejected");
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(ClientLimited {
                    client,
                    policy: policy.name.clone(),
                    per_minute: policy.rate.per_minute,
                    burst: policy.rate.burst(),
                    retry_after: retry_after_seconds(wait),
                });
            }
            taken
                .0
                .push((policy.limiter, policy.key, ADMITTED_UNTIL.get()));
        }
        if !taken.0.is_empty() {
            crate::metrics::client_rate_limit_decision(client, "admitted");
        }
        Ok(taken)
    }

    /// Returns the cells of a request refused after it took them.
    pub fn give_back(&self, taken: Taken) {
        for (limiter, key, until) in taken.0 {
            let limiter = &self.limiters[limiter];
            let now = self.clock.now().duration_since(limiter.start);
            limiter.cells.give_back(&key, limiter.interval, until, now);
        }
    }
}

/// A request's cells until it is admitted: given back if it is refused or dropped before then (a
/// caller that hangs up while the provider's queue holds it has spent nothing).
pub(crate) struct Held {
    quotas: Arc<ClientQuotas>,
    taken: Option<Taken>,
}

impl Held {
    pub fn new(quotas: Arc<ClientQuotas>, taken: Taken) -> Held {
        Held {
            quotas,
            taken: Some(taken),
        }
    }

    /// The request goes upstream: its cells are spent.
    pub fn spend(mut self) {
        self.taken = None;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(taken) = self.taken.take() {
            self.quotas.give_back(taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn client(rate: Option<ClientRate>, juice: Option<ClientRate>) -> ClientConfig {
        ClientConfig {
            name: "c".into(),
            token_sha256: None,
            token_sha256_file: None,
            providers: None,
            rate_limit: rate,
            provider_rate_limit: juice.into_iter().map(|r| ("juice".into(), r)).collect(),
        }
    }

    const PROVIDERS: &[&str] = &["juice", "count"];

    fn rate(per_minute: u32, burst: u32) -> Option<ClientRate> {
        Some(ClientRate {
            per_minute,
            burst: Some(burst),
        })
    }

    /// Admitted requests out of `n` tries for `provider`.
    fn admitted(quotas: &ClientQuotas<FakeRelativeClock>, caller: &CallerQuotas, n: u32) -> u32 {
        (0..n)
            .filter(|_| quotas.take("c", caller, &["juice"]).is_ok())
            .count() as u32
    }

    #[test]
    fn a_burst_then_one_cell_per_interval() {
        let clock = FakeRelativeClock::default();
        let mut quotas = ClientQuotas::with_clock(clock.clone());
        let caller = quotas.add(0, &client(rate(6, 3), None), PROVIDERS);
        assert_eq!(admitted(&quotas, &caller, 10), 3, "the burst");
        let refused = quotas.take("c", &caller, &["juice"]).unwrap_err();
        assert_eq!(refused.retry_after, 10, "6/min: a cell every 10 s");
        assert_eq!(refused.headers()["ratelimit-policy"], "\"client\";q=6;w=60");
        clock.advance(Duration::from_secs(9));
        assert_eq!(admitted(&quotas, &caller, 5), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&quotas, &caller, 5), 1, "one cell refilled");
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            admitted(&quotas, &caller, 10),
            3,
            "never more than the burst"
        );
    }

    #[test]
    fn clients_with_one_quota_are_separate_keys() {
        let mut quotas = ClientQuotas::with_clock(FakeRelativeClock::default());
        let first = quotas.add(0, &client(rate(60, 2), None), PROVIDERS);
        let second = quotas.add(1, &client(rate(60, 2), None), PROVIDERS);
        assert_eq!(quotas.limiters.len(), 1, "one keyed limiter for both");
        assert_eq!(admitted(&quotas, &first, 5), 2);
        assert_eq!(
            admitted(&quotas, &second, 5),
            2,
            "the first spent only its own"
        );
    }

    #[test]
    fn a_provider_quota_adds_to_the_overall_one_and_refusals_give_back() {
        let mut quotas = ClientQuotas::with_clock(FakeRelativeClock::default());
        let caller = quotas.add(0, &client(rate(60, 5), rate(60, 2)), PROVIDERS);
        assert_eq!(admitted(&quotas, &caller, 5), 2, "juice's own burst");
        let refused = quotas.take("c", &caller, &["juice"]).unwrap_err();
        assert_eq!(refused.policy, "client-juice");
        // The juice refusals gave their overall cells back: 3 of 5 are left for count.
        let count = (0..5)
            .filter(|_| quotas.take("c", &caller, &["count"]).is_ok())
            .count();
        assert_eq!(count, 3);
        // A cell given back (the provider's quota refused the request) can be taken again.
        let mut fresh = ClientQuotas::with_clock(FakeRelativeClock::default());
        let caller = fresh.add(0, &client(rate(60, 1), None), PROVIDERS);
        let taken = fresh.take("c", &caller, &["juice"]).unwrap();
        assert!(fresh.take("c", &caller, &["juice"]).is_err());
        fresh.give_back(taken);
        assert!(fresh.take("c", &caller, &["juice"]).is_ok());
    }

    #[test]
    fn a_request_dropped_before_admission_gives_its_cell_back() {
        let mut quotas = ClientQuotas::default();
        let caller = quotas.add(0, &client(rate(1, 1), None), PROVIDERS);
        let quotas = Arc::new(quotas);
        let held = Held::new(
            quotas.clone(),
            quotas.take("c", &caller, &["juice"]).unwrap(),
        );
        assert!(quotas.take("c", &caller, &["juice"]).is_err(), "held");
        drop(held);
        let held = Held::new(
            quotas.clone(),
            quotas.take("c", &caller, &["juice"]).unwrap(),
        );
        held.spend();
        assert!(quotas.take("c", &caller, &["juice"]).is_err(), "spent");
    }

    #[test]
    fn a_cell_given_back_late_never_makes_more_than_the_burst() {
        let clock = FakeRelativeClock::default();
        let mut quotas = ClientQuotas::with_clock(clock.clone());
        let caller = quotas.add(0, &client(rate(6, 2), None), PROVIDERS);
        // Two requests hold their cells (waiting in a provider's queue, say) while the burst refills.
        let held: Vec<Taken> = (0..2)
            .map(|_| quotas.take("c", &caller, &["juice"]).unwrap())
            .collect();
        clock.advance(Duration::from_secs(60));
        assert_eq!(admitted(&quotas, &caller, 2), 2, "the refilled burst");
        // Both are refused by the provider now: giving back cannot add to a burst already spent.
        held.into_iter().for_each(|taken| quotas.give_back(taken));
        assert_eq!(admitted(&quotas, &caller, 5), 0, "the burst is spent");
        // Given back half-way through its interval, a cell returns what is still unpaid of it.
        clock.advance(Duration::from_secs(60));
        let held: Vec<Taken> = (0..2)
            .map(|_| quotas.take("c", &caller, &["juice"]).unwrap())
            .collect();
        clock.advance(Duration::from_secs(15));
        let mut held = held.into_iter();
        let (_, second) = (held.next(), held.next().unwrap());
        quotas.give_back(second);
        assert_eq!(
            admitted(&quotas, &caller, 5),
            2,
            "the first is paid off, the second back"
        );
    }
}
