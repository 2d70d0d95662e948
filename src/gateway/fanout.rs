//! Linked customers: `PUT`, `GET` and `DELETE /links/{id}`, and `GET` and `PATCH /customers/{id}` for
//! the customer a link names. One canonical patch is validated once, then each provider's leg goes
//! through its own dialect, credentials, retries, customer lock and quota; the legs run at once.
//!
//! A write takes every leg's lock in one fixed order (so two fan-outs never wait for each other), then
//! reserves every leg's calls (and one cell of the client's own quota) before any is sent: if one leg
//! cannot be admitted, every reservation is given back and nothing is written (429, the longest
//! `Retry-After`). With an `Idempotency-Key`, the record keeps each leg's outcome, and a retry runs
//! only the legs that did not succeed.

use super::body::{JsonBody, ReadBody};
use super::call::{CustomerCall, Op, Routed};
use super::callers::{caller_of, Caller};
use super::client_quota::ClientQuotas;
use super::detach::detached;
use super::error::{cause, BoxError, BoxFuture};
use super::idempotency::{KeyError, Keyed, Render};
use super::limit::{admit, take_client_cells, within, Admitted};
use super::links::{Leg, Link, LinkError, Links};
use super::metrics::{CallCount, LegReport};
use super::rate_limit::RateLimitError;
use super::records::Records;
use super::request::{prefers_lenient, LinkPart};
use super::route::{LinkTarget, RouteError};
use super::validate::{idempotency_key, Invalid};
use crate::canonical::{merge_linked, Customer, CustomerPatch, FieldError, Holder, ProblemKind};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{Extensions, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::task::TaskTracker;
use tower::Service;

/// What a keyed fan-out keeps: its request's fingerprint, and each leg's final outcome.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct FanRecord {
    fingerprint: String,
    legs: BTreeMap<String, Kept>,
}

/// A leg's outcome a retry could not change (2xx, and 4xx but 409 and 429).
#[derive(Clone, Serialize, Deserialize)]
struct Kept {
    status: u16,
    body: Box<RawValue>,
}

/// What the links branch shares: the links, the client quotas, the records of keyed fan-outs, where
/// detached writes are tracked, how a failure becomes an answer, and the order of precedence.
pub(crate) struct LinkParts {
    pub links: Arc<Links>,
    pub clients: Arc<ClientQuotas>,
    pub records: Arc<Records<FanRecord>>,
    pub writes: TaskTracker,
    pub render: Render,
    pub precedence: Arc<[&'static str]>,
}

/// Check 11, which every leg goes through, as the links branch holds it.
pub(crate) trait Legs:
    Service<CustomerCall, Response = super::call::Answer, Error = BoxError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Legs for S where
    S: Service<CustomerCall, Response = super::call::Answer, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The links branch's innermost service; `customers` is check 11, one leg's calls.
#[derive(Clone)]
pub(crate) struct LinkService<S> {
    parts: Arc<LinkParts>,
    customers: S,
}

impl<S> LinkService<S> {
    pub fn new(parts: LinkParts, customers: S) -> LinkService<S> {
        LinkService {
            parts: Arc::new(parts),
            customers,
        }
    }
}

impl<S: Legs> Service<Routed<JsonBody, LinkTarget>> for LinkService<S> {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Full<Bytes>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Routed<JsonBody, LinkTarget>) -> Self::Future {
        let fanout = Fanout {
            parts: self.parts.clone(),
            customers: self.customers.clone(),
        };
        Box::pin(async move {
            let Routed { head, body, target } = request;
            let caller = caller_of(&head.extensions)?.cloned();
            if target.part == LinkPart::Link {
                let method = &head.method;
                return fanout
                    .resource(method, &target.id, body, caller.as_deref())
                    .await;
            }
            let link = fanout.link(&target.id, caller.as_deref()).await?;
            match (head.method.clone(), body) {
                (Method::PATCH, Some(body)) => fanout.write(link, head, body, caller).await,
                _ => fanout.read(link, head.extensions, caller.as_deref()).await,
            }
        })
    }
}

/// One request's view of the branch.
struct Fanout<S> {
    parts: Arc<LinkParts>,
    customers: S,
}

impl<S: Legs> Fanout<S> {
    /// The link `id`, which the client must be allowed every provider of (403 naming the others).
    async fn link(&self, id: &str, caller: Option<&Caller>) -> Result<Link, BoxError> {
        let link = self.parts.links.get(id).await?;
        let link = link.ok_or_else(|| LinkError::NotFound(id.to_owned()))?;
        if let Some(caller) = caller {
            caller.may_use_all(&link.providers())?;
        }
        Ok(link)
    }

    /// `/links/{id}`: `PUT` a link (201 when new, 200 when replaced), `GET` it, `DELETE` it (204).
    async fn resource(
        &self,
        method: &Method,
        id: &str,
        body: JsonBody,
        caller: Option<&Caller>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let links = &self.parts.links;
        match (method, body) {
            (&Method::PUT, Some(ReadBody { bytes, .. })) => {
                let link = links.link_of(id, &bytes)?;
                if let Some(caller) = caller {
                    caller.may_use_all(&link.providers())?;
                    // Replacing a link drops its legs: the client must be allowed those too.
                    if let Some(old) = links.get(id).await? {
                        caller.may_use_all(&old.providers())?;
                    }
                }
                let created = links.put(&link).await?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut response = json_response(status, Bytes::from(link.to_json()));
                if created {
                    let location = HeaderValue::from_str(&format!("/links/{id}"))?;
                    response.headers_mut().insert(LOCATION, location);
                }
                Ok(response)
            }
            (&Method::DELETE, _) => {
                self.link(id, caller).await?;
                links.delete(id).await?;
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
            _ => {
                let link = self.link(id, caller).await?;
                Ok(json_response(StatusCode::OK, Bytes::from(link.to_json())))
            }
        }
    }

    /// `GET /customers/{link}`: every leg read at once, merged into one customer.
    async fn read(
        &self,
        link: Link,
        extensions: Extensions,
        caller: Option<&Caller>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let held = take_client_cells(&self.parts.clients, caller, &link.providers())?;
        let mut admitted = Vec::new();
        for leg in &link.legs {
            admitted.push(admit(&leg.provider, 1).await);
        }
        // Refused on every leg, the request spends nothing of the client's quota.
        if admitted.iter().any(Result::is_ok) {
            held.spend();
        }
        let runs = link.legs.iter().zip(admitted).map(|(leg, admitted)| {
            let call = leg_call(leg, Op::Read, None, None, &extensions);
            self.run(leg, admitted.map(|a| (a, call)))
        });
        let outcomes = futures_util::future::join_all(runs).await;
        let outcomes = self.report(outcomes, &extensions).await;
        Ok(self.merged(&link, outcomes))
    }

    /// `PATCH /customers/{link}`: validated once, then every leg, all or none admitted.
    async fn write(
        &self,
        link: Link,
        head: http::request::Parts,
        body: ReadBody,
        caller: Option<Arc<Caller>>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let lenient = prefers_lenient(&head.headers);
        let key = idempotency_key(&head.headers)?;
        let legs = plan(&link, body.object.clone(), lenient)?;
        let keyed = key.as_ref().map(|key| {
            let client = caller.as_ref().map_or("", |caller| caller.name);
            let target = head.uri.path().as_bytes();
            Keyed::patch(client, key.as_bytes(), target, lenient, &body.object)
        });
        let this = Fanout {
            parts: self.parts.clone(),
            customers: self.customers.clone(),
        };
        // To its end, even if the caller hangs up: locks held, writes sent, the record kept.
        detached(&self.parts.writes, async move {
            let extensions = head.extensions;
            this.write_detached(link, legs, key, keyed, lenient, caller, extensions)
                .await
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_detached(
        &self,
        link: Link,
        legs: Vec<Planned>,
        key: Option<HeaderValue>,
        keyed: Option<Keyed>,
        lenient: bool,
        caller: Option<Arc<Caller>>,
        extensions: Extensions,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let records = &self.parts.records;
        let Some(keyed) = keyed else {
            let outcomes = self
                .write_legs(legs, key, caller.as_deref(), &extensions)
                .await?;
            let outcomes = self.report(outcomes, &extensions).await;
            return Ok(written(&link, outcomes, lenient));
        };
        let Some(claim) = records.claim(&keyed.scope).await? else {
            crate::metrics::idempotency_request("in_flight");
            return Err(KeyError::InFlight.into());
        };
        let mut record = match records.stored(&keyed.scope).await {
            Ok(Some(record)) if !keyed.matches(&record.fingerprint) => {
                records.release(claim).await;
                crate::metrics::idempotency_request("reused");
                return Err(KeyError::Reused.into());
            }
            Ok(record) => record.map_or_else(
                || FanRecord {
                    fingerprint: keyed.fingerprint.clone(),
                    legs: BTreeMap::new(),
                },
                |record| (*record).clone(),
            ),
            Err(error) => {
                records.release(claim).await;
                return Err(error.into());
            }
        };
        // The legs that succeeded before are replayed; only the others run again.
        let (done, todo): (Vec<Planned>, Vec<Planned>) = legs
            .into_iter()
            .partition(|leg| record.legs.contains_key(leg.leg.provider.name()));
        let ran = match todo.is_empty() {
            true => Ok(Vec::new()),
            false => {
                let work = self.write_legs(todo, key, caller.as_deref(), &extensions);
                records.hold(&claim, work).await
            }
        };
        let ran = match ran {
            Ok(ran) => ran,
            Err(error) => {
                records.release(claim).await;
                return Err(error);
            }
        };
        let mut outcomes = self.report(ran, &extensions).await;
        for outcome in &outcomes {
            if kept(outcome.status) {
                let kept = Kept {
                    status: outcome.status,
                    body: outcome.body.clone(),
                };
                record.legs.insert(outcome.provider.to_owned(), kept);
            }
        }
        for planned in done {
            let provider = planned.leg.provider.name();
            let kept = &record.legs[provider];
            crate::metrics::fanout_leg(provider, "replayed");
            outcomes.push(Outcome {
                provider,
                status: kept.status,
                body: kept.body.clone(),
                headers: HeaderMap::new(),
                skipped: None,
                replayed: true,
            });
        }
        outcomes.sort_by_key(|outcome| {
            link.legs
                .iter()
                .position(|l| l.provider.name() == outcome.provider)
        });
        crate::metrics::idempotency_request("stored");
        records.finish(&keyed.scope, claim, record).await;
        Ok(written(&link, outcomes, lenient))
    }

    /// Every leg's lock, in one fixed order; every leg's calls reserved, or none; then every leg at
    /// once.
    async fn write_legs(
        &self,
        legs: Vec<Planned>,
        key: Option<HeaderValue>,
        caller: Option<&Caller>,
        extensions: &Extensions,
    ) -> Result<Vec<(&'static str, Result<super::call::Answer, BoxError>)>, BoxError> {
        let calls: Vec<CustomerCall> = legs
            .iter()
            .map(|planned| {
                let lenient = planned.skipped.clone();
                leg_call(
                    &planned.leg,
                    planned.op.clone(),
                    key.clone(),
                    lenient,
                    extensions,
                )
            })
            .collect();
        // Locks by provider, then by the customer's lock name: the same order in every fan-out.
        let mut locked: Vec<(usize, String, &Leg)> = legs
            .iter()
            .zip(&calls)
            .filter(|(_, call)| call.serialises())
            .map(|(planned, call)| {
                let provider = &planned.leg.provider;
                (provider.index, provider.lock_key(&call.id), &planned.leg)
            })
            .collect();
        locked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut guards = Vec::with_capacity(locked.len());
        for (_, name, leg) in &locked {
            let (guard, waited) = leg.provider.locks.lock(name).await;
            if waited {
                crate::metrics::read_merge_write_wait(leg.provider.name());
            }
            guards.push(guard);
        }
        let providers: Vec<&str> = legs.iter().map(|l| l.leg.provider.name()).collect();
        let held = take_client_cells(&self.parts.clients, caller, &providers)?;
        let mut admitted = Vec::with_capacity(legs.len());
        for call in &calls {
            admitted.push(admit(&call.provider, call.planned_calls()).await);
        }
        if admitted.iter().any(Result::is_err) {
            // Nothing is written: every reservation goes back, and the client's cell with them.
            let mut refusals = Vec::new();
            for admission in admitted {
                match admission {
                    Ok(Some(admitted)) => admitted.release().await,
                    Ok(None) => {}
                    Err(refusal) => refusals.push(refusal),
                }
            }
            drop(held);
            return Err(worst_refusal(refusals));
        }
        held.spend();
        let runs = legs
            .iter()
            .zip(calls)
            .zip(admitted)
            .map(|((planned, call), admitted)| self.run(&planned.leg, admitted.map(|a| (a, call))));
        let outcomes = futures_util::future::join_all(runs).await;
        drop(guards);
        Ok(outcomes)
    }

    /// One leg's calls within its admission.
    async fn run(
        &self,
        leg: &Leg,
        admitted: Result<(Option<Admitted>, CustomerCall), BoxError>,
    ) -> (&'static str, Result<super::call::Answer, BoxError>) {
        let name = leg.provider.name();
        let (admitted, call) = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => return (name, Err(refused)),
        };
        if leg.provider.upstream.is_none() {
            let missing = leg.provider.missing.join(", ");
            let error = RouteError::NotConfigured {
                provider: name,
                missing,
            };
            return (name, Err(error.into()));
        }
        (name, within(admitted, self.customers.clone(), call).await)
    }

    /// Each leg's answer as its status and JSON body (a failure as the rescue renders it), counted.
    async fn report(
        &self,
        outcomes: Vec<(&'static str, Result<super::call::Answer, BoxError>)>,
        extensions: &Extensions,
    ) -> Vec<Outcome> {
        let report = extensions.get::<LegReport>();
        let mut reported = Vec::with_capacity(outcomes.len());
        for (provider, outcome) in outcomes {
            let outcome = match outcome {
                Ok(answer) => Outcome {
                    provider,
                    status: 200,
                    body: serde_json::value::to_raw_value(&answer.customer)
                        .expect("customers serialise"),
                    headers: HeaderMap::new(),
                    skipped: answer.lenient,
                    replayed: false,
                },
                Err(error) => {
                    let (head, body) = (self.parts.render)(error).into_parts();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    Outcome {
                        provider,
                        status: head.status.as_u16(),
                        body: RawValue::from_string(text).unwrap_or_else(|_| null()),
                        headers: head.headers,
                        skipped: None,
                        replayed: false,
                    }
                }
            };
            let ok = (200..300).contains(&outcome.status);
            crate::metrics::fanout_leg(provider, if ok { "ok" } else { "failed" });
            if let Some(report) = report {
                report.add(provider, outcome.status);
            }
            reported.push(outcome);
        }
        reported
    }

    /// The answer to a read: the merged customer, with each leg's status.
    fn merged(&self, link: &Link, outcomes: Vec<Outcome>) -> Response<Full<Bytes>> {
        if outcomes.iter().all(|o| !o.ok()) {
            return every_leg_failed(link, outcomes);
        }
        let order = precedence(link, &self.parts.precedence);
        let mut answered: Vec<(&Leg, Map<String, Value>)> = Vec::new();
        for provider in &order {
            let leg = link.legs.iter().find(|l| l.provider.name() == *provider);
            let outcome = outcomes.iter().find(|o| o.provider == *provider && o.ok());
            let customer = outcome.and_then(|o| serde_json::from_str(o.body.get()).ok());
            if let (Some(leg), Some(customer)) = (leg, customer) {
                answered.push((leg, customer));
            }
        }
        let holders: Vec<Holder<'_>> = answered
            .iter()
            .map(|(leg, customer)| Holder {
                provider: leg.provider.name(),
                capabilities: leg.provider.dialect.capabilities(),
                customer,
            })
            .collect();
        let (fields, conflicts) = merge_linked(&holders);
        let mut body = Customer::linked(&link.id);
        body.push("providers", json!(order));
        for (name, member) in fields {
            body.push(name, member);
        }
        let provider_fields: Map<String, Value> = answered
            .iter()
            .map(|(leg, customer)| {
                let name = leg.provider.name();
                let own = customer["provider_fields"][name].clone();
                (name.to_owned(), own)
            })
            .collect();
        body.push("provider_fields", Value::Object(provider_fields));
        body.push("conflicts", json!(conflicts));
        body.push(
            "legs",
            serde_json::to_value(legs(&outcomes, false)).expect("legs serialise"),
        );
        let status = match outcomes.iter().all(Outcome::ok) {
            true => StatusCode::OK,
            false => StatusCode::MULTI_STATUS,
        };
        let body = serde_json::to_vec(&body).expect("customers serialise");
        json_response(status, Bytes::from(body))
    }
}

/// One leg's part of a patch: its leg, what it writes, and (lenient) what it skipped.
struct Planned {
    leg: Leg,
    op: Op,
    skipped: Option<Vec<String>>,
}

/// The patch for every leg: validated once (422, every bad field), then what each provider can store
/// (strict: a field some leg cannot store is a 422 naming provider and field, and nothing is written;
/// lenient: skipped for that leg only).
fn plan(link: &Link, object: Map<String, Value>, lenient: bool) -> Result<Vec<Planned>, Invalid> {
    let names: Vec<&'static str> = link.providers();
    let mut errors: Vec<FieldError> = Vec::new();
    let mut planned = Vec::new();
    for (i, leg) in link.legs.iter().enumerate() {
        let name = leg.provider.name();
        let mut reserved = match object.get("provider_fields").and_then(|p| p.get(name)) {
            Some(Value::Object(fields)) => leg.provider.dialect.check_provider_fields(fields),
            _ => Vec::new(),
        };
        let patch = match CustomerPatch::parse(object.clone(), name, &names) {
            Ok(patch) => patch,
            // The canonical errors are the same for every leg: named once.
            Err(canonical) if i == 0 => {
                errors.extend(canonical);
                errors.append(&mut reserved);
                continue;
            }
            Err(_) => {
                errors.append(&mut reserved);
                continue;
            }
        };
        errors.append(&mut reserved);
        match patch.restrict(leg.provider.dialect.capabilities(), name, lenient) {
            Ok((patch, skipped)) => {
                let op = match patch.is_empty() {
                    true => Op::Read,
                    false => Op::Write(Box::new(patch)),
                };
                planned.push(Planned {
                    leg: leg.clone(),
                    op,
                    skipped: lenient.then_some(skipped),
                });
            }
            // Each message names its provider.
            Err(refused) => errors.extend(refused),
        }
    }
    match errors.is_empty() {
        true => Ok(planned),
        false => Err(Invalid { errors }),
    }
}

/// One leg's call: its provider's customer, what to do, what the request forwards.
fn leg_call(
    leg: &Leg,
    op: Op,
    idempotency_key: Option<HeaderValue>,
    lenient: Option<Vec<String>>,
    request: &Extensions,
) -> CustomerCall {
    let mut extensions = Extensions::new();
    if let Some(calls) = request.get::<CallCount>() {
        extensions.insert(calls.clone());
    }
    CustomerCall {
        provider: leg.provider.clone(),
        id: leg.id.clone(),
        op,
        idempotency_key,
        lenient,
        budget: None,
        locked: None,
        extensions,
    }
}

/// Of the legs refused admission, the one to answer with: a failure of the quota's store before any
/// 429, else the 429 with the longest `Retry-After`.
fn worst_refusal(refusals: Vec<BoxError>) -> BoxError {
    let rank = |error: &BoxError| match cause::<RateLimitError>(&**error) {
        Some(RateLimitError::Refused { retry_after, .. }) => (0, *retry_after),
        _ => (1, 0),
    };
    refusals
        .into_iter()
        .max_by_key(rank)
        .expect("a refusal was found")
}

/// Whether a retry could not change an outcome: it is kept, and replayed.
fn kept(status: u16) -> bool {
    (200..300).contains(&status) || ((400..500).contains(&status) && status != 409 && status != 429)
}

/// One leg's answer, as the caller sees it.
struct Outcome {
    provider: &'static str,
    status: u16,
    /// The canonical customer, or the problem, as written.
    body: Box<RawValue>,
    /// A failure's headers (its `Retry-After`).
    headers: HeaderMap,
    skipped: Option<Vec<String>>,
    replayed: bool,
}

impl Outcome {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The providers of `link` in the order of precedence: those `links.precedence` names first, then
/// the rest in the link's order.
fn precedence(link: &Link, configured: &[&'static str]) -> Vec<&'static str> {
    let providers = link.providers();
    let mut order: Vec<&'static str> = configured
        .iter()
        .copied()
        .filter(|p| providers.contains(p))
        .collect();
    order.extend(providers.into_iter().filter(|p| !configured.contains(p)));
    order
}

/// The answer to a write: 200 when every leg succeeded, 207 when some did, else the worst failure.
fn written(link: &Link, outcomes: Vec<Outcome>, lenient: bool) -> Response<Full<Bytes>> {
    let replayed = !outcomes.is_empty() && outcomes.iter().all(|o| o.replayed);
    let mut response = if outcomes.iter().all(Outcome::ok) {
        let customers = InOrder(outcomes.iter().map(|o| (o.provider, &*o.body)).collect());
        let skipped = InOrder(
            outcomes
                .iter()
                .filter_map(|o| Some((o.provider, o.skipped.as_deref().filter(|s| !s.is_empty())?)))
                .collect(),
        );
        let body = Written {
            id: &link.id,
            customers,
            skipped: (!skipped.0.is_empty()).then_some(skipped),
        };
        let body = serde_json::to_vec(&body).expect("answers serialise");
        json_response(StatusCode::OK, Bytes::from(body))
    } else if outcomes.iter().any(Outcome::ok) {
        let body = PartlyWritten {
            id: &link.id,
            legs: legs(&outcomes, true),
        };
        let body = serde_json::to_vec(&body).expect("answers serialise");
        json_response(StatusCode::MULTI_STATUS, Bytes::from(body))
    } else {
        every_leg_failed(link, outcomes)
    };
    let headers = response.headers_mut();
    if lenient {
        headers.insert(
            HeaderName::from_static("preference-applied"),
            HeaderValue::from_static("handling=lenient"),
        );
    }
    if replayed {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// Pairs written as one JSON object, in their order.
struct InOrder<T>(Vec<(&'static str, T)>);

impl<T: Serialize> Serialize for InOrder<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Every leg written: each provider's customer.
#[derive(Serialize)]
struct Written<'a> {
    id: &'a str,
    customers: InOrder<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<InOrder<&'a [String]>>,
}

/// Some legs written: each one's status and customer or problem.
#[derive(Serialize)]
struct PartlyWritten<'a> {
    id: &'a str,
    legs: InOrder<LegView<'a>>,
}

/// One leg, as a 207 (or a read) shows it.
#[derive(Serialize)]
struct LegView<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

/// Each leg's status and problem, and its customer when `customers`.
fn legs(outcomes: &[Outcome], customers: bool) -> InOrder<LegView<'_>> {
    InOrder(
        outcomes
            .iter()
            .map(|o| {
                let view = LegView {
                    status: o.status,
                    customer: (o.ok() && customers).then_some(&*o.body),
                    problem: (!o.ok()).then_some(&*o.body),
                    skipped: o.skipped.as_deref().filter(|s| !s.is_empty()),
                    replayed: o.replayed,
                };
                (o.provider, view)
            })
            .collect(),
    )
}

/// A problem's members, in RFC 9457's order, with every leg's problem after them.
#[derive(Deserialize, Serialize)]
struct LegsFailed<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    #[serde(default)]
    errors: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    #[serde(skip_deserializing)]
    legs: Option<InOrder<&'a RawValue>>,
}

/// Every leg failed: the worst leg's problem (the highest status), with every leg's problem in
/// `legs`, and the longest `Retry-After` of them.
fn every_leg_failed(link: &Link, outcomes: Vec<Outcome>) -> Response<Full<Bytes>> {
    let worst = outcomes.iter().max_by_key(|o| o.status);
    let parsed = worst.and_then(|w| serde_json::from_str::<LegsFailed<'_>>(w.body.get()).ok());
    let (Some(worst), Some(mut problem)) = (worst, parsed) else {
        let detail = format!("link {} names no provider this gateway has", link.id);
        let problem = crate::canonical::Problem::new(ProblemKind::ServiceUnavailable, detail);
        let mut response = Response::new(Full::new(Bytes::from(problem.to_bytes())));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return response;
    };
    problem.detail = format!(
        "every provider of link {} failed; the worst: {}",
        link.id, problem.detail
    );
    problem.legs = Some(InOrder(
        outcomes.iter().map(|o| (o.provider, &*o.body)).collect(),
    ));
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&problem).expect("problems serialise"),
    )));
    *response.status_mut() = StatusCode::from_u16(worst.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    let retry_after = outcomes
        .iter()
        .filter_map(|o| {
            o.headers
                .get(RETRY_AFTER)?
                .to_str()
                .ok()?
                .parse::<u64>()
                .ok()
        })
        .max();
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
