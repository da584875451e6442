//! rbee's HTTP/1.1 server: one thread per client connection, created the moment the
//! connection is accepted, which reads the connection's requests one after another and runs
//! the handler for each.
//!
//! Why not a pool: a keep-alive connection occupies its thread for as long as the client
//! keeps it open (between requests the thread waits for the next one), and an LLM answer
//! streams for seconds to minutes. tiny_http 0.12's pool queues a new connection whenever
//! it counts an idle thread, without counting connections already queued for it, so a
//! burst of keep-alive clients (the `openai` SDK, browsers, the hive's own proxy) waited
//! behind the four standing threads until those connections closed: seconds of time to
//! first token at 8–16 streams (docs/benchmarks.md). A thread per connection cannot queue
//! a client behind another; [`Limits::max_connections`] bounds the threads (`pool`: idle
//! connections make room, one address holds a share), and the handlers bound requests in
//! progress ([`Limits::max_in_flight`]).

mod body;
mod head;
mod pool;
mod request;
mod response;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rbee_types::{ApiError, ErrorCode};

pub use head::Method;
use request::{Conn, ConnSocket};
pub use request::{Outcome, Request, Stream};
pub use response::{Header, Response};

/// Open connections at most (the default of [`Limits::max_connections`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// Open connections from one address at most (the default of
/// [`Limits::max_connections_per_peer`]).
pub const MAX_CONNECTIONS_PER_PEER: usize = 256;
/// Accept-queue length: a burst of connections beyond it would be dropped or reset by the
/// kernel before the server could answer them (even with 503).
const LISTEN_BACKLOG: i32 = 1024;
/// How long a connection may sit between requests, or a read inside one wait for a byte,
/// before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may block on a client that does not read before the answer is given
/// up (a stream's handler sees an error and cancels).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Stack of a connection thread: handlers parse JSON and relay events, nothing deep.
const STACK_SIZE: usize = 256 << 10;

/// What a server admits at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The server's name in errors ("worker", "hive").
    pub who: &'static str,
    /// Requests in progress at most; more get 503 `OVERLOADED`.
    pub max_in_flight: usize,
    /// Time a request's head and body have, from its first byte, to arrive: a head late
    /// gets 408 and a body late fails to read, and the connection is closed. Without it a
    /// client sending a byte a minute would hold a connection (or a request slot) forever.
    pub request_timeout: Duration,
    /// Open connections at most. When all are taken, the one idle the longest (waiting for
    /// a request) is closed to make room; when none is idle, a new one is answered 503 and
    /// closed at once.
    pub max_connections: usize,
    /// Open connections from one client address at most (127.0.0.1 and ::1 not counted:
    /// local proxies connect from there); one more is answered 503 and closed.
    pub max_connections_per_peer: usize,
}

struct Counts {
    in_flight: AtomicUsize,
}

/// A listening HTTP server. [`Server::serve`] runs it; [`Server::unblock`] stops it from
/// another thread.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    limits: Limits,
    closing: AtomicBool,
    counts: Arc<Counts>,
    pool: Arc<pool::Pool>,
}

impl Server {
    /// Listens on `addr` with a deep accept backlog and `TCP_NODELAY` (inherited by every
    /// accepted connection).
    pub fn bind(addr: SocketAddr, limits: Limits) -> std::io::Result<Server> {
        use socket2::{Domain, Socket, Type};
        raise_open_files_limit();
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        // Each SSE event is a small write that Nagle's algorithm would otherwise hold
        // until the client's delayed ACK (up to 40 ms).
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: TcpListener = socket.into();
        Ok(Server {
            addr: listener.local_addr()?,
            listener,
            limits,
            closing: AtomicBool::new(false),
            counts: Arc::new(Counts {
                in_flight: AtomicUsize::new(0),
            }),
            pool: Arc::new(pool::Pool::new(
                limits.max_connections,
                limits.max_connections_per_peer,
            )),
        })
    }

    /// The address the server listens on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle on the server's connection counts, for metrics.
    pub fn connections(&self) -> Connections {
        Connections(Arc::clone(&self.pool))
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::Acquire)
    }

    /// Accepts connections and runs `handler` for each request until [`Server::unblock`].
    /// Each connection has its own thread; connections still open then are served to
    /// their end.
    pub fn serve(&self, handler: impl Fn(Request) + Send + Sync + 'static) {
        let handler: Arc<dyn Fn(Request) + Send + Sync> = Arc::new(handler);
        loop {
            let accepted = self.listener.accept();
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset while queued: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            let seat = match self.pool.seat(peer.ip()) {
                Ok(s) => s,
                Err(why) => {
                    refuse(stream, self.limits.who, why);
                    continue;
                }
            };
            let (counts, handler, limits) =
                (Arc::clone(&self.counts), Arc::clone(&handler), self.limits);
            let spawned = std::thread::Builder::new()
                .name("http".into())
                .stack_size(STACK_SIZE)
                .spawn(move || connection(stream, peer, seat, &counts, limits, &*handler));
            if let Err(e) = spawned {
                // (The closure, and the seat in it, is dropped: the seat is given back.)
                tracing::error!(error = %e, "cannot start a connection thread");
            }
        }
    }

    /// Makes [`Server::serve`] return: the listening socket stops accepting.
    pub fn unblock(&self) {
        self.closing.store(true, Ordering::Release);
        // SAFETY: shutdown on the listener's own open descriptor; on Linux it wakes a
        // thread blocked in accept(), which then fails and sees `closing`.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

/// A server's connection counts, readable from anywhere (the metrics handler).
#[derive(Clone)]
pub struct Connections(Arc<pool::Pool>);

impl Connections {
    /// The counts now.
    pub fn stats(&self) -> ConnectionStats {
        self.0.stats()
    }
}

/// How a server's connections have fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Open now (one closed to make room counts until its thread ends).
    pub open: usize,
    /// Refused since the start because every seat was busy.
    pub refused_busy: u64,
    /// Refused since the start because their address held its share.
    pub refused_per_address: u64,
    /// Idle connections closed since the start to seat new ones.
    pub closed_idle: u64,
}

impl ConnectionStats {
    /// Writes `rbee_http_connections`, `rbee_http_connections_refused_total{reason}` and
    /// `rbee_http_connections_closed_idle_total`.
    pub fn write(&self, e: &mut rbee_metrics::Exposition) {
        e.gauge(
            "rbee_http_connections",
            "Open HTTP connections.",
            &[(&[] as &[(&str, &str)], self.open as f64)],
        );
        e.counter_samples(
            "rbee_http_connections_refused_total",
            "HTTP connections answered 503 and closed: none idle to make room for them (busy), or the client's address holding its share (per_address).",
            &[
                (&[("reason", "busy")], self.refused_busy as f64),
                (&[("reason", "per_address")], self.refused_per_address as f64),
            ],
        );
        e.counter(
            "rbee_http_connections_closed_idle_total",
            "Idle HTTP connections closed to make room for new ones.",
            self.closed_idle,
        );
    }
}

/// Raises the soft limit on open files to the hard limit: systemd starts services with a
/// soft limit of 1024 (for the sake of select(), which rbee does not use) and a hard limit
/// far above, and every connection and model file takes a descriptor.
fn raise_open_files_limit() {
    // SAFETY: getrlimit and setrlimit on a valid, initialised rlimit.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Answers a connection the pool could not seat without reading it, then closes it.
fn refuse(stream: TcpStream, who: &str, why: pool::Refused) {
    let message = match why {
        pool::Refused::Full { max } => {
            tracing::warn!(max, "all connections busy with requests; refusing one");
            format!("the {who} has {max} open connections, none idle; retry shortly")
        }
        pool::Refused::PeerFull { peer, max } => {
            tracing::warn!(
                peer,
                max,
                "too many connections from one address; refusing one"
            );
            format!("the {who} has {max} open connections from {peer}, the most one address may hold, and none of them could be closed to make room; close some or retry shortly")
        }
    };
    let e = ApiError::new(ErrorCode::Overloaded, message);
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&crate::error_response(&e).encode(true, false, true));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Serves the requests of one connection until it closes, idles out, or a request or
/// answer ends it.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mut seat: pool::Seat,
    counts: &Counts,
    limits: Limits,
    handler: &(dyn Fn(Request) + Send + Sync),
) {
    // Linux copies TCP_NODELAY from the listener; set it anyway (one syscall) so that no
    // platform holds small event writes back (Nagle).
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let socket = ConnSocket::new(stream, IDLE_TIMEOUT);
    let mut conn = Conn {
        reader: BufReader::with_capacity(16 << 10, socket.clone()),
        writer: socket,
    };
    loop {
        // Between requests only the idle timeout applies (and a full server may close the
        // connection); from a request's first byte on, the request timeout too.
        // (A pipelined request already read is not waited for: never idle.)
        if conn.reader.buffer().is_empty() {
            seat.idle(&conn.reader.get_ref().stream);
        }
        if !next_request_begins(&mut conn.reader) || !seat.busy() {
            return;
        }
        let deadline = Instant::now() + limits.request_timeout;
        conn.reader.get_mut().set_deadline(Some(deadline));
        let head = match head::read(&mut conn.reader) {
            Ok(h) => h,
            Err(e) => {
                if let Some(status) = e.status() {
                    tracing::debug!(%peer, status, "malformed request: {e}");
                    let body = ApiError::new(ErrorCode::InvalidRequest, e.to_string());
                    let resp = crate::error_response(&body).with_status_code(status);
                    let _ = conn.writer.write_all(&resp.encode(true, false, true));
                    conn.close_gracefully();
                }
                return;
            }
        };
        let (back, next) = mpsc::channel();
        let request = Request::new(head, peer, conn, back);
        // The allowed CORS origin is per request; this thread may have served another.
        crate::cors::allow(None);
        let admitted = counts.in_flight.fetch_add(1, Ordering::AcqRel) < limits.max_in_flight;
        if admitted {
            let _leave = Leave(&counts.in_flight);
            handler(request);
        } else {
            counts.in_flight.fetch_sub(1, Ordering::AcqRel);
            let e = ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "the {} is handling {} requests; retry shortly",
                    limits.who, limits.max_in_flight
                ),
            );
            crate::respond_error(request, &e);
        }
        // The answer hands the connection back when it may carry another request.
        match next.recv() {
            Ok(c) => conn = c,
            Err(_) => return,
        }
    }
}

/// Waits (for at most the idle timeout) until the next request's first byte is here,
/// passing over the blank lines some clients send after a request; false when the
/// connection ended or idled out first.
fn next_request_begins(reader: &mut BufReader<ConnSocket>) -> bool {
    // Bounded: a client that sends nothing but blank lines gets its deadline and the head
    // reader's limit on them.
    for _ in 0..4 {
        let blank = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(b) => b.iter().take_while(|c| matches!(c, b'\r' | b'\n')).count(),
        };
        if blank == 0 {
            return true;
        }
        reader.consume(blank);
    }
    true
}

/// Counts a request or connection out when it ends, also when a handler panics.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
