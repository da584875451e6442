//! Minimal HTTP and SSE clients for tests, on ureq, against loopback only.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// `X-Request-Id`, if present.
    pub request_id: Option<String>,
    /// `Allow`, if present.
    pub allow: Option<String>,
    /// `Content-Type`, if present.
    pub content_type: Option<String>,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// `error.code` of an error envelope.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// For event streams, which may rightly last longer than any fixed time (a worker build
/// streams for minutes): bounded by the time between bytes instead (servers send
/// keep-alive comments).
fn stream_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP transport error: {e}"),
    };
    let status = resp.status();
    let request_id = resp.header("X-Request-Id").map(str::to_owned);
    let allow = resp.header("Allow").map(str::to_owned);
    let content_type = resp.header("Content-Type").map(str::to_owned);
    let body = resp.into_string().unwrap_or_default();
    Reply {
        status,
        body,
        request_id,
        allow,
        content_type,
    }
}

/// Sends `method url` with an optional bearer key and raw body.
pub fn send(method: &str, url: &str, key: Option<&str>, body: Option<&[u8]>) -> Reply {
    let mut req = agent().request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    finish(match body {
        Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
        None => req.call(),
    })
}

/// Sends `method url` with the given headers (`Host` and `Content-Type` included, as a
/// browser or an attacker would set them) and raw body.
pub fn send_with(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    finish(match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    })
}

/// GET.
pub fn get(url: &str) -> Reply {
    send("GET", url, None, None)
}

/// POST a JSON value.
pub fn post_json(url: &str, body: &Value) -> Reply {
    send("POST", url, None, Some(body.to_string().as_bytes()))
}

/// An open SSE stream; yields the `data:` payload of each event.
pub struct Sse {
    lines: BufReader<Box<dyn Read + Send + Sync + 'static>>,
    /// Status of the response.
    pub status: u16,
    /// `X-Request-Id`, if present.
    pub request_id: Option<String>,
}

impl Sse {
    /// POSTs `body` to `url` and opens the event stream (or returns the error reply).
    pub fn post(url: &str, key: Option<&str>, body: &Value) -> Result<Sse, Reply> {
        let mut req = stream_agent().post(url);
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        Self::open(req.send_string(&body.to_string()))
    }

    /// GETs `url` as an event stream.
    pub fn get(url: &str) -> Result<Sse, Reply> {
        Self::get_keyed(url, None)
    }

    /// GETs `url` as an event stream with an optional bearer key.
    pub fn get_keyed(url: &str, key: Option<&str>) -> Result<Sse, Reply> {
        let mut req = stream_agent().get(url);
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        Self::open(req.call())
    }

    fn open(r: Result<ureq::Response, ureq::Error>) -> Result<Sse, Reply> {
        match r {
            Ok(resp) if resp.content_type() == "text/event-stream" => Ok(Sse {
                status: resp.status(),
                request_id: resp.header("X-Request-Id").map(str::to_owned),
                lines: BufReader::new(resp.into_reader()),
            }),
            other => Err(finish(other)),
        }
    }

    /// The next event's data (`None` at the end of the stream).
    pub fn next_data(&mut self) -> Option<String> {
        let mut data = None;
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return data;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_some() {
                    return data;
                }
                continue;
            }
            if let Some(d) = line.strip_prefix("data: ") {
                data = Some(d.to_owned());
            }
        }
    }

    /// The next event parsed as JSON; `None` at `[DONE]` or the end.
    pub fn next_json(&mut self) -> Option<Value> {
        let d = self.next_data()?;
        if d == "[DONE]" {
            return None;
        }
        Some(serde_json::from_str(&d).unwrap_or_else(|e| panic!("event is not JSON ({e}): {d}")))
    }

    /// Reads every remaining event (JSON) until `[DONE]`.
    pub fn collect(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next_json()).collect()
    }
}

/// The concatenated `token` fields of token events.
pub fn text_of(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["token"].as_str()).collect()
}
