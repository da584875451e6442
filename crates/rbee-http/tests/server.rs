//! rbee's HTTP server over real loopback sockets, driven by a raw client so that every byte
//! on the wire is what a client library, a browser or curl would send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rbee_http::{header, Limits, Request, Response, Server, SseWriter};

const LIMITS: Limits = Limits {
    who: "test server",
    max_in_flight: 64,
    request_timeout: Duration::from_secs(30),
    max_connections: 64,
    max_connections_per_peer: 64,
};

/// A server on an ephemeral loopback port running `handler`; stopped when dropped.
struct Running {
    server: Arc<Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(limits: Limits, handler: impl Fn(Request) + Send + Sync + 'static) -> Running {
        let server = Arc::new(Server::bind("127.0.0.1:0".parse().unwrap(), limits).unwrap());
        let s = Arc::clone(&server);
        let thread = std::thread::spawn(move || s.serve(handler));
        Running {
            server,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn connect(&self) -> Client {
        Self::client(TcpStream::connect(self.addr()).unwrap())
    }

    /// A connection from the loopback address `from` (any of 127.0.0.0/8).
    fn connect_from(&self, from: &str) -> Client {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect(&self.addr().into()).unwrap();
        Self::client(sock.into())
    }

    fn client(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A response as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn send(&mut self, raw: &str) {
        self.writer.write_all(raw.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }

    /// Reads one response; `head_only` for an answer to HEAD.
    fn answer_to(&mut self, head_only: bool) -> Answer {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut fields = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            fields.push((k.to_owned(), v.trim().to_owned()));
        }
        let mut a = Answer {
            status,
            fields,
            body: Vec::new(),
        };
        if head_only || status == 100 {
            return a;
        }
        if a.field("Transfer-Encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                a.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = a.field("Content-Length") {
            let mut body = vec![0; n.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            a.body = body;
        }
        a
    }

    fn answer(&mut self) -> Answer {
        self.answer_to(false)
    }

    /// True when the server closed the connection (end of stream, or a reset).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

/// Answers with the method, target and body it got.
fn echo(mut request: Request) {
    let mut body = String::new();
    let read = request.body().read_to_string(&mut body);
    if let Err(e) = read {
        let _ = request.respond(Response::from_string(e.to_string()).with_status_code(400));
        return;
    }
    let text = format!("{} {} {body}", request.method(), request.url());
    let _ = request.respond(Response::from_string(text));
}

#[test]
fn a_burst_of_keep_alive_connections_is_served_at_once() {
    // Every handler waits until all the burst's requests are in progress. A server that
    // queued connections behind busy ones (tiny_http 0.12's pool did, behind its four
    // standing threads) would answer "alone" to most of them.
    const BURST: usize = 16;
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let a = Arc::clone(&arrived);
    let srv = Running::start(LIMITS, move |request| {
        let (n, cv) = &*a;
        let mut n = n.lock().unwrap();
        *n += 1;
        cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while *n < BURST && Instant::now() < deadline {
            n = cv.wait_timeout(n, Duration::from_millis(100)).unwrap().0;
        }
        let text = if *n >= BURST { "together" } else { "alone" };
        drop(n);
        let _ = request.respond(Response::from_string(text));
    });
    let mut clients: Vec<Client> = (0..BURST).map(|_| srv.connect()).collect();
    for c in &mut clients {
        c.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    }
    let t0 = Instant::now();
    for c in &mut clients {
        let a = c.answer();
        assert_eq!((a.status, a.text().as_str()), (200, "together"));
        // The connection stays open for the client's next request.
        assert_eq!(a.field("Connection"), None);
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn one_connection_carries_requests_one_after_another_and_pipelined() {
    let srv = Running::start(LIMITS, echo);
    let mut c = srv.connect();
    c.send("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none");
    assert_eq!(c.answer().text(), "POST /a one");
    c.send("GET /b?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.answer().text(), "GET /b?q=1 ");
    // Two requests in one write: answered in order.
    c.send(
        "POST /c HTTP/1.1\r\nContent-Length: 1\r\n\r\nxPOST /d HTTP/1.1\r\nContent-Length: 1\r\n\r\ny",
    );
    assert_eq!(c.answer().text(), "POST /c x");
    assert_eq!(c.answer().text(), "POST /d y");
    // `Connection: close` and HTTP/1.0 end the connection after the answer.
    c.send("GET /e HTTP/1.1\r\nConnection: close\r\n\r\n");
    let a = c.answer();
    assert_eq!(a.field("Connection"), Some("close"));
    assert!(c.closed());
    let mut c = srv.connect();
    c.send("GET /f HTTP/1.0\r\n\r\n");
    assert!(c.answer().status == 200 && c.closed());
}

#[test]
fn chunked_bodies_and_expect_continue_work_as_curl_sends_them() {
    let srv = Running::start(LIMITS, echo);
    let mut c = srv.connect();
    c.send("POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    // The server asks for the body once the handler reads it.
    let cont = c.answer();
    assert_eq!(cont.status, 100);
    c.send("4\r\nbees\r\n5;x=y\r\n buzz\r\n0\r\n\r\n");
    assert_eq!(c.answer().text(), "POST /up bees buzz");
    // A chunk that lies about its size is a 400 naming the problem.
    c.send("POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbees\r\n0\r\n\r\n");
    let a = c.answer();
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("chunk"), "{}", a.text());
}

#[test]
fn malformed_and_oversized_requests_get_clear_errors_and_the_connection_closes() {
    let srv = Running::start(LIMITS, echo);
    for (raw, status, says) in [
        ("GARBAGE\r\n\r\n", 400, "request line"),
        (
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both",
        ),
        ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "colon"),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "chunked",
        ),
        ("GET / HTTP/2.0\r\n\r\n", 505, "HTTP/1.1"),
    ] {
        let mut c = srv.connect();
        c.send(raw);
        let a = c.answer();
        assert_eq!(a.status, status, "{raw:?}: {}", a.text());
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        assert!(a.text().contains(says), "{raw:?}: {}", a.text());
        assert!(c.closed(), "{raw:?}");
    }
    let mut c = srv.connect();
    c.send(&format!(
        "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
        "v".repeat(40_000)
    ));
    assert_eq!(c.answer().status, 431);
}

#[test]
fn an_answer_before_a_large_body_is_read_reaches_the_client() {
    // The handler refuses without reading the body; the client is still sending it. The
    // client must get the 413, not a connection reset.
    let srv = Running::start(LIMITS, |request| {
        let _ = request.respond(Response::from_string("too large").with_status_code(413));
    });
    let mut c = srv.connect();
    let body = vec![b'x'; 8 << 20];
    c.send(&format!(
        "POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let mut w = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let a = c.answer();
    assert_eq!((a.status, a.text().as_str()), (413, "too large"));
    assert_eq!(a.field("Connection"), Some("close"));
    sender.join().unwrap();
}

#[test]
fn head_requests_get_the_fields_without_the_body() {
    let srv = Running::start(LIMITS, echo);
    let mut c = srv.connect();
    c.send("HEAD /h HTTP/1.1\r\n\r\n");
    let a = c.answer_to(true);
    assert_eq!(a.field("Content-Length"), Some("8"), "\"HEAD /h \"");
    // The next answer starts right after the head: no stray body bytes.
    c.send("GET /g HTTP/1.1\r\n\r\n");
    assert_eq!(c.answer().text(), "GET /g ");
}

#[test]
fn a_stream_sends_each_event_at_once_and_keeps_the_connection() {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(0);
    let rx = Mutex::new(rx);
    let srv = Running::start(LIMITS, move |request| {
        if request.url() == "/after" {
            return echo(request);
        }
        let mut sse = SseWriter::start(request, &[("X-Request-Id", "r-1")]).unwrap();
        sse.event("first").unwrap();
        // The second event waits for the client to have seen the first.
        rx.lock().unwrap().recv().unwrap();
        sse.event("second").unwrap();
        sse.done().unwrap();
    });
    let mut c = srv.connect();
    c.send("GET /events HTTP/1.1\r\n\r\n");
    assert_eq!(c.line(), "HTTP/1.1 200 OK");
    let mut head = Vec::new();
    loop {
        let l = c.line();
        if l.is_empty() {
            break;
        }
        head.push(l);
    }
    assert!(
        head.contains(&"Content-Type: text/event-stream".to_owned()),
        "{head:?}"
    );
    assert!(head.contains(&"X-Request-Id: r-1".to_owned()), "{head:?}");
    assert_eq!(c.line(), "d");
    assert_eq!(c.line(), "data: first");
    assert_eq!(c.line(), "");
    assert_eq!(c.line(), "");
    tx.send(()).unwrap();
    let mut rest = String::new();
    loop {
        let l = c.line();
        rest.push_str(&l);
        rest.push('\n');
        if l == "0" {
            break;
        }
    }
    assert!(
        rest.contains("data: second") && rest.contains("data: [DONE]"),
        "{rest}"
    );
    assert_eq!(c.line(), "");
    c.send("GET /after HTTP/1.1\r\n\r\n");
    assert_eq!(c.answer().text(), "GET /after ");
}

#[test]
fn requests_beyond_the_limit_get_503_and_the_server_stays_up() {
    let release = Arc::new((Mutex::new(false), Condvar::new()));
    let r = Arc::clone(&release);
    let limits = Limits {
        max_in_flight: 2,
        ..LIMITS
    };
    let srv = Running::start(limits, move |request| {
        let (go, cv) = &*r;
        let mut go = go.lock().unwrap();
        while !*go {
            go = cv.wait(go).unwrap();
        }
        drop(go);
        echo(request);
    });
    let mut held: Vec<Client> = (0..2).map(|_| srv.connect()).collect();
    for c in &mut held {
        c.send("GET /held HTTP/1.1\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = srv.connect();
    extra.send("GET /extra HTTP/1.1\r\n\r\n");
    let a = extra.answer();
    assert_eq!(a.status, 503);
    assert!(a.text().contains("OVERLOADED") && a.text().contains("test server is handling 2"));
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
    for c in &mut held {
        assert_eq!(c.answer().text(), "GET /held ");
    }
    extra.send("GET /again HTTP/1.1\r\n\r\n");
    assert_eq!(extra.answer().text(), "GET /again ");
}

#[test]
fn a_waiting_request_sees_its_client_leave() {
    let saw = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&saw);
    let srv = Running::start(LIMITS, move |request| {
        let gone = request.disconnect_probe();
        assert!(!gone(), "the client is still there");
        s.store(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        s.store(if gone() { 2 } else { 3 }, Ordering::SeqCst);
    });
    let mut c = srv.connect();
    c.send("GET /wait HTTP/1.1\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while saw.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while saw.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        saw.load(Ordering::SeqCst),
        2,
        "the probe never saw the client leave"
    );
}

#[test]
fn a_handler_that_does_not_answer_gives_500_not_silence() {
    let srv = Running::start(LIMITS, drop);
    let mut c = srv.connect();
    c.send("GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(c.answer().status, 500);
    assert!(c.closed());
}

#[test]
fn answers_carry_a_date_and_the_fields_the_handler_set() {
    let srv = Running::start(LIMITS, |request| {
        let _ = request.respond(Response::empty(204).with_header(header("X-Thing", "1")));
    });
    let mut c = srv.connect();
    c.send("GET / HTTP/1.1\r\n\r\n");
    let a = c.answer();
    assert_eq!(a.status, 204);
    assert_eq!(a.field("X-Thing"), Some("1"));
    assert!(a.field("Date").is_some_and(|d| d.ends_with(" GMT")));
}

#[test]
fn a_request_sent_a_byte_at_a_time_is_cut_off_but_an_idle_keep_alive_connection_is_not() {
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        ..LIMITS
    };
    let srv = Running::start(limits, echo);
    // Slow-loris: a head that never ends, one field every 200 ms.
    let mut c = srv.connect();
    let t0 = Instant::now();
    c.send("GET /slow HTTP/1.1\r\n");
    let mut n = 0;
    while c
        .writer
        .write_all(format!("X-{n}: y\r\n").as_bytes())
        .is_ok()
        && n < 50
    {
        std::thread::sleep(Duration::from_millis(200));
        n += 1;
        if t0.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let a = c.answer();
    assert_eq!(a.status, 408, "{}", a.text());
    assert!(a.text().contains("did not arrive in time"), "{}", a.text());
    assert!(c.closed());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A body trickled in: the handler's read fails at the deadline, the connection ends.
    let mut c = srv.connect();
    let t0 = Instant::now();
    c.send("POST /slow HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    for _ in 0..10 {
        if c.writer.write_all(b"b").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = c.answer();
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("did not arrive in time"), "{}", a.text());
    assert!(c.closed());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Time between requests is not a request's time, nor is a blank line some clients send
    // after a request: the idle timeout alone applies.
    let mut c = srv.connect();
    c.send("GET /first HTTP/1.1\r\n\r\n");
    assert_eq!(c.answer().text(), "GET /first ");
    c.send("\r\n");
    std::thread::sleep(Duration::from_millis(1500));
    c.send("POST /second HTTP/1.1\r\nContent-Length: 4\r\n\r\nbees");
    assert_eq!(c.answer().text(), "POST /second bees");
}

/// Requests held by [`holding`]: how many have entered the handler, and whether to let
/// them go.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Gate {
    /// Waits until `n` requests have entered the handler (and so are no longer idle).
    fn wait_held(&self, n: usize) {
        let st = self.state.lock().unwrap();
        let (st, timeout) = self
            .cv
            .wait_timeout_while(st, Duration::from_secs(20), |(held, _)| *held < n)
            .unwrap();
        assert!(!timeout.timed_out(), "only {} of {n} requests held", st.0);
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

/// A handler that holds `/hold` requests until the gate is released, and echoes the rest.
fn holding(gate: Arc<Gate>) -> impl Fn(Request) + Send + Sync + 'static {
    move |request| {
        if request.url().starts_with("/hold") {
            let mut st = gate.state.lock().unwrap();
            st.0 += 1;
            gate.cv.notify_all();
            while !st.1 {
                st = gate.cv.wait(st).unwrap();
            }
        }
        echo(request);
    }
}

/// Waits until the server counts `n` open connections or fewer.
fn wait_open(srv: &Running, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while srv.server.connections().stats().open > n {
        assert!(Instant::now() < until, "connections not counted out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Client {
    /// True when the server closed this connection within 5 s (end of stream or a reset;
    /// a timeout is not a close).
    fn closed_by_server(&mut self) -> bool {
        self.writer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

#[test]
fn a_full_server_closes_its_longest_idle_connection_for_a_new_one_but_never_a_busy_one() {
    let gate = Arc::new(Gate::default());
    let limits = Limits {
        max_connections: 3,
        ..LIMITS
    };
    let srv = Running::start(limits, holding(Arc::clone(&gate)));
    // Three seats: one idle after a request, one idle that never sent a byte, one busy.
    let mut after_request = srv.connect();
    after_request.send("GET /first HTTP/1.1\r\n\r\n");
    assert_eq!(after_request.answer().text(), "GET /first ");
    std::thread::sleep(Duration::from_millis(100));
    let mut silent = srv.connect();
    std::thread::sleep(Duration::from_millis(100));
    let mut busy = srv.connect();
    busy.send("GET /hold HTTP/1.1\r\n\r\n");
    gate.wait_held(1);

    // A fourth client is served; the connection idle the longest made room for it.
    let mut fourth = srv.connect();
    fourth.send("GET /fourth HTTP/1.1\r\n\r\n");
    assert_eq!(fourth.answer().text(), "GET /fourth ");
    assert!(
        after_request.closed_by_server(),
        "the longest-idle connection was closed"
    );
    // Its thread ends in its own time; until then it holds its seat (and the server
    // closes no other connection meanwhile: at most an eighth of the seats, here one).
    wait_open(&srv, 3);
    // And the next: the silent one goes (the fourth has been idle a shorter time).
    let mut fifth = srv.connect();
    fifth.send("GET /fifth HTTP/1.1\r\n\r\n");
    assert_eq!(fifth.answer().text(), "GET /fifth ");
    assert!(silent.closed_by_server());

    // Every seat busy: a new connection gets 503 and the reason; nobody is cut off.
    fourth.send("GET /hold-4 HTTP/1.1\r\n\r\n");
    fifth.send("GET /hold-5 HTTP/1.1\r\n\r\n");
    gate.wait_held(3);
    let mut refused = srv.connect();
    let a = refused.answer();
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(
        a.text().contains("OVERLOADED") && a.text().contains("3 open connections, none idle"),
        "{}",
        a.text()
    );
    gate.release();
    assert_eq!(busy.answer().text(), "GET /hold ");
    assert_eq!(fourth.answer().text(), "GET /hold-4 ");
    assert_eq!(fifth.answer().text(), "GET /hold-5 ");
    // What the metrics show.
    let stats = srv.server.connections().stats();
    assert_eq!(
        (
            stats.closed_idle,
            stats.refused_busy,
            stats.refused_per_address
        ),
        (2, 1, 0),
        "{stats:?}"
    );
}

#[test]
fn one_address_holds_its_share_of_connections_and_others_are_still_served() {
    let gate = Arc::new(Gate::default());
    let limits = Limits {
        max_connections_per_peer: 2,
        ..LIMITS
    };
    let srv = Running::start(limits, holding(Arc::clone(&gate)));
    let mut held: Vec<Client> = (0..2).map(|_| srv.connect_from("127.0.0.2")).collect();
    for c in &mut held {
        c.send("GET /hold HTTP/1.1\r\n\r\n");
    }
    gate.wait_held(2);
    let a = srv.connect_from("127.0.0.2").answer();
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(
        a.text().contains(
            "2 open connections from 127.0.0.2, the most one address may hold, and none of them could be closed"
        ),
        "{}",
        a.text()
    );
    assert_eq!(srv.server.connections().stats().refused_per_address, 1);
    // Another address, and 127.0.0.1 (where local proxies connect from, not counted).
    for mut c in [
        srv.connect_from("127.0.0.3"),
        srv.connect(),
        srv.connect(),
        srv.connect(),
    ] {
        c.send("GET /other HTTP/1.1\r\n\r\n");
        assert_eq!(c.answer().text(), "GET /other ");
    }
    gate.release();
    for c in &mut held {
        assert_eq!(c.answer().text(), "GET /hold ");
    }
    // Both idle now (kept alive), the second more recently: a new connection from the
    // address takes the seat of its longest-idle one (browsers behind one NAT keep
    // connections open between requests).
    held[1].send("GET /again-1 HTTP/1.1\r\n\r\n");
    assert_eq!(held[1].answer().text(), "GET /again-1 ");
    std::thread::sleep(Duration::from_millis(100)); // its thread waits for the next request
    let mut third = srv.connect_from("127.0.0.2");
    third.send("GET /third HTTP/1.1\r\n\r\n");
    assert_eq!(third.answer().text(), "GET /third ");
    assert!(held[0].closed_by_server(), "its longest-idle connection");
    held[1].send("GET /still HTTP/1.1\r\n\r\n");
    assert_eq!(held[1].answer().text(), "GET /still ", "the other stays");
    let stats = srv.server.connections().stats();
    assert_eq!((stats.closed_idle, stats.refused_per_address), (1, 1));
    // The address's seats are given back as its connections end (their threads notice
    // the close in their own time).
    drop((held, third));
    wait_open(&srv, 0);
    let mut again = srv.connect_from("127.0.0.2");
    again.send("GET /again HTTP/1.1\r\n\r\n");
    assert_eq!(again.answer().text(), "GET /again ");
}
