//! One provider as every serving runtime shares it: its dialect, credentials, rate limiter, and the
//! locks and aliases of its customers.

use super::locks::KeyedLocks;
use super::rate_limit::RateLimiter;
use crate::providers::Provider;
use crate::upstream::Upstream;
use std::sync::Arc;

pub(crate) struct ProviderRuntime {
    /// Its place among the gateway's providers, and so among each runtime's clients.
    pub index: usize,
    pub dialect: Box<dyn Provider>,
    /// `None`: no credentials and no sandbox, so the provider answers 503.
    pub upstream: Option<Arc<Upstream>>,
    /// The credential's rate limit (present with the upstream).
    pub limiter: Option<Arc<RateLimiter>>,
    /// Settings that would enable a disabled provider, for its 503.
    pub missing: Vec<&'static str>,
    pub locks: KeyedLocks,
    /// Ids the caller used that are not the record's primary id (external ids), learned from
    /// answers, so that both names of one customer share one lock.
    pub aliases: moka::sync::Cache<String, String>,
    /// `Retry-After` for a provider 429 that names no time: the shortest configured window, else 60.
    pub fallback_retry_after: u64,
}

impl ProviderRuntime {
    pub fn name(&self) -> &'static str {
        self.dialect.name()
    }

    /// The name a customer's lock goes by: its primary id once an answer told it.
    pub fn lock_key(&self, id: &str) -> String {
        self.aliases.get(id).unwrap_or_else(|| id.to_owned())
    }
}
