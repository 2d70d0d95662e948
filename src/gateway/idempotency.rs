//! `Idempotency-Key` on PATCH (draft-ietf-httpapi-idempotency-key-header), for every provider: a record
//! per client and key holds a fingerprint of the request (method, target, `Prefer` handling, body) and
//! the answer (status, headers, body). The same key and request within `idempotency.ttl_s` get the
//! stored answer again, with `Idempotent-Replayed: true` and no upstream call; the same key with another
//! request is a 422; a duplicate while the first is still running is a 409 and never a second write.
//! Only answers a retry could not change are kept: 2xx, and 4xx but 409 and 429.
//!
//! Records live in this process (moka, at most `idempotency.max_entries`) or, with
//! `state.backend = "redis"`, in Redis, where every replica finds them; a request in flight holds the
//! record's lock there. A keyed request runs detached (the layer above): a caller that hangs up after
//! sending it cannot leave a write done and unrecorded. How a failure becomes the answer stored is the
//! rescue's say, handed to this layer as its renderer.

use super::call::{Answer, CustomerCall};
use super::error::{BoxError, BoxFuture};
use crate::state::{Lock, StateError, Store};
use bytes::Bytes;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// What a keyed request carries to this layer in its extensions: whose key, and what was asked.
#[derive(Clone)]
pub(crate) struct Keyed {
    /// SHA-256 of client name and key: the record's name.
    scope: String,
    fingerprint: String,
}

impl Keyed {
    /// `client` (`""` when patchbay is open) and its key; the request's method, target, handling and
    /// body as patchbay read them (a body's keys in order, so reordered members are the same request).
    pub fn new(client: &str, key: &[u8], request: &[&[u8]]) -> Keyed {
        let scope = Sha256::new()
            .chain_update(client)
            .chain_update([0])
            .chain_update(key)
            .finalize();
        let mut fingerprint = Sha256::new();
        for part in request {
            fingerprint.update((part.len() as u64).to_be_bytes());
            fingerprint.update(part);
        }
        Keyed {
            scope: hex::encode(scope),
            fingerprint: hex::encode(fingerprint.finalize()),
        }
    }
}

/// A stored answer.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The answer's fields that describe that moment's quota, not the answer: a replay consumed nothing.
const NOT_REPLAYED: [&str; 3] = ["ratelimit", "ratelimit-policy", "retry-after"];

impl Stored {
    /// `response` as a record, when a retry could not change it.
    fn of(response: &Response<Full<Bytes>>, body: &Bytes, fingerprint: &str) -> Option<Stored> {
        let status = response.status();
        let final_answer = status.is_success()
            || (status.is_client_error()
                && status != StatusCode::CONFLICT
                && status != StatusCode::TOO_MANY_REQUESTS);
        if !final_answer {
            return None;
        }
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()))
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        Some(Stored {
            fingerprint: fingerprint.to_owned(),
            status: status.as_u16(),
            headers,
            body: String::from_utf8(body.to_vec()).ok()?,
        })
    }

    fn replay(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body.clone())));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Why a keyed request was not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("this Idempotency-Key was used with another request (method, customer or body); use a new key for a new request")]
    Reused,
    #[error(
        "a request with this Idempotency-Key is still in progress; retry once it has been answered"
    )]
    InFlight,
}

/// What the canonical API answers: a customer, or an answer already rendered (stored, or replayed).
pub(crate) enum Reply {
    Answer(Answer),
    Rendered(Response<Full<Bytes>>),
}

impl Reply {
    pub fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            Reply::Answer(answer) => answer.into_response(),
            Reply::Rendered(response) => response,
        }
    }
}

/// Where records are kept.
pub(crate) struct Records {
    /// This process's records; with a shared store, only those Redis refused to keep.
    local: moka::sync::Cache<String, Arc<Stored>>,
    /// Keys in flight in this process.
    flight: Arc<Mutex<HashSet<String>>>,
    /// Redis, when the state store is shared: every replica's records and locks.
    shared: Option<Arc<Store>>,
    ttl: Duration,
    /// How long a key in flight is held in Redis without renewal: a replica that dies frees it after
    /// this; a live one renews it every third of it until the request is answered.
    flight_ttl: Duration,
}

/// A key this request holds while it runs.
enum Claim {
    /// Held until dropped.
    Local {
        _held: FlightGuard,
    },
    Shared(Lock),
}

/// Frees a local key when its request ends, however it ends.
struct FlightGuard {
    flight: Arc<Mutex<HashSet<String>>>,
    scope: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        flight.remove(&self.scope);
    }
}

enum Begin {
    Replay(Arc<Stored>),
    Busy,
    Run(Claim),
}

impl Records {
    /// Records kept `ttl`, at most `max_entries` locally; in `store` when it is shared.
    pub fn new(
        store: &Arc<Store>,
        ttl: Duration,
        max_entries: u64,
        flight_ttl: Duration,
    ) -> Records {
        Records {
            // LRU: moka's default (TinyLFU) admits a new entry into a full cache only if it was asked
            // for more often than the one it would evict, so new records would be dropped at once.
            local: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            flight: Arc::default(),
            shared: store.is_shared().then(|| store.clone()),
            ttl,
            flight_ttl,
        }
    }

    fn key(scope: &str) -> String {
        format!("idempotency:{scope}")
    }

    async fn stored(&self, scope: &str) -> Result<Option<Arc<Stored>>, StateError> {
        if let Some(stored) = self.local.get(scope) {
            return Ok(Some(stored));
        }
        let Some(store) = &self.shared else {
            return Ok(None);
        };
        let key = Records::key(scope);
        let Some(text) = store.get(&key).await? else {
            return Ok(None);
        };
        let stored = serde_json::from_str(&text).map_err(|error| store.corrupt(&key, error))?;
        Ok(Some(Arc::new(stored)))
    }

    async fn begin(&self, scope: &str) -> Result<Begin, StateError> {
        if let Some(stored) = self.stored(scope).await? {
            return Ok(Begin::Replay(stored));
        }
        let claim = match &self.shared {
            None => {
                let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
                if !flight.insert(scope.to_owned()) {
                    return Ok(Begin::Busy);
                }
                let _held = FlightGuard {
                    flight: self.flight.clone(),
                    scope: scope.to_owned(),
                };
                Claim::Local { _held }
            }
            Some(store) => match store.lock(&Records::key(scope), self.flight_ttl).await? {
                Some(lock) => Claim::Shared(lock),
                None => return Ok(Begin::Busy),
            },
        };
        // The first may have finished between the look and the claim.
        match self.stored(scope).await {
            Ok(None) => Ok(Begin::Run(claim)),
            Ok(Some(stored)) => {
                self.release(claim).await;
                Ok(Begin::Replay(stored))
            }
            Err(error) => {
                self.release(claim).await;
                Err(error)
            }
        }
    }

    async fn release(&self, claim: Claim) {
        match (claim, &self.shared) {
            (Claim::Shared(lock), Some(store)) => store.unlock(lock).await,
            (claim, _) => drop(claim),
        }
    }

    /// Keeps a shared key in flight while `work` runs: renews its lock every third of its lifetime.
    async fn hold<T>(&self, claim: &Claim, work: impl std::future::Future<Output = T>) -> T {
        let (Claim::Shared(lock), Some(store)) = (claim, &self.shared) else {
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
    async fn finish(&self, scope: &str, claim: Claim, stored: Stored) {
        let Some(store) = &self.shared else {
            self.local.insert(scope.to_owned(), Arc::new(stored));
            return drop(claim);
        };
        let text = serde_json::to_string(&stored).expect("records serialise");
        match store
            .put_expiring(&Records::key(scope), text, self.ttl)
            .await
        {
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

/// How a failure becomes an answer (the rescue's): what a keyed request stores when it failed.
pub(crate) type Render = fn(BoxError) -> Response<Full<Bytes>>;

#[derive(Clone)]
pub(crate) struct IdempotencyLayer {
    records: Arc<Records>,
    render: Render,
}

impl IdempotencyLayer {
    pub fn new(records: Arc<Records>, render: Render) -> IdempotencyLayer {
        IdempotencyLayer { records, render }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency {
            records: self.records.clone(),
            render: self.render,
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Idempotency<S> {
    records: Arc<Records>,
    render: Render,
    inner: S,
}

type Answered = fn(Result<Answer, BoxError>) -> Result<Reply, BoxError>;

impl<S> Service<CustomerCall> for Idempotency<S>
where
    S: Service<CustomerCall, Response = Answer, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = Either<Map<S::Future, Answered>, BoxFuture<Reply>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: CustomerCall) -> Self::Future {
        let Some(keyed) = call.extensions.remove::<Keyed>() else {
            let answered: Answered = |result| result.map(Reply::Answer);
            return Either::Left(self.inner.call(call).map(answered));
        };
        let records = self.records.clone();
        let inner = self.inner.clone();
        let render = self.render;
        Either::Right(Box::pin(async move {
            let claim = match records.begin(&keyed.scope).await? {
                Begin::Replay(stored) if stored.fingerprint == keyed.fingerprint => {
                    crate::metrics::idempotency_request("replayed");
                    return Ok(Reply::Rendered(stored.replay()));
                }
                Begin::Replay(_) => {
                    crate::metrics::idempotency_request("reused");
                    return Err(KeyError::Reused.into());
                }
                Begin::Busy => {
                    crate::metrics::idempotency_request("in_flight");
                    return Err(KeyError::InFlight.into());
                }
                Begin::Run(claim) => claim,
            };
            let response = match records.hold(&claim, inner.oneshot(call)).await {
                Ok(answer) => answer.into_response(),
                Err(error) => render(error),
            };
            let (head, body) = response.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let response = Response::from_parts(head, Full::new(body.clone()));
            match Stored::of(&response, &body, &keyed.fingerprint) {
                Some(stored) => {
                    crate::metrics::idempotency_request("stored");
                    records.finish(&keyed.scope, claim, stored).await
                }
                None => {
                    crate::metrics::idempotency_request("not_kept");
                    records.release(claim).await
                }
            }
            Ok(Reply::Rendered(response))
        }))
    }
}
