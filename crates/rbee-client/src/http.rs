//! One server: requests with the Bearer key, JSON bodies in and out, error envelopes, and
//! server-sent event streams.

use std::io::{BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::time::Duration;

use rbee_types::openai::OpenAiError;
use rbee_types::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a call did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered: connection refused, DNS, timeout.
    #[error("cannot reach {server} at {base}: {why}")]
    Unreachable {
        /// `rbee-hive` or `llm-worker-rbee`.
        server: &'static str,
        /// Its address as the user knows it (the base URL, or the node's host and port
        /// when the client goes through a tunnel).
        base: String,
        /// The node it runs on, when the client was told.
        node: Option<String>,
        /// The transport's error.
        why: String,
    },
    /// The server answered with an error envelope (or a non-2xx status without one, as an
    /// `INTERNAL` error carrying the status and body).
    #[error("{server} answered HTTP {status}: {error}")]
    Api {
        /// Who answered.
        server: &'static str,
        /// The node it runs on, when the client was told.
        node: Option<String>,
        /// The HTTP status.
        status: u16,
        /// The envelope.
        error: Box<ApiError>,
    },
    /// A 2xx answer whose body is not what the API promises.
    #[error("{server} sent an answer to {path} that is not valid: {why}")]
    Decode {
        /// Who answered.
        server: &'static str,
        /// The node it runs on, when the client was told.
        node: Option<String>,
        /// What was asked.
        path: String,
        /// What serde said.
        why: String,
    },
}

impl ClientError {
    /// The server's error envelope, if it sent one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The server's error code, if it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.api().map(|e| e.error.code)
    }

    /// Whether nothing answered (as opposed to an answer that was an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// A base URL, a key and an agent: what every call to one server needs.
#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) base: String,
    pub(crate) key: Option<String>,
    pub(crate) server: &'static str,
    /// The node and its address as the user knows them, for errors.
    pub(crate) node: Option<(String, String)>,
    agent: ureq::Agent,
}

/// A 2xx answer: its status and body text.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Http {
    /// Connects in at most 5 s; each read waits at most 60 s.
    pub(crate) fn new(base: &str, key: Option<String>, server: &'static str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            key,
            server,
            node: None,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(Duration::from_secs(60))
                .build(),
        }
    }

    /// The same server with every call bounded by `t` in all.
    pub(crate) fn with_timeout(&self, t: Duration) -> Http {
        Http {
            agent: ureq::AgentBuilder::new().timeout(t).build(),
            ..self.clone()
        }
    }

    /// The same server with each read waiting at most `t` (connecting still 5 s).
    pub(crate) fn with_read_timeout(&self, t: Duration) -> Http {
        Http {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(t)
                .build(),
            ..self.clone()
        }
    }

    fn node_name(&self) -> Option<String> {
        self.node.as_ref().map(|(n, _)| n.clone())
    }

    /// The address errors name: the node's, else the base URL.
    fn address(&self) -> String {
        self.node
            .as_ref()
            .map_or_else(|| self.base.clone(), |(_, a)| a.clone())
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.set("Authorization", &format!("Bearer {k}"));
        }
        r
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<ureq::Response, ClientError> {
        let r = self.request(method, path);
        let result = match body {
            Some(b) => match serde_json::to_value(b) {
                Ok(v) => r.send_json(v),
                Err(e) => return Err(self.decode(path, &e)),
            },
            None => r.call(),
        };
        result.map_err(|e| match e {
            ureq::Error::Status(status, resp) => ClientError::Api {
                server: self.server,
                node: self.node_name(),
                status,
                error: Box::new(envelope(status, resp)),
            },
            ureq::Error::Transport(t) => ClientError::Unreachable {
                server: self.server,
                base: self.address(),
                node: self.node_name(),
                why: t.to_string(),
            },
        })
    }

    /// A call whose 2xx body is returned as text.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, ClientError> {
        let resp = self.send(method, path, body)?;
        let status = resp.status();
        let body = resp.into_string().map_err(|e| ClientError::Unreachable {
            server: self.server,
            base: self.address(),
            node: self.node_name(),
            why: format!("the answer broke off: {e}"),
        })?;
        Ok(Reply { status, body })
    }

    /// A call whose 2xx body is a `T`; the status comes along.
    pub(crate) fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(u16, T), ClientError> {
        let reply = self.call(method, path, body)?;
        Ok((reply.status, self.parse(path, &reply.body)?))
    }

    /// A GET whose body is a `T`.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json("GET", path, None::<&()>).map(|(_, v)| v)
    }

    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &str,
    ) -> Result<T, ClientError> {
        serde_json::from_str(body).map_err(|e| self.decode(path, &e))
    }

    fn decode(&self, path: &str, e: &serde_json::Error) -> ClientError {
        ClientError::Decode {
            server: self.server,
            node: self.node_name(),
            path: path.to_owned(),
            why: e.to_string(),
        }
    }

    /// Opens an event stream: GET, or POST with a body.
    pub(crate) fn events<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Events<T>, ClientError> {
        let method = if body.is_some() { "POST" } else { "GET" };
        let resp = self.send(method, path, body)?;
        Ok(Events {
            lines: BufReader::new(Box::new(resp.into_reader())),
            server: self.server,
            node: self.node_name(),
            path: path.to_owned(),
            item: PhantomData,
        })
    }
}

/// The error envelope of a non-2xx answer (rbee's, or OpenAI's from the OpenAI routes), or
/// the status and body as an `INTERNAL` one.
fn envelope(status: u16, resp: ureq::Response) -> ApiError {
    let text = resp.into_string().unwrap_or_default();
    if let Ok(e) = serde_json::from_str::<ApiError>(&text) {
        return e;
    }
    if let Ok(e) = serde_json::from_str::<OpenAiError>(&text) {
        return e.to_api();
    }
    let text: String = text.chars().take(500).collect();
    ApiError::new(ErrorCode::Internal, format!("HTTP {status}: {text}"))
}

/// A server-sent event stream being read: each `data:` line as a `T`, until `[DONE]` or
/// the end of the stream. A line that is not a `T` is an error item (the stream goes on).
pub struct Events<T> {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
    server: &'static str,
    node: Option<String>,
    path: String,
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Events<T> {
    type Item = Result<T, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut line = String::new();
            // A broken connection ends the stream like its end does; callers see no `done`.
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return None;
            }
            return Some(serde_json::from_str(data).map_err(|e| ClientError::Decode {
                server: self.server,
                node: self.node.clone(),
                path: self.path.clone(),
                why: format!("{e}: {}", data.chars().take(200).collect::<String>()),
            }));
        }
    }
}
