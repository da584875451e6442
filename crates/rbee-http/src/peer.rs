//! Whether a client that is not being written to has gone: on Linux the kernel's socket
//! table shows the server's side of a connection the client closed in `CLOSE_WAIT`. A
//! request waiting in a queue asks this about once a second, so that a client that left
//! leaves the queue too (tiny_http exposes no socket to poll).

use std::net::SocketAddr;

/// `CLOSE_WAIT` in `/proc/net/tcp`'s `st` column.
const CLOSE_WAIT: &str = "08";

/// True when the connection from `peer` to local port `port` is half-closed by the peer.
/// False when it is open, or when the socket table cannot be read (not Linux): then a
/// waiter waits until its deadline.
pub fn closed_by_peer(peer: SocketAddr, port: u16) -> bool {
    let table = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    std::fs::read_to_string(table)
        .map(|t| state_of(&t, peer, port).as_deref() == Some(CLOSE_WAIT))
        .unwrap_or(false)
}

/// The state of the connection between local `port` and `peer` in a socket table.
fn state_of(table: &str, peer: SocketAddr, port: u16) -> Option<String> {
    let remote = hex_addr(peer);
    let local_port = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let (local, rem, st) = (cols.next()?, cols.next()?, cols.next()?);
        (local.ends_with(&local_port) && rem == remote).then(|| st.to_owned())
    })
}

/// An address as the kernel's socket tables write it: the IP as 32-bit words in host
/// byte order (little-endian here), then the port, in upper-case hex.
fn hex_addr(a: SocketAddr) -> String {
    let ip = match a {
        SocketAddr::V4(v4) => format!("{:08X}", u32::from_le_bytes(v4.ip().octets())),
        SocketAddr::V6(v6) => v6
            .ip()
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn a_client_that_closes_its_side_is_seen_as_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(!closed_by_peer(peer, port), "open connection");
        drop(client);
        let t0 = Instant::now();
        while !closed_by_peer(peer, port) {
            assert!(t0.elapsed() < Duration::from_secs(2), "never seen closed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut buf = [0u8; 1];
        assert_eq!(
            server_side.read(&mut buf).unwrap(),
            0,
            "the kernel agrees: EOF"
        );
    }

    #[test]
    fn addresses_are_written_like_the_kernel_does() {
        let a: SocketAddr = "127.0.0.1:9200".parse().unwrap();
        assert_eq!(hex_addr(a), "0100007F:23F0");
        let table =
            "  sl  local_address rem_address   st\n   0: 0100007F:23F0 0100007F:D431 08 0\n";
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        assert_eq!(state_of(table, peer, 9200).as_deref(), Some("08"));
        assert_eq!(state_of(table, peer, 9201), None);
    }
}
