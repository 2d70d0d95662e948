//! Serving one runtime's listener: its own stack and upstream connections, connections counted against
//! `server.max_connections`, idle upstream connections swept, and a graceful end that waits for the
//! writes still running.

use super::build::{Gateway, Shared};
use super::stack::stack;
use crate::upstream::Connections;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// One open connection, counted against `server.max_connections` until it is dropped.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(shared: &Shared) -> Option<ConnectionSlot> {
        let open = shared.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(shared.connections.clone());
        (open < shared.max_connections).then_some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often idle upstream connections are checked for their age.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown`, then lets open requests finish within `server.shutdown_grace_ms`;
/// `false` when some were still open at the end of it (and are cut short).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let (clients, connections) = gateway.clients();
    let service = TowerToHyperService::new(stack(&gateway, clients));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // A caller that never finishes its headers must not hold a connection forever.
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = sweep.tick() => {
                connections.iter().for_each(Connections::sweep_idle);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over `server.max_connections` the connection is closed at once: the caller sees it closed
        // (or reset) before any answer, and can retry elsewhere or later.
        let Some(slot) = ConnectionSlot::take(&gateway.inner) else {
            tracing::debug!("connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = gateway.inner.shutdown_grace;
    tokio::select! {
        () = async {
            graceful.shutdown().await;
            // A write whose caller has gone still runs: its connection is closed, it is not done.
            gateway.inner.writes.close();
            gateway.inner.writes.wait().await;
        } => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!(
                open_connections = gateway.open_connections(),
                writes_running = gateway.inner.writes.len(),
                "shutdown: server.shutdown_grace_ms ({} ms) is over; cutting short the requests still open",
                grace.as_millis()
            );
            false
        }
    }
}
