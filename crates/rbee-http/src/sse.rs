//! Server-sent events: one HTTP chunk per event, sent as soon as it is written.

use std::io;
use std::time::Duration;

use crate::{header, Request, Stream};

/// An open `text/event-stream` response.
pub struct SseWriter {
    out: Stream,
}

impl SseWriter {
    /// Sends the response head (200, chunked) and returns the writer for events.
    pub fn start(request: Request, extra_headers: &[(&str, &str)]) -> io::Result<Self> {
        let mut fields = vec![
            header("Content-Type", "text/event-stream"),
            header("Cache-Control", "no-cache"),
        ];
        fields.extend(extra_headers.iter().map(|(k, v)| header(k, v)));
        fields.extend(crate::cors::headers().iter().map(|(k, v)| header(k, v)));
        Ok(Self {
            out: request.into_stream(&fields)?,
        })
    }

    /// Sends `data: <payload>\n\n`. An error means the client has gone.
    pub fn event(&mut self, payload: &str) -> io::Result<()> {
        self.out.chunk(format!("data: {payload}\n\n").as_bytes())
    }

    /// Sends an SSE comment (`: text`), which clients ignore: a keep-alive that also finds
    /// out whether the client is still there.
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        self.out.chunk(format!(": {text}\n\n").as_bytes())
    }

    /// Sends a value as a JSON event.
    pub fn json(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        self.event(&serde_json::to_string(value).map_err(io::Error::other)?)
    }

    /// Sends `data: [DONE]` and ends the response; the connection stays open for the
    /// client's next request.
    pub fn done(mut self) -> io::Result<()> {
        self.event("[DONE]")?;
        self.out.finish()
    }
}

/// Time without an event after which a keep-alive comment goes out.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Streams a progress feed to the client until it ends or the client goes: `next(timeout)`
/// returns the events that arrived (waiting at most `timeout`) and whether the feed has
/// ended; a keep-alive comment goes out whenever none came; `[DONE]` closes the stream.
pub fn stream<T: serde::Serialize>(
    request: Request,
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
