//! The process: start the sandbox when enabled and point the providers at it, build the gateway, listen,
//! and serve until shutdown. Tests start the same thing in-process with [`start`].

use crate::admin::{self, Health};
use crate::config::Config;
use crate::gateway::{serve, Gateway};
use crate::providers;
use crate::sandbox::Sandbox;
use crate::state::{StateError, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway (and its sandbox, when enabled). Dropping it stops both.
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    health: Arc<Health>,
    sandbox: Option<Sandbox>,
    /// Dropping or sending on it starts every serving runtime's shutdown.
    stop: Option<watch::Sender<bool>>,
    /// Each serving runtime says whether its open requests finished within the grace.
    task: JoinHandle<bool>,
    workers: Vec<std::thread::JoinHandle<bool>>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Where the canonical API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin listener (probes, quotas) listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// What the probes report.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The embedded sandbox, when `sandbox.enabled`.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// Stops accepting, lets open requests finish within `server.shutdown_grace_ms`, and returns once
    /// every runtime has stopped: `true` when every request finished in time.
    pub async fn shutdown(mut self) -> bool {
        self.health.start_drain();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let mut finished = (&mut self.task).await.unwrap_or(false);
        let workers = std::mem::take(&mut self.workers);
        finished &= tokio::task::spawn_blocking(move || {
            // Every runtime is joined, whatever the first said.
            let finished: Vec<bool> = workers
                .into_iter()
                .map(|worker| worker.join().unwrap_or(false))
                .collect();
            finished.into_iter().all(|one| one)
        })
        .await
        .unwrap_or(false);
        self.admin.abort();
        finished
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The worker runtimes see the sender go and shut down on their own.
        self.stop.take();
        self.task.abort();
        self.admin.abort();
    }
}

/// A listener on `addr`, sharing the port with the other serving runtimes when there are several.
fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Fails like a plain bind when someone already listens on `addr`: SO_REUSEPORT alone would let a second
/// patchbay of the same user share the port silently instead of refusing to start.
fn check_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr).map(drop)
}

/// A listener that could not be opened, said with the setting (and its variable) that moves it.
fn cannot_listen(setting: &str, addr: SocketAddr, error: std::io::Error) -> std::io::Error {
    let variable = format!("PATCHBAY_{}", setting.to_uppercase().replace('.', "__"));
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process holds that port: stop it, or choose another address (port 0 picks a free one)"
        }
        _ => "",
    };
    std::io::Error::new(
        error.kind(),
        format!("cannot listen on {addr} ({setting}, or {variable}): {error}{hint}"),
    )
}

/// One more serving runtime on its own thread: a current-thread tokio runtime with its own listener on
/// the shared port and its own upstream connection pool. Returns once it listens (or failed to).
fn spawn_worker(
    index: usize,
    addr: SocketAddr,
    gateway: Gateway,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<bool>> {
    let (ready, listening) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("patchbay-worker-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return false;
                }
            };
            runtime.block_on(async move {
                let listener = match listen(addr, true) {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return false;
                    }
                };
                let _ = ready.send(Ok(()));
                serve(listener, gateway, async move {
                    let _ = stopped.changed().await;
                })
                .await
            })
        })?;
    listening
        .recv()
        .map_err(|_| std::io::Error::other("a serving runtime failed to start"))??;
    Ok(thread)
}

/// Points every provider's base URL and credentials at the sandbox.
pub fn use_sandbox(config: &mut Config, sandbox: &Sandbox) {
    for provider in providers::all() {
        let Some(settings) = config.providers.get_mut(provider.name()) else {
            continue;
        };
        if let Some(url) = sandbox.base_url(provider.name()) {
            settings.base_url = url;
        }
        provider.use_demo_credentials(settings);
    }
}

/// Starts the sandbox (when enabled) and the gateway on `server.listen`, and returns once both listen.
pub async fn start(mut config: Config) -> std::io::Result<Running> {
    let sandbox = if config.sandbox.enabled {
        let listen = config.sandbox.listen;
        let sandbox = Sandbox::start(listen)
            .await
            .map_err(|error| cannot_listen("sandbox.listen", listen, error))?;
        use_sandbox(&mut config, &sandbox);
        tracing::info!(addr = %sandbox.addr(), "sandbox emulators listening; every provider points at them");
        Some(sandbox)
    } else {
        None
    };
    let state = Arc::new(Store::open(&config).map_err(std::io::Error::other)?);
    let gateway = Gateway::with_state(&config, state.clone());
    match gateway.load_tokens().await {
        Ok(()) => {}
        // A shared store may come back before the first token is needed; a file or a value that
        // cannot be read will not.
        Err(error @ StateError::Unavailable { .. }) if state.is_shared() => {
            tracing::warn!(%error, "the stored tokens could not be read yet; they are read again before the first token call")
        }
        Err(error) => return Err(std::io::Error::other(error)),
    }
    if sandbox.is_some() {
        let (id, members) = crate::sandbox::DEMO_LINK;
        match gateway.keep_link(id, members).await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "the sandbox's demo link could not be kept"),
        }
    }
    if !state.is_durable() && sandbox.is_none() {
        for provider in gateway.rotating() {
            tracing::warn!(
                provider,
                "the provider rotates its refresh token and state.backend = \"memory\": a restart after a refresh loses it; set state.backend = \"file\" (with state.dir) or \"redis\""
            );
        }
    }
    for (provider, missing) in gateway.disabled() {
        tracing::warn!(
            provider,
            missing = missing.join(", "),
            "provider disabled: no credentials (it answers 503)"
        );
    }
    // One serving runtime per `server.workers` (default: per core), nginx-style: each accepts on its own
    // socket bound to the same port, so connections are spread by the kernel, never handed across threads.
    let workers = config.server.worker_count();
    let shared = workers > 1;
    let api = config.server.listen;
    let free = if shared { check_free(api) } else { Ok(()) };
    let listener = free
        .and_then(|()| listen(api, shared))
        .map_err(|error| cannot_listen("server.listen", api, error))?;
    let addr = listener.local_addr()?;
    let admin_listen = config.server.admin_listen;
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .map_err(|error| cannot_listen("server.admin_listen", admin_listen, error))?;
    let admin_addr = admin_listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut threads = Vec::new();
    for index in 1..workers {
        threads.push(spawn_worker(index, addr, gateway.clone(), stopped.clone())?);
    }
    let mut stopped = stopped;
    let task = tokio::spawn(serve(listener, gateway.clone(), async move {
        let _ = stopped.changed().await;
    }));
    let health = Arc::new(Health::default());
    let admin = tokio::spawn(admin::serve(admin_listener, gateway, health.clone(), addr));
    health.set_ready();
    Ok(Running {
        addr,
        admin_addr,
        health,
        sandbox,
        stop: Some(stop),
        task,
        workers: threads,
        admin,
    })
}
