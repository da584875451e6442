//! A request body as it arrives after the head: `Content-Length` bytes or chunks
//! (RFC 9112 §7.1), read from the connection's buffered reader and never past the body's
//! end, so the next request on the connection starts where this one stopped.

use std::io::{self, BufRead, Read};

use super::head::Framing;

/// Longest chunk-size line (size and extensions), bytes.
const MAX_CHUNK_LINE: u64 = 1024;
/// Largest trailer section, bytes.
const MAX_TRAILERS: usize = 8 << 10;

/// Where a body reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// This many bytes of a `Content-Length` body are left.
    Length(u64),
    /// Inside a chunked body: bytes left in the current chunk, and whether the CRLF that
    /// ends a chunk's data is still to be read.
    Chunked { left: u64, crlf: bool },
    /// The whole body has been read.
    Done,
}

impl Body {
    /// The reader's start for a head's framing.
    pub fn new(framing: Framing) -> Body {
        match framing {
            Framing::None => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked {
                left: 0,
                crlf: false,
            },
        }
    }

    /// Reads body bytes into `buf`; 0 at the body's end.
    pub fn read(&mut self, r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match *self {
                Body::Done => return Ok(0),
                Body::Length(0) => {
                    *self = Body::Done;
                    return Ok(0);
                }
                Body::Length(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let got = read_some(r, &mut buf[..want])?;
                    *self = Body::Length(left - got as u64);
                    return Ok(got);
                }
                Body::Chunked { left: 0, crlf } => {
                    if crlf {
                        expect_crlf(r)?;
                    }
                    let size = chunk_size(r)?;
                    if size == 0 {
                        skip_trailers(r)?;
                        *self = Body::Done;
                        return Ok(0);
                    }
                    *self = Body::Chunked {
                        left: size,
                        crlf: true,
                    };
                }
                Body::Chunked { left, crlf } => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let got = read_some(r, &mut buf[..want])?;
                    *self = Body::Chunked {
                        left: left - got as u64,
                        crlf,
                    };
                    return Ok(got);
                }
            }
        }
    }

    /// Reads and discards the rest of the body, at most `limit` bytes; true when the body
    /// ended within it (the connection can carry another request).
    pub fn skip(&mut self, r: &mut impl BufRead, limit: u64) -> bool {
        let mut buf = [0u8; 8192];
        let mut skipped = 0u64;
        while skipped <= limit {
            match self.read(r, &mut buf) {
                Ok(0) => return true,
                Ok(n) => skipped += n as u64,
                Err(_) => return false,
            }
        }
        false
    }
}

fn read_some(r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    match r.read(buf)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed the connection before sending the whole body",
        )),
        n => Ok(n),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn line(r: &mut impl BufRead, limit: u64) -> io::Result<Vec<u8>> {
    let mut l = Vec::new();
    r.by_ref().take(limit).read_until(b'\n', &mut l)?;
    if l.last() != Some(&b'\n') {
        return Err(if l.len() as u64 >= limit {
            invalid("a chunk line of the request body is too long")
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection inside a chunked body",
            )
        });
    }
    l.pop();
    if l.last() == Some(&b'\r') {
        l.pop();
    }
    Ok(l)
}

fn expect_crlf(r: &mut impl BufRead) -> io::Result<()> {
    if line(r, 2)?.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            "a chunk of the request body is longer than its size",
        ))
    }
}

fn chunk_size(r: &mut impl BufRead) -> io::Result<u64> {
    let l = line(r, MAX_CHUNK_LINE)?;
    let l = String::from_utf8_lossy(&l);
    let hex = l.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "a chunk size of the request body is not hexadecimal",
        ));
    }
    u64::from_str_radix(hex, 16).map_err(|_| invalid("a chunk size is too large"))
}

fn skip_trailers(r: &mut impl BufRead) -> io::Result<()> {
    let mut total = 0;
    loop {
        let l = line(r, MAX_CHUNK_LINE)?;
        if l.is_empty() {
            return Ok(());
        }
        total += l.len();
        if total > MAX_TRAILERS {
            return Err(invalid("the request body's trailers are too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(framing: Framing, wire: &[u8]) -> (io::Result<Vec<u8>>, Vec<u8>) {
        let mut r = io::BufReader::with_capacity(3, wire);
        let mut body = Body::new(framing);
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        let res = loop {
            match body.read(&mut r, &mut buf) {
                Ok(0) => break Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        (res, rest)
    }

    #[test]
    fn a_length_body_stops_at_its_end() {
        let (body, rest) = read_all(Framing::Length(5), b"hello NEXT");
        assert_eq!(body.unwrap(), b"hello");
        assert_eq!(rest, b" NEXT");
    }

    #[test]
    fn chunks_with_extensions_and_trailers_are_joined() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, rest) = read_all(Framing::Chunked, wire);
        assert_eq!(body.unwrap(), b"hello, world");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn short_or_malformed_bodies_are_errors() {
        let (body, _) = read_all(Framing::Length(10), b"short");
        assert_eq!(body.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"2\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
        ] {
            let (body, _) = read_all(Framing::Chunked, wire);
            assert!(body.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let (body, _) = read_all(Framing::Chunked, b"5\r\nhel");
        assert_eq!(body.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn skip_drains_a_small_body_and_gives_up_on_a_large_one() {
        let mut r = io::BufReader::new(&b"0123456789NEXT"[..]);
        let mut body = Body::new(Framing::Length(10));
        assert!(body.skip(&mut r, 100));
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
        let big = vec![b'x'; 100_000];
        let mut body = Body::new(Framing::Length(100_000));
        assert!(!body.skip(&mut io::BufReader::new(&big[..]), 10_000));
    }
}
