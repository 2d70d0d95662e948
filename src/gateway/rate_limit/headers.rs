//! The `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers (-09 and
//! later), as structured-field lists: `"min";q=10;w=60, "day";q=1000;w=86400` and `"min";r=3;t=42`.

use super::sliding_log::{Decision, Quota};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A policy's name: the usual word for the common window lengths, else the length in seconds.
pub fn window_name(seconds: u64) -> String {
    match seconds {
        1 => "sec".into(),
        60 => "min".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        other => format!("{other}s"),
    }
}

/// `Retry-After` for a wait: whole seconds rounded up, so that a retry then finds room, and at least 1
/// (a `Retry-After: 0` invites a busy loop).
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

/// Every window of the quota: `"min";q=10;w=60, "day";q=1000;w=86400`.
pub fn policy(quota: &Quota) -> String {
    quota
        .windows()
        .iter()
        .map(|w| {
            format!(
                "\"{}\";q={};w={}",
                window_name(w.seconds),
                w.limit,
                w.seconds
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The window with the fewest calls left: `"min";r=3;t=42`, `t` in whole seconds rounded up.
pub fn current(decision: &Decision) -> Option<String> {
    let tightest = decision.tightest()?;
    Some(format!(
        "\"{}\";r={};t={}",
        window_name(tightest.window.seconds),
        tightest.remaining(),
        tightest.reset_ms.div_ceil(1000)
    ))
}

/// Adds both fields; nothing for an unlimited quota.
pub fn insert(headers: &mut HeaderMap, quota: &Quota, decision: &Decision) {
    if quota.is_unlimited() {
        return;
    }
    let fields = [
        ("ratelimit-policy", Some(policy(quota))),
        ("ratelimit", current(decision)),
    ];
    for (name, value) in fields {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Window;
    use crate::gateway::rate_limit::sliding_log::SlidingLog;

    #[test]
    fn fields_follow_the_draft() {
        let quota = Quota::new(&[
            Window {
                limit: 1000,
                seconds: 86_400,
            },
            Window {
                limit: 10,
                seconds: 60,
            },
        ]);
        assert_eq!(policy(&quota), r#""min";q=10;w=60, "day";q=1000;w=86400"#);
        let mut log = SlidingLog::default();
        let decision = log.reserve(&quota, 0, 7, 0);
        let later = log.check(&quota, 17_500, 1);
        assert_eq!(current(&decision).unwrap(), r#""min";r=3;t=60"#);
        assert_eq!(current(&later).unwrap(), r#""min";r=3;t=43"#);
        assert_eq!(window_name(90), "90s");
    }
}
