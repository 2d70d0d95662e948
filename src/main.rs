//! The `patchbay` command: parse arguments, load the configuration, set up logging, run.

use clap::{Parser, Subcommand};
use patchbay::config::Config;
use patchbay::config::LogFormat;
use patchbay::sandbox::Sandbox;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Whether logs are JSON: then every line the process writes is, the banner's too.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Prints a line for the person at the terminal (a log event when logs are JSON); a closed or full
/// stdout (`patchbay | head -c 10`) is no reason to stop serving, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        if JSON_LOGS.load(Ordering::Relaxed) {
            tracing::info!(target: "patchbay::banner", "{}", format_args!($($arg)*));
        } else {
            let _ = writeln!(std::io::stdout(), $($arg)*);
        }
    }};
}

/// Exit code of a configuration that does not load (and of `check-config` finding one).
const BAD_CONFIG: u8 = 2;

/// Thread-local heaps: per-request allocations no longer contend on glibc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One canonical customer API in front of Sweet Spot, COUNT, Juice and SparkLayer.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: config/default.toml when present, else the built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Load and validate the configuration exactly as start-up does, print every problem, and exit
    /// (0: good, 2: bad) without listening or calling anyone.
    CheckConfig,
    /// Ask the running gateway's admin listener whether it is ready (`/readyz`): exit 0 when it is,
    /// 1 when not — for container health checks.
    Healthcheck,
    /// Run only the provider emulators, e.g. to point another patchbay at them.
    Sandbox {
        /// Where the emulators listen.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
    },
}

/// The main thread's runtime serves too; `app::start` adds one more current-thread runtime per core.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let config = match command {
        Command::Sandbox { .. } => None,
        _ => match Config::load(cli.config.as_deref()) {
            Ok(config) => Some(config),
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "patchbay: {error}");
                return ExitCode::from(BAD_CONFIG);
            }
        },
    };
    let format = config.as_ref().map_or(LogFormat::Text, |c| c.log.format);
    if let Err(error) = init_logs(format) {
        let _ = writeln!(std::io::stderr(), "patchbay: {error}");
        return ExitCode::from(BAD_CONFIG);
    }
    let result = match (command, config) {
        (Command::CheckConfig, _) => {
            say!("configuration OK");
            return ExitCode::SUCCESS;
        }
        (Command::Sandbox { listen }, _) => sandbox(listen).await,
        (Command::Healthcheck, Some(config)) => Ok(healthcheck(&config).await),
        (_, Some(config)) => run(config).await,
        (Command::Run | Command::Healthcheck, None) => {
            unreachable!("the configuration was loaded above")
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if JSON_LOGS.load(Ordering::Relaxed) {
                tracing::error!("patchbay: {error}");
            } else {
                let _ = writeln!(std::io::stderr(), "patchbay: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs as `format` says, filtered by `RUST_LOG` (default `info`); an invalid filter is an error, not
/// a silent `info`.
fn init_logs(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::builder()
            .parse(&directives)
            .map_err(|error| format!("RUST_LOG={directives:?} is not a log filter: {error}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => {
            JSON_LOGS.store(true, Ordering::Relaxed);
            patchbay::gateway::access::use_json(true);
            logs.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
        }
        // Colours only for a person at a terminal: escape codes break log shippers and greps.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }
    Ok(())
}

/// Serves until SIGTERM/SIGINT, then drains: not ready at once, new connections for
/// `server.drain_delay_ms` more, open requests finish within `server.shutdown_grace_ms` (else exit 1).
async fn run(config: Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sandbox = config.sandbox.enabled;
    // With clients, every call needs one's token: the example curls say where it goes.
    let token = match config.clients.is_empty() {
        true => "",
        false => " -H 'Authorization: Bearer <a client token>'",
    };
    let drain_delay = Duration::from_millis(config.server.drain_delay_ms);
    let running = patchbay::app::start(config).await?;
    let addr = running.addr();
    tracing::info!(addr = %running.admin_addr(), "admin listener: /livez /readyz /metrics /quotas");
    tracing::info!(%addr, sandbox, "patchbay ready");
    if sandbox {
        let (path, patch) = (patchbay::sandbox::TRY_PATH, patchbay::sandbox::TRY_PATCH);
        say!("patchbay is listening on http://{addr} in front of the sandbox. Try:\n");
        say!("  curl -s{token} http://{addr}{path}\n");
        say!(
            "  curl -s -X PATCH{token} http://{addr}{path} \\\n    \
             -H 'Content-Type: application/merge-patch+json' \\\n    \
             -d '{patch}'\n"
        );
    }
    shutdown_signal().await;
    running.health().start_drain();
    tracing::info!(
        drain_delay_ms = drain_delay.as_millis() as u64,
        "shutting down: not ready; accepting new connections for the drain delay"
    );
    tokio::time::sleep(drain_delay).await;
    let finished = running.shutdown().await;
    // The last requests' access lines, before the lines that say how it ended.
    patchbay::gateway::access::flush();
    if finished {
        tracing::info!("every open request finished; exiting");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::error!("exiting with requests cut short by server.shutdown_grace_ms");
        Ok(ExitCode::FAILURE)
    }
}

async fn sandbox(listen: SocketAddr) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start(listen).await?;
    // What another gateway needs to use these emulators: each provider's base URL and the demo
    // credentials it accepts, as settings.
    for provider in patchbay::providers::all() {
        let name = provider.name();
        if let Some(url) = sandbox.base_url(name) {
            say!("{name:<11} base_url      {url}");
            for (key, value) in provider.demo_credentials() {
                say!("{:<11} {key:<13} {value}", "");
            }
        }
    }
    say!("control API  http://{}/_control", sandbox.addr());
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// `GET /readyz` on the admin listener of the configuration (its loopback address when it listens on
/// all of them), within 2 s: ready only when the answer is a patchbay's, and the one whose canonical
/// API listens where the configuration says (any port, when it says 0).
async fn healthcheck(config: &Config) -> ExitCode {
    use http_body_util::BodyExt;
    let mut admin = config.server.admin_listen;
    if admin.ip().is_unspecified() {
        admin.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let url = format!("http://{admin}/readyz");
    let uri = url.parse().expect("an address makes a URI");
    let asked = async {
        let response = client.get(uri).await.map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await;
        let body = body.map_err(|error| error.to_string())?.to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            say!("not ready: {url}: {error}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            say!("not ready: {url} did not answer within 2 s");
            return ExitCode::FAILURE;
        }
    };
    if !status.is_success() {
        say!("not ready: {url} answered {status}");
        return ExitCode::FAILURE;
    }
    let probe = serde_json::from_slice::<patchbay::admin::Probe>(&body).ok();
    let expected = config.server.listen;
    match probe.filter(|probe| probe.service == patchbay::admin::SERVICE) {
        None => say!("not ready: {url} is not a patchbay admin listener (server.admin_listen)"),
        Some(probe) if expected.port() != 0 && probe.listen != expected => say!(
            "not ready: {url} belongs to the patchbay listening on {}, not on {expected} (server.listen)",
            probe.listen
        ),
        Some(_) => return ExitCode::SUCCESS,
    }
    ExitCode::FAILURE
}

/// Ctrl-C or SIGTERM (what a container runtime sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
