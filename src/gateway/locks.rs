//! Keyed locks: one async mutex per key, for the per-customer serialisation of writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async mutex per key, alive only while someone holds or awaits it, so idle customers cost nothing.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<LockMap>,
}

#[derive(Default)]
struct LockMap {
    locks: HashMap<String, Weak<AsyncMutex<()>>>,
    /// Size after the last sweep of dead entries; the next sweep runs when the map has doubled.
    swept_len: usize,
}

impl KeyedLocks {
    /// Waits until no one else holds `key`'s lock, then holds it until the guard is dropped; says
    /// whether it had to wait.
    pub(crate) async fn lock(&self, key: &str) -> (OwnedMutexGuard<()>, bool) {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            match map.locks.get(key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    let mutex = Arc::new(AsyncMutex::new(()));
                    map.locks.insert(key.to_owned(), Arc::downgrade(&mutex));
                    if map.locks.len() > (2 * map.swept_len).max(1024) {
                        map.locks.retain(|_, lock| lock.strong_count() > 0);
                        map.swept_len = map.locks.len();
                    }
                    mutex
                }
            }
        };
        match mutex.clone().try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (mutex.lock_owned().await, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_is_exclusive_and_other_keys_are_not() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "another key must not wait");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same key must wait while held");
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(again.is_ok(), "released locks can be taken again");
    }

    #[tokio::test]
    async fn idle_keys_are_swept() {
        let locks = KeyedLocks::default();
        for i in 0..5000 {
            drop(locks.lock(&i.to_string()).await);
        }
        let len = locks.map.lock().unwrap().locks.len();
        assert!(len <= 2048, "{len} idle locks kept");
    }
}
