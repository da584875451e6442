//! HTTP to hives and workers: JSON calls whose errors keep the server's code and details,
//! and event streams read line by line.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use rbee_types::ApiError;
use serde_json::Value;

use crate::report::Failure;

/// An HTTP client for one server (a hive or a worker).
#[derive(Clone)]
pub struct Client {
    /// `http://host:port`.
    pub base: String,
    /// `Authorization: Bearer` key, if any.
    pub key: Option<String>,
    /// Who answers, for error reports (`rbee-hive`, `llm-worker-rbee`).
    pub component: &'static str,
    agent: ureq::Agent,
}

/// What a call got back.
pub enum Answer {
    /// 2xx with its JSON body.
    Ok(u16, Value),
    /// An error envelope.
    Err(u16, ApiError),
}

impl Client {
    /// A client for `base`.
    pub fn new(base: &str, key: Option<String>, component: &'static str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            key,
            component,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(Duration::from_secs(60))
                .build(),
        }
    }

    /// The same client, with every call bounded by `t` in all (a cancel must not hang on a
    /// worker that stopped answering).
    pub fn with_timeout(&self, t: Duration) -> Client {
        Client {
            agent: ureq::AgentBuilder::new().timeout(t).build(),
            ..self.clone()
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.set("Authorization", &format!("Bearer {k}"));
        }
        r
    }

    /// A call; transport failures (nothing listening, timeouts) are `Err`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        let r = self.request(method, path);
        let result = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().unwrap_or_default();
                Ok(Answer::Ok(
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                ))
            }
            Err(ureq::Error::Status(status, resp)) => {
                Ok(Answer::Err(status, api_error(status, resp)))
            }
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    fn unreachable(&self, e: &ureq::Error) -> Failure {
        Failure::new(
            "rbee-keeper",
            format!("cannot reach {} at {}: {e}", self.component, self.base),
        )
    }

    /// A GET whose answer is text (log lines).
    pub fn text(&self, path: &str) -> Result<String, Failure> {
        match self.request("GET", path).call() {
            Ok(r) => Ok(r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(status, resp)) => Err(self.failure(&api_error(status, resp))),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    /// A call that must succeed: its JSON, or the server's error as a [`Failure`].
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failure> {
        match self.call(method, path, body)? {
            Answer::Ok(s, v) => Ok((s, v)),
            Answer::Err(_, e) => Err(self.failure(&e)),
        }
    }

    /// A server error as a person reads it: its message, code and details.
    pub fn failure(&self, e: &ApiError) -> Failure {
        let mut f = Failure::new(self.component, e.error.message.clone())
            .code(e.error.code.as_str())
            .detail(format!("code: {}", e.error.code.as_str()));
        for (k, v) in &e.error.details {
            f = f.detail(format!("{k}: {v}"));
        }
        f
    }

    /// Opens an event stream (GET, or POST with a body).
    pub fn stream(&self, path: &str, body: Option<&Value>) -> Result<Events, Answer> {
        let r = self.request(if body.is_some() { "POST" } else { "GET" }, path);
        let result = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        match result {
            Ok(resp) => Ok(Events {
                lines: BufReader::new(Box::new(resp.into_reader())),
            }),
            Err(ureq::Error::Status(status, resp)) => {
                Err(Answer::Err(status, api_error(status, resp)))
            }
            Err(e) => Err(Answer::Err(
                0,
                ApiError::new(
                    rbee_types::ErrorCode::Internal,
                    format!("cannot reach {} at {}: {e}", self.component, self.base),
                ),
            )),
        }
    }
}

/// The error envelope of a non-2xx answer (or the status and body as an `INTERNAL` one).
fn api_error(status: u16, resp: ureq::Response) -> ApiError {
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|_| {
        ApiError::new(
            rbee_types::ErrorCode::Internal,
            format!("HTTP {status}: {text}"),
        )
    })
}

/// An event stream being read.
pub struct Events {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

impl Events {
    /// The next event's JSON; `None` at `[DONE]` or when the stream ends (or breaks).
    pub fn next_json(&mut self) -> Option<Value> {
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return None;
            }
            if let Ok(v) = serde_json::from_str(data) {
                return Some(v);
            }
        }
    }
}
