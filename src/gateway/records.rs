//! Records of keyed requests (`Idempotency-Key`): what a request under a key left, and the claim that
//! keeps a second request under the same key from running while the first does. Kept in this process
//! (moka, LRU, at most `idempotency.max_entries`) or, with a shared state store, in Redis, where every
//! replica finds them; a request in flight holds the record's lock there, renewed while it runs.

use crate::state::{Lock, StateError, Store};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How this process's records and keys in flight are hashed. Their names are hex SHA-256s, 64 bytes,
/// which std's SipHash took ~330 instructions each to hash, four times per keyed request; foldhash takes
/// a tenth of it, and its seed, random per process, keeps chosen keys from crowding one bucket.
type Hashing = foldhash::fast::RandomState;

/// Where records are kept.
pub(crate) struct Records<T> {
    /// This process's records; with a shared store, only those Redis refused to keep.
    local: moka::sync::Cache<String, Arc<T>, Hashing>,
    /// Keys in flight in this process.
    flight: Arc<Mutex<HashSet<String, Hashing>>>,
    /// Redis, when the state store is shared: every replica's records and locks.
    shared: Option<Arc<Store>>,
    ttl: Duration,
    /// What their keys start with in the shared store.
    prefix: &'static str,
    /// How long a key in flight is held in Redis without renewal: a replica that dies frees it after
    /// this; a live one renews it every third of it until the request is answered.
    flight_ttl: Duration,
}

/// What [`Records::begin`] found: a record, another request holding the key, or the key for this one.
pub(crate) enum Begin<T> {
    Stored(Arc<T>),
    Busy,
    Run(Claim),
}

/// A key this request holds while it runs.
pub(crate) struct Claim(Held);

enum Held {
    /// Held until dropped: the guard frees it.
    Local {
        _guard: FlightGuard,
    },
    Shared(Lock),
}

/// Frees a local key when its request ends, however it ends.
struct FlightGuard {
    flight: Arc<Mutex<HashSet<String, Hashing>>>,
    scope: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        flight.remove(&self.scope);
    }
}

impl<T> Records<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Records kept `ttl`, at most `max_entries` locally; in `store` when it is shared, under keys
    /// that start with `prefix`.
    pub fn new(
        store: &Arc<Store>,
        prefix: &'static str,
        ttl: Duration,
        max_entries: u64,
        flight_ttl: Duration,
    ) -> Records<T> {
        Records {
            // LRU: moka's default (TinyLFU) admits a new entry into a full cache only if it was asked
            // for more often than the one it would evict, so new records would be dropped at once.
            local: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build_with_hasher(Hashing::default()),
            flight: Arc::default(),
            shared: store.is_shared().then(|| store.clone()),
            ttl,
            prefix,
            flight_ttl,
        }
    }

    fn key(&self, scope: &str) -> String {
        format!("{}:{scope}", self.prefix)
    }

    /// The record of `scope`, if one is kept.
    pub async fn stored(&self, scope: &str) -> Result<Option<Arc<T>>, StateError> {
        if let Some(stored) = self.local.get(scope) {
            return Ok(Some(stored));
        }
        let Some(store) = &self.shared else {
            return Ok(None);
        };
        let key = self.key(scope);
        let Some(text) = store.get(&key).await? else {
            return Ok(None);
        };
        let stored = serde_json::from_str(&text).map_err(|error| store.corrupt(&key, error))?;
        Ok(Some(Arc::new(stored)))
    }

    /// Holds `scope` in flight for this request; `None`: another request holds it.
    pub async fn claim(&self, scope: &str) -> Result<Option<Claim>, StateError> {
        let claim = match &self.shared {
            None => {
                let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
                if !flight.insert(scope.to_owned()) {
                    return Ok(None);
                }
                Held::Local {
                    _guard: FlightGuard {
                        flight: self.flight.clone(),
                        scope: scope.to_owned(),
                    },
                }
            }
            Some(store) => match store.lock(&self.key(scope), self.flight_ttl).await? {
                Some(lock) => Held::Shared(lock),
                None => return Ok(None),
            },
        };
        Ok(Some(Claim(claim)))
    }

    /// The record of `scope` if one is kept, else its claim for this request; `Busy`: another request
    /// holds it. In this process, one look under the claims' lock: a record is kept before its claim
    /// is freed, so a claim granted here finds the record of any request that held it before.
    pub async fn begin(&self, scope: &str) -> Result<Begin<T>, StateError> {
        if self.shared.is_none() {
            let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(stored) = self.local.get(scope) {
                return Ok(Begin::Stored(stored));
            }
            if !flight.insert(scope.to_owned()) {
                return Ok(Begin::Busy);
            }
            let guard = FlightGuard {
                flight: self.flight.clone(),
                scope: scope.to_owned(),
            };
            return Ok(Begin::Run(Claim(Held::Local { _guard: guard })));
        }
        if let Some(stored) = self.stored(scope).await? {
            return Ok(Begin::Stored(stored));
        }
        let Some(claim) = self.claim(scope).await? else {
            return Ok(Begin::Busy);
        };
        // The first may have finished between the look and the claim.
        match self.stored(scope).await {
            Ok(None) => Ok(Begin::Run(claim)),
            Ok(Some(stored)) => {
                self.release(claim).await;
                Ok(Begin::Stored(stored))
            }
            Err(error) => {
                self.release(claim).await;
                Err(error)
            }
        }
    }

    /// Frees a claim without keeping anything.
    pub async fn release(&self, claim: Claim) {
        match (claim.0, &self.shared) {
            (Held::Shared(lock), Some(store)) => store.unlock(lock).await,
            (claim, _) => drop(claim),
        }
    }

    /// Keeps a shared key in flight while `work` runs: renews its lock every third of its lifetime.
    pub async fn hold<R>(&self, claim: &Claim, work: impl std::future::Future<Output = R>) -> R {
        let (Held::Shared(lock), Some(store)) = (&claim.0, &self.shared) else {
            return work.await;
        };
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep(self.flight_ttl / 3) => {
                    if let Err(error) = store.renew(lock, self.flight_ttl).await {
                        tracing::warn!(%error, "an Idempotency-Key in flight could not be renewed");
                    }
                }
            }
        }
    }

    /// Keeps `stored`, then frees the key.
    pub async fn finish(&self, scope: &str, claim: Claim, stored: T) {
        let Some(store) = &self.shared else {
            self.local.insert(scope.to_owned(), Arc::new(stored));
            return drop(claim);
        };
        let text = serde_json::to_string(&stored).expect("records serialise");
        match store.put_expiring(&self.key(scope), text, self.ttl).await {
            Ok(()) => self.release(claim).await,
            Err(error) => {
                // The write is done. This replica still replays it; the key stays locked until its
                // lock expires, so other replicas answer 409 meanwhile instead of writing again.
                tracing::error!(%error, "an idempotency record could not be stored in the state store");
                self.local.insert(scope.to_owned(), Arc::new(stored));
            }
        }
    }
}
