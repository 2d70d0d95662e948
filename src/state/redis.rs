//! Redis: one lazily opened connection shared by every call (the rate-limit store uses the same
//! [`Link`]), `redis://` or `rediss://` (rustls; the system's roots or a private CA), and the state
//! store's operations on it: a value read, a value written (acknowledged before it returns, optionally
//! expiring), and a lock with an expiry, so that a replica that dies holding it frees it.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::path::Path;
use std::time::Duration;
use tokio::sync::Mutex;

/// A connection to Redis, opened on first use and opened again after any failure, so a Redis that comes
/// back is used again. `timeout` bounds connecting and every command.
pub struct Link {
    /// An unusable URL or CA file fails every command, as an unreachable Redis would (config
    /// validation refuses both, so only tests meet this).
    client: Result<Client, String>,
    config: AsyncConnectionConfig,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    /// `url` is `redis://…` or `rediss://…`; `ca_file`: a PEM file of the CA that signed Redis's
    /// certificate, when it is not one the system trusts.
    pub fn new(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Link {
        Link {
            client: crate::config::redis_client(url, ca_file),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
            connection: Mutex::new(None),
        }
    }

    /// The shared connection, opening it first when there is none.
    pub async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|error| error.to_string())?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Whether Redis answers a `PING` (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection().await?;
        match redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err(self.failed(error).await),
        }
    }

    /// After a failed command: the next one connects again.
    pub async fn failed(&self, error: RedisError) -> String {
        *self.connection.lock().await = None;
        error.to_string()
    }
}

/// Deletes the lock only if it still holds this holder's nonce: an expired lock taken over by another
/// replica is not theirs to free.
const UNLOCK: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Extends the lock only if it still holds this holder's nonce.
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

/// The state store's operations, under `patchbay:state:<key>`.
pub struct RedisState {
    link: Link,
    unlock: Script,
    renew: Script,
}

impl RedisState {
    pub fn new(link: Link) -> RedisState {
        RedisState {
            link,
            unlock: Script::new(UNLOCK),
            renew: Script::new(RENEW),
        }
    }

    /// Extends the lock `key` to `ttl` from now if `nonce` still holds it.
    pub async fn renew(&self, key: &str, nonce: &str, ttl: Duration) -> Result<(), String> {
        let mut connection = self.link.connection().await?;
        let renewed: Result<i64, _> = self
            .renew
            .key(full_key(key))
            .arg(nonce)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut connection)
            .await;
        match renewed {
            Ok(_) => Ok(()),
            Err(error) => Err(self.link.failed(error).await),
        }
    }

    pub async fn ping(&self) -> Result<(), String> {
        self.link.ping().await
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, String> {
        let mut connection = self.link.connection().await?;
        let reply = redis::cmd("GET")
            .arg(full_key(key))
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(value) => Ok(value),
            Err(error) => Err(self.link.failed(error).await),
        }
    }

    /// Removes `key`; whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool, String> {
        let mut connection = self.link.connection().await?;
        let reply: Result<u64, _> = redis::cmd("DEL")
            .arg(full_key(key))
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(removed) => Ok(removed > 0),
            Err(error) => Err(self.link.failed(error).await),
        }
    }

    /// Returns once Redis acknowledged the write.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), String> {
        self.set(key, value, None).await
    }

    /// Like [`put`](RedisState::put), the value expiring after `ttl`.
    pub async fn put_expiring(&self, key: &str, value: &str, ttl: Duration) -> Result<(), String> {
        self.set(key, value, Some(ttl)).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), String> {
        let mut connection = self.link.connection().await?;
        let mut set = redis::cmd("SET");
        set.arg(full_key(key)).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let reply: Result<(), _> = set.query_async(&mut connection).await;
        match reply {
            Ok(()) => Ok(()),
            Err(error) => Err(self.link.failed(error).await),
        }
    }

    /// Takes the lock `key` for `ttl` with `nonce` as its holder; `false`: someone else holds it.
    pub async fn lock(&self, key: &str, nonce: &str, ttl: Duration) -> Result<bool, String> {
        let mut connection = self.link.connection().await?;
        let reply: Result<Option<String>, _> = redis::cmd("SET")
            .arg(full_key(key))
            .arg(nonce)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(reply) => Ok(reply.is_some()),
            Err(error) => Err(self.link.failed(error).await),
        }
    }

    /// Frees the lock if `nonce` still holds it. A failure leaves it to expire.
    pub async fn unlock(&self, key: &str, nonce: &str) {
        let Ok(mut connection) = self.link.connection().await else {
            return;
        };
        let freed: Result<i64, _> = self
            .unlock
            .key(full_key(key))
            .arg(nonce)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = freed {
            self.link.failed(error).await;
        }
    }
}

fn full_key(key: &str) -> String {
    format!("patchbay:state:{key}")
}
