//! The sandbox's fixed credentials: the emulators accept exactly these, and the gateway uses them
//! whenever it points a provider at the sandbox. They guard nothing but loopback test data.

/// Sweet Spot bearer key (`sk_test_…`, as its docs show test keys).
pub const SWEETSPOT_API_KEY: &str = "sk_test_sandbox_sweetspot";

/// COUNT HMAC identity: `x-client-id`, and the secret the signature is keyed with.
pub const COUNT_CLIENT_ID: &str = "count_sandbox_client";
pub const COUNT_CLIENT_SECRET: &str = "count_sandbox_secret";
/// COUNT OAuth tokens valid when the sandbox starts. The refresh token rotates: once used it is spent
/// for the life of the sandbox process, so a gateway must keep the one the refresh answered.
pub const COUNT_ACCESS_TOKEN: &str = "count_sandbox_access_token";
pub const COUNT_REFRESH_TOKEN: &str = "count_sandbox_refresh_token";

/// Juice API key (`test_…`), accepted as `Bearer <key>` or raw.
pub const JUICE_API_KEY: &str = "test_sandbox_juice";

/// SparkLayer `Site-Id` header and client-credentials pair for `POST /api/auth/token`.
pub const SPARKLAYER_SITE_ID: &str = "patchbay-demo";
pub const SPARKLAYER_CLIENT_ID: &str = "sparklayer_sandbox_client";
pub const SPARKLAYER_CLIENT_SECRET: &str = "sparklayer_sandbox_secret";
