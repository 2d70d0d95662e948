//! One provider at run time: its dialect, its upstream, and the two flows of the canonical API.
//!
//! Phases of a PATCH, after the request checks of `gateway`: lock the customer → reserve its upstream
//! calls in the credential's rate limit (check 10) → read the current record when the dialect needs it
//! (read-merge-write) → translate → write → translate the answer back → settle the reservation.
//! A GET is one reservation and one upstream read.

use super::locks::KeyedLocks;
use super::rate_limit::{Decision, RateLimiter};
use super::rescue::{call_problem, status_problem};
use crate::canonical::{Customer, CustomerPatch, Problem, ProblemKind};
use crate::providers::{Dialect, Record};
use crate::upstream::{CallOptions, Response, Upstream};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;

/// An answer through the rate limiter, with the quota as its decision saw it (for the headers).
pub(crate) struct Limited<T> {
    pub result: Result<T, Problem>,
    pub quota: Option<Decision>,
}

impl<T> From<Problem> for Limited<T> {
    fn from(problem: Problem) -> Limited<T> {
        Limited {
            result: Err(problem),
            quota: None,
        }
    }
}

pub(crate) struct ProviderRuntime {
    pub dialect: Box<dyn Dialect>,
    /// `None`: no credentials and no sandbox, so the provider answers 503.
    pub upstream: Option<Upstream>,
    /// The credential's rate limit (present with the upstream).
    pub limiter: Option<Arc<RateLimiter>>,
    /// Settings that would enable a disabled provider, for its 503.
    pub missing: Vec<&'static str>,
    locks: KeyedLocks,
    /// Ids the caller used that are not the record's primary id (SparkLayer external ids), learned from
    /// answers, so that both names of one customer share one lock.
    aliases: moka::sync::Cache<String, String>,
    /// `Retry-After` for a provider 429 that names no time: the shortest configured window, else 60.
    pub fallback_retry_after: u64,
}

impl ProviderRuntime {
    pub fn new(
        dialect: Box<dyn Dialect>,
        upstream: Option<(Upstream, Arc<RateLimiter>)>,
        missing: Vec<&'static str>,
        fallback_retry_after: u64,
    ) -> ProviderRuntime {
        let (upstream, limiter) = upstream.unzip();
        ProviderRuntime {
            dialect,
            upstream,
            limiter,
            missing,
            locks: KeyedLocks::default(),
            aliases: moka::sync::Cache::new(100_000),
            fallback_retry_after,
        }
    }

    fn name(&self) -> &'static str {
        self.dialect.name()
    }

    fn upstream(&self) -> Result<&Upstream, Problem> {
        self.upstream.as_ref().ok_or_else(|| {
            Problem::new(
                ProblemKind::ServiceUnavailable,
                format!(
                    "provider not configured: set providers.{}.{} (or enable the sandbox)",
                    self.name(),
                    self.missing.join(", ")
                ),
            )
        })
    }

    /// Check 1's second half: a known provider without credentials answers 503.
    pub fn check_configured(&self) -> Result<(), Problem> {
        self.upstream().map(|_| ())
    }

    /// GET: the current customer, canonical; one call.
    pub async fn get(&self, id: &str, options: &CallOptions) -> Limited<Customer> {
        self.limited(1, options, |options| async move {
            let record = self.read(id, &options).await?;
            Ok(self.dialect.to_canonical(record))
        })
        .await
    }

    /// PATCH: applies a validated, restricted, non-empty patch and answers the provider's new state.
    /// One call, or two for a read-merge-write.
    pub async fn patch(
        &self,
        id: &str,
        patch: &CustomerPatch,
        options: &CallOptions,
    ) -> Limited<Customer> {
        let key = self.aliases.get(id).unwrap_or_else(|| id.to_owned());
        let _customer = match self.dialect.serialise_write(patch) {
            true => Some(self.locks.lock(&key).await),
            false => None,
        };
        let needs_current = self.dialect.needs_current(patch);
        let calls = 1 + u32::from(needs_current);
        self.limited(calls, options, |options| async move {
            let upstream = self.upstream()?;
            let mut _primary = None;
            let current = if needs_current {
                let mut record = self.read(id, &options).await?;
                if let Some(primary) = self.dialect.record_id(&record).filter(|p| *p != key) {
                    // First contact through another name: hold the primary id's lock too, and read
                    // again under it (an unplanned call), since a patch through the primary id may
                    // have written in between.
                    _primary = Some(self.locks.lock(&primary).await);
                    record = self.read(id, &options).await?;
                }
                Some(record)
            } else {
                None
            };
            let request = self
                .dialect
                .write(id, patch, current.as_ref())
                .map_err(|errors| {
                    let problem = Problem::invalid(errors);
                    match current {
                        Some(_) => problem.from_provider(self.name(), None),
                        None => problem,
                    }
                })?;
            let response = upstream
                .call(&request, &options)
                .await
                .map_err(|error| call_problem(self.name(), &error))?;
            let record = self
                .record(id, response, request.body.as_deref(), current.as_ref())
                .map_err(|problem| self.name_raw_fields(problem, &patch.provider_fields))?;
            Ok(self.dialect.to_canonical(record))
        })
        .await
    }

    /// Check 10 around a request's upstream calls: reserves the `calls` it plans (one more when a token
    /// must be fetched first), lets every call spend from that reservation, settles it afterwards, and
    /// pauses the credential when the provider itself answers 429.
    async fn limited<F, Fut>(&self, calls: u32, options: &CallOptions, run: F) -> Limited<Customer>
    where
        F: FnOnce(CallOptions) -> Fut,
        Fut: Future<Output = Result<Customer, Problem>>,
    {
        let upstream = match self.upstream() {
            Ok(upstream) => upstream,
            Err(problem) => return problem.into(),
        };
        let Some(limiter) = &self.limiter else {
            return Limited {
                result: run(options.clone()).await,
                quota: None,
            };
        };
        let calls = calls + u32::from(upstream.will_fetch_token().await);
        let admission = match limiter.admit(calls).await {
            Ok(admission) => admission,
            Err(refusal) => {
                return Limited {
                    result: Err(refusal.problem),
                    quota: refusal.decision,
                }
            }
        };
        let options = CallOptions {
            budget: Some(admission.clone()),
            ..options.clone()
        };
        let result = run(options).await;
        admission.settle().await;
        let mut quota = admission.decision();
        if let Err(problem) = &result {
            if problem.kind == ProblemKind::RateLimited && problem.upstream_status == Some(429) {
                let seconds = problem.retry_after.unwrap_or(self.fallback_retry_after);
                quota = limiter.pause(seconds).await;
            }
        }
        Limited {
            result,
            quota: Some(quota),
        }
    }

    /// A provider's refusal of a field the caller sent raw through `provider_fields` names it by its
    /// canonical path, `provider_fields.<provider>.<key>`, like every other error field.
    fn name_raw_fields(&self, mut problem: Problem, raw: &Map<String, Value>) -> Problem {
        for error in &mut problem.errors {
            if raw.contains_key(&error.field) {
                error.field = format!("provider_fields.{}.{}", self.name(), error.field);
            }
        }
        problem
    }

    /// One upstream read of the native record.
    async fn read(&self, id: &str, options: &CallOptions) -> Result<Record, Problem> {
        let upstream = self.upstream()?;
        let request = self.dialect.read(id);
        let response = upstream
            .call(&request, options)
            .await
            .map_err(|error| call_problem(self.name(), &error))?;
        self.record(id, response, None, None)
    }

    /// The native record in a provider's answer, or the problem its status and body mean.
    fn record(
        &self,
        id: &str,
        response: Response,
        sent: Option<&[u8]>,
        current: Option<&Record>,
    ) -> Result<Record, Problem> {
        let name = self.name();
        let status = response.status;
        // UTF-8 checked once for the whole body: parsing from `&str` skips the check of every string.
        let text = std::str::from_utf8(&response.body).ok();
        if status.is_success() {
            let record = text.and_then(|text| Record::parse(text, self.dialect.record_at()));
            return match record {
                Some(record) => {
                    if let Some(primary) = self.dialect.record_id(&record).filter(|p| p != id) {
                        self.aliases.insert(id.to_owned(), primary);
                    }
                    Ok(record)
                }
                None => {
                    tracing::warn!(
                        provider = name,
                        status = status.as_u16(),
                        "unexpected answer body"
                    );
                    Err(Problem::new(
                        ProblemKind::BadGateway,
                        format!(
                            "{name} answered {status} with a body that is not a customer record"
                        ),
                    )
                    .from_provider(name, Some(status.as_u16())))
                }
            };
        }
        let body: Option<Value> = text.and_then(|text| serde_json::from_str(text).ok());
        let failure = body
            .as_ref()
            .map(|b| self.dialect.failure(b, sent, current))
            .unwrap_or_default();
        let problem = status_problem(
            name,
            status,
            &response.headers,
            failure.message.as_deref(),
            self.fallback_retry_after,
        );
        Err(if problem.kind == ProblemKind::Unprocessable {
            problem.with_errors(failure.errors)
        } else {
            problem
        })
    }
}
