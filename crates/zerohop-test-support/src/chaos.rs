//! A userspace chaos proxy for UDP: the kernel here has no netem, so tests put this
//! between a client and a server to drop, duplicate, delay and reorder datagrams.
//!
//! Clients send to [`ChaosProxy::local_addr`]; each client gets its own socket towards
//! the upstream server, so replies find their way back. Every datagram's fate comes
//! from a seeded [`Chaos`] per direction, so the same seed and the same traffic replay
//! the same faults.
//!
//! ```no_run
//! use zerohop_proto::chaos::ChaosSpec;
//! use zerohop_test_support::chaos::ChaosProxy;
//!
//! let server: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
//! let spec = ChaosSpec::parse("loss:0.1,reorder:0.05,dup:0.01,delay:2ms").unwrap();
//! let proxy = ChaosProxy::start("127.0.0.1:0".parse().unwrap(), server, spec, 7).unwrap();
//! // … point the client at proxy.local_addr() …
//! let stats = proxy.stop();
//! println!("dropped {} of {}", stats.dropped, stats.received);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerohop_proto::chaos::{Chaos, ChaosSpec, Fate};

/// What the proxy did, both directions together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    pub received: u64,
    pub dropped: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
    /// Datagrams sent on (copies included).
    pub forwarded: u64,
}

/// A running proxy; [`ChaosProxy::stop`] ends it.
#[derive(Debug)]
pub struct ChaosProxy {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ChaosStats>>,
    thread: Option<JoinHandle<()>>,
}

/// A datagram waiting for its time: when, in what order, where to, and its bytes.
type Held = (Instant, u64, Route, Vec<u8>);

/// Where a held datagram goes: to the server through a client's socket, or back to a client.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Up(SocketAddr),
    Down(SocketAddr),
}

impl ChaosProxy {
    /// Listens on `listen` and forwards to `upstream` with `spec`'s faults, seeded by `seed`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, spec: ChaosSpec, seed: u64) -> io::Result<ChaosProxy> {
        let front = UdpSocket::bind(listen)?;
        front.set_nonblocking(true)?;
        let local = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ChaosStats::default()));
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("zerohop-chaos".into())
            .spawn(move || run(front, upstream, spec, seed, &s, &st))?;
        Ok(ChaosProxy { local, stop, stats, thread: Some(thread) })
    }

    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What it did so far.
    pub fn stats(&self) -> ChaosStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops it (held datagrams are discarded); returns what it did.
    pub fn stop(mut self) -> ChaosStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(
    front: UdpSocket,
    upstream: SocketAddr,
    spec: ChaosSpec,
    seed: u64,
    stop: &AtomicBool,
    stats: &Mutex<ChaosStats>,
) {
    // One decider per direction, so that replies do not shift the requests' fates.
    let (mut up_chaos, mut down_chaos) = (Chaos::new(spec, seed), Chaos::new(spec, seed ^ 0x5eed));
    let mut clients: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let timeout = held.peek().map_or(Duration::from_millis(20), |Reverse((due, ..))| {
            due.saturating_duration_since(now).min(Duration::from_millis(20))
        });
        let mut fds: Vec<libc::pollfd> = std::iter::once(front.as_raw_fd())
            .chain(clients.values().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of pollfds for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_micros().div_ceil(1000) as i32) };
        let mut schedule = |fate: Fate, route: Route, bytes: &[u8], st: &mut ChaosStats| {
            st.received += 1;
            match fate {
                Fate::Drop => st.dropped += 1,
                Fate::Deliver { copies, delay, .. } => {
                    if copies > 1 {
                        st.duplicated += 1;
                    }
                    for _ in 0..copies {
                        order += 1;
                        let route = match &route {
                            Route::Up(c) => Route::Up(*c),
                            Route::Down(c) => Route::Down(*c),
                        };
                        held.push(Reverse((Instant::now() + delay, order, route, bytes.to_vec())));
                    }
                }
            }
        };
        let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
        // Client → server.
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(from) {
                let Ok(sock) = UdpSocket::bind(local_towards(upstream))
                    .and_then(|s| s.connect(upstream).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                else {
                    continue;
                };
                slot.insert(sock);
            }
            schedule(up_chaos.decide(), Route::Up(from), &buf[..n], &mut st);
        }
        // Server → clients.
        for (client, sock) in &clients {
            while let Ok(n) = sock.recv(&mut buf) {
                schedule(down_chaos.decide(), Route::Down(*client), &buf[..n], &mut st);
            }
        }
        // What is due.
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Some(Reverse((_, _, route, bytes))) = held.pop() else { break };
            let sent = match route {
                Route::Up(client) => clients.get(&client).map(|s| s.send(&bytes)),
                Route::Down(client) => Some(front.send_to(&bytes, client)),
            };
            if matches!(sent, Some(Ok(_))) {
                st.forwarded += 1;
            }
        }
    }
}

/// The address to bind a socket that talks to `upstream`: loopback for a loopback
/// server, otherwise any address of its family.
fn local_towards(upstream: SocketAddr) -> SocketAddr {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let ip = upstream.ip();
    let local = match ip {
        _ if ip.is_loopback() => ip,
        std::net::IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(local, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_udp::{PipelineConfig, UdpPipeline};

    /// A sender that puts one message in each datagram, and a receiver.
    fn pair(spec: &str, seed: u64) -> (UdpPipeline, UdpPipeline, ChaosProxy) {
        let rx = UdpPipeline::bind(PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![])).unwrap();
        let proxy = ChaosProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            rx.local_addr().unwrap(),
            ChaosSpec::parse(spec).unwrap(),
            seed,
        )
        .unwrap();
        // (Only datagrams one way through the proxy: no flow reports back.)
        let tx = UdpPipeline::bind(PipelineConfig {
            flush_interval: Duration::ZERO,
            flow_control: false,
            ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![proxy.local_addr()])
        })
        .unwrap();
        (tx, rx, proxy)
    }

    fn drain(rx: &mut UdpPipeline, quiet: Duration) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if rx.poll_recv(|r| got.push((r.seq, r.message.to_vec()))).unwrap() > 0 {
                last = Instant::now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        got
    }

    #[test]
    fn losses_are_exactly_the_seeded_ones() {
        let (mut tx, mut rx, proxy) = pair("loss:0.2", 7);
        let n = 2000u32;
        for i in 0..n {
            tx.publish(&i.to_le_bytes()).unwrap();
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1)); // stay under the buffers
            }
        }
        let got = drain(&mut rx, Duration::from_millis(300));
        // The same seed predicts exactly which datagrams survive.
        let mut chaos = Chaos::new(ChaosSpec::parse("loss:0.2").unwrap(), 7);
        let expected: Vec<u32> = (0..n).filter(|_| chaos.decide() != Fate::Drop).collect();
        let received: Vec<u32> = got.iter().map(|(_, m)| u32::from_le_bytes(m[..].try_into().unwrap())).collect();
        assert_eq!(received, expected);
        let stats = proxy.stop();
        assert_eq!((stats.received, stats.dropped), (u64::from(n), u64::from(n) - expected.len() as u64));
        // The receiver saw the gaps (all but any trailing ones, which no later datagram reveals).
        let trailing = (0..n).rev().take_while(|i| !expected.contains(i)).count() as u64;
        assert_eq!(rx.metrics().lost + trailing, stats.dropped);
    }

    #[test]
    fn duplicates_and_reordering_are_counted_and_nothing_is_lost() {
        let (mut tx, mut rx, proxy) = pair("dup:0.1,reorder:0.2,reorder_by:2ms,delay:1ms", 11);
        let n = 1000u32;
        for i in 0..n {
            tx.publish(&i.to_le_bytes()).unwrap();
            std::thread::sleep(Duration::from_micros(50)); // so that held datagrams are overtaken
        }
        let got = drain(&mut rx, Duration::from_millis(300));
        let mut received: Vec<u32> = got.iter().map(|(_, m)| u32::from_le_bytes(m[..].try_into().unwrap())).collect();
        let in_order = received.windows(2).all(|w| w[0] < w[1]);
        received.sort_unstable();
        received.dedup();
        assert_eq!(received, (0..n).collect::<Vec<_>>(), "every message arrives once");
        let stats = proxy.stop();
        let m = rx.metrics();
        assert!(stats.duplicated > 50, "{stats:?}");
        assert_eq!(m.duplicates, stats.duplicated, "each extra copy is counted as a duplicate");
        assert!(!in_order && m.late > 0, "reordering shows: late {}", m.late);
        assert_eq!(m.lost, 0);
    }
}
