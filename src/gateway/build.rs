//! Building the gateway from its configuration: every provider's dialect, credentials, rate limiter
//! and locks, the callers and the `Idempotency-Key` records, shared by every serving runtime.

use super::callers::Callers;
use super::fanout::FanRecord;
use super::idempotency::Stored;
use super::links::Links;
use super::locks::KeyedLocks;
use super::provider::ProviderRuntime;
use super::rate_limit::{self, fingerprint, LocalStore, Quota, RateLimiter, RedisStore, Store};
use super::records::Records;
use crate::config::{Backend, Config, OnStoreError, Secret};
use crate::providers;
use crate::upstream::{Auth, ClientSettings, TokenStore, Upstream};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// What every serving runtime shares: each provider's dialect, credentials, rate limiter and locks.
/// Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(super) inner: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) providers: Arc<[Arc<ProviderRuntime>]>,
    pub(super) names: Arc<[&'static str]>,
    pub(super) body_limit: usize,
    pub(super) body_timeout: Duration,
    pub(super) client: ClientSettings,
    /// Open connections across serving runtimes, and how many may be.
    pub(super) connections: Arc<AtomicUsize>,
    pub(super) max_connections: usize,
    /// How long open requests may take to finish once shutdown starts.
    pub(super) shutdown_grace: Duration,
    /// The shared stores, for readiness.
    pub(super) rate_limit_redis: Option<Arc<RedisStore>>,
    pub(super) state: Arc<crate::state::Store>,
    /// `[[clients]]`, and their quotas.
    pub(super) callers: Arc<Callers>,
    pub(super) idempotency: Arc<Records<Stored>>,
    /// Links, the records of keyed fan-outs, and whose values a read of a link shows first.
    pub(super) links: Arc<Links>,
    pub(super) fanouts: Arc<Records<FanRecord>>,
    pub(super) precedence: Arc<[&'static str]>,
    /// Writes running as their own tasks (they outlive a caller that hangs up): shutdown waits for
    /// them within its grace, across serving runtimes.
    pub(super) writes: tokio_util::task::TaskTracker,
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
        let callers = Arc::new(Callers::new(&config.clients, &names));
        let ttl = Duration::from_secs(config.idempotency.ttl_s);
        let max_entries = config.idempotency.max_entries;
        // A key in flight is renewed while its request runs; a dead replica's expires like this.
        let idempotency = Arc::new(Records::new(
            &state,
            "idempotency",
            ttl,
            max_entries,
            lock_ttl,
        ));
        let fanouts = Arc::new(Records::new(&state, "fanout", ttl, max_entries, lock_ttl));
        let precedence = config
            .links
            .precedence
            .iter()
            .filter_map(|name| names.iter().copied().find(|known| known == name))
            .collect();
        let providers: Arc<[Arc<ProviderRuntime>]> = providers.into();
        Gateway {
            inner: Arc::new(Shared {
                links: Arc::new(Links::new(state.clone(), providers.clone())),
                fanouts,
                precedence,
                providers,
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
