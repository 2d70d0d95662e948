//! Provider settings as plain data: what `[providers.<name>]` holds. Which keys apply to which provider
//! each provider module says (see [`super::Provider::settings_keys`]); loading and validation are the
//! config's.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A credential. Its `Debug` and `Display` never show the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the Juice key is sent: `Authorization: Bearer <key>` (as one page of Juice's docs shows) or
/// `Authorization: <key>` (as its current docs do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    #[default]
    Bearer,
    Raw,
}

/// One provider's settings. Which credential keys apply depends on the provider (see [`credential_keys`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub auth_scheme: AuthScheme,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    /// Files holding those secrets (e.g. a mounted Kubernetes Secret), read at start-up.
    pub api_key_file: Option<PathBuf>,
    pub client_secret_file: Option<PathBuf>,
    pub access_token_file: Option<PathBuf>,
    pub refresh_token_file: Option<PathBuf>,
    pub site_id: Option<String>,
    /// Juice: pass the caller's `Idempotency-Key` on.
    pub forward_idempotency_key: bool,
    /// COUNT: refresh the access token this long before `accessTokenExpiresAt`.
    pub refresh_before_expiry_s: u64,
    /// SparkLayer: treat a token as expired this long before `expires_in` says.
    pub token_leeway_s: u64,
    pub rate_limit: ProviderRateLimit,
}

impl ProviderConfig {
    /// A provider's documented root and limits, with every other setting at its default.
    pub fn documented(base_url: &str, windows: &[(u32, u64)]) -> ProviderConfig {
        ProviderConfig {
            base_url: base_url.to_owned(),
            forward_idempotency_key: true,
            refresh_before_expiry_s: 60,
            token_leeway_s: 60,
            rate_limit: ProviderRateLimit {
                windows: windows
                    .iter()
                    .map(|&(limit, seconds)| Window { limit, seconds })
                    .collect(),
                ..ProviderRateLimit::default()
            },
            ..ProviderConfig::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub limit: u32,
    pub seconds: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    #[default]
    Reject,
    Wait,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderRateLimit {
    pub windows: Vec<Window>,
    pub mode: LimitMode,
    pub max_wait_ms: u64,
    pub max_queue: usize,
}

impl Default for ProviderRateLimit {
    fn default() -> ProviderRateLimit {
        ProviderRateLimit {
            windows: Vec::new(),
            mode: LimitMode::Reject,
            max_wait_ms: 10_000,
            max_queue: 64,
        }
    }
}
