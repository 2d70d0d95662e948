//! The run-time state store: what patchbay learns while it runs and must not lose — a provider's
//! rotated refresh token, the access tokens every replica shares, the links between customers.
//! `memory` keeps it for the process's life; `file` in `state.dir`, on disk before a write returns;
//! `redis` for every replica at once, acknowledged before a write returns. Values are text under short
//! keys; their users give them meaning (tokens; links; `Idempotency-Key` records, which only a shared
//! store keeps).

mod file;
pub mod redis;

use crate::config::{Config, StateBackend};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A store that could not be used, or a value in it that does not parse: always named, never a
/// silent fallback to what was configured.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {store} unavailable: {detail}")]
    Unavailable { store: String, detail: String },
    #[error("state store {store}: the value of {key} does not parse ({detail}); delete it to start again from the configured credentials")]
    Corrupt {
        store: String,
        key: String,
        detail: String,
    },
}

pub struct Store {
    backend: Backend,
}

enum Backend {
    Memory(Mutex<HashMap<String, String>>),
    File(file::FileState),
    /// Boxed: a connection's state is large beside the others.
    Redis(Box<redis::RedisState>),
}

/// A lock held in the store; only Redis's is shared (a process's own callers already wait in turn).
pub struct Lock {
    key: String,
    nonce: String,
}

impl Store {
    /// Nothing outlives the process.
    pub fn memory() -> Store {
        Store {
            backend: Backend::Memory(Mutex::default()),
        }
    }

    /// The store `state.backend` names (validated by config: a file store has a `dir`, a Redis one a URL).
    pub fn open(config: &Config) -> Result<Store, String> {
        let state = &config.state;
        let backend = match state.backend {
            StateBackend::Memory => return Ok(Store::memory()),
            StateBackend::File => {
                let dir = state
                    .dir
                    .as_deref()
                    .ok_or("state.dir: required with the file backend")?;
                Backend::File(file::FileState::open(dir).map_err(|e| format!("state.dir: {e}"))?)
            }
            StateBackend::Redis => {
                let (url, ca_file) = config.state_redis();
                let url = url.ok_or("state.redis_url: required with the redis backend")?;
                let timeout = Duration::from_millis(config.server.connect_timeout_ms);
                let link = redis::Link::new(url.expose(), ca_file, timeout);
                Backend::Redis(Box::new(redis::RedisState::new(link)))
            }
        };
        Ok(Store { backend })
    }

    /// How errors name it: `memory`, `file <dir>`, `redis`.
    pub fn name(&self) -> String {
        match &self.backend {
            Backend::Memory(_) => "memory".into(),
            Backend::File(file) => format!("file {}", file.dir().display()),
            Backend::Redis(_) => "redis".into(),
        }
    }

    /// Whether what it holds survives a restart.
    pub fn is_durable(&self) -> bool {
        !matches!(self.backend, Backend::Memory(_))
    }

    /// Whether other processes read and write it too (then [`lock`](Store::lock) is shared).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The error for a value under `key` that does not parse.
    pub fn corrupt(&self, key: &str, detail: impl std::fmt::Display) -> StateError {
        let key = match &self.backend {
            Backend::File(file) => file.path(key).display().to_string(),
            _ => key.to_owned(),
        };
        StateError::Corrupt {
            store: self.name(),
            key,
            detail: detail.to_string(),
        }
    }

    fn unavailable(&self, detail: String) -> StateError {
        StateError::Unavailable {
            store: self.name(),
            detail,
        }
    }

    /// Whether the store can be used now (readiness): Redis answers; the others always can.
    pub async fn ping(&self) -> Result<(), StateError> {
        match &self.backend {
            Backend::Redis(redis) => redis
                .ping()
                .await
                .map_err(|detail| self.unavailable(detail)),
            _ => Ok(()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StateError> {
        let got = match &self.backend {
            Backend::Memory(values) => Ok(lock(values).get(key).cloned()),
            Backend::File(file) => {
                let path = file.path(key);
                blocking(move || file::FileState::get(&path)).await
            }
            Backend::Redis(redis) => redis.get(key).await,
        };
        got.map_err(|detail| self.unavailable(detail))
    }

    /// Returns once the value is kept (on disk; acknowledged by Redis).
    pub async fn put(&self, key: &str, value: String) -> Result<(), StateError> {
        let put = match &self.backend {
            Backend::Memory(values) => {
                lock(values).insert(key.to_owned(), value);
                Ok(())
            }
            Backend::File(file) => {
                let path = file.path(key);
                blocking(move || file::FileState::put(&path, &value)).await
            }
            Backend::Redis(redis) => redis.put(key, &value).await,
        };
        put.map_err(|detail| self.unavailable(detail))
    }

    /// Removes `key` (on disk, acknowledged by Redis) before it returns; whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let deleted = match &self.backend {
            Backend::Memory(values) => Ok(lock(values).remove(key).is_some()),
            Backend::File(file) => {
                let path = file.path(key);
                blocking(move || file::FileState::delete(&path)).await
            }
            Backend::Redis(redis) => redis.delete(key).await,
        };
        deleted.map_err(|detail| self.unavailable(detail))
    }

    /// Keeps `value` for `ttl`, acknowledged before it returns. Only Redis lets it expire: callers use
    /// this on a shared store ([`is_shared`](Store::is_shared)); the others keep it like [`put`](Store::put).
    pub async fn put_expiring(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StateError> {
        match &self.backend {
            Backend::Redis(redis) => redis
                .put_expiring(key, &value, ttl)
                .await
                .map_err(|detail| self.unavailable(detail)),
            _ => self.put(key, value).await,
        }
    }

    /// Takes the lock `key` for at most `ttl`; `None`: another process holds it. Granted at once by
    /// a store no other process shares.
    pub async fn lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>, StateError> {
        let lock = Lock {
            key: format!("{key}.lock"),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        let Backend::Redis(redis) = &self.backend else {
            return Ok(Some(lock));
        };
        match redis.lock(&lock.key, &lock.nonce, ttl).await {
            Ok(true) => Ok(Some(lock)),
            Ok(false) => Ok(None),
            Err(detail) => Err(self.unavailable(detail)),
        }
    }

    /// Extends a lock this process still holds to `ttl` from now (no-op for stores no one shares).
    pub async fn renew(&self, lock: &Lock, ttl: Duration) -> Result<(), StateError> {
        match &self.backend {
            Backend::Redis(redis) => redis
                .renew(&lock.key, &lock.nonce, ttl)
                .await
                .map_err(|detail| self.unavailable(detail)),
            _ => Ok(()),
        }
    }

    /// Frees a lock this process holds (it expires anyway if this fails).
    pub async fn unlock(&self, lock: Lock) {
        if let Backend::Redis(redis) = &self.backend {
            redis.unlock(&lock.key, &lock.nonce).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// File IO off the serving runtime's thread: an fsync can take milliseconds.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(format!("the store's IO task failed: {error}")))
}
