//! Who holds the server's connections. Every connection takes a seat: the seats are counted
//! in all and per client address, and a connection waiting for its next request (or its
//! first) is idle and may be closed to seat a new one when the server is full.
//!
//! Without this, a client that opened [`Limits::max_connections`] connections and sent
//! nothing held the server for the idle timeout, again and again; now idle connections
//! make room, and one address holds at most [`Limits::max_connections_per_peer`] (a client
//! trickling requests to keep its connections busy needs many addresses to fill the server).
//! An address at its share gets a seat by closing its own longest-idle connection (the
//! browsers of an office behind one NAT keep connections open between requests); it is
//! refused only when all of its connections are busy.
//! 127.0.0.1 and ::1 are not counted per address: a local reverse proxy, the keeper's SSH
//! tunnel and the hive's own proxy to its workers (with the default `worker_host`) all
//! connect from there. IPv6 clients count per /64, the block one host usually gets.
//!
//! Closing idle connections is bounded: while an eighth of the seats belong to connections
//! closed but not yet ended, new ones are refused, so a flood of connections cannot grow
//! the threads beyond the limit by evicting each other.
//!
//! [`Limits::max_connections`]: super::Limits::max_connections
//! [`Limits::max_connections_per_peer`]: super::Limits::max_connections_per_peer

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

/// The seats of one server.
pub(crate) struct Pool {
    max: usize,
    per_peer: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections open, an evicted one until its thread has ended.
    open: usize,
    /// Connections open per client address (127.0.0.1 and ::1 not counted).
    by_peer: HashMap<IpAddr, usize>,
    /// The idle connections, the longest idle first, with the address each counts against.
    idle: BTreeMap<u64, (Arc<TcpStream>, Option<IpAddr>)>,
    /// Connections closed to make room whose threads have not ended yet (their idle keys).
    closing: HashSet<u64>,
    /// Of those, how many each address has: they no longer count in its share.
    closing_by_peer: HashMap<IpAddr, usize>,
    /// Since the server started: connections refused with every seat busy, refused for
    /// their address's share, and idle ones closed to make room.
    refused_busy: u64,
    refused_per_address: u64,
    closed_idle: u64,
    /// Key of the next connection to become idle.
    next_idle: u64,
}

impl State {
    /// Connections of `peer` that count in its share (not those being closed).
    fn held_by(&self, peer: IpAddr) -> usize {
        let all = self.by_peer.get(&peer).copied().unwrap_or(0);
        all - self.closing_by_peer.get(&peer).copied().unwrap_or(0)
    }

    /// The longest-idle connection (of `peer` only, when given), if closing one more
    /// stays within `max_closing`.
    fn oldest_idle(&self, peer: Option<IpAddr>, max_closing: usize) -> Option<u64> {
        if self.closing.len() >= max_closing {
            return None;
        }
        match peer {
            None => self.idle.keys().next().copied(),
            Some(p) => self
                .idle
                .iter()
                .find(|(_, (_, of))| *of == Some(p))
                .map(|(k, _)| *k),
        }
    }

    /// Closes an idle connection to make room: its thread sees the end of the stream and
    /// gives the seat back.
    fn close_idle(&mut self, key: u64) {
        let Some((stream, peer)) = self.idle.remove(&key) else {
            return;
        };
        let _ = stream.shutdown(Shutdown::Both);
        self.closing.insert(key);
        if let Some(p) = peer {
            *self.closing_by_peer.entry(p).or_insert(0) += 1;
        }
        self.closed_idle += 1;
    }
}

/// Why a connection was not seated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every seat is taken by a connection in the middle of a request, or by one closed
    /// to make room that has not ended yet.
    Full { max: usize },
    /// The client's address (or IPv6 /64) holds its share already.
    PeerFull { peer: String, max: usize },
}

/// A connection's seat; given back when dropped.
pub(crate) struct Seat {
    pool: Arc<Pool>,
    /// The address it counts against, if any.
    counted: Option<IpAddr>,
    /// Its key among the idle, while idle.
    idle: Option<u64>,
}

impl Pool {
    pub(crate) fn new(max: usize, per_peer: usize) -> Pool {
        Pool {
            max,
            per_peer,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counts for metrics.
    pub(crate) fn stats(&self) -> super::ConnectionStats {
        let st = self.lock();
        super::ConnectionStats {
            open: st.open,
            refused_busy: st.refused_busy,
            refused_per_address: st.refused_per_address,
            closed_idle: st.closed_idle,
        }
    }

    /// Seats a new connection from `peer`: closes the longest-idle connection when the
    /// server is full, refuses when none is idle or `peer` holds its share.
    pub(crate) fn seat(self: &Arc<Self>, peer: IpAddr) -> Result<Seat, Refused> {
        let counted = peer_key(peer);
        let max_closing = self.max.div_ceil(8);
        let mut st = self.lock();
        if let Some(p) = counted {
            if st.held_by(p) >= self.per_peer {
                let Some(key) = st.oldest_idle(Some(p), max_closing) else {
                    st.refused_per_address += 1;
                    return Err(Refused::PeerFull {
                        peer: describe(p),
                        max: self.per_peer,
                    });
                };
                st.close_idle(key);
                tracing::debug!(
                    peer = %describe(p),
                    "address at its share: closed its longest-idle connection"
                );
            }
        }
        if st.open - st.closing.len() >= self.max {
            let Some(key) = st.oldest_idle(None, max_closing) else {
                st.refused_busy += 1;
                return Err(Refused::Full { max: self.max });
            };
            st.close_idle(key);
            tracing::debug!(
                open = st.open,
                "server full: closed the longest-idle connection"
            );
        }
        st.open += 1;
        if let Some(p) = counted {
            *st.by_peer.entry(p).or_insert(0) += 1;
        }
        Ok(Seat {
            pool: Arc::clone(self),
            counted,
            idle: None,
        })
    }
}

impl Seat {
    /// The connection waits for a request: it may be closed to make room.
    pub(crate) fn idle(&mut self, stream: &Arc<TcpStream>) {
        let mut st = self.pool.lock();
        if let Some(k) = self.idle.take() {
            st.idle.remove(&k);
        }
        let k = st.next_idle;
        st.next_idle += 1;
        st.idle.insert(k, (Arc::clone(stream), self.counted));
        self.idle = Some(k);
    }

    /// A request has begun: the connection is no longer idle. False when it was closed
    /// to make room first: then the request must not be handled (nobody would get the
    /// answer).
    pub(crate) fn busy(&mut self) -> bool {
        let Some(k) = self.idle else {
            return true;
        };
        let mut st = self.pool.lock();
        if st.closing.contains(&k) {
            return false; // the key stays: the drop counts the connection out
        }
        st.idle.remove(&k);
        self.idle = None;
        true
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(k) = self.idle.take() {
            st.idle.remove(&k);
            if st.closing.remove(&k) {
                if let Some(p) = self.counted {
                    if let Some(n) = st.closing_by_peer.get_mut(&p) {
                        *n -= 1;
                        if *n == 0 {
                            st.closing_by_peer.remove(&p);
                        }
                    }
                }
            }
        }
        st.open -= 1;
        if let Some(p) = self.counted {
            if let Some(n) = st.by_peer.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    st.by_peer.remove(&p);
                }
            }
        }
    }
}

/// What a client's connections are counted under: its IPv4 address (also when mapped
/// into IPv6) or its IPv6 /64; none for 127.0.0.1 and ::1, where local proxies connect from.
fn peer_key(peer: IpAddr) -> Option<IpAddr> {
    match peer {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => peer_key(IpAddr::V4(v4)),
            None if a == Ipv6Addr::LOCALHOST => None,
            None => Some(IpAddr::V6(Ipv6Addr::from(
                u128::from(a) & (u128::MAX << 64),
            ))),
        },
        IpAddr::V4(a) if a == Ipv4Addr::LOCALHOST => None,
        IpAddr::V4(a) => Some(IpAddr::V4(a)),
    }
}

/// A counted key as messages name it.
fn describe(key: IpAddr) -> String {
    match key {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("{a}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A connected socket pair: (the server's side, the client's side).
    fn pair(l: &TcpListener) -> (Arc<TcpStream>, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (Arc::new(l.accept().unwrap().0), c)
    }

    #[test]
    fn a_full_pool_closes_its_longest_idle_connection_and_refuses_when_none_is_idle() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let pool = Arc::new(Pool::new(2, 10));
        let (s1, mut c1) = pair(&l);
        let (s2, _c2) = pair(&l);
        let mut a = pool.seat(ip("10.0.0.1")).unwrap();
        let mut b = pool.seat(ip("10.0.0.2")).unwrap();
        a.idle(&s1);
        b.idle(&s2);
        // Re-idling b after a request keeps a the longest idle.
        b.busy();
        b.idle(&s2);
        let c = pool.seat(ip("10.0.0.3")).unwrap();
        // a's socket was shut down: its client reads the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut c1, &mut buf).unwrap(), 0);
        assert_eq!(pool.stats().open, 3, "a counts until its thread ends");
        drop(a);
        b.busy();
        assert_eq!(
            pool.seat(ip("10.0.0.4")).err(),
            Some(Refused::Full { max: 2 }),
            "b and c are busy"
        );
        drop((b, c));
        assert_eq!(
            pool.stats(),
            super::super::ConnectionStats {
                open: 0,
                refused_busy: 1,
                refused_per_address: 0,
                closed_idle: 1
            }
        );
    }

    #[test]
    fn one_address_holds_its_share_but_local_proxies_are_not_counted() {
        let pool = Arc::new(Pool::new(100, 2));
        let seats: Vec<Seat> = (0..2)
            .map(|_| pool.seat(ip("192.0.2.7")).unwrap())
            .collect();
        assert_eq!(
            pool.seat(ip("192.0.2.7")).err(),
            Some(Refused::PeerFull {
                peer: "192.0.2.7".into(),
                max: 2
            })
        );
        assert!(pool.seat(ip("192.0.2.8")).is_ok(), "another address");
        let local: Vec<Seat> = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
            .iter()
            .flat_map(|a| (0..3).map(|_| pool.seat(ip(a)).unwrap()))
            .collect();
        assert_eq!(local.len(), 9);
        let other_loopback: Vec<Seat> = (0..2)
            .map(|_| pool.seat(ip("127.0.0.2")).unwrap())
            .collect();
        assert!(
            pool.seat(ip("127.0.0.2")).is_err(),
            "only 127.0.0.1 and ::1 are exempt"
        );
        drop(other_loopback);
        drop(seats);
        assert!(pool.seat(ip("192.0.2.7")).is_ok(), "seats given back");
        // IPv6: one /64 is one client.
        let v6: Vec<Seat> = ["2001:db8:1:2::5", "2001:db8:1:2:ffff::9"]
            .iter()
            .map(|a| pool.seat(ip(a)).unwrap())
            .collect();
        assert_eq!(
            pool.seat(ip("2001:db8:1:2::77")).err(),
            Some(Refused::PeerFull {
                peer: "2001:db8:1:2::/64".into(),
                max: 2
            })
        );
        assert!(pool.seat(ip("2001:db8:1:3::5")).is_ok(), "another /64");
        drop(v6);
    }

    #[test]
    fn an_address_at_its_share_closes_its_own_longest_idle_connection_not_anothers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let pool = Arc::new(Pool::new(100, 2));
        let (other_s, mut other_c) = pair(&l);
        let mut other = pool.seat(ip("192.0.2.9")).unwrap();
        other.idle(&other_s); // idle the longest, but of another address
        let (s1, mut c1) = pair(&l);
        let (s2, mut c2) = pair(&l);
        let mut a = pool.seat(ip("192.0.2.7")).unwrap();
        let mut b = pool.seat(ip("192.0.2.7")).unwrap();
        a.idle(&s1);
        b.idle(&s2);
        let c = pool.seat(ip("192.0.2.7")).expect("a's seat");
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut c1, &mut buf).unwrap(), 0);
        // While a's thread has not ended, b (idle) makes room for the next.
        let d = pool.seat(ip("192.0.2.7")).expect("b's seat");
        assert_eq!(std::io::Read::read(&mut c2, &mut buf).unwrap(), 0);
        assert!(!a.busy() && !b.busy(), "both closed");
        // c and d are not idle: the address is refused, the other address untouched.
        assert_eq!(
            pool.seat(ip("192.0.2.7")).err(),
            Some(Refused::PeerFull {
                peer: "192.0.2.7".into(),
                max: 2
            })
        );
        assert!(
            other.busy(),
            "another address's connection is never closed for it"
        );
        other_c.set_nonblocking(true).unwrap();
        assert!(
            std::io::Read::read(&mut other_c, &mut buf).is_err(),
            "still open"
        );
        drop((a, b));
        assert_eq!(pool.stats().open, 3);
        assert_eq!(
            (pool.stats().closed_idle, pool.stats().refused_per_address),
            (2, 1)
        );
        drop((c, d));
        assert!(pool.seat(ip("192.0.2.7")).is_ok());
    }

    #[test]
    fn a_connection_closed_as_its_request_began_is_not_served_and_closing_is_bounded() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // 8 seats: at most one may be closing at a time.
        let pool = Arc::new(Pool::new(8, 100));
        let mut clients = Vec::new();
        let mut seats: Vec<Seat> = (0..8)
            .map(|i| {
                let (s, c) = pair(&l);
                clients.push(c);
                let mut seat = pool.seat(ip(&format!("10.0.0.{i}"))).unwrap();
                seat.idle(&s);
                seat
            })
            .collect();
        // The newcomer closes seat 0, whose request had just begun: it must not be handled.
        let _new = pool.seat(ip("10.0.1.1")).unwrap();
        assert!(!seats[0].busy(), "closed to make room");
        assert!(seats[1].busy(), "still seated");
        // Seat 0's thread has not ended: no second connection is closed meanwhile.
        assert_eq!(
            pool.seat(ip("10.0.1.2")).err(),
            Some(Refused::Full { max: 8 })
        );
        seats.remove(0);
        assert!(
            pool.seat(ip("10.0.1.3")).is_ok(),
            "closing again once it ended"
        );
    }
}
