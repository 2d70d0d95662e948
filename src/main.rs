//! The `patchbay` command: parse arguments, load the configuration, set up logging, run.

use clap::{Parser, Subcommand};
use patchbay::config::Config;
use patchbay::sandbox::Sandbox;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Prints a line for the person at the terminal; a closed or full stdout (`patchbay | head -c 10`)
/// is no reason to stop serving, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
    tracing_subscriber::fmt()
        // Colours only for a person at a terminal: escape codes break log shippers and greps.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.config).await,
        Command::Sandbox { listen } => sandbox(listen).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "patchbay: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config_file: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(config_file.as_deref())?;
    let sandbox = config.sandbox.enabled;
    let running = patchbay::app::start(config).await?;
    let addr = running.addr();
    tracing::info!(%addr, sandbox, "patchbay ready");
    if sandbox {
        let (path, patch) = (patchbay::sandbox::TRY_PATH, patchbay::sandbox::TRY_PATCH);
        say!("patchbay is listening on http://{addr} in front of the sandbox. Try:\n");
        say!("  curl -s http://{addr}{path}\n");
        say!(
            "  curl -s -X PATCH http://{addr}{path} \\\n    \
             -H 'Content-Type: application/merge-patch+json' \\\n    \
             -d '{patch}'\n"
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn sandbox(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
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
    Ok(())
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
