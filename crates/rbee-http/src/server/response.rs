//! A whole response: status, header fields and body, written in one piece. The framing
//! fields (`Content-Length`, `Transfer-Encoding`, `Connection`) are the server's to set.

use std::time::SystemTime;

/// A header field of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: String,
    /// The field value.
    pub value: String,
}

impl Header {
    /// A field; `None` when the name is not a token or the value has line breaks.
    pub fn new(name: &str, value: &str) -> Option<Header> {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let value_ok = !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        (name_ok && value_ok).then(|| Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    fn is_framing(&self) -> bool {
        ["Content-Length", "Transfer-Encoding", "Connection"]
            .iter()
            .any(|f| self.name.eq_ignore_ascii_case(f))
    }
}

/// A response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `body` and status 200.
    pub fn from_data(body: Vec<u8>) -> Response {
        Response {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    /// A plain-text response with status 200.
    pub fn from_string(body: impl Into<String>) -> Response {
        Response::from_data(body.into().into_bytes())
            .with_header(crate::header("Content-Type", "text/plain; charset=utf-8"))
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Response {
        Response::from_data(Vec::new()).with_status_code(status)
    }

    /// The same response with another status.
    pub fn with_status_code(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The same response with one more field; a second `Content-Type` replaces the first,
    /// and framing fields are ignored (the server sets them).
    pub fn with_header(mut self, header: Header) -> Response {
        if header.is_framing() {
            return self;
        }
        if header.name.eq_ignore_ascii_case("Content-Type") {
            self.headers
                .retain(|h| !h.name.eq_ignore_ascii_case("Content-Type"));
        }
        self.headers.push(header);
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The bytes on the wire: head, and the body unless `head_only` (an answer to `HEAD`).
    pub(crate) fn encode(&self, http11: bool, head_only: bool, close: bool) -> Vec<u8> {
        let mut out = head(http11, self.status, &self.headers, close);
        // 1xx, 204 and 304 have no body and no length (RFC 9110 §8.6).
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        if !bodiless {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless && !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A status line and fields, without the blank line that ends the head.
pub(crate) fn head(http11: bool, status: u16, headers: &[Header], close: bool) -> Vec<u8> {
    let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    let mut out = format!(
        "{version} {status} {}\r\nDate: {}\r\n",
        reason(status),
        http_date(SystemTime::now())
    );
    for h in headers {
        out.push_str(&h.name);
        out.push_str(": ");
        out.push_str(&h.value);
        out.push_str("\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.into_bytes()
}

/// The reason phrase of a status (informative only; clients go by the code).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// `Date` in IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month (1-12) and day of a count of days since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_imf_fixdate() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_response_is_framed_by_the_server() {
        let r = Response::from_string("hi")
            .with_header(crate::header("Content-Length", "99"))
            .with_header(crate::header("Content-Type", "application/json"))
            .with_status_code(404);
        let wire = String::from_utf8(r.encode(true, false, true)).unwrap();
        assert!(
            wire.starts_with("HTTP/1.1 404 Not Found\r\nDate: "),
            "{wire}"
        );
        assert!(wire.ends_with("Content-Type: application/json\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"), "{wire}");
        assert!(
            !wire.contains("text/plain") && !wire.contains("99"),
            "{wire}"
        );
        let head_only = String::from_utf8(r.encode(true, true, false)).unwrap();
        assert!(
            head_only.ends_with("Content-Length: 2\r\n\r\n"),
            "{head_only}"
        );
        let none = String::from_utf8(Response::empty(204).encode(false, false, false)).unwrap();
        assert!(
            none.starts_with("HTTP/1.0 204 No Content\r\n") && !none.contains("Content-Length")
        );
    }

    #[test]
    fn header_fields_cannot_carry_line_breaks() {
        assert!(Header::new("X-A", "ok").is_some());
        assert!(Header::new("X-A", "a\r\nSet-Cookie: x").is_none());
        assert!(Header::new("X A", "v").is_none());
    }
}
