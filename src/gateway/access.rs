//! The access line: one per request at info (`patchbay::access`, so `RUST_LOG=info,patchbay::access=off`
//! turns it off), written here by hand in the shape of the other log lines, text or JSON: tracing's
//! formatter is a large share of a request's work (benches/README.md). Lines are gathered and written
//! to standard output together, at most [`FLUSH_INTERVAL`] after they were made (sooner when
//! [`FLUSH_BYTES`] are waiting): a `write` per line is a syscall per request.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

static JSON: AtomicBool = AtomicBool::new(false);

/// Access lines as JSON objects, as the rest of the log (`log.format = "json"`).
pub fn use_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether an access line is wanted: the log filter's say, checked once per request.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "patchbay::access", tracing::Level::INFO)
}

pub(crate) struct Line<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub provider: &'a str,
    pub client: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub request_id: &'a str,
    pub upstream_calls: u32,
    /// A request to linked customers: each leg's provider and status (`juice:200,count:502`).
    pub legs: Option<&'a str>,
}

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// How long a line may wait before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Lines waiting beyond this many bytes are written at once.
const FLUSH_BYTES: usize = 32 * 1024;

/// Lines made, not yet written; and the thread that writes them every [`FLUSH_INTERVAL`], started with
/// the first line.
static PENDING: LazyLock<Mutex<String>> = LazyLock::new(|| {
    let started = std::thread::Builder::new()
        .name("patchbay-access-log".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_INTERVAL);
            flush();
        });
    if let Err(error) = started {
        tracing::warn!(%error, "no access-log writer thread: lines are written when 32 KiB wait");
    }
    Mutex::new(String::with_capacity(2 * FLUSH_BYTES))
});

/// Writes every waiting line to standard output in one write (main calls it before the process exits);
/// a closed or full stdout loses them, nothing more.
pub fn flush() {
    let waiting = {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            return;
        }
        std::mem::replace(&mut *pending, String::with_capacity(2 * FLUSH_BYTES))
    };
    let _ = std::io::stdout().lock().write_all(waiting.as_bytes());
}

/// Adds `line` to the waiting lines.
pub(crate) fn write(line: &Line<'_>) {
    use std::fmt::Write as _;
    BUFFER.with(|buffer| {
        let mut text = buffer.borrow_mut();
        text.clear();
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        let Line {
            method,
            route,
            provider,
            client,
            status,
            latency_us,
            request_id,
            upstream_calls,
            legs,
        } = line;
        let _ = if JSON.load(Ordering::Relaxed) {
            write!(
                text,
                r#"{{"timestamp":"{now}","level":"INFO","message":"request","method":"{method}","route":"{route}","provider":"{provider}","client":"{client}","status":{status},"latency_us":{latency_us},"request_id":{},"upstream_calls":{upstream_calls},"target":"patchbay::access"}}"#,
                serde_json::Value::from(*request_id)
            )
        } else {
            write!(
                text,
                "{now}  INFO patchbay::access: request method={method} route={route} provider={provider} client={client} status={status} latency_us={latency_us} request_id={request_id} upstream_calls={upstream_calls}"
            )
        };
        if let Some(legs) = legs {
            let _ = match JSON.load(Ordering::Relaxed) {
                // Before the closing brace of the object written above.
                true => {
                    text.pop();
                    write!(text, r#","legs":"{legs}"}}"#)
                }
                false => write!(text, " legs={legs}"),
            };
        }
        text.push('\n');
        let full = {
            let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
            pending.push_str(&text);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            flush();
        }
    });
}
