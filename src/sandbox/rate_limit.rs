//! Exact sliding-log rate limits per credential, as the providers enforce them on the sandbox.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// At most `limit` requests in any `seconds`-long sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Window {
    pub limit: u32,
    pub seconds: u64,
}

/// An admitted request, described by the window with the fewest calls left.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    pub limit: u32,
    pub remaining: u32,
    /// When the oldest call in that window leaves it, freeing a slot.
    pub reset_after: Duration,
}

/// A refused request: which window is full and when a slot frees in every full window.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub limit: u32,
    pub retry_after: Duration,
}

/// The windows of one provider and the arrival times of the calls each credential made.
/// Refused calls are not recorded, so they consume nothing.
pub(crate) struct RateLimiter {
    windows: Vec<Window>,
    calls: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(windows: Vec<Window>) -> RateLimiter {
        RateLimiter {
            windows,
            calls: HashMap::new(),
        }
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Admits the call and records it, or refuses it; `Ok(None)` when no limit applies.
    pub fn admit(&mut self, credential: &str, now: Instant) -> Result<Option<Admission>, Refusal> {
        let Some(longest) = self.windows.iter().map(|w| w.seconds).max() else {
            return Ok(None);
        };
        let calls = self.calls.entry(credential.to_owned()).or_default();
        while calls
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(longest))
        {
            calls.pop_front();
        }

        let mut refusal: Option<Refusal> = None;
        for window in &self.windows {
            let (in_window, oldest) = in_window(calls, window, now);
            let limit = window.limit as usize;
            if in_window >= limit {
                // The call whose departure brings the window back under its limit.
                let leaving = calls[oldest + (in_window - limit)];
                let wait = span(window).saturating_sub(now.saturating_duration_since(leaving));
                match &refusal {
                    Some(longer) if longer.retry_after >= wait => {}
                    _ => {
                        refusal = Some(Refusal {
                            limit: window.limit,
                            retry_after: wait,
                        })
                    }
                }
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }

        calls.push_back(now);
        let mut tightest: Option<Admission> = None;
        for window in &self.windows {
            let (in_window, oldest) = in_window(calls, window, now);
            let admission = Admission {
                limit: window.limit,
                remaining: window.limit.saturating_sub(in_window as u32),
                reset_after: span(window)
                    .saturating_sub(now.saturating_duration_since(calls[oldest])),
            };
            match &tightest {
                Some(tighter) if tighter.remaining <= admission.remaining => {}
                _ => tightest = Some(admission),
            }
        }
        Ok(tightest)
    }
}

fn span(window: &Window) -> Duration {
    Duration::from_secs(window.seconds)
}

/// How many recorded calls fall inside the window, and the index of the oldest of them.
fn in_window(calls: &VecDeque<Instant>, window: &Window, now: Instant) -> (usize, usize) {
    let count = calls
        .iter()
        .rev()
        .take_while(|t| now.saturating_duration_since(**t) < span(window))
        .count();
    (count, calls.len() - count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(windows: &[(u32, u64)]) -> RateLimiter {
        RateLimiter::new(
            windows
                .iter()
                .map(|&(limit, seconds)| Window { limit, seconds })
                .collect(),
        )
    }

    #[test]
    fn no_windows_admits_everything() {
        let mut limiter = limiter(&[]);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.admit("k", now), Ok(None));
        }
    }

    #[test]
    fn sliding_window_is_exact_and_refusals_cost_nothing() {
        let mut limiter = limiter(&[(2, 60)]);
        let start = Instant::now();
        assert_eq!(limiter.admit("k", start).unwrap().unwrap().remaining, 1);
        let later = start + Duration::from_secs(30);
        assert_eq!(limiter.admit("k", later).unwrap().unwrap().remaining, 0);
        let refused = limiter.admit("k", later).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        // Refusals are not recorded: the first call leaving frees exactly one slot.
        let freed = start + Duration::from_secs(60);
        assert!(limiter.admit("k", freed).is_ok());
        assert!(limiter.admit("k", freed).is_err());
        // Another credential has its own log.
        assert!(limiter.admit("other", freed).is_ok());
    }

    #[test]
    fn tightest_window_is_reported_and_the_longest_wait_refuses() {
        let mut limiter = limiter(&[(3, 10), (4, 100)]);
        let start = Instant::now();
        let first = limiter.admit("k", start).unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        limiter.admit("k", start).unwrap();
        limiter.admit("k", start).unwrap();
        let after_short = start + Duration::from_secs(10);
        let fourth = limiter.admit("k", after_short).unwrap().unwrap();
        assert_eq!((fourth.limit, fourth.remaining), (4, 0));
        let refused = limiter.admit("k", after_short).unwrap_err();
        assert_eq!(refused.limit, 4);
        assert_eq!(refused.retry_after, Duration::from_secs(90));
    }
}
