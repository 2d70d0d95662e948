//! Rate limits per upstream credential: before a request's first upstream call, every call
//! it plans is reserved in all windows of the credential's quota at once, or the request is refused and
//! nothing is consumed. Unplanned calls (a token refresh after a 401 and the retry, a second read) each
//! take one more slot before they are sent, or fail with a 429. The limiter is an exact sliding log
//! rather than governor's GCRA: `Quota::per_minute(10)` lets a full bucket of 10 pass and then one more
//! every 6 s, which puts 19 calls in one sliding minute, while a log of call times admits a call only
//! when every window of the quota — ending at that moment — has room for it. The log lives in this
//! process ([`LocalStore`]) or in Redis ([`RedisStore`]), shared by replicas; `reject` mode answers 429
//! at once and `wait` mode queues callers in order until their calls fit.

mod headers;
mod local;
mod queue;
mod redis;
mod sliding_log;

pub use self::redis::{RedisStore, StoreError};
pub use headers::{retry_after_seconds, window_name};
pub use local::{LocalLog, LocalStore, CAPACITY};
pub use sliding_log::{Decision, Quota, SlidingLog, Verdict, WindowState};

use crate::config::{LimitMode, ProviderRateLimit, Secret};
use crate::upstream::{BoxError, CallBudget};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Added to a reservation's hold: time between admission and the first call being sent.
const HOLD_SLACK_MS: u64 = 1_000;

/// In wait mode, the caller at the front of the queue asks the store again at least this often.
const WAIT_POLL_MS: u64 = 100;

/// The name a credential has in logs, Redis keys and `GET /quotas`: HMAC-SHA256(`fingerprint_key`,
/// credential) in hex. The same on every replica; the credential cannot be read back from it.
pub fn fingerprint(key: &Secret, credential: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(credential.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Milliseconds on a monotonic clock, for the local store: wall-clock jumps must not free slots.
fn local_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Where a credential's log is kept.
pub(crate) enum Store {
    Local(Arc<LocalStore>),
    /// Shared through Redis; with `fallback`, a local log holding this replica's share of the quota
    /// answers while Redis is unreachable (`on_store_error = "local"`).
    Redis {
        redis: Arc<RedisStore>,
        local: Arc<LocalStore>,
        fallback: Option<Quota>,
    },
}

/// What must be settled once a request's calls are over.
enum Reservation {
    Local { stamp: u64, calls: u32 },
    Redis { id: String, calls: u32 },
}

/// Why the rate limit did not admit a request (or one more call of it).
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum RateLimitError {
    /// The quota has no room now; `retry_after` whole seconds from now it will.
    #[error("{detail}")]
    Refused { detail: String, retry_after: u64 },
    /// The request needs more calls than a window of the quota holds: it can never be admitted.
    #[error("this request needs {calls} upstream calls, more than providers.{provider}.rate_limit allows in one window")]
    Exceeds { provider: &'static str, calls: u32 },
    /// Redis did not answer and the settings say to fail closed.
    #[error("shared rate-limit store unreachable")]
    StoreUnavailable,
}

/// A refused request: why, and the quota as the refusal saw it (for the headers).
pub(crate) struct Refusal {
    pub error: RateLimitError,
    pub decision: Option<Decision>,
    retry_ms: Option<u64>,
}

impl From<RateLimitError> for Refusal {
    fn from(error: RateLimitError) -> Refusal {
        Refusal {
            error,
            decision: None,
            retry_ms: None,
        }
    }
}

/// One credential's limiter: its quota, mode, queue and store.
pub(crate) struct RateLimiter {
    provider: &'static str,
    fingerprint: String,
    quota: Quota,
    settings: ProviderRateLimit,
    /// The longest one upstream call may take (`server.upstream_timeout_ms`).
    call_ms: u64,
    queue: queue::Queue,
    store: Store,
    /// This credential's log in the local store (the Redis fallback's, with Redis).
    log: LocalLog,
}

impl RateLimiter {
    pub fn new(
        provider: &'static str,
        fingerprint: String,
        settings: &ProviderRateLimit,
        call_ms: u64,
        store: Store,
    ) -> RateLimiter {
        let log = match &store {
            Store::Local(local) | Store::Redis { local, .. } => local.handle(&fingerprint),
        };
        RateLimiter {
            log,
            provider,
            fingerprint,
            quota: Quota::new(&settings.windows),
            settings: settings.clone(),
            call_ms,
            queue: queue::Queue::default(),
            store,
        }
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Reserves `calls` calls: at once in `reject` mode; in `wait` mode after the callers ahead in the
    /// queue, as soon as the calls fit, or refused once `max_wait_ms` have passed.
    pub async fn admit(self: &Arc<Self>, calls: u32) -> Result<Arc<Admission>, Refusal> {
        let admitted = self.decide(calls).await;
        // A credential without windows only ever refuses while a provider's 429 pauses it: its
        // admissions are no decision worth a series.
        if self.quota.is_unlimited() && admitted.is_ok() {
            return admitted;
        }
        let decision = match &admitted {
            Ok(_) => "admitted",
            Err(refusal) if refusal.decision.as_ref().is_some_and(|d| d.paused_ms > 0) => "paused",
            Err(_) => "rejected",
        };
        crate::metrics::rate_limit_decision(self.provider, decision);
        admitted
    }

    async fn decide(self: &Arc<Self>, calls: u32) -> Result<Arc<Admission>, Refusal> {
        if self.settings.mode == LimitMode::Reject || self.quota.is_unlimited() {
            return self.try_admit(calls).await;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.max_wait_ms);
        let Some(place) = self.queue.join(self.settings.max_queue) else {
            let why = format!("{} callers are already waiting", self.settings.max_queue);
            return Err(self.waited_in_vain(calls, &why).await);
        };
        crate::metrics::rate_limit_decision(self.provider, "queued");
        let Ok(_turn) = tokio::time::timeout_at(deadline, place.turn()).await else {
            let why = format!("no turn within {} ms", self.settings.max_wait_ms);
            return Err(self.waited_in_vain(calls, &why).await);
        };
        loop {
            match self.try_admit(calls).await {
                Err(Refusal {
                    retry_ms: Some(ms), ..
                }) if tokio::time::Instant::now() < deadline => {
                    // A call in flight counts until its deadline, but usually settles much sooner:
                    // look again soon rather than trusting the pessimistic wait.
                    let nap = Duration::from_millis(ms.min(WAIT_POLL_MS));
                    tokio::time::sleep_until((tokio::time::Instant::now() + nap).min(deadline))
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn try_admit(self: &Arc<Self>, calls: u32) -> Result<Arc<Admission>, Refusal> {
        let (decision, reservation) = self.attempt(calls).await?;
        Ok(Arc::new(Admission {
            limiter: self.clone(),
            planned: calls,
            sent: AtomicU32::new(0),
            reserved: Mutex::new(reservation),
            unplanned: Mutex::new(Vec::new()),
            made: AtomicU32::new(0),
            decision: Mutex::new(decision),
        }))
    }

    /// One reservation: the decision and what to settle later, or the refusal to answer.
    async fn attempt(&self, calls: u32) -> Result<(Decision, Option<Reservation>), Refusal> {
        let (decision, reservation) = self.reserve(calls).await?;
        match decision.verdict {
            Verdict::Admitted => Ok((decision, reservation)),
            Verdict::Refused { retry_ms } => Err(self.refusal(decision, retry_ms, None)),
            Verdict::Exceeds => Err(Refusal {
                error: RateLimitError::Exceeds {
                    provider: self.provider,
                    calls,
                },
                decision: Some(decision),
                retry_ms: None,
            }),
        }
    }

    /// A 429 for a caller that waited (or could not queue): when the calls would fit, as far as the
    /// store can tell now.
    async fn waited_in_vain(&self, calls: u32, why: &str) -> Refusal {
        match self.check(calls).await {
            Ok(decision) => {
                let retry_ms = match decision.verdict {
                    Verdict::Refused { retry_ms } => retry_ms,
                    _ => 1,
                };
                self.refusal(decision, retry_ms, Some(why))
            }
            Err(error) => error.into(),
        }
    }

    fn refusal(&self, decision: Decision, retry_ms: u64, why: Option<&str>) -> Refusal {
        let quota = describe(&self.quota);
        let detail = match (decision.paused_ms, why) {
            (_, Some(why)) => format!(
                "{} rate limit for patchbay's credential ({quota}): {why}",
                self.provider
            ),
            (0, None) => format!(
                "{} rate limit for patchbay's credential reached ({quota})",
                self.provider
            ),
            (_, None) => format!(
                "{} rate limited patchbay's credential; paused until its Retry-After",
                self.provider
            ),
        };
        Refusal {
            // Whole seconds rounded up, so that a retry at that moment finds the calls' room free.
            error: RateLimitError::Refused {
                detail,
                retry_after: retry_after_seconds(Duration::from_millis(retry_ms)),
            },
            decision: Some(decision),
            retry_ms: Some(retry_ms),
        }
    }

    /// How long calls stay logged at their deadline before they settle.
    fn hold_ms(&self, calls: u32) -> u64 {
        u64::from(calls) * self.call_ms + HOLD_SLACK_MS
    }

    /// Redis failed: the local share when configured, else (fail closed) a 503.
    fn store_failed<'a>(
        &self,
        error: &StoreError,
        fallback: &'a Option<Quota>,
    ) -> Result<&'a Quota, RateLimitError> {
        tracing::warn!(provider = self.provider, %error, "rate-limit store failed");
        fallback.as_ref().ok_or(RateLimitError::StoreUnavailable)
    }

    /// One decision that records the calls when they fit; `None` as reservation when nothing is logged.
    async fn reserve(&self, calls: u32) -> Result<(Decision, Option<Reservation>), RateLimitError> {
        let hold_ms = self.hold_ms(calls);
        let logged = calls > 0 && !self.quota.is_unlimited();
        let local = |quota: &Quota| {
            let now = local_now();
            let decision = self.log.reserve(quota, calls, hold_ms, now);
            let stamp = now + hold_ms;
            let reservation =
                (logged && decision.admitted()).then_some(Reservation::Local { stamp, calls });
            (decision, reservation)
        };
        match &self.store {
            Store::Local(_) => Ok(local(&self.quota)),
            Store::Redis {
                redis, fallback, ..
            } => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                match redis
                    .reserve(&self.fingerprint, &self.quota, calls, hold_ms, &id, None)
                    .await
                {
                    Ok(decision) => {
                        let reservation = (logged && decision.admitted())
                            .then_some(Reservation::Redis { id, calls });
                        Ok((decision, reservation))
                    }
                    Err(error) => Ok(local(self.store_failed(&error, fallback)?)),
                }
            }
        }
    }

    /// The quota as it stands, changing nothing.
    pub async fn check(&self, calls: u32) -> Result<Decision, RateLimitError> {
        match &self.store {
            Store::Local(_) => Ok(self.log.check(&self.quota, calls, local_now())),
            Store::Redis {
                redis, fallback, ..
            } => match redis
                .check(&self.fingerprint, &self.quota, calls, None)
                .await
            {
                Ok(decision) => Ok(decision),
                Err(error) => {
                    let share = self.store_failed(&error, fallback)?;
                    Ok(self.log.check(share, calls, local_now()))
                }
            },
        }
    }

    async fn settle(&self, reservation: Reservation, made: u32) {
        match (reservation, &self.store) {
            (Reservation::Local { stamp, calls }, _) => {
                self.log.settle(stamp, calls, made, local_now());
            }
            (Reservation::Redis { id, calls }, Store::Redis { redis, .. }) => {
                // On failure the calls stay logged at their deadline: later than needed, never earlier.
                if let Err(error) = redis
                    .settle(&self.fingerprint, &self.quota, &id, calls, made, None)
                    .await
                {
                    tracing::warn!(provider = self.provider, %error, "could not settle a reservation");
                }
            }
            (Reservation::Redis { .. }, Store::Local(_)) => {}
        }
    }

    /// After the provider's own 429: every replica refuses this credential for `seconds`, without
    /// calling the provider. Answers the quota as the caller should see it: nothing left until then.
    pub async fn pause(&self, seconds: u64) -> Decision {
        let ms = seconds.saturating_mul(1000);
        tracing::info!(
            provider = self.provider,
            seconds,
            "provider answered 429; credential paused"
        );
        match &self.store {
            Store::Local(_) => self.log.pause(ms, local_now()),
            Store::Redis { redis, .. } => {
                // Locally too, for the fallback; Redis's pause is the one replicas share.
                self.log.pause(ms, local_now());
                if let Err(error) = redis.pause(&self.fingerprint, ms, None).await {
                    tracing::warn!(provider = self.provider, %error, "could not share a pause");
                }
            }
        }
        Decision {
            verdict: Verdict::Refused { retry_ms: ms },
            windows: self
                .quota
                .windows()
                .iter()
                .map(|window| WindowState {
                    window: *window,
                    used: window.limit,
                    reset_ms: ms,
                })
                .collect(),
            paused_ms: ms,
        }
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (nothing when the provider is not limited).
    pub fn headers(&self, headers: &mut HeaderMap, decision: &Decision) {
        headers::insert(headers, &self.quota, decision);
    }

    /// This credential in `GET /quotas`: fingerprint, windows and what is left in each.
    /// Sets the `rate_limit_remaining` gauges of this credential's windows (a store that does not
    /// answer leaves them as they were).
    pub async fn record_remaining(&self) {
        if self.quota.is_unlimited() {
            return;
        }
        if let Ok(decision) = self.check(0).await {
            for window in &decision.windows {
                let name = window_name(window.window.seconds);
                crate::metrics::rate_limit_remaining(
                    self.provider,
                    &name,
                    window.remaining().into(),
                );
            }
        }
    }

    pub async fn describe(&self) -> Result<Value, RateLimitError> {
        let decision = self.check(0).await?;
        let windows: Vec<Value> = decision
            .windows
            .iter()
            .map(|w| {
                json!({
                    "name": window_name(w.window.seconds),
                    "limit": w.window.limit,
                    "seconds": w.window.seconds,
                    "remaining": w.remaining(),
                    "reset_after_s": w.reset_ms.div_ceil(1000),
                })
            })
            .collect();
        let mode = match self.settings.mode {
            LimitMode::Reject => "reject",
            LimitMode::Wait => "wait",
        };
        let store = match self.store {
            Store::Local(_) => "local",
            Store::Redis { .. } => "redis",
        };
        Ok(json!({
            "provider": self.provider,
            // A prefix names the credential among a few; the whole hash would be a check value.
            "fingerprint": &self.fingerprint[..12],
            "mode": mode,
            "store": store,
            "paused_for_s": decision.paused_ms.div_ceil(1000),
            "windows": windows,
        }))
    }
}

/// `10 per 60 s and 1000 per 86400 s`.
fn describe(quota: &Quota) -> String {
    quota
        .windows()
        .iter()
        .map(|w| format!("{} per {} s", w.limit, w.seconds))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// An admitted request: the calls it planned, and any it had to add. It is the request's
/// [`CallBudget`]: each upstream call spends from it before it is sent.
pub(crate) struct Admission {
    limiter: Arc<RateLimiter>,
    planned: u32,
    /// Calls sent so far, planned or not.
    sent: AtomicU32,
    /// The planned calls' reservation (`None` when nothing is logged: an unlimited quota).
    reserved: Mutex<Option<Reservation>>,
    /// One reservation for each call beyond the planned ones, each of them sent.
    unplanned: Mutex<Vec<Reservation>>,
    /// Calls actually allowed out, planned and unplanned, for the access log.
    made: AtomicU32,
    decision: Mutex<Decision>,
}

impl Admission {
    /// The quota as the latest reservation saw it.
    pub fn decision(&self) -> Decision {
        lock(&self.decision).clone()
    }

    /// The upstream calls this request made (token calls and retries included).
    pub fn calls_made(&self) -> u32 {
        self.made.load(Ordering::Acquire)
    }

    /// The request is over: sent calls are logged at this moment, planned calls never sent are released.
    pub async fn settle(&self) {
        let sent = self.sent.load(Ordering::Acquire).min(self.planned);
        let reserved = lock(&self.reserved).take();
        if let Some(reserved) = reserved {
            self.limiter.settle(reserved, sent).await;
        }
        let unplanned = std::mem::take(&mut *lock(&self.unplanned));
        for reservation in unplanned {
            self.limiter.settle(reservation, 1).await;
        }
    }

    async fn spend_one_more(&self) -> Result<(), BoxError> {
        let (decision, reservation) = self
            .limiter
            .attempt(1)
            .await
            .map_err(|refusal| refusal.error)?;
        lock(&self.unplanned).extend(reservation);
        *lock(&self.decision) = decision;
        self.made.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CallBudget for Admission {
    fn spend_planned(&self) -> bool {
        let spent = self.sent.fetch_add(1, Ordering::AcqRel) < self.planned
            || self.limiter.quota.is_unlimited();
        if spent {
            self.made.fetch_add(1, Ordering::AcqRel);
        }
        spent
    }

    fn spend_unplanned(&self) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + '_>> {
        Box::pin(self.spend_one_more())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_hashes() {
        let key = Secret::new("patchbay");
        let print = fingerprint(&key, "live_secret");
        assert_eq!(print.len(), 64);
        assert!(!print.contains("live_secret"));
        assert_eq!(print, fingerprint(&key, "live_secret"));
        assert_ne!(print, fingerprint(&Secret::new("other"), "live_secret"));
    }
}
