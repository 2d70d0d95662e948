//! The request path's vocabulary, shared by the layers: a [`Routed`] request (checks 1–7), the
//! [`CustomerCall`] it becomes once valid (checks 8–11), and the [`Answer`] that goes back up. What a
//! layer leaves for the ones below it (who the caller is, an `Idempotency-Key` record, where the access
//! line counts calls) travels in the request's extensions, typed by the layer that reads it.

use super::provider::ProviderRuntime;
use crate::canonical::{Customer, CustomerPatch};
use crate::upstream::CallBudget;
use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue};
use http_body_util::Full;
use std::sync::Arc;

/// A routed request: the caller's head, its body, and what it names (a customer, or a link).
pub(crate) struct Routed<B, T = ProviderCustomer> {
    pub head: Parts,
    pub body: B,
    pub target: T,
}

/// One provider's customer.
pub(crate) struct ProviderCustomer {
    pub provider: Arc<ProviderRuntime>,
    /// The id as the provider is sent it (e.g. a lower-cased UUID).
    pub id: String,
}

impl<B, T> Routed<B, T> {
    /// Whether the request carries a body to read: a PATCH, or a PUT.
    pub fn has_body(&self) -> bool {
        self.head.method == http::Method::PATCH || self.head.method == http::Method::PUT
    }
}

/// What a request asks of its customer, once checked.
#[derive(Clone)]
pub(crate) enum Op {
    /// The current customer: a GET, or a patch that leaves nothing to write.
    Read,
    /// A validated, restricted, non-empty patch.
    Write(Box<CustomerPatch>),
}

/// A request past the checks: which customer, what to do, and what its upstream calls carry.
#[derive(Clone)]
pub(crate) struct CustomerCall {
    pub provider: Arc<ProviderRuntime>,
    pub id: String,
    pub op: Op,
    /// A PATCH's `Idempotency-Key`: its record's name, and forwarded to providers that honour one.
    pub idempotency_key: Option<HeaderValue>,
    /// With `Prefer: handling=lenient`: the canonical paths that were skipped.
    pub lenient: Option<Vec<String>>,
    /// Set by the rate limiter: what every upstream call spends from.
    pub budget: Option<Arc<dyn CallBudget>>,
    /// Set by the customer lock: the name of the customer's lock this call holds.
    pub locked: Option<String>,
    /// The caller's request extensions, with what the layers above left for the ones below.
    pub extensions: Extensions,
}

impl CustomerCall {
    /// Whether this call must wait for other writes of the same customer.
    pub fn serialises(&self) -> bool {
        match &self.op {
            Op::Read => false,
            Op::Write(patch) => self.provider.dialect.serialise_write(patch),
        }
    }

    /// Whether it must run to its end even if its caller hangs up: a serialised write (dropped
    /// halfway, it would free its customer's lock with its write still in flight) and a keyed PATCH
    /// (its write done, its record not kept).
    pub fn outlives_caller(&self) -> bool {
        self.serialises() || self.idempotency_key.is_some()
    }

    /// The upstream calls it plans, token calls aside: one, or two for a read-merge-write.
    pub fn planned_calls(&self) -> u32 {
        match &self.op {
            Op::Read => 1,
            Op::Write(patch) => 1 + u32::from(self.provider.dialect.needs_current(patch)),
        }
    }
}

/// The canonical answer on its way out, with the headers layers add to it.
pub(crate) struct Answer {
    pub customer: Customer,
    pub lenient: Option<Vec<String>>,
    pub headers: HeaderMap,
}

impl Answer {
    /// 200 with the canonical customer; in lenient mode, what was applied and what was skipped.
    pub fn into_response(self) -> http::Response<Full<Bytes>> {
        // A customer is a few hundred bytes: one allocation instead of growing from 128.
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, &self.customer).expect("customers serialise");
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        let headers = response.headers_mut();
        *headers = self.headers;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(skipped) = self.lenient {
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
}
