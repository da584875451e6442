//! One request on a connection, and the ways to answer it: a whole [`Response`], or a
//! chunked stream ([`Stream`], for server-sent events). Answering hands the connection
//! back to its thread for the next request, unless the request or the answer ends it.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::Body;
use super::head::{Head, Method};
use super::response::{self, Header, Response};

/// A body left unread when the answer is sent is read and dropped up to this size so that
/// the connection can carry another request; a larger one ends the connection.
const DRAIN_LIMIT: u64 = 1 << 20;
/// How long a closing connection keeps reading what the client still sends, so that the
/// kernel does not reset it before the client has read the answer.
const LINGER: Duration = Duration::from_secs(2);

/// A connection's socket, shared by its buffered reader and its writer (one descriptor,
/// not a duplicate per side: a server with many connections runs into the open-files
/// limit twice as late). The reader's copy may carry a deadline: the time by which the
/// request being read must have arrived.
#[derive(Clone)]
pub(crate) struct ConnSocket {
    pub stream: Arc<TcpStream>,
    /// How long a read may wait for a byte.
    idle: Duration,
    deadline: Option<Instant>,
}

impl ConnSocket {
    /// The socket, reads waiting at most `idle` for a byte, with no deadline.
    pub fn new(stream: TcpStream, idle: Duration) -> ConnSocket {
        let _ = stream.set_read_timeout(Some(idle));
        ConnSocket {
            stream: Arc::new(stream),
            idle,
            deadline: None,
        }
    }

    /// Reads must also end by `deadline` (`None`: only the idle timeout applies).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        if self.deadline.is_some() && deadline.is_none() {
            let _ = self.stream.set_read_timeout(Some(self.idle));
        }
        self.deadline = deadline;
    }

    fn late() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the request did not arrive in time",
        )
    }
}

impl Read for ConnSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(deadline) = self.deadline else {
            return (&*self.stream).read(buf);
        };
        // A client that sends a request a byte at a time must not hold its connection
        // (and, once admitted, its request slot) for as long as it likes.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Self::late());
        }
        let _ = self.stream.set_read_timeout(Some(left.min(self.idle)));
        match (&*self.stream).read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && Instant::now() >= deadline =>
            {
                Err(Self::late())
            }
            r => r,
        }
    }
}

impl Write for ConnSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
}

/// A client connection between requests.
pub(crate) struct Conn {
    pub reader: BufReader<ConnSocket>,
    pub writer: ConnSocket,
}

impl Conn {
    /// Closes the connection after an answer: no more writes, and what the client is still
    /// sending (a body nobody read) is read and dropped for a moment first, so that the
    /// client sees the answer rather than a reset.
    pub fn close_gracefully(mut self) {
        self.reader.get_mut().deadline = None;
        let _ = self.writer.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER;
        let _ = self.writer.stream.set_read_timeout(Some(LINGER));
        let mut buf = [0u8; 8192];
        while Instant::now() < until {
            match self.reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// An HTTP request, with its connection until it is answered.
pub struct Request {
    head: Head,
    remote: SocketAddr,
    body: Body,
    continue_pending: bool,
    conn: Option<Conn>,
    back: Sender<Conn>,
    answered: Outcome,
}

/// The status a request was answered with, readable after the request has been handed on
/// (for metrics and access logs).
#[derive(Debug, Clone, Default)]
pub struct Outcome(Arc<AtomicU16>);

impl Outcome {
    /// The status sent, or `None` while unanswered.
    pub fn status(&self) -> Option<u16> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            s => Some(s),
        }
    }

    fn set(&self, status: u16) {
        self.0.store(status, Ordering::Release);
    }
}

impl Request {
    pub(crate) fn new(head: Head, remote: SocketAddr, conn: Conn, back: Sender<Conn>) -> Request {
        Request {
            body: Body::new(head.framing),
            continue_pending: head.expects_continue(),
            head,
            remote,
            conn: Some(conn),
            back,
            answered: Outcome::default(),
        }
    }

    /// Where the status of this request's answer will be.
    pub fn outcome(&self) -> Outcome {
        self.answered.clone()
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request target: path and query, as sent.
    pub fn url(&self) -> &str {
        &self.head.target
    }

    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.field(name)
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The body's declared length (`Content-Length`), if any.
    pub fn body_length(&self) -> Option<u64> {
        match self.head.framing {
            super::head::Framing::Length(n) => Some(n),
            super::head::Framing::None => Some(0),
            super::head::Framing::Chunked => None,
        }
    }

    /// The body. A client that waits for `100 Continue` gets it on the first read.
    pub fn body(&mut self) -> impl Read + '_ {
        BodyReader { request: self }
    }

    /// A check, usable from any thread while the request waits, of whether the client
    /// closed its side of the connection (it gave up waiting).
    pub fn disconnect_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let socket = self.conn.as_ref().map(|c| Arc::clone(&c.writer.stream));
        move || socket.as_deref().is_some_and(peer_closed)
    }

    /// Sends `response`.
    pub fn respond(mut self, response: Response) -> io::Result<()> {
        let Some((mut conn, keep)) = self.finish_reading() else {
            return Ok(());
        };
        self.answered.set(response.status());
        let head_only = self.head.method == Method::Head;
        let bytes = response.encode(self.head.http11, head_only, !keep);
        conn.writer.write_all(&bytes)?;
        self.hand_back(conn, keep);
        Ok(())
    }

    /// Starts a streamed answer: status 200, `fields`, and a body in chunks written as
    /// they come ([`Stream::chunk`]).
    pub fn into_stream(mut self, fields: &[Header]) -> io::Result<Stream> {
        let (mut conn, keep) = self
            .finish_reading()
            .ok_or_else(|| io::Error::other("the request was answered already"))?;
        self.answered.set(200);
        let chunked = self.head.http11;
        // HTTP/1.0 has no chunks: the body ends when the connection does.
        let keep = keep && chunked;
        let mut head = response::head(self.head.http11, 200, fields, !keep);
        if chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        head.extend_from_slice(b"\r\n");
        conn.writer.write_all(&head)?;
        Ok(Stream {
            conn: Some(conn),
            back: self.back.clone(),
            chunked,
            keep,
        })
    }

    /// Takes the connection out of the request once the body is read to its end; with
    /// whether it may carry another request.
    fn finish_reading(&mut self) -> Option<(Conn, bool)> {
        let mut conn = self.conn.take()?;
        // A client waiting for `100 Continue` sends no body when the answer comes first.
        let drained = !self.continue_pending && self.body.skip(&mut conn.reader, DRAIN_LIMIT);
        // The request has arrived: until the next one begins, only the idle timeout applies.
        conn.reader.get_mut().set_deadline(None);
        Some((conn, drained && self.head.keep_alive()))
    }

    fn hand_back(&self, conn: Conn, keep: bool) {
        if keep {
            let _ = self.back.send(conn);
        } else {
            conn.close_gracefully();
        }
    }
}

impl Drop for Request {
    /// A request dropped unanswered (a handler's bug or panic) gets a 500 and the
    /// connection is closed, rather than the client waiting.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            self.answered.set(500);
            let resp = Response::from_string("the server did not answer this request")
                .with_status_code(500);
            let _ = conn
                .writer
                .write_all(&resp.encode(self.head.http11, false, true));
            conn.close_gracefully();
        }
    }
}

struct BodyReader<'a> {
    request: &'a mut Request,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.request;
        let Some(conn) = r.conn.as_mut() else {
            return Ok(0);
        };
        if r.continue_pending {
            r.continue_pending = false;
            conn.writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        r.body.read(&mut conn.reader, buf)
    }
}

/// A streamed answer in progress. Dropping it without [`Stream::finish`] closes the
/// connection (the client sees the body break off).
pub struct Stream {
    conn: Option<Conn>,
    back: Sender<Conn>,
    chunked: bool,
    keep: bool,
}

impl Stream {
    /// Writes `data` as one chunk and sends it at once.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        if self.chunked {
            let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
            frame.extend_from_slice(data);
            frame.extend_from_slice(b"\r\n");
            conn.writer.write_all(&frame)
        } else {
            conn.writer.write_all(data)
        }
    }

    /// Ends the body; the connection carries the client's next request.
    pub fn finish(mut self) -> io::Result<()> {
        let mut conn = self.conn.take().ok_or_else(|| io::Error::other("closed"))?;
        if self.chunked {
            conn.writer.write_all(b"0\r\n\r\n")?;
        }
        if self.keep {
            let _ = self.back.send(conn);
        } else {
            conn.close_gracefully();
        }
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.writer.stream.shutdown(Shutdown::Both);
        }
    }
}

/// True when the peer closed its side (a non-blocking peek reads end of stream) or reset
/// the connection.
fn peer_closed(socket: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv into a valid one-byte buffer on an open socket; MSG_PEEK leaves the
    // data (if any) in place and MSG_DONTWAIT keeps it from blocking.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return n == 0;
    }
    let e = io::Error::last_os_error().kind();
    !matches!(e, io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
