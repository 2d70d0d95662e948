//! The in-process store: one [`SlidingLog`] per key in a moka cache. Keys idle for longer than a call
//! can stay in any log are evicted, and the cache never holds more than its capacity, so memory stays
//! bounded however many credentials pass through.

use super::sliding_log::{Decision, Quota, SlidingLog};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// At most this many keys are kept (one per credential; a handful in practice).
pub const CAPACITY: u64 = 1_000_000;

pub struct LocalStore {
    logs: moka::sync::Cache<String, Arc<Mutex<SlidingLog>>>,
}

impl LocalStore {
    /// `idle`: how long a key may go untouched before it is forgotten; it must cover the longest window
    /// plus the longest hold (and pause), so that an evicted key had nothing left in its log.
    pub fn new(capacity: u64, idle: Duration) -> LocalStore {
        LocalStore {
            logs: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// `key`'s log, to keep: a limiter holds its credential's log and decides without looking it up
    /// (hashing the key and the cache's bookkeeping on every decision).
    pub fn handle(&self, key: &str) -> LocalLog {
        LocalLog(self.logs.get_with_by_ref(key, Default::default))
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut SlidingLog) -> T) -> T {
        self.handle(key).with(f)
    }

    pub fn check(&self, key: &str, quota: &Quota, calls: u32, now: u64) -> Decision {
        self.with(key, |log| log.check(quota, now, calls))
    }

    pub fn reserve(
        &self,
        key: &str,
        quota: &Quota,
        calls: u32,
        hold_ms: u64,
        now: u64,
    ) -> Decision {
        self.with(key, |log| log.reserve(quota, now, calls, hold_ms))
    }

    pub fn settle(&self, key: &str, stamp: u64, reserved: u32, made: u32, now: u64) {
        self.with(key, |log| log.settle(stamp, reserved, made, now));
    }

    pub fn pause(&self, key: &str, ms: u64, now: u64) {
        self.with(key, |log| log.pause(now, ms));
    }

    /// Keys currently kept (after pending evictions run).
    pub fn len(&self) -> u64 {
        self.logs.run_pending_tasks();
        self.logs.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key's log, held.
#[derive(Clone)]
pub struct LocalLog(Arc<Mutex<SlidingLog>>);

impl LocalLog {
    fn with<T>(&self, f: impl FnOnce(&mut SlidingLog) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn check(&self, quota: &Quota, calls: u32, now: u64) -> Decision {
        self.with(|log| log.check(quota, now, calls))
    }

    pub fn reserve(&self, quota: &Quota, calls: u32, hold_ms: u64, now: u64) -> Decision {
        self.with(|log| log.reserve(quota, now, calls, hold_ms))
    }

    pub fn settle(&self, stamp: u64, reserved: u32, made: u32, now: u64) {
        self.with(|log| log.settle(stamp, reserved, made, now));
    }

    pub fn pause(&self, ms: u64, now: u64) {
        self.with(|log| log.pause(now, ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Window;

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let store = LocalStore::new(1_000, Duration::from_secs(3600));
        let quota = Quota::new(&[Window {
            limit: 10,
            seconds: 60,
        }]);
        for i in 0..5_000 {
            store.reserve(&format!("key-{i}"), &quota, 1, 0, 0);
        }
        assert!(store.len() <= 1_000, "{} keys kept", store.len());
    }

    #[test]
    fn keys_are_independent() {
        let store = LocalStore::new(10, Duration::from_secs(3600));
        let quota = Quota::new(&[Window {
            limit: 1,
            seconds: 60,
        }]);
        assert!(store.reserve("a", &quota, 1, 0, 0).admitted());
        assert!(!store.reserve("a", &quota, 1, 0, 0).admitted());
        assert!(store.reserve("b", &quota, 1, 0, 0).admitted());
    }
}
