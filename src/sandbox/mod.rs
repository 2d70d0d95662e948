//! The sandbox: stateful emulators of the four providers on one loopback HTTP/1.1 server, plus a
//! control API for tests. Each provider lives under its own root (`/sweetspot`, `/count/partners`,
//! `/juice`, `/sparklayer`) so the gateway points its `base_url` there and appends documented paths;
//! `/_control/…` lets tests read the request log, store records, reset, expire tokens, change limits
//! and inject faults.
//!
//! The emulators are a second, independent reading of each provider's docs: nothing here imports the
//! gateway's dialects (`crate::providers`) or canonical model (`crate::canonical`), so a mapping
//! mistake in a dialect cannot hide behind the same mistake in its emulator.

pub mod credentials;

mod control;
mod count;
mod exchange;
mod fault;
mod juice;
mod rate_limit;
mod sparklayer;
mod state;
mod sweetspot;
mod validate;
mod world;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use exchange::{ProviderRequest, Reply};
use state::Provider;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use world::{error_reply, World};

/// The sandbox's one world, shared by its connections.
type Shared = Arc<Mutex<World>>;

/// Locks the world. A panic while it was held cannot leave it half-written in a way that matters to
/// an emulator, so a poisoned lock is taken over rather than failing every later request.
fn lock(shared: &Shared) -> MutexGuard<'_, World> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A demo customer to try first: its canonical path, and a patch worth sending it.
pub const TRY_PATH: &str = "/customers/juice:6f7e1e7f-93d1-4fcc-b7a4-738f869615c8";
pub const TRY_PATCH: &str =
    r#"{"phone": "+234 801 234 5679", "billing_address": {"city": "Lagos"}}"#;

/// The demo link the gateway keeps while the sandbox runs (`/customers/demo`): one demo customer of
/// each emulator.
pub const DEMO_LINK: (&str, &[(&str, &str)]) = (
    "demo",
    &[
        ("sweetspot", "cus_demo_alice"),
        ("count", "3b241101-e2bb-4255-8caf-4136c566a962"),
        ("juice", "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8"),
        ("sparklayer", "cu_demo_jones"),
    ],
);

/// Bodies above this are refused with 413; far above anything the gateway sends.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A running sandbox server. Dropping it stops the server and every open connection.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Binds `listen` (port 0 = any free port) and serves all four emulators plus /_control on it.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(listener, Arc::new(Mutex::new(World::new()))));
        Ok(Sandbox { addr, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. "http://127.0.0.1:PORT/juice" — the provider's base_url on this sandbox.
    pub fn base_url(&self, provider: &str) -> Option<String> {
        let provider = Provider::from_name(provider)?;
        Some(format!("http://{}{}", self.addr, provider.base_path()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The connection tasks live in the server task's JoinSet, so they end with it.
        self.server.abort();
    }
}

/// Accepts connections until aborted, one task per connection.
async fn serve(listener: TcpListener, shared: Shared) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reaps finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Shared) {
    let service = service_fn(move |request| answer(shared.clone(), request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "sandbox: connection closed with an error");
    }
}

/// Returned by the service to make hyper close the connection without answering: an injected
/// `drop` fault, or a body that broke off mid-way.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by the sandbox")
    }
}

impl std::error::Error for Dropped {}

/// Which part of the sandbox a path belongs to, and the path relative to that part's root.
enum Route<'a> {
    Provider(Provider, &'a str),
    Control(&'a str),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let under = |root: &str| {
        path.strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if let Some(rest) = under("/_control") {
        return Route::Control(rest);
    }
    for provider in Provider::ALL {
        if let Some(rest) = under(provider.base_path()) {
            return Route::Provider(provider, if rest.is_empty() { "/" } else { rest });
        }
    }
    Route::NotFound
}

/// Reads the whole body (Content-Length or chunked); `None` when it is over the limit.
async fn read_body(body: Incoming) -> Result<Option<Bytes>, Dropped> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Ok(None),
        Err(_) => Err(Dropped),
    }
}

async fn answer(
    shared: Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let arrived = SystemTime::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query();
    let too_large = "The request body is larger than the sandbox accepts (1 MiB).";
    match route(path) {
        Route::NotFound => Ok(Reply::json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "no sandbox route for this path" }),
        )
        .into_response()),
        Route::Control(rest) => {
            let Some(body) = read_body(body).await? else {
                return Ok(Reply::json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &serde_json::json!({ "error": too_large }),
                )
                .into_response());
            };
            let reply = control::handle(&mut lock(&shared), &parts.method, rest, query, &body);
            Ok(reply.into_response())
        }
        Route::Provider(provider, rest) => {
            let Some(body) = read_body(body).await? else {
                return Ok(
                    error_reply(provider, StatusCode::PAYLOAD_TOO_LARGE, too_large).into_response(),
                );
            };
            let request = ProviderRequest {
                method: parts.method,
                path: rest.to_owned(),
                query: query.map(str::to_owned),
                headers: parts.headers,
                body,
            };
            provider_answer(&shared, provider, &request, arrived).await
        }
    }
}

/// Logs the request, then applies the provider's fault if any, else lets the emulator answer.
async fn provider_answer(
    shared: &Shared,
    provider: Provider,
    request: &ProviderRequest,
    arrived: SystemTime,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let fault = {
        let mut world = lock(shared);
        control::log_request(&mut world.state, provider, request, arrived);
        control::take_fault(&mut world.state, provider)
    };
    let Some(fault) = fault else {
        let reply = lock(shared).handle(provider, request);
        return Ok(reply.into_response());
    };
    // Slept with the lock released, so other requests (and the control API) go on meanwhile.
    if let Some(latency) = fault.latency_ms {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if fault.drop {
        return Err(Dropped);
    }
    let injected = |status| error_reply(provider, status, "Injected fault.");
    let reply = match fault.reply(injected) {
        Some(reply) => reply,
        None => lock(shared).handle(provider, request),
    };
    Ok(fault.add_headers(reply).into_response())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use serde_json::Value;

    use super::*;

    /// Sends raw HTTP/1.1 bytes on a fresh connection and reads until the server closes it.
    /// Blocking std IO on a blocking thread: tokio's `io-util` feature is not enabled.
    async fn exchange(addr: SocketAddr, raw: &str) -> String {
        let raw = raw.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(raw.as_bytes()).unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        })
        .await
        .unwrap()
    }

    fn put(path: &str, body: &str) -> String {
        format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn routes_strip_the_provider_root() {
        assert!(matches!(
            route("/count/partners/customers/x"),
            Route::Provider(Provider::Count, "/customers/x")
        ));
        assert!(matches!(
            route("/sparklayer"),
            Route::Provider(Provider::SparkLayer, "/")
        ));
        assert!(matches!(route("/juicey/customers"), Route::NotFound));
        assert!(matches!(route("/count/customers/x"), Route::NotFound));
        assert!(matches!(route("/_control/log"), Route::Control("/log")));
    }

    #[tokio::test]
    async fn serves_chunked_bodies_logs_them_and_drops_on_request() {
        let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        assert_eq!(
            sandbox.base_url("juice").unwrap(),
            format!("http://{}/juice", sandbox.addr())
        );
        assert_eq!(sandbox.base_url("nobody"), None);

        let chunked = format!(
            "PATCH /juice/customers/6f7e1e7f-93d1-4fcc-b7a4-738f869615c8 HTTP/1.1\r\nHost: x\r\n\
             Connection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n6\r\n{{\"firs\r\n13\r\nt_name\": \"Chunked\"}}\r\n0\r\n\r\n",
            credentials::JUICE_API_KEY
        );
        let answer = exchange(sandbox.addr(), &chunked).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"first_name\":\"Chunked\""), "{answer}");

        let log = exchange(
            sandbox.addr(),
            "GET /_control/log?provider=juice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let log: Value = serde_json::from_str(log.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            log[0]["path"],
            "/customers/6f7e1e7f-93d1-4fcc-b7a4-738f869615c8"
        );
        assert_eq!(log[0]["body"], serde_json::json!({"first_name": "Chunked"}));
        assert_eq!(log[0]["headers"]["transfer-encoding"], "chunked");

        let answer = exchange(
            sandbox.addr(),
            &put("/_control/faults/juice", r#"{"drop": true, "times": 1}"#),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
        let get = "GET /juice/customers/6f7e1e7f-93d1-4fcc-b7a4-738f869615c8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(
            exchange(sandbox.addr(), get).await,
            "",
            "dropped without an answer"
        );
        let answer = exchange(sandbox.addr(), get).await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "the fault was used up: {answer}"
        );
    }
}
