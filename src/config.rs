//! Configuration: `config/default.toml` (or `--config FILE`), then `PATCHBAY_…` environment variables with
//! `__` between levels. Loaded once at start-up; every problem is reported at once.

use crate::providers;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::providers::settings::{
    AuthScheme, LimitMode, ProviderConfig, ProviderRateLimit, Secret, Window,
};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub sandbox: Sandbox,
    /// Keyed by provider name, as in the canonical path.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub rate_limit: RateLimitStore,
    pub state: State,
    pub log: Log,
    /// The services that may call, each by the SHA-256 of its bearer token; none: open (loopback only,
    /// unless `server.allow_unauthenticated`).
    pub clients: Vec<ClientConfig>,
    pub idempotency: Idempotency,
    pub links: Links,
}

/// Linked customers: one id for a customer that several providers hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Links {
    /// Whose value a read of a linked customer shows where providers disagree, first to last; a
    /// provider not named comes after those named, in the order of the link. Empty: the link's order.
    pub precedence: Vec<String>,
}

/// One caller: its name (in logs and metrics), its token's hash, the providers it may use, its quotas.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// Hex SHA-256 of the bearer token the service sends.
    #[serde(default)]
    pub token_sha256: Option<Secret>,
    #[serde(default)]
    pub token_sha256_file: Option<PathBuf>,
    /// The providers it may use; absent: all.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Its own quota, across providers.
    #[serde(default)]
    pub rate_limit: Option<ClientRate>,
    /// Its quota for one provider, in addition.
    #[serde(default)]
    pub provider_rate_limit: BTreeMap<String, ClientRate>,
}

/// A caller's quota: `per_minute` requests on average, `burst` at once (default: `per_minute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRate {
    pub per_minute: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl ClientRate {
    /// The burst in force: `burst`, or `per_minute` (governor's own default).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_minute)
    }
}

/// `Idempotency-Key` records: how long a stored answer is replayed, and how many this process keeps.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    pub ttl_s: u64,
    pub max_entries: u64,
}

impl Default for Idempotency {
    fn default() -> Idempotency {
        Idempotency {
            ttl_s: 86_400,
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, every line the process writes.
    Json,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address and port of the canonical API.
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Time allowed for a request body to arrive in full once its headers have.
    pub body_timeout_ms: u64,
    /// Open connections to the canonical API, across serving runtimes; 0: sized from the process's
    /// open-file limit. Beyond it, new connections are closed at accept.
    pub max_connections: usize,
    /// Time allowed to open a connection to a provider.
    pub connect_timeout_ms: u64,
    /// Time allowed for one whole upstream call, body included.
    pub upstream_timeout_ms: u64,
    /// Serving runtimes, one thread each, sharing the port (SO_REUSEPORT); 0: one per core.
    pub workers: usize,
    /// The admin listener: `/livez`, `/readyz`, `/metrics`, `/quotas`.
    pub admin_listen: SocketAddr,
    /// After SIGTERM/SIGINT, new connections are still accepted this long (readiness is off at once),
    /// so a load balancer can stop sending first.
    pub drain_delay_ms: u64,
    /// Then open requests have this long to finish; past it they are cut and the exit code is 1.
    pub shutdown_grace_ms: u64,
    /// Serve a non-loopback `listen` address with no `[[clients]]`: anyone who reaches it may call.
    pub allow_unauthenticated: bool,
}

impl Server {
    /// How many serving runtimes to run: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The connection limit in force: `max_connections`, or half the open-file limit (each downstream
    /// connection may hold an upstream one), less a reserve for listeners and the process itself.
    pub fn connection_limit(&self) -> usize {
        match self.max_connections {
            0 => open_file_limit().map_or(1024, |files| (files / 2).saturating_sub(64).max(64)),
            n => n,
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or unlimited.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 65_536,
            body_timeout_ms: 10_000,
            max_connections: 0,
            connect_timeout_ms: 2_000,
            upstream_timeout_ms: 10_000,
            workers: 0,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            drain_delay_ms: 0,
            shutdown_grace_ms: 30_000,
            allow_unauthenticated: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Start the emulators and point every provider at them.
    pub enabled: bool,
    /// Where the emulators listen (port 0: any free port).
    pub listen: SocketAddr,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    FailClosed,
    Local,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitStore {
    pub backend: Backend,
    pub redis_url: Option<Secret>,
    pub on_store_error: OnStoreError,
    pub replicas: u32,
    /// Keys the credential fingerprints (HMAC-SHA256): required with Redis, the same secret on every
    /// replica; without one a local gateway picks a random key per process, so its `/quotas` cannot be
    /// used to confirm a guessed credential.
    pub fingerprint_key: Option<Secret>,
    /// Files holding those secrets, read at start-up.
    pub redis_url_file: Option<PathBuf>,
    pub fingerprint_key_file: Option<PathBuf>,
    /// The PEM file of a private CA that signed Redis's certificate (`rediss://` only).
    pub redis_ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Memory,
    File,
    Redis,
}

/// Where run-time state that must survive is kept: rotated refresh tokens, shared access tokens.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    pub backend: StateBackend,
    /// The file backend's directory (created, mode 0700, and locked while patchbay runs).
    pub dir: Option<PathBuf>,
    /// The redis backend's URL; default: `rate_limit.redis_url`.
    pub redis_url: Option<Secret>,
    /// A file holding it, read at start-up.
    pub redis_url_file: Option<PathBuf>,
    /// Its private CA file; default: `rate_limit.redis_ca_file` when the URL is the rate limit's too.
    pub redis_ca_file: Option<PathBuf>,
}

impl Default for RateLimitStore {
    fn default() -> RateLimitStore {
        RateLimitStore {
            backend: Backend::Local,
            redis_url: None,
            on_store_error: OnStoreError::FailClosed,
            replicas: 1,
            fingerprint_key: None,
            redis_url_file: None,
            fingerprint_key_file: None,
            redis_ca_file: None,
        }
    }
}

/// A Redis client for `url` (`redis://…` or `rediss://…`), trusting the CA in `ca_file` when given: the
/// problem in words, never the URL itself (it may carry a password).
pub fn redis_client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, String> {
    let not_a_url = |_| "not a redis:// or rediss:// URL".to_owned();
    let Some(ca_file) = ca_file else {
        return redis::Client::open(url).map_err(not_a_url);
    };
    let root_cert = std::fs::read(ca_file)
        .map_err(|error| format!("cannot read the CA file {}: {error}", ca_file.display()))?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(url, certificates).map_err(|error| match error.kind() {
        redis::ErrorKind::InvalidClientConfig => "not a rediss:// URL".to_owned(),
        _ => format!("the CA file {}: {error}", ca_file.display()),
    })
}

/// Checks a Redis URL and CA file as start-up does.
fn redis_check(url: &str, ca_file: Option<&Path>) -> Result<(), String> {
    if ca_file.is_some() && !url.starts_with("rediss://") {
        return Err("a CA file is only used with a rediss:// URL".into());
    }
    redis_client(url, ca_file).map(drop)
}

/// The provider-specific keys `provider` reads; the other providers' keys are refused for it.
pub fn credential_keys(provider: &str) -> &'static [&'static str] {
    providers::all()
        .iter()
        .find(|p| p.name() == provider)
        .map_or(&[], |p| p.settings_keys())
}

/// A provider-specific setting: one that some provider reads.
fn is_provider_specific(key: &str) -> bool {
    providers::all()
        .iter()
        .any(|provider| provider.settings_keys().contains(&key))
}

impl Default for Config {
    fn default() -> Config {
        let providers = providers::all()
            .iter()
            .map(|provider| (provider.name().to_owned(), provider.defaults()))
            .collect();
        Config {
            server: Server::default(),
            sandbox: Sandbox::default(),
            providers,
            rate_limit: RateLimitStore::default(),
            state: State::default(),
            log: Log::default(),
            clients: Vec::new(),
            idempotency: Idempotency::default(),
            links: Links::default(),
        }
    }
}

/// A client's burst beyond its `per_minute`, at most: governor's tolerance, burst × (60 s ÷ per_minute) in
/// nanoseconds, must fit a u64.
const MAX_BURST: u32 = 1_000_000;

/// Each serving runtime is a thread with its own listener and connection pools: thousands would only
/// exhaust threads and file descriptors.
const MAX_WORKERS: usize = 256;

/// `config/default.toml`, built in so that the binary runs the sandbox from any directory.
pub const EMBEDDED: &str = include_str!("../config/default.toml");
const DEFAULT_FILE: &str = "config/default.toml";

/// Start-up failed: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Loads the built-in defaults, then the embedded `config/default.toml`, then `file` (or
    /// `config/default.toml` in the working directory when present), then `PATCHBAY_…` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // What the operator set: a file, then the environment, over the built-in defaults.
        let mut operator = Figment::new();
        match file {
            Some(file) if !file.exists() => {
                return Err(ConfigError(vec![format!(
                    "config file {} does not exist",
                    file.display()
                )]))
            }
            Some(file) => operator = operator.merge(Toml::file_exact(file)),
            None if Path::new(DEFAULT_FILE).exists() => {
                operator = operator.merge(Toml::file_exact(DEFAULT_FILE))
            }
            None => {}
        }
        let operator = operator.merge(Env::prefixed("PATCHBAY_").split("__"));
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(EMBEDDED))
            .merge(operator.clone());
        let conflicts = sandbox_conflicts(&figment, &operator);
        match Config::from_figment(&figment) {
            Ok(_) if !conflicts.is_empty() => Err(ConfigError(conflicts)),
            Err(ConfigError(mut problems)) => {
                problems.extend(conflicts);
                Err(ConfigError(problems))
            }
            ok => ok,
        }
    }

    /// Extracts and validates, listing unknown keys, type errors and invalid values together: a value
    /// of the wrong type is reported and left at its default, so the checks of every other value still run.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let raw: Value = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| e.to_string()).collect()))?;
        let known = serde_json::to_value(Config::default()).expect("defaults serialise");
        let mut unknown = Vec::new();
        unknown_keys(&raw, &known, &mut Vec::new(), &mut unknown);
        problems.extend(unknown.iter().map(|path| unknown_setting(path)));
        if let Some(Value::Object(providers)) = raw.get("providers") {
            for (name, settings) in providers {
                let Some(settings) = settings.as_object() else {
                    continue;
                };
                // Every provider carries every key's default; only a changed value is a mistake.
                let allowed = credential_keys(name);
                for key in settings.keys() {
                    let setting = key.strip_suffix("_file").unwrap_or(key.as_str());
                    if is_provider_specific(setting)
                        && !allowed.contains(&setting)
                        && settings[key] != known["providers"][name][key]
                    {
                        problems.push(format!(
                            "providers.{name}.{key}: {name} does not use this setting"
                        ));
                    }
                }
            }
        }
        let mut typed = raw.clone();
        for path in &unknown {
            replace_at(&mut typed, path, None);
        }
        let (config, wrong) = extract_typed(figment, typed, &raw, &known);
        problems.extend(wrong.iter().map(|(_, problem)| problem.clone()));
        let Some(mut config) = config else {
            return Err(ConfigError(problems));
        };
        let mut checks = config.read_secret_files();
        checks.extend(config.problems());
        // A value left at its default for its type error is not wrong a second time.
        checks.retain(|check| !wrong.iter().any(|(path, _)| names(check, path)));
        problems.extend(checks);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Replaces every `<secret>_file` setting by the file's contents (one trailing newline removed, as
    /// `echo` and editors leave one).
    fn read_secret_files(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut read = |name: String, secret: &mut Option<Secret>, file: &mut Option<PathBuf>| {
            let Some(path) = file.take() else {
                return;
            };
            if secret.is_some() {
                problems.push(format!("{name}_file: {name} is set too; set one of them"));
                return;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    let text = text.strip_suffix('\r').unwrap_or(text);
                    *secret = Some(Secret::new(text));
                }
                Err(error) => problems.push(format!(
                    "{name}_file: cannot read {}: {error}",
                    path.display()
                )),
            }
        };
        for (provider, settings) in &mut self.providers {
            let key = |setting: &str| format!("providers.{provider}.{setting}");
            read(
                key("api_key"),
                &mut settings.api_key,
                &mut settings.api_key_file,
            );
            read(
                key("client_secret"),
                &mut settings.client_secret,
                &mut settings.client_secret_file,
            );
            read(
                key("access_token"),
                &mut settings.access_token,
                &mut settings.access_token_file,
            );
            read(
                key("refresh_token"),
                &mut settings.refresh_token,
                &mut settings.refresh_token_file,
            );
        }
        let limits = &mut self.rate_limit;
        read(
            "rate_limit.redis_url".into(),
            &mut limits.redis_url,
            &mut limits.redis_url_file,
        );
        read(
            "rate_limit.fingerprint_key".into(),
            &mut limits.fingerprint_key,
            &mut limits.fingerprint_key_file,
        );
        read(
            "state.redis_url".into(),
            &mut self.state.redis_url,
            &mut self.state.redis_url_file,
        );
        for (i, client) in self.clients.iter_mut().enumerate() {
            read(
                format!("clients[{i}].token_sha256"),
                &mut client.token_sha256,
                &mut client.token_sha256_file,
            );
        }
        problems
    }

    /// Semantic checks that types cannot express.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.workers > MAX_WORKERS {
            problems.push(format!(
                "server.workers: at most {MAX_WORKERS} serving runtimes (0: one per core), not {}",
                self.server.workers
            ));
        }
        if self.server.body_timeout_ms == 0 {
            problems.push("server.body_timeout_ms: must be more than 0".into());
        }
        if self.server.body_limit_bytes == 0 {
            problems.push("server.body_limit_bytes: must be more than 0".into());
        }
        if self.server.connect_timeout_ms == 0 {
            problems.push("server.connect_timeout_ms: must be more than 0".into());
        }
        if self.server.upstream_timeout_ms == 0 {
            problems.push("server.upstream_timeout_ms: must be more than 0".into());
        }
        for (name, provider) in &self.providers {
            match url::Url::parse(&provider.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => problems.push(format!(
                    "providers.{name}.base_url: `{}` is not an absolute http(s) URL",
                    provider.base_url
                )),
            }
            for (i, window) in provider.rate_limit.windows.iter().enumerate() {
                if window.limit == 0 || window.seconds == 0 {
                    problems.push(format!(
                        "providers.{name}.rate_limit.windows[{i}]: limit and seconds must be more than 0"
                    ));
                }
                // The RateLimit headers name a window by its length, so lengths must differ.
                if provider.rate_limit.windows[..i]
                    .iter()
                    .any(|w| w.seconds == window.seconds)
                {
                    problems.push(format!(
                        "providers.{name}.rate_limit.windows[{i}]: another window is {} s long too",
                        window.seconds
                    ));
                }
            }
            if provider.rate_limit.mode == LimitMode::Wait && provider.rate_limit.max_queue == 0 {
                problems.push(format!(
                    "providers.{name}.rate_limit.max_queue: must be more than 0 in wait mode"
                ));
            }
        }
        if self.server.admin_listen == self.server.listen && self.server.listen.port() != 0 {
            problems.push(format!(
                "server.admin_listen: {} is server.listen too; the admin listener needs its own port",
                self.server.admin_listen
            ));
        }
        problems.extend(self.client_problems());
        let known: Vec<&str> = providers::all().iter().map(|p| p.name()).collect();
        for (i, name) in self.links.precedence.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                problems.push(format!(
                    "links.precedence[{i}]: unknown provider; use one of: {}",
                    known.join(", ")
                ));
            } else if self.links.precedence[..i].contains(name) {
                problems.push(format!("links.precedence[{i}]: {name} is named twice"));
            }
        }
        if self.idempotency.ttl_s == 0 {
            problems.push("idempotency.ttl_s: must be more than 0".into());
        }
        if self.idempotency.max_entries == 0 {
            problems.push("idempotency.max_entries: must be more than 0".into());
        }
        if self.rate_limit.replicas == 0 {
            problems.push("rate_limit.replicas: must be at least 1".into());
        }
        if self.rate_limit.backend == Backend::Redis && self.rate_limit.fingerprint_key.is_none() {
            problems.push(
                "rate_limit.fingerprint_key: required when rate_limit.backend = \"redis\": set the same secret on every replica".into(),
            );
        }
        if self.rate_limit.backend == Backend::Redis && self.rate_limit.redis_url.is_none() {
            problems
                .push("rate_limit.redis_url: required when rate_limit.backend = \"redis\"".into());
        }
        // A URL may carry a password: say what is wrong, never what it is.
        if let Some(url) = &self.rate_limit.redis_url {
            let ca_file = self.rate_limit.redis_ca_file.as_deref();
            if let Err(problem) = redis_check(url.expose(), ca_file) {
                problems.push(format!("rate_limit.redis_url: {problem}"));
            }
        }
        match self.state.backend {
            StateBackend::File if self.state.dir.is_none() => problems
                .push("state.dir: required when state.backend = \"file\" (a directory patchbay may create)".into()),
            StateBackend::Redis if self.state_redis().0.is_none() => problems.push(
                "state.redis_url: required when state.backend = \"redis\" (or set rate_limit.redis_url)"
                    .into(),
            ),
            _ => {}
        }
        if let Some(url) = &self.state.redis_url {
            if let Err(problem) = redis_check(url.expose(), self.state_redis().1) {
                problems.push(format!("state.redis_url: {problem}"));
            }
        }
        problems
    }

    /// `[[clients]]`: names fit for logs and labels, one token hash each, providers that exist; and no
    /// open listener beyond loopback unless asked for.
    fn client_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let listen = self.server.listen;
        if self.clients.is_empty()
            && !listen.ip().is_loopback()
            && !self.server.allow_unauthenticated
        {
            problems.push(format!(
                "server.listen: {listen} is not a loopback address and no [[clients]] are configured, so anyone who reaches it could write to every provider: add [[clients]] (docs/rate-limits-and-callers.md, \"Clients\") or set server.allow_unauthenticated = true to serve it open on purpose"
            ));
        }
        let known: Vec<&str> = providers::all().iter().map(|p| p.name()).collect();
        let unknown = |name: &str| {
            (!known.contains(&name))
                .then(|| format!("unknown provider; use one of: {}", known.join(", ")))
        };
        for (i, client) in self.clients.iter().enumerate() {
            let at = format!("clients[{i}]");
            let name = &client.name;
            let fit = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !fit {
                problems.push(format!(
                    "{at}.name: 1 to 64 of A-Z a-z 0-9 _ - . (it appears in logs and metrics)"
                ));
            }
            if self.clients[..i].iter().any(|other| other.name == *name) {
                problems.push(format!("{at}.name: another client is called {name:?} too"));
            }
            match client.token_sha256.as_ref().map(|hash| hash.expose()) {
                None => problems.push(format!(
                    "{at}.token_sha256: required (hex SHA-256 of the client's bearer token; docs/rate-limits-and-callers.md, \"Clients\")"
                )),
                Some(hash) if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    problems.push(format!(
                        "{at}.token_sha256: 64 hex digits, the SHA-256 of the token (not the token itself)"
                    ))
                }
                Some(hash) => {
                    let same = |other: &ClientConfig| {
                        other
                            .token_sha256
                            .as_ref()
                            .is_some_and(|h| h.expose().eq_ignore_ascii_case(hash))
                    };
                    if self.clients[..i].iter().any(same) {
                        problems.push(format!(
                            "{at}.token_sha256: another client has the same token; give each its own"
                        ));
                    }
                }
            }
            if let Some(list) = &client.providers {
                if list.is_empty() {
                    problems.push(format!(
                        "{at}.providers: empty, so the client could call nothing; remove it to allow every provider"
                    ));
                }
                for (j, provider) in list.iter().enumerate() {
                    if let Some(problem) = unknown(provider) {
                        problems.push(format!("{at}.providers[{j}]: {problem}"));
                    }
                }
            }
            let mut rates: Vec<(String, &ClientRate)> = Vec::new();
            if let Some(rate) = &client.rate_limit {
                rates.push((format!("{at}.rate_limit"), rate));
            }
            for (provider, rate) in &client.provider_rate_limit {
                let key = format!("{at}.provider_rate_limit.{provider}");
                if let Some(problem) = unknown(provider) {
                    problems.push(format!("{key}: {problem}"));
                } else if client
                    .providers
                    .as_ref()
                    .is_some_and(|list| !list.contains(provider))
                {
                    problems.push(format!("{key}: {provider} is not in {at}.providers"));
                }
                rates.push((key, rate));
            }
            for (key, rate) in rates {
                if rate.per_minute == 0 || rate.burst() == 0 {
                    problems.push(format!("{key}: per_minute and burst must be more than 0"));
                }
                if rate.burst() > rate.per_minute.max(MAX_BURST) {
                    problems.push(format!(
                        "{key}: burst is at most per_minute or {MAX_BURST}, whichever is more"
                    ));
                }
            }
        }
        problems
    }

    /// The state store's Redis URL and CA file: its own, or the rate limit's.
    pub fn state_redis(&self) -> (Option<&Secret>, Option<&Path>) {
        match &self.state.redis_url {
            Some(url) => (Some(url), self.state.redis_ca_file.as_deref()),
            None => (
                self.rate_limit.redis_url.as_ref(),
                self.state
                    .redis_ca_file
                    .as_deref()
                    .or(self.rate_limit.redis_ca_file.as_deref()),
            ),
        }
    }

    /// Providers without the credentials they need (sandbox off): disabled, answering 503.
    pub fn missing_credentials(&self, name: &str) -> Vec<&'static str> {
        let (Some(settings), Some(provider)) = (
            self.providers.get(name),
            providers::all().into_iter().find(|p| p.name() == name),
        ) else {
            return vec![];
        };
        provider.credentials(settings).err().unwrap_or_default()
    }
}

/// The settings the sandbox would silently replace: with `sandbox.enabled`, every provider's base URL
/// and credentials point at the emulators, so an operator who set real ones (in a file or the
/// environment, to something other than the built-in default) must choose.
fn sandbox_conflicts(figment: &Figment, operator: &Figment) -> Vec<String> {
    const REPLACED: [&str; 11] = [
        "base_url",
        "api_key",
        "api_key_file",
        "client_id",
        "client_secret",
        "client_secret_file",
        "access_token",
        "access_token_file",
        "refresh_token",
        "refresh_token_file",
        "site_id",
    ];
    if !figment
        .extract_inner::<bool>("sandbox.enabled")
        .unwrap_or(false)
    {
        return Vec::new();
    }
    let Ok(Value::Object(providers)) = operator.extract_inner::<Value>("providers") else {
        return Vec::new();
    };
    let built_in = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(EMBEDDED))
        .extract_inner::<Value>("providers")
        .unwrap_or(Value::Null);
    let mut conflicts = Vec::new();
    for (name, settings) in &providers {
        // An unknown provider is reported as such.
        let (Some(settings), false) = (settings.as_object(), built_in[name.as_str()].is_null())
        else {
            continue;
        };
        let changed = |key: &str| {
            settings
                .get(key)
                .is_some_and(|value| *value != built_in[name.as_str()][key])
        };
        for key in REPLACED.into_iter().filter(|key| changed(key)) {
            conflicts.push(format!(
                "providers.{name}.{key} is set, but the sandbox is on and would replace it: set sandbox.enabled = false to call {name} itself, or remove the setting to use the sandbox"
            ));
        }
    }
    conflicts
}

/// The configuration in `typed`, each value of the wrong type reported (with its dotted path) and put
/// back to its default, one after another: serde stops at a struct's first bad value. `None` when one
/// cannot be put back (a required member of a list entry), after the type errors found so far.
fn extract_typed(
    figment: &Figment,
    mut typed: Value,
    raw: &Value,
    known: &Value,
) -> (Option<Config>, Vec<(String, String)>) {
    let mut wrong: Vec<(String, String)> = Vec::new();
    let mut repaired: Vec<Vec<String>> = Vec::new();
    loop {
        let extracted = Figment::from(Serialized::defaults(figment_value(&typed))).extract();
        let error = match extracted {
            Ok(config) => return (Some(config), wrong),
            Err(error) => error,
        };
        let path = error.path.clone();
        if repaired.contains(&path) || repaired.len() > 256 {
            return (None, wrong);
        }
        let dotted = dotted(&path);
        let problem = type_problem(figment, &path, &error.kind, raw, known);
        if !wrong.iter().any(|(_, said)| *said == problem) {
            wrong.push((dotted, problem));
        }
        // Inside a list entry there is no default: a value of the expected kind stands in (the checks
        // of that value are dropped below, it was reported already).
        let default = value_at(known, &path)
            .cloned()
            .or_else(|| stand_in(&error.kind));
        if !replace_at(&mut typed, &path, default) {
            return (None, wrong);
        }
        repaired.push(path);
    }
}

/// A value of the kind serde expected, for a wrong one that has no default.
fn stand_in(kind: &figment::error::Kind) -> Option<Value> {
    use figment::error::Kind;
    let (Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected)) = kind else {
        return None;
    };
    let value = match expected.as_str() {
        e if e.contains("bool") => Value::Bool(false),
        e if e.starts_with('u') || e.starts_with('i') || e.contains("integer") => Value::from(1),
        e if e.contains("sequence") => Value::Array(Vec::new()),
        e if e.contains("struct") || e.contains("map") => Value::Object(Map::new()),
        _ => Value::String(String::new()),
    };
    Some(value)
}

/// Whether `problem` is about the setting at `path` (or inside it).
fn names(problem: &str, path: &str) -> bool {
    problem
        .strip_prefix(path)
        .is_some_and(|rest| rest.starts_with([':', ' ', '.', '[']))
}

/// `clients.0.name` as the user writes it: `clients[0].name`.
fn dotted(path: &[String]) -> String {
    let mut text = String::new();
    for key in path {
        if key.parse::<usize>().is_ok() {
            text.push_str(&format!("[{key}]"));
        } else {
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(key);
        }
    }
    text
}

fn unknown_setting(path: &[String]) -> String {
    match path {
        [providers, name] if providers == "providers" => {
            let known: Vec<&str> = providers::all().iter().map(|p| p.name()).collect();
            format!(
                "providers.{name}: unknown provider; use one of: {}",
                known.join(", ")
            )
        }
        _ => format!("{}: unknown setting", dotted(path)),
    }
}

/// A value of the wrong type, said in the user's terms: the setting as written (and the variable it
/// came from), the value, and what it must be.
fn type_problem(
    figment: &Figment,
    path: &[String],
    kind: &figment::error::Kind,
    raw: &Value,
    known: &Value,
) -> String {
    use figment::error::Kind;
    let setting = dotted(path);
    if let Kind::UnknownField(_, expected) = kind {
        return format!(
            "{setting}: unknown setting; the settings here are: {}",
            expected.join(", ")
        );
    }
    if let Kind::MissingField(field) = kind {
        return format!("{setting}.{field}: required");
    }
    let from_env = figment
        .find_metadata(&path.join("."))
        .is_some_and(|metadata| metadata.name.contains("environment variable"));
    let origin = match from_env {
        true => format!(
            " (from PATCHBAY_{})",
            path.iter()
                .map(|key| key.to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        false => String::new(),
    };
    let value = value_at(raw, path).map_or_else(|| "this value".to_owned(), shown);
    let mut expected = expectation(path, kind, value_at(known, path));
    if value_at(raw, path)
        .and_then(Value::as_i64)
        .is_some_and(|n| n < 0)
    {
        expected.push_str(", 0 or more");
    }
    format!("{setting}{origin}: {value} is not {expected}")
}

/// What a setting must be, in words: from the choices of a list of names, else from the kind of its
/// default, else from what serde expected.
fn expectation(path: &[String], kind: &figment::error::Kind, default: Option<&Value>) -> String {
    use figment::error::Kind;
    let name = path.last().map_or("", String::as_str);
    if let Kind::UnknownVariant(_, choices) = kind {
        return one_of(choices);
    }
    if name.ends_with("listen") {
        return "an address and port, such as 127.0.0.1:8080".into();
    }
    let expected = match kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => expected.as_str(),
        _ => "",
    };
    let integer = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i32", "i64", "isize",
    ];
    let whole = integer
        .iter()
        .any(|int| expected == *int || expected.ends_with(&format!(" {int}")));
    match default {
        Some(Value::Number(_)) => whole_number(name),
        _ if whole => whole_number(name),
        Some(Value::Bool(_)) => "true or false".into(),
        _ if expected.contains("bool") => "true or false".into(),
        Some(Value::Array(_)) if name == "windows" => {
            "a list of windows, such as [{ limit = 10, seconds = 60 }]".into()
        }
        Some(Value::Array(_)) => "a list".into(),
        Some(Value::Object(_)) => "a table of settings".into(),
        _ if name == "dir" || name.ends_with("_file") => "a path, as a string".into(),
        _ if expected.contains("sequence") => "a list".into(),
        _ if expected.contains("struct") || expected.contains("map") => {
            "a table of settings".into()
        }
        _ => "a string".into(),
    }
}

/// `"text" or "json"`, `"a", "b" or "c"`.
fn one_of(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "a known name".into(),
    }
}

/// A whole number, with the unit a setting's name gives it.
fn whole_number(name: &str) -> String {
    let unit = [
        ("_ms", " of milliseconds"),
        ("_s", " of seconds"),
        ("_bytes", " of bytes"),
    ]
    .into_iter()
    .find(|(suffix, _)| name.ends_with(suffix))
    .map_or("", |(_, unit)| unit);
    format!("a whole number{unit}")
}

/// A value as it would be written in the file: strings quoted, long ones cut.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| match value {
        Value::Object(members) => members.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Sets the value at `path` (removes it with `None`); whether there was one to change.
fn replace_at(value: &mut Value, path: &[String], new: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let parent = parents.iter().try_fold(value, |value, key| match value {
        Value::Object(members) => members.get_mut(key),
        Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    });
    match (parent, new) {
        (Some(Value::Object(members)), Some(new)) => members.insert(last.clone(), new).is_some(),
        (Some(Value::Object(members)), None) => members.remove(last).is_some(),
        (Some(Value::Array(items)), Some(new)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items[i] = new;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `value` as figment's own value. Serialised directly, a number of serde_json's `arbitrary_precision`
/// is a map with one private member, and every numeric setting would be reported as a wrong type.
fn figment_value(value: &Value) -> figment::value::Value {
    use figment::value::{Empty, Tag, Value as Figment};
    match value {
        Value::Null => Figment::from(Empty::None),
        Value::Bool(b) => Figment::from(*b),
        Value::Number(n) => n
            .as_u64()
            .map(Figment::from)
            .or_else(|| n.as_i64().map(Figment::from))
            .or_else(|| n.as_f64().map(Figment::from))
            .unwrap_or_else(|| Figment::from(n.to_string())),
        Value::String(text) => Figment::from(text.as_str()),
        Value::Array(items) => Figment::from(items.iter().map(figment_value).collect::<Vec<_>>()),
        Value::Object(members) => Figment::Dict(
            Tag::Default,
            members
                .iter()
                .map(|(key, member)| (key.clone(), figment_value(member)))
                .collect(),
        ),
    }
}

/// Collects the paths present in `raw` but not in `known` (arrays are not descended into).
fn unknown_keys(
    raw: &Value,
    known: &Value,
    prefix: &mut Vec<String>,
    paths: &mut Vec<Vec<String>>,
) {
    let (Value::Object(raw), Value::Object(known)) = (raw, known) else {
        return;
    };
    for (key, value) in raw {
        prefix.push(key.clone());
        match known.get(key) {
            Some(known_value) => unknown_keys(value, known_value, prefix, paths),
            None => paths.push(prefix.clone()),
        }
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
        Config::from_figment(&figment)
    }

    #[test]
    fn a_secret_can_come_from_a_file() {
        let dir =
            std::env::temp_dir().join(format!("patchbay-secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("juice-key");
        std::fs::write(&key, "live_from_a_file\n").unwrap();
        let config = load(&format!(
            "providers.juice.api_key_file = {:?}\nrate_limit.fingerprint_key_file = {:?}",
            key.display().to_string(),
            key.display().to_string()
        ))
        .unwrap();
        let juice = &config.providers["juice"];
        assert_eq!(
            juice.api_key.as_ref().map(Secret::expose),
            Some("live_from_a_file")
        );
        assert!(juice.api_key_file.is_none());
        let fingerprint = config.rate_limit.fingerprint_key.as_ref();
        assert_eq!(fingerprint.map(Secret::expose), Some("live_from_a_file"));

        let problems = |toml: &str| load(toml).err().map(|e| e.0).unwrap_or_default();
        let missing = problems("providers.count.refresh_token_file = \"/nonexistent/rt\"");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0]
                .starts_with("providers.count.refresh_token_file: cannot read /nonexistent/rt"),
            "{missing:?}"
        );
        let both = problems(&format!(
            "providers.juice.api_key = \"x\"\nproviders.juice.api_key_file = {:?}",
            key.display().to_string()
        ));
        assert_eq!(
            both,
            ["providers.juice.api_key_file: providers.juice.api_key is set too; set one of them"]
        );
        // A provider that reads no such secret refuses its file too.
        let foreign = problems("providers.juice.refresh_token_file = \"/x\"");
        assert!(
            foreign
                .iter()
                .any(|p| p.contains("juice does not use this setting")),
            "{foreign:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_store_names_what_it_lacks() {
        let problems = |toml: &str| load(toml).err().map(|e| e.0).unwrap_or_default();
        assert_eq!(
            problems("state.backend = \"file\""),
            ["state.dir: required when state.backend = \"file\" (a directory patchbay may create)"]
        );
        let redis = problems("state.backend = \"redis\"");
        assert!(
            redis[0].starts_with("state.redis_url: required"),
            "{redis:?}"
        );
        // The rate limit's Redis is the default.
        let shared = load(
            "state.backend = \"redis\"\nrate_limit.redis_url = \"rediss://cache.internal:6380/0\"",
        )
        .unwrap();
        assert_eq!(
            shared.state_redis().0.map(|url| url.expose()),
            Some("rediss://cache.internal:6380/0")
        );
        let ca = problems(
            "rate_limit.redis_url = \"redis://127.0.0.1/\"\nrate_limit.redis_ca_file = \"/etc/ca.pem\"",
        );
        assert_eq!(
            ca,
            ["rate_limit.redis_url: a CA file is only used with a rediss:// URL"]
        );
        let missing = problems(
            "state.redis_url = \"rediss://127.0.0.1/\"\nstate.redis_ca_file = \"/nonexistent/ca.pem\"",
        );
        assert!(
            missing[0].starts_with("state.redis_url: cannot read the CA file /nonexistent/ca.pem"),
            "{missing:?}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let config = load("").unwrap();
        assert_eq!(config.server.listen.port(), 8080);
        assert_eq!(config.providers["juice"].rate_limit.windows.len(), 2);
        assert_eq!(config.missing_credentials("juice"), ["api_key"]);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let err = load(
            r#"
            [server]
            lisen = "x"
            body_limit_bytes = 0
            [providers.juice]
            base_url = "ftp://nope"
            site_id = "x"
            [providers.mystery]
            base_url = "https://x"
            "#,
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for expected in [
            "server.lisen: unknown setting",
            "providers.mystery: unknown provider; use one of: sweetspot, count, juice, sparklayer",
            "providers.juice.site_id: juice does not use this setting",
        ] {
            assert!(all.contains(expected), "{expected} missing from:\n{all}");
        }
    }

    #[test]
    fn every_bad_value_is_listed_not_only_the_first() {
        let err = load(
            r#"
            [server]
            listen = "nonsense"
            body_limit_bytes = -5
            workers = 5000
            [rate_limit]
            windows = [{ limit = 0, seconds = 0 }]
            "#,
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for expected in [
            "server.listen",
            "server.body_limit_bytes",
            "rate_limit.windows",
        ] {
            assert!(all.contains(expected), "{expected} missing from:\n{all}");
        }
        assert!(err.0.len() >= 3, "{all}");
        // Only the bad ones: a number that was fine is not a wrong type.
        assert!(!all.contains("upstream_timeout_ms"), "{all}");
        let workers = load("[server]\nworkers = 5000").unwrap_err().0.join("\n");
        assert!(workers.contains("server.workers: at most 256"), "{workers}");
    }

    #[test]
    fn a_type_error_is_said_in_the_users_terms_and_hides_no_other_problem() {
        let err = load(
            r#"
            server.listen = "nonsense"
            log.format = "xml"
            server.body_limit_bytes = -5
            [providers.mystery]
            base_url = "https://x"
            [[clients]]
            name = "billing"
            token_sha256 = "not-a-hash"
            rate_limit = { per_minute = 0 }
            [[clients]]
            name = "crm"
            token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            rate_limit = { per_minute = "lots" }
            "#,
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [
                "providers.mystery: unknown provider; use one of: sweetspot, count, juice, sparklayer",
                "clients[1].rate_limit.per_minute: \"lots\" is not a whole number",
                "log.format: \"xml\" is not \"text\" or \"json\"",
                "server.body_limit_bytes: -5 is not a whole number of bytes, 0 or more",
                "server.listen: \"nonsense\" is not an address and port, such as 127.0.0.1:8080",
                "clients[0].token_sha256: 64 hex digits, the SHA-256 of the token (not the token itself)",
                "clients[0].rate_limit: per_minute and burst must be more than 0",
            ]
        );
        for leak in ["src/", "figment", "u64", "usize", "default."] {
            assert!(!err.to_string().contains(leak), "{leak}: {err}");
        }
    }

    #[test]
    fn semantic_problems_are_listed_together() {
        let err = load(
            r#"
            [server]
            body_limit_bytes = 0
            [providers.juice]
            base_url = "ftp://nope"
            [[providers.count.rate_limit.windows]]
            limit = 0
            seconds = 60
            "#,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{:?}", err.0);
    }

    #[test]
    fn rate_limit_settings_are_checked() {
        let err = load(
            r#"
            [rate_limit]
            backend = "redis"
            redis_url = "http://user:hunter2@example"
            [[providers.count.rate_limit.windows]]
            limit = 1
            seconds = 60
            [[providers.count.rate_limit.windows]]
            limit = 5
            seconds = 60
            "#,
        )
        .unwrap_err();
        let all = err.0.join("\n");
        assert!(
            all.contains("rate_limit.redis_url: not a redis:// or rediss:// URL"),
            "{all}"
        );
        assert!(
            all.contains("windows[1]: another window is 60 s long"),
            "{all}"
        );
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn clients_are_checked_and_an_open_listener_stays_on_loopback() {
        let problems = |toml: &str| load(toml).err().map(|e| e.0).unwrap_or_default();
        let open = problems("server.listen = \"0.0.0.0:8080\"");
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(
            open[0].contains("server.allow_unauthenticated = true"),
            "{open:?}"
        );
        assert!(problems("server.listen = \"[::1]:8080\"").is_empty());
        assert!(
            problems("server.listen = \"0.0.0.0:8080\"\nserver.allow_unauthenticated = true")
                .is_empty()
        );
        let hash = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let ok = load(&format!(
            "server.listen = \"0.0.0.0:8080\"\n[[clients]]\nname = \"billing\"\ntoken_sha256 = \"{hash}\"\nproviders = [\"juice\"]\nprovider_rate_limit.juice = {{ per_minute = 5 }}"
        ))
        .unwrap();
        assert_eq!(ok.clients[0].provider_rate_limit["juice"].burst(), 5);
        assert!(
            !format!("{ok:?}").contains(hash),
            "a token hash is not printed"
        );
        let bad = problems(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\nproviders = []\n[[clients]]\nname = \"b\"\ntoken_sha256 = \"{}\"\nrate_limit = {{ per_minute = 0 }}",
            hash.to_lowercase()
        ));
        assert_eq!(
            bad,
            [
                "clients[0].providers: empty, so the client could call nothing; remove it to allow every provider",
                "clients[1].token_sha256: another client has the same token; give each its own",
                "clients[1].rate_limit: per_minute and burst must be more than 0",
            ]
        );
    }

    #[test]
    fn secrets_never_print() {
        let config = load("[providers.juice]\napi_key = \"live_supersecret\"").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("supersecret"));
        assert_eq!(
            config.providers["juice"].api_key.as_ref().unwrap().expose(),
            "live_supersecret"
        );
    }
}
