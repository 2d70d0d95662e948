//! The canonical API over HTTP: `GET` and `PATCH /customers/{provider}:{id}`.
//!
//! The request path is a tower stack assembled in one function, [`stack()`]: the checks in order, the
//! first that fails answering, nothing reaching a provider before the last service. Errors are small
//! typed errors until the rescue turns them into `application/problem+json`. [`Gateway`] is what every
//! serving runtime shares; [`serve`] runs one runtime's listener with its own stack and connections.

pub mod access;
mod body;
mod callers;
mod client_quota;
mod content;
mod customer;
mod customer_lock;
mod detach;
pub mod document;
mod idempotency;
mod locks;
mod quotas;
pub mod rate_limit;
mod record;
mod request;
mod rescue;
mod route;
mod stack;
#[cfg(test)]
mod tests;
mod validate;

pub use stack::stack;

use crate::config::{Backend, Config, OnStoreError, Secret};
use crate::providers;
use crate::upstream::{self, Auth, Client, ClientSettings, Connections, TokenStore, Upstream};
use customer::ProviderRuntime;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use locks::KeyedLocks;
use rate_limit::{fingerprint, LocalStore, Quota, RateLimiter, RedisStore, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use crate::upstream::BoxError;

/// A problem as its `application/problem+json` answer.
pub fn problem_response(
    problem: &crate::canonical::Problem,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    rescue::render(problem)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// What every serving runtime shares: each provider's dialect, credentials, rate limiter and locks.
/// Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Shared>,
}

struct Shared {
    providers: Arc<[Arc<ProviderRuntime>]>,
    names: Arc<[&'static str]>,
    body_limit: usize,
    body_timeout: Duration,
    client: ClientSettings,
    /// Open connections across serving runtimes, and how many may be.
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    /// How long open requests may take to finish once shutdown starts.
    shutdown_grace: Duration,
    /// The shared stores, for readiness.
    rate_limit_redis: Option<Arc<RedisStore>>,
    state: Arc<crate::state::Store>,
    /// `[[clients]]`, and their quotas.
    callers: Arc<callers::Callers>,
    idempotency: Arc<idempotency::Records>,
    /// Writes running as their own tasks (they outlive a caller that hangs up): shutdown waits for
    /// them within its grace, across serving runtimes.
    writes: tokio_util::task::TaskTracker,
}

impl Gateway {
    /// Builds every provider of [`providers::all`] from its settings, its tokens kept in memory only.
    pub fn new(config: &Config) -> Gateway {
        Gateway::with_state(config, Arc::new(crate::state::Store::memory()))
    }

    /// Builds every provider of [`providers::all`] from its settings; one without credentials is
    /// disabled. Tokens obtained at run time are kept in `state` too.
    pub fn with_state(config: &Config, state: Arc<crate::state::Store>) -> Gateway {
        // A refresh holds the store's lock at most this long: its token call's timeouts, with room.
        let lock_ttl = Duration::from_millis(
            2 * (config.server.connect_timeout_ms + config.server.upstream_timeout_ms),
        )
        .max(Duration::from_secs(5));
        let stores = Stores::new(config);
        // Without a configured key (a local gateway), fingerprints are keyed per process.
        let fingerprint_key = config
            .rate_limit
            .fingerprint_key
            .clone()
            .unwrap_or_else(|| Secret::new(uuid::Uuid::new_v4().simple().to_string()));
        let providers: Vec<Arc<ProviderRuntime>> = providers::all()
            .into_iter()
            .enumerate()
            .map(|(index, dialect)| {
                let name = dialect.name();
                let settings = config.providers.get(name).cloned().unwrap_or_default();
                let missing = config.missing_credentials(name);
                let upstream = dialect.credentials(&settings).ok().map(|scheme| {
                    let tokens = TokenStore {
                        store: state.clone(),
                        lock_ttl,
                    };
                    let auth = Auth::new(scheme, name, tokens);
                    Arc::new(Upstream::new(name, &settings.base_url, auth))
                });
                let limiter = upstream.as_ref().map(|upstream| {
                    let print = fingerprint(&fingerprint_key, upstream.credential_id());
                    let quota = Quota::new(&settings.rate_limit.windows);
                    Arc::new(RateLimiter::new(
                        name,
                        print,
                        &settings.rate_limit,
                        config.server.upstream_timeout_ms,
                        stores.for_quota(config, &quota),
                    ))
                });
                let fallback_retry_after = settings
                    .rate_limit
                    .windows
                    .iter()
                    .map(|w| w.seconds)
                    .min()
                    .unwrap_or(60);
                Arc::new(ProviderRuntime {
                    index,
                    dialect,
                    upstream,
                    limiter,
                    missing,
                    locks: KeyedLocks::default(),
                    aliases: moka::sync::Cache::new(100_000),
                    fallback_retry_after,
                })
            })
            .collect();
        let names: Arc<[&'static str]> = providers.iter().map(|p| p.name()).collect();
        let callers = Arc::new(callers::Callers::new(&config.clients, &names));
        let idempotency = Arc::new(idempotency::Records::new(
            &state,
            Duration::from_secs(config.idempotency.ttl_s),
            config.idempotency.max_entries,
            // A key in flight is renewed while its request runs; a dead replica's expires like this.
            lock_ttl,
        ));
        Gateway {
            inner: Arc::new(Shared {
                providers: providers.into(),
                names,
                body_limit: config.server.body_limit_bytes,
                body_timeout: Duration::from_millis(config.server.body_timeout_ms),
                connections: Arc::new(AtomicUsize::new(0)),
                max_connections: config.server.connection_limit(),
                shutdown_grace: Duration::from_millis(config.server.shutdown_grace_ms),
                rate_limit_redis: stores.redis.clone(),
                state,
                callers,
                idempotency,
                writes: tokio_util::task::TaskTracker::new(),
                client: ClientSettings {
                    connect_timeout: Duration::from_millis(config.server.connect_timeout_ms),
                    call_timeout: Duration::from_millis(config.server.upstream_timeout_ms),
                },
            }),
        }
    }

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

    /// `/quotas`: every limited credential by fingerprint, with what is left in each window.
    pub async fn quotas(
        &self,
        method: &http::Method,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        match quotas::quotas(&self.inner.providers, method).await {
            Ok(response) => response,
            Err(error) => rescue::rescue(error),
        }
    }

    /// Sets the `rate_limit_remaining` gauges from every limited credential's windows, for a scrape.
    pub async fn record_remaining(&self) {
        for provider in self.inner.providers.iter() {
            if let Some(limiter) = &provider.limiter {
                limiter.record_remaining().await;
            }
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

/// The stores rate limiters keep their logs in: this process's, and Redis when configured.
struct Stores {
    local: Arc<LocalStore>,
    redis: Option<Arc<RedisStore>>,
}

impl Stores {
    fn new(config: &Config) -> Stores {
        let call_ms = config.server.upstream_timeout_ms;
        let longest_ms = config
            .providers
            .values()
            .map(|p| Quota::new(&p.rate_limit.windows).longest_ms())
            .max()
            .unwrap_or(0);
        // A key idle this long has nothing left in any window (calls are held up to a few timeouts).
        let idle = Duration::from_millis(longest_ms + 4 * call_ms).max(Duration::from_secs(3600));
        let redis = (config.rate_limit.backend == Backend::Redis).then(|| {
            let url = config.rate_limit.redis_url.as_ref();
            Arc::new(RedisStore::with_ca(
                url.map_or("", |url| url.expose()),
                config.rate_limit.redis_ca_file.as_deref(),
                Duration::from_millis(config.server.connect_timeout_ms),
            ))
        });
        Stores {
            local: Arc::new(LocalStore::new(rate_limit::CAPACITY, idle)),
            redis,
        }
    }

    /// Redis for a limited credential when configured; an unlimited one only needs its pause, locally.
    fn for_quota(&self, config: &Config, quota: &Quota) -> Store {
        match &self.redis {
            Some(redis) if !quota.is_unlimited() => Store::Redis {
                redis: redis.clone(),
                local: self.local.clone(),
                fallback: (config.rate_limit.on_store_error == OnStoreError::Local)
                    .then(|| quota.share(config.rate_limit.replicas)),
            },
            _ => Store::Local(self.local.clone()),
        }
    }
}

/// One open connection, counted against `server.max_connections` until it is dropped.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(shared: &Shared) -> Option<ConnectionSlot> {
        let open = shared.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(shared.connections.clone());
        (open < shared.max_connections).then_some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often idle upstream connections are checked for their age.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `gateway` on `listener` until `shutdown` completes, then lets open requests finish. This
/// runtime builds its own stack and upstream connections.
/// Serves `listener` until `shutdown`, then lets open requests finish within `server.shutdown_grace_ms`;
/// `false` when some were still open at the end of it (and are cut short).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let (clients, connections) = gateway.clients();
    let service = TowerToHyperService::new(stack(&gateway, clients));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // A caller that never finishes its headers must not hold a connection forever.
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = sweep.tick() => {
                connections.iter().for_each(Connections::sweep_idle);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over `server.max_connections` the connection is closed at once: the caller sees it closed
        // (or reset) before any answer, and can retry elsewhere or later.
        let Some(slot) = ConnectionSlot::take(&gateway.inner) else {
            tracing::debug!("connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = gateway.inner.shutdown_grace;
    tokio::select! {
        () = async {
            graceful.shutdown().await;
            // A write whose caller has gone still runs: its connection is closed, it is not done.
            gateway.inner.writes.close();
            gateway.inner.writes.wait().await;
        } => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!(
                open_connections = gateway.open_connections(),
                writes_running = gateway.inner.writes.len(),
                "shutdown: server.shutdown_grace_ms ({} ms) is over; cutting short the requests still open",
                grace.as_millis()
            );
            false
        }
    }
}
