//! The admin listener (`server.admin_listen`), on its own socket so that nothing of it is reachable
//! through the canonical API's port: `GET /livez`, `GET /readyz`, `GET /metrics`, `GET /quotas`, each
//! answering `HEAD` too. Its failures are answered by the gateway's rescue, like the API's.

mod quotas;

use crate::gateway::{rescue, BoxError, Gateway, NotReady, RouteError};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What every probe answer names as its service.
pub const SERVICE: &str = "patchbay";

/// The body of `/livez` and `/readyz`: `{"status": "ready", "service": "patchbay", "listen": …}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Probe {
    pub status: String,
    pub service: String,
    /// Where the canonical API of this gateway listens.
    pub listen: SocketAddr,
}

/// What the probes report: ready once start-up is done, not ready from the moment a drain starts.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Config loaded, stores opened, every listener up.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun: readiness is off for good.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Why the process should get no new traffic, if it should not.
    async fn not_ready(&self, gateway: &Gateway) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining: patchbay is shutting down".into());
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Some("starting".into());
        }
        gateway.stores_answer().await.err()
    }
}

/// Serves the admin listener until the process ends; `api` is where the canonical API listens, which
/// the probes name so that `patchbay healthcheck` knows it asked this gateway.
pub async fn serve(listener: TcpListener, gateway: Gateway, health: Arc<Health>, api: SocketAddr) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (gateway, health) = (gateway.clone(), health.clone());
        let service = hyper::service::service_fn(move |request| {
            let (gateway, health) = (gateway.clone(), health.clone());
            async move { Ok::<_, Infallible>(answer(request, &gateway, &health, api).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

async fn answer<B>(
    request: Request<B>,
    gateway: &Gateway,
    health: &Health,
    api: SocketAddr,
) -> Response<Full<Bytes>> {
    route(request, gateway, health, api)
        .await
        .unwrap_or_else(rescue)
}

async fn route<B>(
    request: Request<B>,
    gateway: &Gateway,
    health: &Health,
    api: SocketAddr,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let method = request.method();
    let path = request.uri().path();
    if !matches!(path, "/livez" | "/readyz" | "/metrics" | "/quotas") {
        let detail =
            format!("no such admin endpoint: {path} (try /livez, /readyz, /metrics, /quotas)");
        return Err(RouteError::NotFound(detail).into());
    }
    if method != Method::GET && method != Method::HEAD {
        let method = method.clone();
        return Err(RouteError::Method {
            method,
            allow: "GET, HEAD",
        }
        .into());
    }
    match path {
        "/quotas" => quotas::quotas(gateway).await,
        "/metrics" => {
            gateway.record_remaining().await;
            let mut response = Response::new(Full::new(Bytes::from(crate::metrics::encode())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            Ok(response)
        }
        "/readyz" => match health.not_ready(gateway).await {
            Some(reason) => Err(NotReady(reason).into()),
            None => Ok(status("ready", api)),
        },
        _ => Ok(status("live", api)),
    }
}

/// A probe's answer: the state, and which gateway says so.
fn status(status: &str, api: SocketAddr) -> Response<Full<Bytes>> {
    let body = Probe {
        status: status.to_owned(),
        service: SERVICE.to_owned(),
        listen: api,
    };
    let body = serde_json::to_string(&body).expect("probes serialise");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
