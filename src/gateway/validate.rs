//! Checks 8–9: the body is a valid canonical patch, every bad field named at once, and names only what
//! the provider can store and clear (422); with `Prefer: handling=lenient` what it cannot is skipped
//! instead. What passes goes on as a [`CustomerCall`]: `{}`, or nothing left once skipped, is a read.

use super::body::{JsonBody, ReadBody};
use super::call::{CustomerCall, Op, ProviderCustomer, Routed};
use super::callers::Identity;
use super::error::BoxError;
use super::idempotency::Keyed;
use super::request::prefers_lenient;
use crate::canonical::{CustomerPatch, FieldError};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::sync::Arc;
use tower::filter::Predicate;

/// `Idempotency-Key` is not one value of 1–255 printable ASCII characters.
#[derive(Debug, thiserror::Error)]
#[error("`Idempotency-Key` must be one value of 1 to 255 printable ASCII characters ({0})")]
pub(crate) struct BadIdempotencyKey(&'static str);

const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The caller's `Idempotency-Key`, when it sent a usable one.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, BadIdempotencyKey> {
    let mut keys = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(key) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(BadIdempotencyKey("it was sent more than once"));
    }
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 {
        return Err(BadIdempotencyKey("this one is empty or longer"));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(BadIdempotencyKey("this one has other bytes"));
    }
    Ok(Some(key.clone()))
}

/// The patch is not one this provider can apply: every bad field, by canonical path.
#[derive(Debug, thiserror::Error)]
#[error("the patch is invalid")]
pub(crate) struct Invalid {
    pub errors: Vec<FieldError>,
}

/// The validation check (a `tower::filter` predicate).
#[derive(Clone)]
pub(crate) struct Validate {
    /// Every provider's name: `provider_fields` may only name these.
    names: Arc<[&'static str]>,
}

impl Validate {
    pub fn new(names: Arc<[&'static str]>) -> Validate {
        Validate { names }
    }

    fn validate(&self, request: Routed<JsonBody>) -> Result<CustomerCall, BoxError> {
        let Routed { head, body, target } = request;
        let ProviderCustomer { provider, id } = target;
        let mut call = CustomerCall {
            provider,
            id,
            op: Op::Read,
            idempotency_key: None,
            lenient: None,
            budget: None,
            locked: None,
            extensions: head.extensions,
        };
        let Some(ReadBody { object, .. }) = body else {
            return Ok(call);
        };
        let idempotency_key = idempotency_key(&head.headers)?;
        let lenient = prefers_lenient(&head.headers);
        // A PATCH's key names a record of this client; the fingerprint is of the request as read.
        if let Some(key) = &idempotency_key {
            let client = match call.extensions.get::<Identity>() {
                Some(Identity::Known(caller)) => caller.name,
                _ => "",
            };
            let target = head.uri.path().as_bytes();
            let keyed = Keyed::patch(client, key.as_bytes(), target, lenient, &object);
            call.extensions.insert(keyed);
        }
        let provider = &call.provider;
        let name = provider.name();
        let reserved = match object.get("provider_fields").and_then(|p| p.get(name)) {
            Some(Value::Object(fields)) => provider.dialect.check_provider_fields(fields),
            _ => Vec::new(),
        };
        let patch = match CustomerPatch::parse(object, name, &self.names) {
            Ok(patch) if reserved.is_empty() => patch,
            Ok(_) => return Err(Invalid { errors: reserved }.into()),
            Err(mut errors) => {
                errors.extend(reserved);
                return Err(Invalid { errors }.into());
            }
        };
        let (patch, skipped) = patch
            .restrict(provider.dialect.capabilities(), name, lenient)
            .map_err(|errors| Invalid { errors })?;
        if !patch.is_empty() {
            call.op = Op::Write(Box::new(patch));
        }
        call.idempotency_key = idempotency_key;
        call.lenient = lenient.then_some(skipped);
        Ok(call)
    }
}

impl Predicate<Routed<JsonBody>> for Validate {
    type Request = CustomerCall;

    fn check(&mut self, request: Routed<JsonBody>) -> Result<CustomerCall, BoxError> {
        self.validate(request)
    }
}
