//! The pure core: one credential's sliding log of admitted calls and the decision over every window of
//! its quota, on an injected clock in milliseconds. No IO and no clock of its own; the local store keeps
//! one log per key, and the Redis script (`sliding_log.lua`) applies the same rules to a sorted set.

use crate::config::Window;
use std::collections::VecDeque;

/// The windows of one credential, shortest first, all enforced together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    windows: Vec<Window>,
}

impl Quota {
    pub fn new(windows: &[Window]) -> Quota {
        let mut windows = windows.to_vec();
        windows.sort_by_key(|w| (w.seconds, w.limit));
        Quota { windows }
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// No window: nothing to count (a provider 429 can still pause the key).
    pub fn is_unlimited(&self) -> bool {
        self.windows.is_empty()
    }

    /// How long a call stays in the log: the longest window.
    pub fn longest_ms(&self) -> u64 {
        self.windows.iter().map(span).max().unwrap_or(0)
    }

    /// One replica's share while the shared store is unreachable: every limit divided by `replicas`,
    /// rounded down, so that all replicas together still stay within the quota.
    pub fn share(&self, replicas: u32) -> Quota {
        let windows = self
            .windows
            .iter()
            .map(|w| Window {
                limit: w.limit / replicas.max(1),
                seconds: w.seconds,
            })
            .collect();
        Quota { windows }
    }
}

fn span(window: &Window) -> u64 {
    window.seconds.saturating_mul(1000)
}

/// One window at the moment of a decision, for the `RateLimit` headers and `GET /quotas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    pub window: Window,
    /// Calls in the window, counting the ones just admitted.
    pub used: u32,
    /// Until the oldest call in the window leaves it (0 when empty).
    pub reset_ms: u64,
}

impl WindowState {
    pub fn remaining(&self) -> u32 {
        self.window.limit.saturating_sub(self.used)
    }
}

/// The answer to "may these calls be made now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// Not now; at `now + retry_ms` (unrounded) every window has room, unless others take it first.
    Refused {
        retry_ms: u64,
    },
    /// More calls than a window allows at all: never admitted under this quota.
    Exceeds,
}

/// A verdict and the windows it was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub windows: Vec<WindowState>,
    /// Left of a pause after a provider 429 (0 when not paused).
    pub paused_ms: u64,
}

impl Decision {
    pub fn admitted(&self) -> bool {
        self.verdict == Verdict::Admitted
    }

    /// The window with the fewest calls left (on a tie, the one that frees up last): the one the
    /// `RateLimit` header names.
    pub fn tightest(&self) -> Option<&WindowState> {
        self.windows
            .iter()
            .min_by(|a, b| (a.remaining().cmp(&b.remaining())).then(b.reset_ms.cmp(&a.reset_ms)))
    }
}

/// One key's admitted calls and pause. A call is logged at the latest moment it can reach the provider:
/// while in flight, its reservation's deadline (admission + hold); once finished, the moment it finished
/// ([`settle`](SlidingLog::settle)). So the log never under-counts a call whose request was slow to
/// arrive, and a crashed caller's reservation still expires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlidingLog {
    /// Log stamps in ms, ascending; equal stamps are interchangeable.
    stamps: VecDeque<u64>,
    paused_until: u64,
}

impl SlidingLog {
    /// Decides without changing anything: this is the whole rule, and `reserve` only records its result.
    pub fn check(&self, quota: &Quota, now: u64, calls: u32) -> Decision {
        let paused_ms = self.paused_until.saturating_sub(now);
        let mut verdict = match paused_ms {
            0 => Verdict::Admitted,
            ms => Verdict::Refused { retry_ms: ms },
        };
        let mut windows = Vec::with_capacity(quota.windows.len());
        for window in &quota.windows {
            let span = span(window);
            // A call stamped `s` is in the window at `now` while `s > now - span`: it leaves at `s + span`.
            let first = match now.checked_sub(span) {
                Some(floor) => self.stamps.partition_point(|s| *s <= floor),
                None => 0,
            };
            let used = (self.stamps.len() - first) as u32;
            let reset_ms = match self.stamps.get(first) {
                Some(oldest) => oldest + span - now,
                None => 0,
            };
            if calls > window.limit {
                verdict = Verdict::Exceeds;
            } else if used + calls > window.limit && verdict != Verdict::Exceeds {
                // The calls fit once the `used + calls - limit` oldest calls in the window have left.
                let leaving = self.stamps[first + (used + calls - window.limit) as usize - 1];
                let wait = leaving + span - now;
                verdict = match verdict {
                    Verdict::Refused { retry_ms } => Verdict::Refused {
                        retry_ms: retry_ms.max(wait),
                    },
                    _ => Verdict::Refused { retry_ms: wait },
                };
            }
            windows.push(WindowState {
                window: *window,
                used,
                reset_ms,
            });
        }
        if paused_ms > 0 {
            // Nothing is left while paused, whatever the log says.
            for state in &mut windows {
                state.used = state.used.max(state.window.limit);
                state.reset_ms = state.reset_ms.max(paused_ms);
            }
        }
        Decision {
            verdict,
            windows,
            paused_ms,
        }
    }

    /// Admits `calls` calls in every window at once, or none: a refusal changes nothing. Admitted calls
    /// are logged at `now + hold_ms`, the latest they can reach the provider, until settled.
    pub fn reserve(&mut self, quota: &Quota, now: u64, calls: u32, hold_ms: u64) -> Decision {
        let mut decision = self.check(quota, now, calls);
        if !decision.admitted() || calls == 0 || quota.is_unlimited() {
            return decision;
        }
        if let Some(floor) = now.checked_sub(quota.longest_ms()) {
            let expired = self.stamps.partition_point(|s| *s <= floor);
            self.stamps.drain(..expired);
        }
        self.insert(now + hold_ms, calls);
        for state in &mut decision.windows {
            if state.used == 0 {
                // As the caller sees it, its own calls are made now.
                state.reset_ms = span(&state.window);
            }
            state.used += calls;
        }
        decision
    }

    /// The reservation stamped `stamp` with `reserved` calls is over and `made` of them were sent: those
    /// are logged at `now` (they reached the provider by then), the others are released.
    pub fn settle(&mut self, stamp: u64, reserved: u32, made: u32, now: u64) {
        let start = self.stamps.partition_point(|s| *s < stamp);
        let end = self.stamps.partition_point(|s| *s <= stamp);
        let gone = (end - start).min(reserved as usize);
        self.stamps.drain(start..start + gone);
        self.insert(now, made.min(gone as u32));
    }

    /// After a provider 429: refuse everything until `now + ms`.
    pub fn pause(&mut self, now: u64, ms: u64) {
        self.paused_until = self.paused_until.max(now + ms);
    }

    fn insert(&mut self, stamp: u64, calls: u32) {
        let at = self.stamps.partition_point(|s| *s <= stamp);
        for _ in 0..calls {
            self.stamps.insert(at, stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(pairs: &[(u32, u64)]) -> Quota {
        let windows: Vec<Window> = pairs
            .iter()
            .map(|&(limit, seconds)| Window { limit, seconds })
            .collect();
        Quota::new(&windows)
    }

    #[test]
    fn a_window_admits_its_limit_then_refuses_until_the_oldest_call_leaves() {
        let quota = quota(&[(2, 60)]);
        let mut log = SlidingLog::default();
        assert!(log.reserve(&quota, 1_000, 1, 0).admitted());
        assert!(log.reserve(&quota, 31_000, 1, 0).admitted());
        let before = log.clone();
        let refused = log.reserve(&quota, 31_000, 1, 0);
        assert_eq!(refused.verdict, Verdict::Refused { retry_ms: 30_000 });
        assert_eq!(log, before, "a refusal changes nothing");
        assert!(!log.check(&quota, 60_999, 1).admitted());
        assert!(log.reserve(&quota, 61_000, 1, 0).admitted());
        assert!(!log.check(&quota, 61_000, 1).admitted());
    }

    #[test]
    fn several_calls_are_admitted_together_or_not_at_all() {
        let quota = quota(&[(3, 10), (5, 100)]);
        let mut log = SlidingLog::default();
        assert!(log.reserve(&quota, 0, 2, 0).admitted());
        let before = log.clone();
        // One slot left in the short window: two calls wait for the first two calls to leave it.
        assert_eq!(
            log.reserve(&quota, 5_000, 2, 0).verdict,
            Verdict::Refused { retry_ms: 5_000 }
        );
        assert_eq!(log, before);
        assert!(log.reserve(&quota, 10_000, 2, 0).admitted());
        // The long window has one left: two calls must wait for the first batch to leave it.
        let decision = log.check(&quota, 20_000, 2);
        assert_eq!(decision.verdict, Verdict::Refused { retry_ms: 80_000 });
        let tightest = decision.tightest().unwrap();
        assert_eq!((tightest.window.seconds, tightest.remaining()), (100, 1));
        assert_eq!(log.check(&quota, 0, 4).verdict, Verdict::Exceeds);
    }

    #[test]
    fn admitted_windows_report_what_is_left_and_when_it_resets() {
        let quota = quota(&[(10, 60), (1000, 86_400)]);
        let mut log = SlidingLog::default();
        let first = log.reserve(&quota, 5_000, 1, 0);
        let reported: Vec<(u32, u64)> = first
            .windows
            .iter()
            .map(|w| (w.remaining(), w.reset_ms))
            .collect();
        assert_eq!(reported, [(9, 60_000), (999, 86_400_000)]);
        let second = log.reserve(&quota, 20_000, 2, 0);
        assert_eq!(second.tightest().unwrap().remaining(), 7);
        assert_eq!(second.windows[0].reset_ms, 45_000);
    }

    #[test]
    fn a_call_in_flight_counts_until_it_settles_then_from_when_it_finished() {
        let quota = quota(&[(1, 60)]);
        let mut log = SlidingLog::default();
        assert!(log.reserve(&quota, 0, 2, 0).verdict == Verdict::Exceeds);
        assert!(log.reserve(&quota, 0, 1, 10_000).admitted());
        // In flight: held until its deadline (10 s) plus the window.
        assert_eq!(
            log.check(&quota, 60_000, 1).verdict,
            Verdict::Refused { retry_ms: 10_000 }
        );
        // It finished at 2 s: it leaves the window at 62 s.
        log.settle(10_000, 1, 1, 2_000);
        assert!(!log.check(&quota, 61_999, 1).admitted());
        assert!(log.check(&quota, 62_000, 1).admitted());
    }

    #[test]
    fn unsent_calls_are_released_when_settling() {
        let quota = quota(&[(2, 60)]);
        let mut log = SlidingLog::default();
        assert!(log.reserve(&quota, 0, 2, 5_000).admitted());
        log.settle(5_000, 2, 1, 100);
        assert_eq!(log.check(&quota, 100, 1).windows[0].used, 1);
        assert!(log.check(&quota, 100, 1).admitted());
    }

    #[test]
    fn a_pause_refuses_everything_until_it_ends() {
        let quota = quota(&[(10, 60)]);
        let mut log = SlidingLog::default();
        log.pause(1_000, 7_000);
        let paused = log.check(&quota, 2_000, 1);
        assert_eq!(paused.verdict, Verdict::Refused { retry_ms: 6_000 });
        assert_eq!(paused.tightest().unwrap().remaining(), 0);
        assert!(log.check(&quota, 8_000, 1).admitted());
        // An unlimited key is paused too.
        assert!(!log.check(&Quota::default(), 2_000, 1).admitted());
    }

    #[test]
    fn a_replica_share_rounds_down() {
        let shared = quota(&[(10, 60), (1000, 86_400)]).share(3);
        let limits: Vec<u32> = shared.windows().iter().map(|w| w.limit).collect();
        assert_eq!(limits, [3, 333]);
    }
}
