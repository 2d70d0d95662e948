//! The state all emulators share: customers, request log, faults, rate limits and token settings. Each
//! emulator's own books (issued tokens, replays) live in its module; [`super::world`] holds them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::fault::Fault;
use super::rate_limit::{Admission, RateLimiter, Refusal, Window};

/// The four emulated providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    SweetSpot,
    Count,
    Juice,
    SparkLayer,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::SweetSpot,
        Provider::Count,
        Provider::Juice,
        Provider::SparkLayer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::SweetSpot => "sweetspot",
            Provider::Count => "count",
            Provider::Juice => "juice",
            Provider::SparkLayer => "sparklayer",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Where the provider's API root sits on the sandbox server; documented paths are appended.
    /// COUNT's root keeps the `/partners` prefix its real base URL has.
    pub fn base_path(self) -> &'static str {
        match self {
            Provider::SweetSpot => "/sweetspot",
            Provider::Count => "/count/partners",
            Provider::Juice => "/juice",
            Provider::SparkLayer => "/sparklayer",
        }
    }

    /// The limits the provider documents (none published for Sweet Spot and SparkLayer).
    pub fn default_windows(self) -> Vec<Window> {
        match self {
            Provider::Count => vec![Window {
                limit: 100,
                seconds: 60,
            }],
            Provider::Juice => vec![
                Window {
                    limit: 10,
                    seconds: 60,
                },
                Window {
                    limit: 1000,
                    seconds: 86_400,
                },
            ],
            Provider::SweetSpot | Provider::SparkLayer => Vec::new(),
        }
    }
}

/// A provider-native customer record, as its GET answers it (inside any envelope).
pub(crate) type Record = Map<String, Value>;
/// Customers of one provider by primary id (`cu_…` for SparkLayer, lower-case UUIDs for COUNT and Juice).
pub(crate) type Customers = BTreeMap<String, Record>;

/// The object inside a `json!` literal, for seeds.
pub(crate) fn record(value: Value) -> Record {
    match value {
        Value::Object(object) => object,
        _ => Record::new(),
    }
}

pub(crate) struct State {
    /// Every request that reached a provider route, in arrival order.
    pub log: Vec<Value>,
    pub faults: [Option<Fault>; 4],
    /// Whether issuing a token (COUNT's refresh, SparkLayer's exchange) revokes the ones issued before,
    /// as some providers do: a replica still holding one is then answered 401 without `token_expired`.
    pub revoke_on_rotation: bool,
    customers: [Customers; 4],
    limits: [RateLimiter; 4],
    /// Unix milliseconds of the last timestamp handed out, so each write gets a later one.
    last_write_ms: u128,
}

impl State {
    /// No customers yet: [`reset`](State::reset) seeds them.
    pub fn new() -> State {
        State {
            log: Vec::new(),
            faults: Default::default(),
            revoke_on_rotation: false,
            customers: Default::default(),
            limits: Provider::ALL.map(|p| RateLimiter::new(p.default_windows())),
            last_write_ms: 0,
        }
    }

    /// Back to `seeds` (one per provider, in [`Provider::ALL`] order) with default limits and token
    /// settings and an empty log.
    pub fn reset(&mut self, seeds: [Customers; 4]) {
        self.customers = seeds;
        self.log.clear();
        self.faults = Default::default();
        self.limits = Provider::ALL.map(|p| RateLimiter::new(p.default_windows()));
        self.revoke_on_rotation = false;
    }

    pub fn customers(&self, provider: Provider) -> &Customers {
        &self.customers[provider as usize]
    }

    pub fn customers_mut(&mut self, provider: Provider) -> &mut Customers {
        &mut self.customers[provider as usize]
    }

    /// Counts one call against the provider's limits for this credential.
    pub fn admit(
        &mut self,
        provider: Provider,
        credential: &str,
    ) -> Result<Option<Admission>, Refusal> {
        self.limits[provider as usize].admit(credential, Instant::now())
    }

    pub fn windows(&self, provider: Provider) -> &[Window] {
        self.limits[provider as usize].windows()
    }

    /// New windows start with empty counters.
    pub fn set_windows(&mut self, provider: Provider, windows: Vec<Window>) {
        self.limits[provider as usize] = RateLimiter::new(windows);
    }

    /// An RFC 3339 UTC timestamp with milliseconds, strictly later than any handed out before,
    /// so `updatedAt` changes on every write even within one millisecond.
    pub fn write_timestamp(&mut self) -> String {
        let now_ms = unix_millis(SystemTime::now());
        let next = now_ms.max(self.last_write_ms + 1);
        self.last_write_ms = next;
        let millis = u64::try_from(next).unwrap_or(u64::MAX);
        timestamp(UNIX_EPOCH + Duration::from_millis(millis))
    }
}

pub(crate) fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

pub(crate) fn unix_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Whole seconds, rounded up, never below one: how `Retry-After` and reset times are stated.
pub(crate) fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_millis().div_ceil(1000).max(1) as u64
}
