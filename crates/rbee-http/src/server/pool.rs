//! Who holds the server's connections. Every connection takes a seat: the seats are counted
//! in all and per client address, and a connection waiting for its next request (or its
//! first) is idle and may be closed to seat a new one when the server is full.
//!
//! Without this, a client that opened [`Limits::max_connections`] connections and sent
//! nothing held the server for the idle timeout, again and again; now idle connections
//! make room, and one address holds at most [`Limits::max_connections_per_peer`] (a client
//! trickling requests to keep its connections busy needs many addresses to fill the server).
//! 127.0.0.1 and ::1 are not counted per address: a local reverse proxy, the keeper's SSH
//! tunnel and the hive's own proxy to its workers all connect from there.
//!
//! [`Limits::max_connections`]: super::Limits::max_connections
//! [`Limits::max_connections_per_peer`]: super::Limits::max_connections_per_peer

use std::collections::{BTreeMap, HashMap};
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
    /// The idle connections, the longest idle first.
    idle: BTreeMap<u64, Arc<TcpStream>>,
    /// Key of the next connection to become idle.
    next_idle: u64,
}

/// Why a connection was not seated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every seat is taken by a connection in the middle of a request.
    Full { max: usize },
    /// The client's address holds its share already.
    PeerFull { peer: IpAddr, max: usize },
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

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }

    /// Seats a new connection from `peer`: closes the longest-idle connection when the
    /// server is full, refuses when none is idle or `peer` holds its share.
    pub(crate) fn seat(self: &Arc<Self>, peer: IpAddr) -> Result<Seat, Refused> {
        let counted = (!is_local_proxy(peer)).then_some(peer);
        let mut st = self.lock();
        if let Some(p) = counted {
            if st.by_peer.get(&p).copied().unwrap_or(0) >= self.per_peer {
                return Err(Refused::PeerFull {
                    peer: p,
                    max: self.per_peer,
                });
            }
        }
        if st.open >= self.max {
            let Some((_, oldest)) = st.idle.pop_first() else {
                return Err(Refused::Full { max: self.max });
            };
            // Its thread sees the end of the stream and gives the seat back.
            let _ = oldest.shutdown(Shutdown::Both);
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
        st.idle.insert(k, Arc::clone(stream));
        self.idle = Some(k);
    }

    /// A request has begun: the connection is no longer idle.
    pub(crate) fn busy(&mut self) {
        if let Some(k) = self.idle.take() {
            self.pool.lock().idle.remove(&k);
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(k) = self.idle.take() {
            st.idle.remove(&k);
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

/// The addresses a local proxy's connections come from (as themselves or IPv4-mapped).
fn is_local_proxy(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(a) => a == Ipv4Addr::LOCALHOST,
        IpAddr::V6(a) => {
            a == Ipv6Addr::LOCALHOST || a.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
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
        assert_eq!(pool.open(), 3, "a counts until its thread ends");
        drop(a);
        b.busy();
        assert_eq!(
            pool.seat(ip("10.0.0.4")).err(),
            Some(Refused::Full { max: 2 }),
            "b and c are busy"
        );
        drop((b, c));
        assert_eq!(pool.open(), 0);
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
                peer: ip("192.0.2.7"),
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
    }
}
