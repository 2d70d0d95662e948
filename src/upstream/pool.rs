//! Keep-alive connections to one provider for one serving runtime: the innermost service of the
//! upstream stack.
//!
//! A request drives its connection itself, inside its own task: hyper's HTTP/1 connection future is
//! polled together with the answer being read, so there is no connection task to wake and no hop
//! between tasks (why not hyper-util's pooled client: benches/README.md). A connection goes back to
//! its runtime's list as soon as its answer is read in full.

use super::{error_chain, CallError, Response, MAX_RESPONSE_BYTES};
use bytes::Bytes;
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower::Service;

pub(super) type Connector = HttpsConnector<HttpConnector>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// A connection unused this long is closed rather than reused (providers close theirs after a while).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per serving runtime; more than the busiest moment needs is only memory.
const MAX_IDLE: usize = 512;

/// One HTTP/1.1 connection: the handle requests are sent through, and the connection future that does
/// the reading and writing when polled.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once it has finished (closed or failed): dropping it hands back any request it had not
    /// taken yet, as an error that carries the request.
    io: Option<http1::Connection<Io, Full<Bytes>>>,
    idle_since: Instant,
}

impl Connection {
    /// Polls the connection once: `true` while it is open and can take a request (a provider that
    /// closed an idle connection shows here as end of stream, and the connection is dropped).
    fn poll_reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.poll_io(cx) && self.sender.is_ready()
    }

    /// Drives the connection; `false` once it has finished.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(io) = &mut self.io else {
            return false;
        };
        if Pin::new(io).poll(cx).is_ready() {
            self.io = None;
            return false;
        }
        true
    }

    /// Sends `request` and reads the whole answer, driving the connection meanwhile. On error the
    /// request comes back when it never left (the connection was found closed first).
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response, (CallError, Option<Request<Full<Bytes>>>)> {
        let answer = self.sender.try_send_request(request);
        let mut read = pin!(async move {
            let response = answer.await.map_err(|mut error| {
                let unsent = error.take_message();
                let error = CallError::Transport(error_chain(error.error()));
                (error, unsent)
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| (CallError::Transport(error_chain(&*error)), None))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        });
        poll_fn(|cx| {
            // The connection first (it writes the request, reads the answer into the body channel),
            // then the reader that takes what it produced. A connection that finished has handed its
            // outcome to the reader, or, dropped, the request it never took.
            self.poll_io(cx);
            read.as_mut().poll(cx)
        })
        .await
    }
}

/// Where a provider lives, split once: what to connect to, its `Host`, and the base path of its API.
pub(super) struct Origin {
    connect: Uri,
    host: HeaderValue,
    base_path: String,
}

impl Origin {
    pub fn parse(base_url: &str) -> Result<Origin, String> {
        let uri: Uri = base_url
            .parse()
            .map_err(|e| format!("invalid upstream URL {base_url}: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("invalid upstream URL {base_url}: not absolute"));
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(format!("invalid upstream URL {base_url}: not http(s)"));
        }
        let connect = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("invalid upstream URL {base_url}: {e}"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("invalid upstream URL {base_url}: {e}"))?;
        Ok(Origin {
            connect,
            host,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The origin-form URI of `path` (which starts with `/`) below the base path.
    pub fn uri(&self, path: &str) -> Result<Uri, String> {
        let mut full = String::with_capacity(self.base_path.len() + path.len());
        full.push_str(&self.base_path);
        full.push_str(path);
        PathAndQuery::try_from(full)
            .map(Uri::from)
            .map_err(|e| format!("invalid upstream path {path}: {e}"))
    }
}

/// One serving runtime's idle connections to one provider, so that a connection is only ever driven by
/// the runtime that opened it. Each runtime builds its own.
pub(super) struct Pool {
    origin: Arc<Origin>,
    connector: Connector,
    handshake: http1::Builder,
    idle: Mutex<VecDeque<Box<Connection>>>,
}

impl Pool {
    pub fn new(origin: Arc<Origin>, connector: Connector) -> Pool {
        Pool {
            origin,
            connector,
            handshake: http1::Builder::new(),
            idle: Mutex::new(VecDeque::new()),
        }
    }

    #[cfg(test)]
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<Box<Connection>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `request` (origin-form URI) on an idle connection of this runtime, or a new one, and reads
    /// the answer. A request found unsent on a connection the provider had closed is sent again on
    /// another; one that left is never repeated here.
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Response, CallError> {
        request.headers_mut().insert(HOST, self.origin.host.clone());
        loop {
            let (mut connection, reused) = match self.checkout().await {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            match connection.exchange(request).await {
                Ok(response) => {
                    self.checkin(connection).await;
                    return Ok(response);
                }
                Err((_, Some(unsent))) if reused => request = unsent,
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// The most recently used idle connection that is still open; closed and stale ones are dropped.
    async fn checkout(&self) -> Option<Box<Connection>> {
        loop {
            let mut connection = self.list().pop_back()?;
            if connection.idle_since.elapsed() >= IDLE_TIMEOUT {
                // The rest of the list is older still.
                self.list().clear();
                return None;
            }
            if poll_fn(|cx| Poll::Ready(connection.poll_reusable(cx))).await {
                return Some(connection);
            }
        }
    }

    /// Back to the idle list when the connection can take another request (the provider did not close
    /// it with its answer); stale connections at the cold end are dropped meanwhile.
    async fn checkin(&self, mut connection: Box<Connection>) {
        if !poll_fn(|cx| Poll::Ready(connection.poll_reusable(cx))).await {
            return;
        }
        connection.idle_since = Instant::now();
        let mut list = self.list();
        while list
            .front()
            .is_some_and(|c| c.idle_since.elapsed() >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE {
            list.push_back(connection);
        }
    }

    /// Closes the connections that have been idle too long (called periodically, so that a quiet
    /// gateway does not keep sockets its provider has long closed).
    pub fn sweep(&self) {
        self.list()
            .retain(|c| c.idle_since.elapsed() < IDLE_TIMEOUT);
    }

    async fn connect(&self) -> Result<Box<Connection>, CallError> {
        let mut connector = self.connector.clone();
        let connect = async {
            poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(self.origin.connect.clone()).await
        };
        let io = connect
            .await
            .map_err(|error| CallError::Connect(error_chain(&*error)))?;
        let (sender, io) = self
            .handshake
            .handshake(io)
            .await
            .map_err(|error| CallError::Connect(error_chain(&error)))?;
        // Boxed: it moves between the idle list and the requests that use it.
        Ok(Box::new(Connection {
            sender,
            io: Some(io),
            idle_since: Instant::now(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        heads: Mutex<Vec<String>>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Answers every request `{}` and keeps the connection.
        KeepAlive,
        /// Answers, then closes the connection shortly after without saying so (an idle timeout).
        CloseAfterAnswer,
        /// Reads the request and hangs up without answering.
        HangUp,
    }

    /// A provider over a raw socket, counting connections and requests.
    async fn provider(mode: Mode) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        while buffer.len() < end + 4 + length {
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buffer.drain(..end + 4 + length);
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        counts.heads.lock().unwrap().push(head);
                        if mode == Mode::HangUp {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                        if mode == Mode::CloseAfterAnswer {
                            // Later than the answer, so the connection is back in the pool by then.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn put(pool: &Pool) -> Request<Full<Bytes>> {
        Request::put(pool.origin().uri("/customers/c1").unwrap())
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .unwrap()
    }

    fn pool(base_url: &str) -> Pool {
        let origin = Arc::new(Origin::parse(base_url).unwrap());
        Pool::new(origin, crate::upstream::connector(Duration::from_secs(1)))
    }

    #[tokio::test]
    async fn one_connection_carries_sequential_calls() {
        let (addr, seen) = provider(Mode::KeepAlive).await;
        let pool = pool(&format!("http://{addr}/base/"));
        for _ in 0..20 {
            let answer = pool.send(put(&pool)).await.unwrap();
            assert_eq!(
                (answer.status.as_u16(), &answer.body[..]),
                (200, &b"{}"[..])
            );
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        let head = seen.heads.lock().unwrap()[0].clone();
        assert!(
            head.starts_with("put /base/customers/c1 http/1.1"),
            "{head}"
        );
        assert!(head.contains(&format!("host: {addr}")), "{head}");
    }

    #[tokio::test]
    async fn a_connection_the_provider_closed_costs_no_write() {
        let (addr, seen) = provider(Mode::CloseAfterAnswer).await;
        let pool = pool(&format!("http://{addr}"));
        for _ in 0..5 {
            pool.send(put(&pool))
                .await
                .expect("a write after the provider closed its idle connection");
            // Let the provider's close arrive while the connection is idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 5);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_write_that_left_is_not_repeated() {
        let (addr, seen) = provider(Mode::HangUp).await;
        let pool = pool(&format!("http://{addr}"));
        let error = pool.send(put(&pool)).await.unwrap_err();
        assert!(matches!(error, CallError::Transport(_)), "{error:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn origins_split_once() {
        let origin = Origin::parse("https://api.example.com:8443/v2/").unwrap();
        assert_eq!(origin.connect.to_string(), "https://api.example.com:8443/");
        assert_eq!(origin.host, "api.example.com:8443");
        assert_eq!(origin.uri("/x?y=1").unwrap().to_string(), "/v2/x?y=1");
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("/relative").is_err());
    }
}
