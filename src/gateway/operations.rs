//! What the process and the admin listener ask of a built gateway: readiness of its stores, its
//! limiters, its providers' state, and each serving runtime's upstream clients.

use super::build::Gateway;
use super::rate_limit::RateLimiter;
use crate::upstream::{self, Client, Connections, Upstream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The readiness probe's refusal: why this process should get no new traffic.
#[derive(Debug, thiserror::Error)]
#[error("not ready: {0}")]
pub(crate) struct NotReady(pub String);

impl Gateway {
    /// Whether the shared stores answer (readiness); the reason when one does not.
    pub async fn stores_answer(&self) -> Result<(), String> {
        if let Some(redis) = &self.inner.rate_limit_redis {
            redis.ping().await.map_err(|error| error.to_string())?;
        }
        self.inner
            .state
            .ping()
            .await
            .map_err(|error| error.to_string())
    }

    /// Keeps the link `id` of `members` (`(provider, id)`) unless one of that id exists: whether it
    /// was made.
    pub async fn keep_link(
        &self,
        id: &str,
        members: &[(&str, &str)],
    ) -> Result<bool, crate::state::StateError> {
        let links = &self.inner.links;
        if links.get(id).await?.is_some() {
            return Ok(false);
        }
        // Written out by hand: the members' order is the link's.
        let members: Vec<String> = members
            .iter()
            .map(|(provider, id)| {
                let (provider, id) = (
                    serde_json::Value::from(*provider),
                    serde_json::Value::from(*id),
                );
                format!("{provider}:{id}")
            })
            .collect();
        let body = format!("{{{}}}", members.join(","));
        match links.link_of(id, body.as_bytes()) {
            Ok(link) => links.put(&link).await,
            Err(error) => {
                tracing::warn!(link = id, %error, "the link was not made");
                Ok(false)
            }
        }
    }

    /// Every provider's credential limiter (for `/quotas`).
    pub(crate) fn limiters(&self) -> impl Iterator<Item = &Arc<RateLimiter>> {
        self.inner
            .providers
            .iter()
            .filter_map(|provider| provider.limiter.as_ref())
    }

    /// Sets the `rate_limit_remaining` gauges from every limited credential's windows, for a scrape.
    pub async fn record_remaining(&self) {
        for limiter in self.limiters() {
            limiter.record_remaining().await;
        }
    }

    /// Open connections to the canonical API, across serving runtimes.
    pub fn open_connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Providers disabled for want of credentials, each with the settings it lacks.
    pub fn disabled(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        self.inner
            .providers
            .iter()
            .filter(|p| p.upstream.is_none())
            .map(|p| (p.name(), p.missing.clone()))
            .collect()
    }

    /// Enabled providers whose refresh tokens rotate: a restart after a refresh needs a durable store.
    pub fn rotating(&self) -> Vec<&'static str> {
        self.upstreams()
            .filter(|upstream| upstream.rotates_refresh_tokens())
            .map(|upstream| upstream.name())
            .collect()
    }

    /// Reads every provider's stored tokens: a value that does not parse stops start-up.
    pub async fn load_tokens(&self) -> Result<(), crate::state::StateError> {
        for upstream in self.upstreams() {
            upstream.load_tokens().await?;
        }
        Ok(())
    }

    fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.inner
            .providers
            .iter()
            .filter_map(|provider| provider.upstream.as_ref())
    }

    /// A serving runtime's own upstream clients, one per provider (`None` for a disabled one), and
    /// their connections, to sweep.
    pub fn clients(&self) -> (Arc<[Option<Client>]>, Vec<Connections>) {
        let mut connections = Vec::new();
        let clients = self
            .inner
            .providers
            .iter()
            .map(|provider| {
                let upstream = provider.upstream.clone()?;
                let (client, pool) = upstream::client(upstream, self.inner.client);
                connections.push(pool);
                Some(client)
            })
            .collect();
        (clients, connections)
    }
}
