//! `Idempotency-Key` on PATCH (draft-ietf-httpapi-idempotency-key-header), for every provider: a record
//! per client and key holds a fingerprint of the request (method, target, `Prefer` handling, body) and
//! the answer (status, headers, body). The same key and request within `idempotency.ttl_s` get the
//! stored answer again, with `Idempotent-Replayed: true` and no upstream call; the same key with another
//! request is a 422; a duplicate while the first is still running is a 409 and never a second write.
//! Only answers a retry could not change are kept: 2xx, and 4xx but 409 and 429.
//!
//! Records live in this process or in Redis (`records`). A keyed request runs detached (the layer
//! above): a caller that hangs up after sending it cannot leave a write done and unrecorded. How a
//! failure becomes the answer stored is the rescue's say, handed to this layer as its renderer.

use super::call::{Answer, CustomerCall};
use super::error::{BoxError, BoxFuture};
use super::records::{Begin, Records};
use bytes::Bytes;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

/// What a keyed request carries to this layer in its extensions: whose key, and what was asked.
#[derive(Clone)]
pub(crate) struct Keyed {
    /// SHA-256 of client name and key: the record's name (another client cannot name it).
    pub scope: String,
    /// `x3:` and the XXH3-128 of the request: it only tells one request under the key from another
    /// (a collision would only mislead the client that made it), so it needs no cryptographic hash.
    pub fingerprint: String,
    /// The request as fingerprinted, for a record an earlier version kept with its SHA-256.
    request: Box<[u8]>,
}

impl Keyed {
    /// A keyed PATCH: `client` (`""` when patchbay is open) and its key; the PATCH's target, handling
    /// and body as patchbay read them (the body's keys in order, so reordered members are the same
    /// request). The body is written straight after the other parts, its length put before it once known.
    pub fn patch(
        client: &str,
        key: &[u8],
        target: &[u8],
        lenient: bool,
        body: &serde_json::Map<String, Value>,
    ) -> Keyed {
        let handling: &[u8] = if lenient { b"lenient" } else { b"strict" };
        let mut request = Vec::with_capacity(256);
        for part in [b"PATCH", target, handling] {
            push_part(&mut request, part);
        }
        let at = request.len();
        request.extend_from_slice(&[0; 8]);
        serde_json::to_writer(&mut request, body).expect("JSON objects serialise");
        let length = (request.len() - at - 8) as u64;
        request[at..at + 8].copy_from_slice(&length.to_be_bytes());
        Keyed::of(client, key, request)
    }

    /// `client` and its key, and the request's parts, each after its length.
    #[cfg(test)]
    fn new(client: &str, key: &[u8], parts: &[&[u8]]) -> Keyed {
        let mut request = Vec::new();
        for part in parts {
            push_part(&mut request, part);
        }
        Keyed::of(client, key, request)
    }

    fn of(client: &str, key: &[u8], request: Vec<u8>) -> Keyed {
        let scope = Sha256::new()
            .chain_update(client)
            .chain_update([0])
            .chain_update(key)
            .finalize();
        let mut fingerprint = *b"x3:00000000000000000000000000000000";
        let hash = xxhash_rust::xxh3::xxh3_128(&request).to_be_bytes();
        hex::encode_to_slice(hash, &mut fingerprint[3..]).expect("16 bytes are 32 hex digits");
        Keyed {
            scope: lower_hex(&scope),
            fingerprint: hex_text(&fingerprint),
            request: request.into_boxed_slice(),
        }
    }

    /// Whether a record's fingerprint is of this very request (the hex SHA-256 of its parts, for a
    /// record kept before fingerprints were XXH3).
    pub fn matches(&self, stored: &str) -> bool {
        match stored.starts_with("x3:") {
            true => stored == self.fingerprint,
            false => stored == hex::encode(Sha256::digest(&self.request)),
        }
    }
}

/// One part of a fingerprinted request: its length (8 bytes, big-endian), then the part.
fn push_part(request: &mut Vec<u8>, part: &[u8]) {
    request.extend_from_slice(&(part.len() as u64).to_be_bytes());
    request.extend_from_slice(part);
}

/// `bytes` in lowercase hex. hex's `encode` goes character by character through an iterator (~1.7 k
/// instructions for a SHA-256); into a slice it is a few hundred.
fn lower_hex(bytes: &[u8]) -> String {
    let mut text = vec![0; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut text).expect("twice as long");
    hex_text(&text)
}

fn hex_text(ascii: &[u8]) -> String {
    String::from_utf8(ascii.to_vec()).expect("hex digits are ASCII")
}

/// A stored answer. Kept in this process as it will be sent again (a replay shares the body's bytes;
/// header names and values as `http` holds them); in Redis as JSON, `{"fingerprint", "status",
/// "headers": [[name, value], …], "body": "…"}`, the shape every version has stored.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    fingerprint: String,
    status: u16,
    #[serde(with = "header_pairs")]
    headers: Vec<(HeaderName, HeaderValue)>,
    #[serde(with = "text")]
    body: Bytes,
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
        // Kept as JSON text in Redis: a body or header value that is not text is not kept.
        std::str::from_utf8(body).ok()?;
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()))
            .filter(|(_, value)| value.to_str().is_ok())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Stored {
            fingerprint: fingerprint.to_owned(),
            status: status.as_u16(),
            headers,
            // A copy of its own: the answer's buffer has room to spare (1 KiB for a few hundred bytes),
            // which a kept record would hold for its whole life.
            body: Bytes::copy_from_slice(body),
        })
    }

    fn replay(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body.clone()));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// Header pairs as `[[name, value], …]` of text; a pair that is not a header (a record edited by hand, say)
/// is skipped when read, as replaying it would be.
mod header_pairs {
    use http::{HeaderName, HeaderValue};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        pairs: &[(HeaderName, HeaderValue)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            pairs
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default())),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::try_from(name).ok()?,
                    HeaderValue::try_from(value).ok()?,
                ))
            })
            .collect())
    }
}

/// Bytes that are UTF-8 text, as a JSON string.
mod text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => Err(serde::ser::Error::custom("a stored body is not UTF-8")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        String::deserialize(deserializer).map(Bytes::from)
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

/// How a failure becomes an answer (the rescue's): what a keyed request stores when it failed.
pub(crate) type Render = fn(BoxError) -> Response<Full<Bytes>>;

#[derive(Clone)]
pub(crate) struct IdempotencyLayer {
    records: Arc<Records<Stored>>,
    render: Render,
}

impl IdempotencyLayer {
    pub fn new(records: Arc<Records<Stored>>, render: Render) -> IdempotencyLayer {
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
    records: Arc<Records<Stored>>,
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
                Begin::Stored(stored) if keyed.matches(&stored.fingerprint) => {
                    crate::metrics::idempotency_request("replayed");
                    return Ok(Reply::Rendered(stored.replay()));
                }
                Begin::Stored(_) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_tells_requests_apart_and_reads_an_earlier_versions() {
        let parts: [&[u8]; 4] = [b"PATCH", b"/customers/juice:1", b"strict", br#"{"a":1}"#];
        let keyed = Keyed::new("billing", b"k1", &parts);
        assert!(keyed.fingerprint.starts_with("x3:"));
        assert!(keyed.matches(&keyed.fingerprint));
        let other = Keyed::new(
            "billing",
            b"k1",
            &[b"PATCH", b"/customers/juice:1", b"strict", b"{}"],
        );
        assert!(!keyed.matches(&other.fingerprint));
        assert_eq!(
            keyed.scope, other.scope,
            "the record's name is the client's key alone"
        );
        // What an earlier version stored: the SHA-256 of the length-prefixed parts, in hex.
        let mut legacy = Sha256::new();
        for part in parts {
            legacy.update((part.len() as u64).to_be_bytes());
            legacy.update(part);
        }
        let legacy = hex::encode(legacy.finalize());
        assert!(keyed.matches(&legacy));
        assert!(!other.matches(&legacy));
    }

    /// A stored answer reads back what it wrote, in the JSON shape every version has kept in Redis.
    #[test]
    fn a_stored_answer_keeps_its_shape_in_redis() {
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "ratelimit",
            HeaderValue::from_static("limit=3, remaining=2"),
        );
        headers.append("vary", HeaderValue::from_static("a"));
        headers.append("vary", HeaderValue::from_static("b"));
        let body = Bytes::from_static(br#"{"id":"juice:1"}"#);
        let stored = Stored::of(&response, &body, "x3:f").unwrap();
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(
            text,
            r#"{"fingerprint":"x3:f","status":201,"headers":[["content-type","application/json"],["vary","a"],["vary","b"]],"body":"{\"id\":\"juice:1\"}"}"#
        );
        let earlier = r#"{"fingerprint":"ab","status":200,"headers":[["content-type","application/json"],["bad name","x"]],"body":"{}"}"#;
        for text in [text.as_str(), earlier] {
            let read: Stored = serde_json::from_str(text).unwrap();
            let replay = read.replay();
            assert_eq!(replay.headers()["content-type"], "application/json");
            assert_eq!(replay.headers()[REPLAYED], "true");
            assert!(!replay.headers().contains_key("ratelimit"));
        }
        let replay = stored.replay();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers().get_all("vary").iter().count(), 2);
        // Not text: not kept.
        assert!(Stored::of(&response, &Bytes::from_static(&[0xff]), "x3:f").is_none());
    }

    /// A record's name and fingerprint are spelt as the versions that stored them spelt them, so that
    /// the records kept in Redis or in this process are found again after an upgrade.
    #[test]
    fn names_and_fingerprints_keep_their_spelling() {
        let parts: [&[u8]; 2] = [b"PATCH", b"{}"];
        let keyed = Keyed::new("billing", b"k1", &parts);
        // SHA-256 of "billing", a zero byte and "k1".
        assert_eq!(
            keyed.scope,
            "3029039eca764a82ffadf76a0c0b04c2c21b03c7080865961ecd4569704d384e"
        );
        let prefixed: Vec<u8> = parts
            .iter()
            .flat_map(|part| [&(part.len() as u64).to_be_bytes()[..], part].concat())
            .collect();
        let hash = xxhash_rust::xxh3::xxh3_128(&prefixed);
        assert_eq!(keyed.fingerprint, format!("x3:{hash:032x}"));
        // A PATCH's parts are its method, target, handling and body, as they always were.
        let body: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"b":{"y":1,"x":2},"a":"é"}"#).unwrap();
        for lenient in [false, true] {
            let patch = Keyed::patch("billing", b"k1", b"/customers/juice:1", lenient, &body);
            let handling: &[u8] = if lenient { b"lenient" } else { b"strict" };
            let text = serde_json::to_vec(&body).unwrap();
            let parts: [&[u8]; 4] = [b"PATCH", b"/customers/juice:1", handling, &text];
            assert_eq!(
                patch.fingerprint,
                Keyed::new("billing", b"k1", &parts).fingerprint
            );
            assert_eq!(
                &*patch.request,
                &*Keyed::new("billing", b"k1", &parts).request
            );
        }
        // A hash with leading zero digits keeps them.
        assert_eq!(lower_hex(&[0, 1, 0xab]), "0001ab");
    }
}
