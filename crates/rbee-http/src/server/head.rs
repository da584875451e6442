//! A request's head, parsed once at the edge: the request line and the header fields, with
//! limits on every length, and the framing of the body that follows (RFC 9112).

use std::fmt;
use std::io::{self, BufRead, Read};

/// Longest request line (method, target, version), bytes.
const MAX_REQUEST_LINE: usize = 8 << 10;
/// Longest head (request line and header fields), bytes.
const MAX_HEAD: usize = 32 << 10;
/// Most header fields in one request.
const MAX_FIELDS: usize = 100;
/// Empty lines tolerated before a request line (RFC 9112 §2.2: a client may send one after
/// a body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// Any other token.
    Other(String),
}

impl Method {
    fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The request target as sent (path and query).
    pub target: String,
    /// HTTP/1.1 (true) or HTTP/1.0 (false).
    pub http11: bool,
    /// Header fields in order, names as sent.
    pub fields: Vec<(String, String)>,
    /// The body's framing.
    pub framing: Framing,
}

impl Head {
    /// The first field named `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` field lists `token`.
    fn connection_has(&self, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("Connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client may send another request on this connection afterwards.
    pub fn keep_alive(&self) -> bool {
        self.http11 && !self.connection_has("close")
    }

    /// Whether the client waits for `100 Continue` before it sends the body.
    pub fn expects_continue(&self) -> bool {
        self.http11
            && self.framing != Framing::None
            && self
                .field("Expect")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a head could not be read. Each has the status the server answers with.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The connection closed (or was reset) before a request began: not an error to answer.
    #[error("the connection ended before a request")]
    Closed,
    /// The socket failed mid-head.
    #[error("reading the request failed: {0}")]
    Io(#[from] io::Error),
    /// Malformed syntax.
    #[error("{0}")]
    Bad(String),
    /// The request line is too long.
    #[error("the request line is longer than {MAX_REQUEST_LINE} bytes")]
    UriTooLong,
    /// The head is too large.
    #[error(
        "the request head is larger than {MAX_HEAD} bytes or has more than {MAX_FIELDS} fields"
    )]
    HeadTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("only HTTP/1.0 and HTTP/1.1 are served here")]
    Version,
    /// A transfer coding other than `chunked`.
    #[error("only the chunked transfer coding is supported")]
    TransferCoding,
    /// The head did not arrive within the request timeout.
    #[error("the request head did not arrive in time")]
    TooSlow,
}

impl HeadError {
    /// The status to answer with; `None` when there is nobody to answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            HeadError::Closed | HeadError::Io(_) => None,
            HeadError::Bad(_) => Some(400),
            HeadError::UriTooLong => Some(414),
            HeadError::HeadTooLarge => Some(431),
            HeadError::Version => Some(505),
            HeadError::TransferCoding => Some(501),
            HeadError::TooSlow => Some(408),
        }
    }
}

fn bad(msg: impl Into<String>) -> HeadError {
    HeadError::Bad(msg.into())
}

/// One line, CRLF or LF ended, without its end; `None` at a clean end of input.
fn read_line(r: &mut impl BufRead, limit: usize) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(limit as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n > limit {
            HeadError::HeadTooLarge
        } else {
            bad("the request head ended before its last line")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads one request head, whose first byte has arrived. A clean end or a reset before the
/// request line is [`HeadError::Closed`]; a head that stalls or outlasts the request
/// deadline is [`HeadError::TooSlow`].
pub fn read(r: &mut impl BufRead) -> Result<Head, HeadError> {
    read_head(r).map_err(|e| match e {
        HeadError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            HeadError::TooSlow
        }
        e => e,
    })
}

fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut line = None;
    for _ in 0..=MAX_LEADING_EMPTY_LINES {
        let got = match read_line(r, MAX_REQUEST_LINE) {
            Ok(got) => got,
            Err(HeadError::HeadTooLarge) => return Err(HeadError::UriTooLong),
            Err(HeadError::Io(e)) if is_reset(&e) => return Err(HeadError::Closed),
            Err(e) => return Err(e),
        };
        match got {
            None => return Err(HeadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = Some(l);
                break;
            }
        }
    }
    let line = line.ok_or_else(|| bad("no request line"))?;
    let line = String::from_utf8(line).map_err(|_| bad("the request line is not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not `METHOD target HTTP/1.1`"));
    };
    if !is_token(method) {
        return Err(bad("the method is not a token"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("the request target is empty or has spaces or controls"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(HeadError::Version),
        _ => return Err(bad("the request line does not end with an HTTP version")),
    };

    let mut fields = Vec::new();
    let mut size = line.len();
    loop {
        let Some(l) = read_line(r, MAX_HEAD.saturating_sub(size))? else {
            return Err(bad("the connection ended inside the request head"));
        };
        size += l.len() + 2;
        if l.is_empty() {
            break;
        }
        if size > MAX_HEAD || fields.len() >= MAX_FIELDS {
            return Err(HeadError::HeadTooLarge);
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(bad("folded header lines are not accepted"));
        }
        let l = String::from_utf8_lossy(&l);
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| bad("a header line has no colon"))?;
        if !is_token(name) {
            return Err(bad(format!(
                "invalid header name {:?}",
                name.chars().take(40).collect::<String>()
            )));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(bad(format!("the value of {name} has control characters")));
        }
        fields.push((name.to_owned(), value.to_owned()));
    }

    let framing = framing(&fields)?;
    Ok(Head {
        method: Method::parse(method),
        target: target.to_owned(),
        http11,
        fields,
        framing,
    })
}

/// Whether a read error is the client resetting the connection.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// The body's framing. Ambiguous framing (both `Transfer-Encoding` and `Content-Length`,
/// or differing lengths) is refused: it is how requests are smuggled past proxies.
fn framing(fields: &[(String, String)]) -> Result<Framing, HeadError> {
    fn named<'a>(fields: &'a [(String, String)], n: &'a str) -> impl Iterator<Item = &'a str> {
        fields
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
    let codings: Vec<String> = named(fields, "Transfer-Encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let lengths: Vec<&str> = named(fields, "Content-Length")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length were sent"));
        }
        return if codings == ["chunked"] {
            Ok(Framing::Chunked)
        } else {
            Err(HeadError::TransferCoding)
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::None);
    };
    if lengths.iter().any(|l| l != first) {
        return Err(bad("differing Content-Length values"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Content-Length is not a number"));
    }
    let n: u64 = first
        .parse()
        .map_err(|_| bad("Content-Length is too large"))?;
    Ok(if n == 0 {
        Framing::None
    } else {
        Framing::Length(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Head, HeadError> {
        read(&mut io::BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn a_plain_request_is_parsed_with_its_fields() {
        let h = parse(
            "POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/v1/x?y=1");
        assert!(h.http11 && h.keep_alive());
        assert_eq!(h.field("x-a"), Some("b"));
        assert_eq!(h.framing, Framing::Length(5));
    }

    #[test]
    fn connection_close_and_http10_end_the_connection() {
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
    }

    #[test]
    fn bare_lf_and_a_leading_empty_line_are_tolerated() {
        let h = parse("\r\nGET /a HTTP/1.1\nHost: x\n\n").unwrap();
        assert_eq!(h.target, "/a");
        assert_eq!(h.field("host"), Some("x"));
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused() {
        let both = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse(both).unwrap_err().status(), Some(400));
        let two = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse(two).unwrap_err().status(), Some(400));
        let neg = "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse(neg).unwrap_err().status(), Some(400));
        let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(gzip).unwrap_err().status(), Some(501));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(parse(chunked).unwrap().framing, Framing::Chunked);
    }

    #[test]
    fn malformed_heads_get_400_and_oversized_ones_414_or_431() {
        for raw in [
            "GET /\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert_eq!(parse(raw).unwrap_err().status(), Some(400), "{raw:?}");
        }
        let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(parse(&long_uri).unwrap_err().status(), Some(414));
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&many).unwrap_err().status(), Some(431));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(MAX_HEAD));
        assert_eq!(parse(&big).unwrap_err().status(), Some(431));
        assert_eq!(
            parse("GET / HTTP/2.0\r\n\r\n").unwrap_err().status(),
            Some(505)
        );
    }

    #[test]
    fn an_empty_connection_is_closed_without_an_answer() {
        assert!(matches!(parse(""), Err(HeadError::Closed)));
        assert!(matches!(parse("\r\n"), Err(HeadError::Closed)));
    }

    #[test]
    fn expect_continue_is_seen_only_with_a_body() {
        let h =
            parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(h.expects_continue());
        let h = parse("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!h.expects_continue());
    }
}
