//! Shared harness for the end-to-end tests: a real gateway and its sandbox on `127.0.0.1:0`, an HTTP
//! client, and the sandbox's control API (request log, stored customers, limits, faults).
#![allow(dead_code)] // each test crate uses its own part of the harness

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use patchbay::app::{self, Running};
use patchbay::config::{Config, Window};
use serde_json::{json, Value};
use std::net::SocketAddr;

pub const SWEETSPOT_ID: &str = "cus_demo_alice";
pub const COUNT_ID: &str = "3b241101-e2bb-4255-8caf-4136c566a962";
pub const JUICE_ID: &str = "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8";
pub const SPARKLAYER_ID: &str = "cu_demo_jones";

/// A configuration for tests: sandbox on, everything on free loopback ports, short timeouts, and the
/// gateway's own rate limits off so that only the test decides what is limited.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.upstream_timeout_ms = 1_500;
    config.server.connect_timeout_ms = 500;
    config.server.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.sandbox.enabled = true;
    // One in-process runtime: the test's own.
    config.server.workers = 1;
    for provider in config.providers.values_mut() {
        provider.rate_limit.windows = Vec::new();
    }
    config
}

pub fn windows(pairs: &[(u32, u64)]) -> Vec<Window> {
    pairs
        .iter()
        .map(|&(limit, seconds)| Window { limit, seconds })
        .collect()
}

/// An HTTP answer with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The canonical paths named in a problem's `errors`, sorted.
    pub fn error_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        fields.sort();
        fields
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request over a real socket; `headers` as (name, value) pairs.
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).expect("valid request");
    let response = client.request(request).await.expect("the server answers");
    let (parts, body) = response.into_parts();
    let raw = body.collect().await.expect("body reads").to_bytes();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        raw,
    }
}

/// A plain GET of `url` with a fresh client.
pub async fn get(url: &str) -> Answer {
    send(&http_client(), Method::GET, url, &[], Bytes::new()).await
}

pub struct Harness {
    pub app: Running,
    client: HttpClient,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> Harness {
        let app = app::start(config).await.expect("gateway starts");
        Harness {
            app,
            client: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.addr())
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr())
    }

    fn control_url(&self, path: &str) -> String {
        let sandbox = self.app.sandbox().expect("the sandbox is enabled");
        format!("http://{}/_control{path}", sandbox.addr())
    }

    /// Sends a raw request; `headers` as (name, value) pairs.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        send(&self.client, method, url, headers, body).await
    }

    pub async fn get(&self, customer: &str) -> Answer {
        self.send(
            Method::GET,
            &self.url(&format!("/customers/{customer}")),
            &[],
            Bytes::new(),
        )
        .await
    }

    /// PATCH with `Content-Type: application/merge-patch+json` plus `headers`.
    pub async fn patch_with(
        &self,
        customer: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut all = vec![("content-type", "application/merge-patch+json")];
        all.extend_from_slice(headers);
        self.send(
            Method::PATCH,
            &self.url(&format!("/customers/{customer}")),
            &all,
            body.to_string(),
        )
        .await
    }

    pub async fn patch(&self, customer: &str, body: &Value) -> Answer {
        self.patch_with(customer, body, &[]).await
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let headers: &[(&str, &str)] = &[("content-type", "application/json")];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let answer = self
            .send(method.clone(), &self.control_url(path), headers, body)
            .await;
        assert!(
            answer.status.is_success() || answer.status == StatusCode::NOT_FOUND,
            "control {method} {path} failed: {} {:?}",
            answer.status,
            answer.raw
        );
        answer
    }

    /// The requests that reached `provider` since the last clear, oldest first.
    pub async fn log(&self, provider: &str) -> Vec<Value> {
        let answer = self
            .control(Method::GET, &format!("/log?provider={provider}"), None)
            .await;
        answer.body.as_array().cloned().unwrap_or_default()
    }

    /// Every request that reached any provider.
    pub async fn full_log(&self) -> Vec<Value> {
        let answer = self.control(Method::GET, "/log", None).await;
        answer.body.as_array().cloned().unwrap_or_default()
    }

    pub async fn clear_log(&self) {
        self.control(Method::DELETE, "/log", None).await;
    }

    pub async fn reset(&self) {
        self.control(Method::POST, "/reset", None).await;
    }

    pub async fn store(&self, provider: &str, id: &str, record: Value) {
        self.control(
            Method::PUT,
            &format!("/customers/{provider}/{id}"),
            Some(record),
        )
        .await;
    }

    pub async fn stored(&self, provider: &str, id: &str) -> Value {
        self.control(Method::GET, &format!("/customers/{provider}/{id}"), None)
            .await
            .body
    }

    pub async fn set_limits(&self, provider: &str, windows: Value) {
        self.control(
            Method::PUT,
            &format!("/limits/{provider}"),
            Some(json!({ "windows": windows })),
        )
        .await;
    }

    pub async fn lift_limits(&self) {
        for provider in ["sweetspot", "count", "juice", "sparklayer"] {
            self.set_limits(provider, json!([])).await;
        }
    }

    pub async fn fault(&self, provider: &str, fault: Value) {
        self.control(Method::PUT, &format!("/faults/{provider}"), Some(fault))
            .await;
    }

    pub async fn clear_fault(&self, provider: &str) {
        self.control(Method::DELETE, &format!("/faults/{provider}"), None)
            .await;
    }

    pub async fn expire_tokens(&self) {
        self.control(Method::POST, "/tokens/expire", None).await;
    }

    /// From now on a new COUNT or SparkLayer token revokes the ones issued before.
    pub async fn revoke_on_rotation(&self) {
        let settings = json!({ "revoke_on_rotation": true });
        self.control(Method::PUT, "/tokens", Some(settings)).await;
    }
}

/// Environment variables for a gateway process.
pub type Env = Vec<(String, String)>;

/// The settings that point `provider` of a gateway process at the harness's sandbox, with its demo
/// credentials, and no rate limit of patchbay's own.
pub fn provider_env(harness: &Harness, provider: &str) -> Env {
    let sandbox = harness.app.sandbox().expect("the harness runs the sandbox");
    let dialect = patchbay::providers::all()
        .into_iter()
        .find(|p| p.name() == provider)
        .unwrap();
    let key = |setting: &str| format!("PATCHBAY_PROVIDERS__{}__{setting}", provider.to_uppercase());
    let mut env = vec![
        (key("BASE_URL"), sandbox.base_url(provider).unwrap()),
        (key("RATE_LIMIT__WINDOWS"), "[]".to_owned()),
    ];
    for (setting, value) in dialect.demo_credentials() {
        env.push((key(&setting.to_uppercase()), value));
    }
    env
}

/// The writes (non-GET customer calls) in a log.
pub fn writes(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|entry| {
            entry["method"] != "GET"
                && entry["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("customers"))
        })
        .collect()
}

/// A private `redis-server` on a free loopback port, without persistence, stopped when dropped. A
/// machine without redis-server fails the test loudly (`.ci/run` installs it).
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
    /// The CA of its certificate, when it speaks TLS.
    ca: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(|port| vec!["--port".into(), port.to_string()], None)
    }

    /// A Redis that speaks only TLS, with a certificate for 127.0.0.1 and `localhost` signed by a
    /// throwaway CA made in `dir` with the `openssl` command; returns it and the CA's PEM file.
    pub fn start_tls(dir: &std::path::Path) -> (RedisServer, std::path::PathBuf) {
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("the openssl command runs (apt-get install -y openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        std::fs::create_dir_all(dir).unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=patchbay test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let path = |name: &str| dir.join(name).display().to_string();
        let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
        let server = RedisServer::start_with(
            move |port| {
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &ca,
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned)
                .to_vec()
            },
            Some(dir.join("ca.pem")),
        );
        (server, dir.join("ca.pem"))
    }

    fn start_with(
        args: impl Fn(u16) -> Vec<String>,
        ca: Option<std::path::PathBuf>,
    ) -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args(args(port))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot start redis-server ({error}): install it with \
                         `apt-get install -y redis-server` (.ci/run does)"
                    )
                });
            let mut server = RedisServer {
                child,
                port,
                ca: ca.clone(),
            };
            for _ in 0..100 {
                if server.ping() {
                    return server;
                }
                if matches!(server.child.try_wait(), Ok(Some(_))) {
                    break; // the port was taken in between: try another
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start on a free port")
    }

    pub fn url(&self) -> String {
        match self.ca {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}/", self.port),
        }
    }

    /// A client of this server (TLS, trusting its CA, when it speaks TLS).
    pub fn client(&self) -> redis::Client {
        match &self.ca {
            None => redis::Client::open(self.url()).unwrap(),
            Some(ca) => {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                };
                redis::Client::build_with_tls(self.url(), certificates).unwrap()
            }
        }
    }

    fn ping(&self) -> bool {
        self.client()
            .get_connection()
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            .is_ok()
    }

    /// Stops it now (as a crash would), before the test ends.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `patchbay` binary as a child process, configured through `PATCHBAY_…` variables (plus
/// `RUST_LOG`), with everything it prints captured. Killed when dropped.
pub struct GatewayProcess {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatewayProcess {
    pub fn spawn(env: &[(&str, &str)]) -> GatewayProcess {
        GatewayProcess::spawn_with(&[], env)
    }

    /// `patchbay <args>…`, e.g. `check-config`.
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_patchbay"));
        command
            .args(args)
            .env("NO_COLOR", "1")
            .env("PATCHBAY_SERVER__LISTEN", "127.0.0.1:0")
            .env("PATCHBAY_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the patchbay binary starts");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        GatewayProcess { child, output }
    }

    /// The `addr` of the first output line containing `marker` (text or JSON logs), waiting up to 20 s.
    pub fn addr_after(&self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(marker))
                .and_then(|line| {
                    // A text line's `addr=…`, or a JSON line's `"addr":"…"`.
                    if let Some(start) = line.find("addr=") {
                        return Some(line[start + 5..].split_whitespace().next()?.to_owned());
                    }
                    let start = line.find("\"addr\":\"")? + 8;
                    Some(line[start..].split('"').next()?.to_owned())
                });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{marker}` line: {:?}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Its resident memory, from `/proc/<pid>/status`, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("a running process has a status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Where its canonical API listens.
    pub fn addr(&self) -> String {
        self.addr_after("patchbay ready")
    }

    /// Where its admin listener listens.
    pub fn admin_addr(&self) -> String {
        self.addr_after("admin listener")
    }

    /// Sends it a signal (`TERM`, `INT`, …) as a container runtime would.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn all_output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits up to 20 s for the process to exit on its own, and gives its exit code.
    pub fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                // Let the output threads drain what it printed last.
                std::thread::sleep(std::time::Duration::from_millis(100));
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running: {}",
                self.all_output()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
