//! One provider at run time: its dialect, its upstream, and the two flows of the canonical API.
//!
//! Phases of a PATCH, after the request checks of `gateway`: lock the customer → read the current record
//! when the dialect needs it (read-merge-write) → translate → write → translate the answer back.
//! A GET is one upstream read.

use super::locks::KeyedLocks;
use super::rescue::{call_problem, status_problem};
use crate::canonical::{CustomerPatch, Problem, ProblemKind};
use crate::providers::Dialect;
use crate::upstream::{CallOptions, Response, Upstream};
use serde_json::{Map, Value};

/// A canonical customer, ready to serialise.
pub(crate) type Customer = Map<String, Value>;

pub(crate) struct ProviderRuntime {
    pub dialect: Box<dyn Dialect>,
    /// `None`: no credentials and no sandbox, so the provider answers 503.
    pub upstream: Option<Upstream>,
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
        upstream: Option<Upstream>,
        missing: Vec<&'static str>,
        fallback_retry_after: u64,
    ) -> ProviderRuntime {
        ProviderRuntime {
            dialect,
            upstream,
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

    /// GET: the current customer, canonical.
    pub async fn get(&self, id: &str, options: &CallOptions) -> Result<Customer, Problem> {
        let record = self.read(id, options).await?;
        Ok(self.dialect.to_canonical(&record))
    }

    /// PATCH: applies a validated, restricted, non-empty patch and answers the provider's new state.
    pub async fn patch(
        &self,
        id: &str,
        patch: &CustomerPatch,
        options: &CallOptions,
    ) -> Result<Customer, Problem> {
        let upstream = self.upstream()?;
        let key = self.aliases.get(id).unwrap_or_else(|| id.to_owned());
        let _customer = self.locks.lock(&key).await;
        let mut _primary = None;
        let current = if self.dialect.needs_current(patch) {
            let mut record = self.read(id, options).await?;
            if let Some(primary) = self.dialect.record_id(&record).filter(|p| *p != key) {
                // First contact through another name: hold the primary id's lock too, and read again
                // under it, since a patch through the primary id may have written in between.
                _primary = Some(self.locks.lock(&primary).await);
                record = self.read(id, options).await?;
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
            .call(&request, options)
            .await
            .map_err(|error| call_problem(self.name(), &error))?;
        let record = self.record(id, response, request.body.as_ref(), current.as_ref())?;
        Ok(self.dialect.to_canonical(&record))
    }

    /// One upstream read of the native record.
    async fn read(&self, id: &str, options: &CallOptions) -> Result<Map<String, Value>, Problem> {
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
        sent: Option<&Value>,
        current: Option<&Map<String, Value>>,
    ) -> Result<Map<String, Value>, Problem> {
        let name = self.name();
        let status = response.status;
        let body: Option<Value> = serde_json::from_slice(&response.body).ok();
        if status.is_success() {
            let record = body.as_ref().and_then(|b| self.dialect.record(b)).cloned();
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
