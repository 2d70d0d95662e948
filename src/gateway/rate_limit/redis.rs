//! The shared store: every decision is one run of `sliding_log.lua` inside Redis, so replicas share one
//! log per credential and its windows are checked and committed atomically, on Redis's clock (`TIME`).
//! The script is sent once and then run by its SHA (`EVALSHA`); the connection is opened on first use
//! and opened again after a failure, so a Redis that comes back is used again.

use super::sliding_log::{Decision, Quota, Verdict, WindowState};
use crate::state::redis::Link;
use redis::Script;
use std::path::Path;
use std::time::Duration;

const SCRIPT: &str = include_str!("sliding_log.lua");

/// Redis could not be reached or did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("shared rate-limit store unreachable: {0}")]
pub struct StoreError(String);

pub struct RedisStore {
    link: Link,
    script: Script,
}

/// The two keys of a credential, hash-tagged so that Redis Cluster keeps them in one slot.
fn keys(fingerprint: &str) -> [String; 2] {
    [
        format!("{{patchbay:{fingerprint}}}:log"),
        format!("{{patchbay:{fingerprint}}}:paused"),
    ]
}

impl RedisStore {
    /// Parses `url` (`redis://host:port/db`); nothing is connected until the first decision.
    /// `timeout` bounds connecting and every command.
    pub fn new(url: &str, timeout: Duration) -> RedisStore {
        RedisStore::with_ca(url, None, timeout)
    }

    /// As [`new`](RedisStore::new), for a `rediss://` URL whose certificate a private CA signed.
    pub fn with_ca(url: &str, ca_file: Option<&Path>, timeout: Duration) -> RedisStore {
        RedisStore {
            link: Link::new(url, ca_file, timeout),
            script: Script::new(SCRIPT),
        }
    }

    /// Whether Redis answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.link.ping().await.map_err(StoreError)
    }

    /// Runs the script once; any failure drops the connection so that the next call reconnects.
    async fn run(&self, fingerprint: &str, args: Vec<String>) -> Result<Vec<i64>, StoreError> {
        let mut connection = self.link.connection().await.map_err(StoreError)?;
        let mut invocation = self.script.prepare_invoke();
        for key in keys(fingerprint) {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        match invocation.invoke_async(&mut connection).await {
            Ok(reply) => Ok(reply),
            Err(error) => Err(StoreError(self.link.failed(error).await)),
        }
    }

    /// Decides without recording anything. `now`: a test's clock in ms, `None` for Redis's own.
    pub async fn check(
        &self,
        fingerprint: &str,
        quota: &Quota,
        calls: u32,
        now: Option<u64>,
    ) -> Result<Decision, StoreError> {
        self.decide("check", fingerprint, quota, calls, 0, "", now)
            .await
    }

    /// Admits `calls` calls in every window at once, or none, as reservation `id` (the call ids are
    /// `id:1`, `id:2`, …), logged at now + `hold_ms` until settled.
    pub async fn reserve(
        &self,
        fingerprint: &str,
        quota: &Quota,
        calls: u32,
        hold_ms: u64,
        id: &str,
        now: Option<u64>,
    ) -> Result<Decision, StoreError> {
        self.decide("reserve", fingerprint, quota, calls, hold_ms, id, now)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        op: &str,
        fingerprint: &str,
        quota: &Quota,
        calls: u32,
        hold_ms: u64,
        id: &str,
        now: Option<u64>,
    ) -> Result<Decision, StoreError> {
        let mut args = vec![
            op.to_owned(),
            clock(now),
            calls.to_string(),
            hold_ms.to_string(),
            id.to_owned(),
        ];
        for window in quota.windows() {
            args.push(window.limit.to_string());
            args.push((window.seconds * 1000).to_string());
        }
        let reply = self.run(fingerprint, args).await?;
        let number = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        let verdict = match reply.first() {
            Some(1) => Verdict::Admitted,
            Some(0) => Verdict::Refused {
                retry_ms: number(1),
            },
            _ => Verdict::Exceeds,
        };
        let windows = quota
            .windows()
            .iter()
            .enumerate()
            .map(|(i, window)| WindowState {
                window: *window,
                used: number(3 + 2 * i) as u32,
                reset_ms: number(4 + 2 * i),
            })
            .collect();
        Ok(Decision {
            verdict,
            windows,
            paused_ms: number(2),
        })
    }

    /// Reservation `id` is over: `made` of its `reserved` calls are logged at now, the rest released.
    pub async fn settle(
        &self,
        fingerprint: &str,
        quota: &Quota,
        id: &str,
        reserved: u32,
        made: u32,
        now: Option<u64>,
    ) -> Result<(), StoreError> {
        let args = vec![
            "settle".to_owned(),
            clock(now),
            id.to_owned(),
            reserved.to_string(),
            made.to_string(),
            quota.longest_ms().to_string(),
        ];
        self.run(fingerprint, args).await.map(drop)
    }

    /// Refuses every call with this credential for `ms`, on every replica.
    pub async fn pause(
        &self,
        fingerprint: &str,
        ms: u64,
        now: Option<u64>,
    ) -> Result<(), StoreError> {
        let args = vec!["pause".to_owned(), clock(now), ms.to_string()];
        self.run(fingerprint, args).await.map(drop)
    }
}

fn clock(now: Option<u64>) -> String {
    now.map(|ms| ms.to_string()).unwrap_or_default()
}
