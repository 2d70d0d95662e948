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
    BUFFER.with(|buffer| {
        let mut text = buffer.borrow_mut();
        text.clear();
        let json = JSON.load(Ordering::Relaxed);
        format(&mut text, line, json);
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

/// One value of the line.
enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

/// The line, text (`name=value …`) or a JSON object, built by hand: the formatting machinery is a large
/// share of what writing a line costs.
fn format(text: &mut String, line: &Line<'_>, json: bool) {
    use std::fmt::Write as _;
    let now = humantime::format_rfc3339_micros(SystemTime::now());
    let fields = [
        ("method", Value::Text(line.method)),
        ("route", Value::Text(line.route)),
        ("provider", Value::Text(line.provider)),
        ("client", Value::Text(line.client)),
        ("status", Value::Number(line.status.into())),
        ("latency_us", Value::Number(line.latency_us)),
        ("request_id", Value::Text(line.request_id)),
        ("upstream_calls", Value::Number(line.upstream_calls.into())),
    ];
    let legs = line.legs.map(|legs| ("legs", Value::Text(legs)));
    let fields = fields.into_iter().chain(legs);
    let mut digits = itoa::Buffer::new();
    if json {
        let _ = write!(
            text,
            r#"{{"timestamp":"{now}","level":"INFO","message":"request""#
        );
        for (name, value) in fields {
            text.push_str(",\"");
            text.push_str(name);
            text.push_str("\":");
            match value {
                Value::Number(number) => text.push_str(digits.format(number)),
                Value::Text(value) => json_string(text, value),
            }
        }
        text.push_str(r#","target":"patchbay::access"}"#);
    } else {
        let _ = write!(text, "{now}  INFO patchbay::access: request");
        for (name, value) in fields {
            text.push(' ');
            text.push_str(name);
            text.push('=');
            match value {
                Value::Number(number) => text.push_str(digits.format(number)),
                Value::Text(value) => text.push_str(value),
            }
        }
    }
}

/// `value` as a JSON string (a request id is the caller's: its quotes and backslashes are escaped, and
/// anything below a space).
fn json_string(text: &mut String, value: &str) {
    text.push('"');
    for c in value.chars() {
        match c {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(text, "\\u{:04x}", c as u32);
            }
            c => text.push(c),
        }
    }
    text.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request_id: &str) -> Line<'_> {
        Line {
            method: "PATCH",
            route: "/customers/{provider}:{id}",
            provider: "juice",
            client: "none",
            status: 200,
            latency_us: 1234,
            request_id,
            upstream_calls: 2,
            legs: None,
        }
    }

    #[test]
    fn lines_read_as_text_and_as_json() {
        let mut text = String::new();
        format(&mut text, &line("id-1"), false);
        let (_, rest) = text.split_once("  INFO patchbay::access: ").unwrap();
        assert_eq!(
            rest,
            "request method=PATCH route=/customers/{provider}:{id} provider=juice client=none status=200 latency_us=1234 request_id=id-1 upstream_calls=2"
        );
        let mut text = String::new();
        let mut with_legs = line(r#"a"b\c"#);
        with_legs.legs = Some("count:200,juice:502");
        format(&mut text, &with_legs, true);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["request_id"], r#"a"b\c"#);
        assert_eq!(value["status"], 200);
        assert_eq!(value["legs"], "count:200,juice:502");
        assert_eq!(value["target"], "patchbay::access");
    }
}
