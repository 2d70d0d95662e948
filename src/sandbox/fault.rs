//! A fault injected into one provider's answers through the control API: latency, a status or a raw
//! body, extra headers, a dropped connection, for the next N requests or until cleared.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::exchange::Reply;

/// A fault injected into one provider's answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    /// Delay before answering (or before dropping); alone, it delays the real answer.
    pub latency_ms: Option<u64>,
    /// Answer this status in the provider's own error shape (or with `body`).
    pub status: Option<u16>,
    /// Answer this raw body (e.g. garbage) with `status`, else 200.
    pub body: Option<String>,
    /// Extra headers on the answer, e.g. `Retry-After`.
    pub headers: Option<BTreeMap<String, String>>,
    /// Close the connection without any answer.
    #[serde(default)]
    pub drop: bool,
    /// Apply to the next N requests only; `None` until cleared.
    pub times: Option<u32>,
}

impl Fault {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status {
            if !(200..=599).contains(&status) {
                return Err(format!(
                    "status {status} is not a final HTTP status (200-599)"
                ));
            }
        }
        if self.times == Some(0) {
            return Err("times must be at least 1 (DELETE clears a fault)".to_owned());
        }
        for (name, value) in self.headers.iter().flatten() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("{name:?} is not a header name"));
            }
            if HeaderValue::from_str(value).is_err() {
                return Err(format!("the value of header {name} is not a header value"));
            }
        }
        Ok(())
    }

    /// The answer the fault stands in for, when it names a status or a body; `error` is the
    /// provider's error answer for a status.
    pub fn reply(&self, error: impl FnOnce(StatusCode) -> Reply) -> Option<Reply> {
        let status = self.status.and_then(|s| StatusCode::from_u16(s).ok());
        let reply = match (&self.body, status) {
            // Declared as JSON like a real answer, so a client must look at the bytes to notice.
            (Some(body), status) => Reply::raw(
                status.unwrap_or(StatusCode::OK),
                "application/json",
                Bytes::from(body.clone()),
            ),
            (None, Some(status)) => error(status),
            (None, None) => return None,
        };
        Some(reply)
    }

    /// Adds the fault's extra headers to whatever is answered (faulted or real).
    pub fn add_headers(&self, mut reply: Reply) -> Reply {
        for (name, value) in self.headers.iter().flatten() {
            // Checked when the fault was stored.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                reply = reply.with_header(name, value);
            }
        }
        reply
    }
}
