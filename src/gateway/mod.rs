//! The canonical API over HTTP: `GET` and `PATCH /customers/{provider}:{id}`.
//!
//! A request passes DESIGN §1's checks in order, and the first that fails answers; nothing reaches a
//! provider before the last one. Errors are [`Problem`]s until [`rescue`](rescue::rescue) turns them into
//! `application/problem+json` at the edge.

mod customer;
mod locks;
pub mod rate_limit;
mod request;
mod rescue;

use crate::canonical::{parse_object, Customer, CustomerPatch, FieldError, Problem, ProblemKind};
use crate::config::{Backend, Config, OnStoreError};
use crate::providers;
use crate::upstream::{Auth, CallOptions, HttpClient, Upstream};
use bytes::Bytes;
use customer::{Limited, ProviderRuntime};
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rate_limit::{fingerprint, LocalStore, Quota, RateLimiter, RedisStore, Store};
use request::{check_content_type, customer_path, prefers_lenient, read_body};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The gateway: every provider's runtime and the request checks in front of them. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    providers: Vec<ProviderRuntime>,
    names: Vec<&'static str>,
    body_limit: usize,
}

impl Gateway {
    /// Builds every provider of [`providers::all`] from its settings; one without credentials is disabled.
    pub fn new(config: &Config) -> Gateway {
        let client = Arc::new(HttpClient::new(
            Duration::from_millis(config.server.connect_timeout_ms),
            Duration::from_millis(config.server.upstream_timeout_ms),
            config.server.worker_count(),
        ));
        let stores = Stores::new(config);
        let providers: Vec<ProviderRuntime> = providers::all()
            .into_iter()
            .map(|dialect| {
                let name = dialect.name();
                let settings = config.providers.get(name).cloned().unwrap_or_default();
                let missing = config.missing_credentials(name);
                let upstream = Auth::from_config(name, &settings)
                    .filter(|_| missing.is_empty())
                    .map(|auth| {
                        let upstream =
                            Upstream::new(name, &settings.base_url, client.clone(), auth);
                        let print = fingerprint(
                            &config.rate_limit.fingerprint_key,
                            upstream.credential_id(),
                        );
                        let quota = Quota::new(&settings.rate_limit.windows);
                        let limiter = RateLimiter::new(
                            name,
                            print,
                            &settings.rate_limit,
                            config.server.upstream_timeout_ms,
                            stores.for_quota(config, &quota),
                        );
                        (upstream, Arc::new(limiter))
                    });
                let fallback = settings
                    .rate_limit
                    .windows
                    .iter()
                    .map(|w| w.seconds)
                    .min()
                    .unwrap_or(60);
                ProviderRuntime::new(dialect, upstream, missing, fallback)
            })
            .collect();
        let names = providers.iter().map(|p| p.dialect.name()).collect();
        Gateway {
            inner: Arc::new(Inner {
                providers,
                names,
                body_limit: config.server.body_limit_bytes,
            }),
        }
    }

    /// Providers disabled for want of credentials, each with the settings it lacks.
    pub fn disabled(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        self.inner
            .providers
            .iter()
            .filter(|p| p.upstream.is_none())
            .map(|p| (p.dialect.name(), p.missing.clone()))
            .collect()
    }

    /// Closes this serving runtime's upstream connections that have idled too long.
    fn sweep_idle(&self) {
        for upstream in self
            .inner
            .providers
            .iter()
            .filter_map(|p| p.upstream.as_ref())
        {
            upstream.sweep_idle();
        }
    }

    /// Answers one request; never fails: every error is already a problem response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The request line is copied only when it will be logged: this runs on every request.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let method = request.method().clone();
            (method, request.uri().path().to_owned(), Instant::now())
        });
        let response = match self.respond(request).await {
            Ok(response) => response,
            Err(problem) => rescue::rescue(&problem),
        };
        if let Some((method, path, started)) = logged {
            tracing::debug!(
                %method, path, status = response.status().as_u16(),
                elapsed_us = started.elapsed().as_micros() as u64, "request"
            );
        }
        response
    }

    async fn respond<B>(&self, request: Request<B>) -> Result<Response<Full<Bytes>>, Problem>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        if parts.uri.path() == "/quotas" {
            return self.quotas(&parts.method).await;
        }
        // 1. path and provider
        let target = customer_path(parts.uri.path()).ok_or_else(|| {
            Problem::new(
                ProblemKind::NotFound,
                "no such route: the API is GET and PATCH /customers/{provider}:{id}",
            )
        })?;
        let provider = self
            .inner
            .providers
            .iter()
            .find(|p| p.dialect.name() == target.provider)
            .ok_or_else(|| {
                Problem::new(
                    ProblemKind::NotFound,
                    format!(
                        "unknown provider; use one of: {}",
                        self.inner.names.join(", ")
                    ),
                )
            })?;
        provider.check_configured()?;
        // 2. method
        if parts.method != Method::GET && parts.method != Method::PATCH {
            return Err(Problem::new(
                ProblemKind::MethodNotAllowed,
                format!("{} is not supported here: use GET or PATCH", parts.method),
            ));
        }
        // 3. id
        let name = provider.dialect.name();
        let id = target
            .id
            .and_then(|raw| provider.dialect.parse_id(&raw))
            .map_err(|message| {
                Problem::new(
                    ProblemKind::BadRequest,
                    format!("invalid {name} id: {message}"),
                )
                .with_errors(vec![FieldError::new("id", message)])
            })?;
        // 4. caller auth: not configured in this version.
        let options = CallOptions {
            idempotency_key: parts.headers.get("idempotency-key").cloned(),
            budget: None,
        };
        if parts.method == Method::GET {
            // 10. rate limit · 11. upstream
            let answer = provider.get(&id, &options).await;
            return Ok(limited_response(provider, answer, None));
        }
        // 5. content type · 6. size · 7. JSON object
        check_content_type(&parts.headers)?;
        let body = read_body(&parts.headers, body, self.inner.body_limit).await?;
        let object = parse_object(&body)
            .map_err(|message| Problem::new(ProblemKind::BadRequest, message))?;
        // 8. canonical validation, every bad field at once
        let reserved = match object.get("provider_fields").and_then(|p| p.get(name)) {
            Some(Value::Object(fields)) => provider.dialect.check_provider_fields(fields),
            _ => Vec::new(),
        };
        let patch = match CustomerPatch::parse(object, name, &self.inner.names) {
            Ok(patch) if reserved.is_empty() => patch,
            Ok(_) => return Err(Problem::invalid(reserved)),
            Err(mut errors) => {
                errors.extend(reserved);
                return Err(Problem::invalid(errors));
            }
        };
        // 9. what the provider cannot store or clear: refused, or skipped when lenient
        let lenient = prefers_lenient(&parts.headers);
        let (patch, skipped) = patch
            .restrict(provider.dialect.capabilities(), name, lenient)
            .map_err(Problem::invalid)?;
        // 10. rate limit · 11. upstream (see `ProviderRuntime`): `{}` (or nothing left once skipped)
        // writes nothing and answers the current state
        let answer = if patch.is_empty() {
            provider.get(&id, &options).await
        } else if provider.dialect.serialise_write(&patch) {
            self.write_to_completion(provider.dialect.name(), id, patch, options)
                .await
        } else {
            // Holds no lock: cut short by a caller who hangs up, it leaves nothing half-guarded.
            provider.patch(&id, &patch, &options).await
        };
        Ok(limited_response(
            provider,
            answer,
            lenient.then_some(&skipped),
        ))
    }

    /// `GET /quotas`: every limited credential by fingerprint, with what is left in each window.
    async fn quotas(&self, method: &Method) -> Result<Response<Full<Bytes>>, Problem> {
        if method != Method::GET {
            let problem = Problem::new(
                ProblemKind::MethodNotAllowed,
                format!("{method} is not supported here: use GET"),
            );
            let mut response = rescue::rescue(&problem);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return Ok(response);
        }
        let mut quotas = Vec::new();
        for limiter in self
            .inner
            .providers
            .iter()
            .filter_map(|p| p.limiter.as_ref())
        {
            if !limiter.quota().is_unlimited() {
                quotas.push(limiter.describe().await?);
            }
        }
        let body = serde_json::to_vec(&json!({ "quotas": quotas })).expect("JSON serialises");
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
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
            Arc::new(RedisStore::new(
                url.map_or("", |url| url.expose()),
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

/// The answer to a request that went through the rate limiter: the customer or the problem, plus the
/// `RateLimit-Policy` and `RateLimit` headers on a success or a 429 from a limited provider.
fn limited_response(
    provider: &ProviderRuntime,
    answer: Limited<Customer>,
    lenient: Option<&Vec<String>>,
) -> Response<Full<Bytes>> {
    let mut response = match &answer.result {
        Ok(customer) => customer_response(customer, lenient),
        Err(problem) => rescue::rescue(problem),
    };
    let status = response.status();
    if let (Some(limiter), Some(quota)) = (&provider.limiter, &answer.quota) {
        if status.is_success() || status == StatusCode::TOO_MANY_REQUESTS {
            limiter.headers(response.headers_mut(), quota);
        }
    }
    response
}

impl Gateway {
    /// Runs a serialised write as its own task, so that a caller who hangs up cannot cut it short: once the first
    /// upstream call is made, the write finishes and keeps the customer's lock until the provider has
    /// answered. Dropped halfway, it could release the lock with its write still in flight, and a
    /// concurrent read-merge-write would then read a record about to change.
    async fn write_to_completion(
        &self,
        provider: &'static str,
        id: String,
        patch: CustomerPatch,
        options: CallOptions,
    ) -> Limited<Customer> {
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            let runtime = gateway
                .inner
                .providers
                .iter()
                .find(|p| p.dialect.name() == provider)
                .expect("the provider was found before");
            runtime.patch(&id, &patch, &options).await
        });
        task.await.unwrap_or_else(|error| {
            tracing::error!(provider, %error, "a write task failed");
            Problem::new(ProblemKind::Internal, "the write failed inside patchbay").into()
        })
    }
}

/// 200 with the canonical customer; in lenient mode, what was applied and what was skipped.
fn customer_response(customer: &Customer, lenient: Option<&Vec<String>>) -> Response<Full<Bytes>> {
    // A customer is a few hundred bytes: one allocation instead of growing from 128.
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, customer).expect("customers serialise");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(skipped) = lenient {
        headers.insert(
            HeaderName::from_static("preference-applied"),
            HeaderValue::from_static("handling=lenient"),
        );
        if !skipped.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&skipped.join(", ")) {
                headers.insert(HeaderName::from_static("patchbay-skipped"), value);
            }
        }
    }
    response
}

/// How long open connections may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often idle upstream connections are checked for their age.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `gateway` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
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
                gateway.sweep_idle();
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
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        // The request's future is boxed: hyper keeps room for the service's future in every open
        // connection, and ours is tens of kilobytes, which idle keep-alive connections would hold.
        let service = service_fn(move |request| {
            let gateway = gateway.clone();
            Box::pin(async move { Ok::<_, Infallible>(gateway.handle(request).await) })
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("shutdown: connections still open after {DRAIN_TIMEOUT:?}"),
    }
}
