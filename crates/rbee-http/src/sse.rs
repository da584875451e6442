//! Server-sent events over a raw tiny_http connection, one HTTP chunk per event, flushed as
//! soon as it is written: tiny_http's own `Response` buffers bodies, which would hold tokens
//! back.

use std::io::{self, Write};
use std::time::Duration;

/// An open `text/event-stream` response.
pub struct SseWriter {
    out: Box<dyn Write + Send>,
}

impl SseWriter {
    /// Writes the response head (200, chunked) and returns the writer for events.
    pub fn start(request: tiny_http::Request, extra_headers: &[(&str, &str)]) -> io::Result<Self> {
        let mut out = request.into_writer();
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
        );
        for (k, v) in extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in crate::cors::headers() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Sends `data: <payload>\n\n`. An error means the client has gone.
    pub fn event(&mut self, payload: &str) -> io::Result<()> {
        let frame = format!("data: {payload}\n\n");
        write!(self.out, "{:x}\r\n{frame}\r\n", frame.len())?;
        self.out.flush()
    }

    /// Sends an SSE comment (`: text`), which clients ignore: a keep-alive that also finds
    /// out whether the client is still there.
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        let frame = format!(": {text}\n\n");
        write!(self.out, "{:x}\r\n{frame}\r\n", frame.len())?;
        self.out.flush()
    }

    /// Sends a value as a JSON event.
    pub fn json(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        self.event(&serde_json::to_string(value).map_err(io::Error::other)?)
    }

    /// Sends `data: [DONE]` and ends the response.
    pub fn done(mut self) -> io::Result<()> {
        self.event("[DONE]")?;
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }
}

/// Time without an event after which a keep-alive comment goes out.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Streams a progress feed to the client until it ends or the client goes: `next(timeout)`
/// returns the events that arrived (waiting at most `timeout`) and whether the feed has
/// ended; a keep-alive comment goes out whenever none came; `[DONE]` closes the stream.
pub fn stream<T: serde::Serialize>(
    request: tiny_http::Request,
    mut next: impl FnMut(Duration) -> (Vec<T>, bool),
) {
    let Ok(mut sse) = SseWriter::start(request, &[]) else {
        return;
    };
    loop {
        let (events, done) = next(KEEP_ALIVE);
        if events.is_empty() && !done {
            if sse.comment("keep-alive").is_err() {
                return;
            }
            continue;
        }
        for e in &events {
            if sse.json(e).is_err() {
                return;
            }
        }
        if done {
            let _ = sse.done();
            return;
        }
    }
}
