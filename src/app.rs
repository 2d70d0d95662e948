//! The process: start the sandbox when enabled and point the providers at it, build the gateway, listen,
//! and serve until shutdown. Tests start the same thing in-process with [`start`].

use crate::config::{Config, Secret};
use crate::gateway::{serve, Gateway};
use crate::sandbox::{credentials as demo, Sandbox};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running gateway (and its sandbox, when enabled). Dropping it stops both.
pub struct Running {
    addr: SocketAddr,
    sandbox: Option<Sandbox>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Where the canonical API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded sandbox, when `sandbox.enabled`.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// Stops accepting, lets open requests finish, and returns once the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Points every provider's base URL and credentials at the sandbox.
pub fn use_sandbox(config: &mut Config, sandbox: &Sandbox) {
    for (name, provider) in config.providers.iter_mut() {
        if let Some(url) = sandbox.base_url(name) {
            provider.base_url = url;
        }
        match name.as_str() {
            "sweetspot" => provider.api_key = Some(Secret::new(demo::SWEETSPOT_API_KEY)),
            "juice" => provider.api_key = Some(Secret::new(demo::JUICE_API_KEY)),
            "count" => {
                provider.client_id = Some(demo::COUNT_CLIENT_ID.to_owned());
                provider.client_secret = Some(Secret::new(demo::COUNT_CLIENT_SECRET));
                provider.access_token = Some(Secret::new(demo::COUNT_ACCESS_TOKEN));
                provider.refresh_token = Some(Secret::new(demo::COUNT_REFRESH_TOKEN));
            }
            "sparklayer" => {
                provider.site_id = Some(demo::SPARKLAYER_SITE_ID.to_owned());
                provider.client_id = Some(demo::SPARKLAYER_CLIENT_ID.to_owned());
                provider.client_secret = Some(Secret::new(demo::SPARKLAYER_CLIENT_SECRET));
            }
            _ => {}
        }
    }
}

/// Starts the sandbox (when enabled) and the gateway on `server.listen`, and returns once both listen.
pub async fn start(mut config: Config) -> std::io::Result<Running> {
    let sandbox = if config.sandbox.enabled {
        let sandbox = Sandbox::start(config.sandbox.listen).await?;
        use_sandbox(&mut config, &sandbox);
        tracing::info!(addr = %sandbox.addr(), "sandbox emulators listening; every provider points at them");
        Some(sandbox)
    } else {
        None
    };
    let gateway = Gateway::new(&config);
    for (provider, missing) in gateway.disabled() {
        tracing::warn!(
            provider,
            missing = missing.join(", "),
            "provider disabled: no credentials (it answers 503)"
        );
    }
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, gateway, async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        sandbox,
        stop: Some(stop),
        task,
    })
}
