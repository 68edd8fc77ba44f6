//! The UDP transport: a [`zerohop_udp::UdpEndpoint`] behind the [`Transport`] trait.
//!
//! ```text
//!   publish ──► Outbox (packs, fragments) ──► sendmmsg / io_uring ──► peers
//!
//!   socket ──► I/O thread: recvmmsg / io_uring ──► Inbox (per sender) ──► receive ring ──► recv
//!                 └── also sends what waited `flush_interval`
//! ```
//!
//! Received messages land in a private shared-memory ring (a
//! [`Segment::private`], anonymous memory) with exactly the layout of the `shm://`
//! transport, so receiving over UDP works the way it does over shared memory:
//! `try_recv`, parking waits, zero-copy reads in the Node binding. Each message in it
//! starts with an [`envelope`]: who sent it and when the kernel received it. The ring is flow
//! controlled: the I/O threads stop reading the socket while the reader is half a ring
//! behind, so a burst waits in the kernel's socket buffer instead of overwriting what
//! nobody has read yet.
//!
//! Publishing runs on the caller's thread: the message is packed into the current
//! datagram, and full datagrams go out at once. A partly filled datagram goes out
//! when the caller calls [`UdpTransport::flush`], or when it has waited
//! `flush_interval` (the I/O thread's timer); a zero interval sends every message at
//! once. Receiving runs on the I/O thread, and also on the caller's thread when it
//! polls an empty ring ([`UdpTransport::pump`]), so that a spinning receiver does not
//! wait for a thread hop.
//!
//! With `receive_threads > 1`, more sockets join the port with `SO_REUSEPORT`, each with
//! its own thread (see [`zerohop_udp::ReceiverGroup`]); the kernel spreads senders over
//! them, and all of them deliver into the same ring.
//!
//! UDP stays unreliable: what the network drops is counted (sequence gaps, `lost`),
//! never retransmitted.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerohop_shm::{Backpressure, Layout, Published, Publisher, Segment, Subscriber};
use zerohop_udp::{
    EndpointConfig, Multicast, PublishError, Received, ReceiverGroup, UdpEndpoint, UdpMetrics, UringMode,
};

use crate::endpoint::{Endpoint, Target, TransportKind};
use crate::envelope;
use crate::error::{Error, ErrorCode, Result};
use crate::hub::{HubOptions, Role};
use crate::metrics::Metrics;
use crate::transport::{Delivery, Transport};

/// Largest receive ring, in bytes of address space: capacity shrinks for large slots.
/// Memory is only committed where messages are written, so a ring of 1 MiB slots
/// holding small messages costs about one page per slot.
const MAX_RING_BYTES: u64 = 1 << 30;

/// UDP settings of [`HubOptions`].
#[derive(Clone, Debug)]
pub struct UdpOptions {
    /// Where published messages go (`host:port`), besides the group of a multicast URL.
    /// Empty (and not multicast) means the hub only receives until
    /// [`UdpTransport::set_peers`].
    pub peers: Vec<String>,
    /// A partly filled datagram waits at most this long for more messages (zero: every
    /// message is sent at once).
    pub flush_interval: Duration,
    /// Datagrams per receive batch.
    pub batch: usize,
    /// Largest datagram sent, header included; sender and receivers must agree.
    pub max_datagram: usize,
    /// The receive backend.
    pub io_uring: UringMode,
    /// Sockets (and threads) receiving on the port with `SO_REUSEPORT`.
    pub receive_threads: usize,
    /// Pin receive thread `i` to core `i`.
    pub pin_threads: bool,
    /// Kernel socket buffers asked for (what was granted shows in the metrics).
    pub recv_buffer: usize,
    pub send_buffer: usize,
    /// `SO_BUSY_POLL` in µs (0: off).
    pub busy_poll_us: u32,
    /// Kernel receive timestamps (`SO_TIMESTAMPNS`), written into each message's envelope.
    pub timestamps: bool,
    /// Multicast: the interface address to join and send on (default: the kernel's pick).
    pub multicast_interface: Option<IpAddr>,
    /// Multicast: hops a datagram may travel (default 1, this link).
    pub multicast_ttl: u32,
    /// Multicast: whether members on this host receive what it sends (default true).
    pub multicast_loopback: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        let d = EndpointConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new());
        Self {
            peers: Vec::new(),
            flush_interval: d.flush_interval,
            batch: d.batch,
            max_datagram: d.max_datagram,
            io_uring: d.io_uring,
            receive_threads: 1,
            pin_threads: false,
            recv_buffer: d.socket.recv_buffer,
            send_buffer: d.socket.send_buffer,
            busy_poll_us: 0,
            timestamps: false,
            multicast_interface: None,
            multicast_ttl: 1,
            multicast_loopback: true,
        }
    }
}

/// Default largest message over UDP (the receive ring's slot size).
pub const DEFAULT_MAX_MESSAGE: u32 = 64 << 10;

/// Resolves `host:port` (an IP literal or a name) to one address, preferring the family
/// of `like` when given.
pub fn resolve(host: &str, port: u16, like: Option<&SocketAddr>) -> Result<SocketAddr> {
    let bad = |why: String| Error::new(ErrorCode::BadUrl, why);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port).to_socket_addrs().map_err(|e| bad(format!("cannot resolve {host}: {e}")))?.collect(),
    };
    let pick = like.and_then(|l| addrs.iter().find(|a| a.is_ipv4() == l.is_ipv4())).or(addrs.first());
    pick.copied().ok_or_else(|| bad(format!("{host} resolves to no address")))
}

/// Parses a peer written `host:port` or `[v6]:port`.
pub fn parse_peer(peer: &str, like: Option<&SocketAddr>) -> Result<SocketAddr> {
    let bad = || Error::new(ErrorCode::BadOption, format!("peer '{peer}' is not host:port"));
    let (host, port) = peer.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    resolve(host, port, like).map_err(|e| Error::new(ErrorCode::BadOption, e.message().to_owned()))
}

/// Called (on an I/O thread) when messages were delivered into the receive ring.
pub type OnReceive = Arc<dyn Fn() + Send + Sync>;

/// What the I/O threads and the caller's thread share.
struct Shared {
    /// `None` once the hub is shut down: the socket closes then, not when the last
    /// handle on `Shared` (a JavaScript link, say) is collected.
    io: Mutex<Option<Io>>,
    /// Wakes the I/O thread (an eventfd) to re-read its flush deadline or to stop.
    wake: OwnedFd,
    /// When the I/O thread will next look at the outbox, in µs since `epoch`
    /// (`u64::MAX`: not until something else wakes it).
    io_deadline_us: AtomicU64,
    epoch: Instant,
    stop: AtomicBool,
    /// Set by [`UdpTransport::arm`], taken by whoever delivers next.
    armed: AtomicBool,
    /// How many times the reader has read the socket itself ([`UdpLink::pump`]); the
    /// I/O thread watches it change (a counter, because reading the clock on every
    /// pump would cost more than the pump).
    pumps: AtomicU64,
    /// Set when the reader parks ([`UdpTransport::arm`]), cleared by its next pump.
    reader_parked: AtomicBool,
    /// Whether the I/O thread is leaving the socket to a pumping reader.
    io_ignores_socket: AtomicBool,
    on_receive: Mutex<Option<OnReceive>>,
}

/// The socket's pipeline and the receive ring's inlet, used under one lock.
struct Io {
    endpoint: UdpEndpoint,
    inlet: RingInlet,
}

/// Where received messages enter the receive ring, with flow control: a message goes
/// into the ring only while the slowest reader has room for it; otherwise it waits in
/// a backlog (at most one receive batch), and the socket is not read again until the
/// backlog has drained. A burst then waits in the kernel's socket buffer (4 MiB by
/// default) instead of overwriting messages nobody has read; only when that overflows
/// too does the kernel drop datagrams, which receivers count as `lost`.
struct RingInlet {
    ring: Publisher,
    /// Half the ring: read the socket only while the slowest reader is less behind.
    half: u64,
    /// Messages that found the ring full, end to end in `data`, oldest first.
    data: Vec<u8>,
    spans: std::collections::VecDeque<(usize, usize)>,
}

impl RingInlet {
    fn new(segment: Arc<Segment>) -> Self {
        Self {
            half: u64::from(segment.layout().capacity / 2),
            ring: Publisher::new(segment, Backpressure::DropNew),
            data: Vec::new(),
            spans: std::collections::VecDeque::new(),
        }
    }

    /// Whether the socket may be read (nothing is waiting for room).
    fn open(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether the ring has room for another batch: the slowest reader is less than half
    /// a ring behind. Reading only then keeps the backlog (and the waits for room that
    /// make every read wake this side) for real overload.
    fn has_room_for_a_batch(&self) -> bool {
        self.open() && self.ring.slowest_lag() < self.half
    }

    /// Writes the envelope and the message into the next slot, or into the backlog.
    fn deliver(&mut self, r: &Received<'_>) {
        let len = envelope::LEN + r.message.len();
        // The slot holds the largest message reassembled, so only room can refuse it.
        if self.spans.is_empty()
            && let Ok(Some(mut loan)) = self.ring.loan()
        {
            let slot = loan.as_mut_slice();
            envelope::Envelope::datagram(r.from, r.timestamp_ns).write(&mut slot[..envelope::LEN]);
            slot[envelope::LEN..len].copy_from_slice(r.message);
            loan.commit(len);
            return;
        }
        let start = self.data.len();
        self.data.resize(start + envelope::LEN, 0);
        envelope::Envelope::datagram(r.from, r.timestamp_ns).write(&mut self.data[start..]);
        self.data.extend_from_slice(r.message);
        self.spans.push_back((start, len));
    }

    /// Moves what the backlog holds into the ring while there is room; whether anything moved.
    fn drain(&mut self) -> bool {
        let mut moved = false;
        while let Some(&(start, len)) = self.spans.front() {
            if !matches!(self.ring.publish(&self.data[start..start + len]), Ok(Published::Sent(_))) {
                break;
            }
            self.spans.pop_front();
            moved = true;
        }
        if self.spans.is_empty() {
            self.data.clear();
        }
        moved
    }
}

/// How long an I/O thread sleeps before it looks for room in the ring again. It sleeps
/// rather than park on the ring's space futex: a parked writer would make the reader
/// wake it (a system call) after every message it reads, and the reader is at least half
/// a ring behind, so it has work for longer than this.
const ROOM_POLL: Duration = Duration::from_micros(100);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Io>> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the socket's pipeline; `ERR_CLOSED` once the hub was shut down.
    fn with_io<R>(&self, f: impl FnOnce(&mut Io) -> R) -> Result<R> {
        self.lock().as_mut().map(f).ok_or_else(closed)
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn wake_io(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; failure (the counter is
        // saturated) means a wake-up is pending anyway.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The reader is about to wait: the I/O thread must watch the socket again, now,
    /// rather than leave it to a reader that has stopped polling it.
    fn reader_parks(&self) {
        self.reader_parked.store(true, Ordering::SeqCst);
        if self.io_ignores_socket.load(Ordering::SeqCst) {
            self.wake_io();
        }
    }

    /// Tells an armed receiver that messages arrived. Called after the ring's tail moved.
    fn delivered(&self) {
        // Pairs with the fence in `arm`: either this sees `armed`, or `arm` sees the new
        // tail (a store followed by a load on each side needs SeqCst between them).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            let cb = self.on_receive.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(cb) = cb {
                cb();
            }
        }
    }

    /// Receives what waits on the socket into the ring; returns datagrams read.
    fn receive(io: &mut Io) -> io::Result<usize> {
        let Io { endpoint, inlet } = io;
        let mut total = 0;
        // A few batches per turn, so that the flush timer is not starved by a flood.
        for _ in 0..8 {
            if !inlet.has_room_for_a_batch() {
                break;
            }
            let n = endpoint.poll_recv(|r| inlet.deliver(&r))?;
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }
}

/// The hot paths of a [`UdpTransport`]: publishing and reading the socket on the
/// caller's thread. Cheap to clone; every clone works on the same socket.
#[derive(Clone)]
pub struct UdpLink {
    shared: Arc<Shared>,
    max_message: usize,
    can_publish: bool,
}

impl UdpLink {
    /// Queues `messages` under one lock (full datagrams go out at once). Returns how
    /// many were queued; stops at the first error.
    pub fn publish_all<'a>(&self, messages: impl IntoIterator<Item = &'a [u8]>) -> Result<usize> {
        if !self.can_publish {
            return Err(Error::new(ErrorCode::InvalidState, "this hub was opened with role 'subscriber'"));
        }
        let mut guard = self.shared.lock();
        let io = guard.as_mut().ok_or_else(closed)?;
        let before = io.endpoint.flush_pending();
        let mut n = 0;
        let mut result = Ok(());
        for m in messages {
            if m.len() > self.max_message {
                result = Err(Error::new(
                    ErrorCode::MessageTooLarge,
                    format!("message of {} bytes exceeds maxMessageSize {}", m.len(), self.max_message),
                ));
                break;
            }
            match io.endpoint.publish(m) {
                Ok(()) => n += 1,
                Err(PublishError::TooLarge(e)) => {
                    result = Err(Error::new(ErrorCode::MessageTooLarge, e.to_string()));
                    break;
                }
                Err(PublishError::Io(e)) => {
                    result = Err(io_error("send", e));
                    break;
                }
            }
        }
        // A datagram that started waiting: make sure the I/O thread's timer covers it.
        let deadline = if before { None } else { io.endpoint.flush_deadline() };
        drop(guard);
        if let Some(d) = deadline {
            let due = self.shared.now_us() + d.as_micros() as u64;
            if due < self.shared.io_deadline_us.load(Ordering::Acquire) {
                self.shared.wake_io();
            }
        }
        result.map(|()| n)
    }

    /// Receives on the caller's thread what waits on the socket (if no other thread is
    /// at it); returns datagrams read, or 1 if only the backlog moved into the ring.
    pub fn pump(&self) -> Result<usize> {
        // One JavaScript thread pumps a hub, so a plain increment suffices.
        let pumps = &self.shared.pumps;
        pumps.store(pumps.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        if self.shared.reader_parked.load(Ordering::Relaxed) {
            self.shared.reader_parked.store(false, Ordering::Relaxed);
        }
        let Ok(mut guard) = self.shared.io.try_lock() else { return Ok(0) };
        let io = guard.as_mut().ok_or_else(closed)?;
        let moved = io.inlet.drain();
        let n = Shared::receive(io).map_err(|e| io_error("receive", e))?;
        drop(guard);
        if moved || n > 0 {
            self.shared.delivered();
        }
        Ok(if moved { n.max(1) } else { n })
    }
}

/// A hub's UDP socket(s), I/O thread and receive ring.
pub struct UdpTransport {
    /// The hot paths, and through them the state the I/O threads share.
    link: UdpLink,
    io_thread: Option<JoinHandle<()>>,
    group: Option<ReceiverGroup>,
    segment: Arc<Segment>,
    subscriber: Option<Subscriber>,
    local: SocketAddr,
    spin: Duration,
    published: u64,
    published_bytes: u64,
    never_cancelled: AtomicBool,
}

impl core::fmt::Debug for UdpTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpTransport").field("local", &self.local).finish_non_exhaustive()
    }
}

fn closed() -> Error {
    Error::new(ErrorCode::Closed, "the hub is closed")
}

fn io_error(what: &str, e: io::Error) -> Error {
    let code = match e.kind() {
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable | io::ErrorKind::PermissionDenied => {
            ErrorCode::BadUrl
        }
        io::ErrorKind::InvalidInput => ErrorCode::BadOption,
        _ => ErrorCode::Io,
    };
    Error::new(code, format!("{what}: {e}"))
}

impl UdpTransport {
    fn shared(&self) -> &Shared {
        &self.link.shared
    }

    /// Binds `udp://host:port` (a multicast group joins it) with `options`.
    pub fn open(endpoint: &Endpoint, options: &HubOptions) -> Result<Self> {
        let Target::Host { host, port } = endpoint.target() else {
            return Err(Error::new(ErrorCode::BadUrl, "udp:// needs host:port"));
        };
        let udp = &options.udp;
        let addr = resolve(host, *port, None)?;
        let mut config = EndpointConfig::new(addr, Vec::new());
        if addr.ip().is_multicast() {
            if *port == 0 {
                return Err(Error::new(ErrorCode::BadUrl, "a multicast group needs a port"));
            }
            let mut m = Multicast::group(addr.ip());
            m.ttl = udp.multicast_ttl;
            m.loopback = udp.multicast_loopback;
            match udp.multicast_interface {
                Some(IpAddr::V4(i)) => m.interface_v4 = i,
                Some(IpAddr::V6(_)) => {
                    return Err(Error::new(ErrorCode::BadOption, "multicastInterface: give IPv6 interfaces by index"));
                }
                None => {}
            }
            config.socket.multicast = Some(m);
            // Members bind the group's port on every address; the group filters.
            config.bind = match addr.ip() {
                IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port),
                IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *port),
            };
            config.peers = vec![addr];
        }
        for p in &udp.peers {
            let peer = parse_peer(p, Some(&addr))?;
            if !config.peers.contains(&peer) {
                config.peers.push(peer);
            }
        }
        if !(1..=64).contains(&udp.receive_threads) {
            return Err(Error::new(ErrorCode::BadOption, "receiveThreads must be 1..=64"));
        }
        let max_message = options.slot_size.unwrap_or(DEFAULT_MAX_MESSAGE);
        // Each slot of the receive ring holds an envelope and then the message.
        let slot_size = max_message
            .checked_add(envelope::LEN as u32)
            .ok_or_else(|| Error::new(ErrorCode::BadOption, "slotSize is too large"))?;
        config.flush_interval = udp.flush_interval;
        config.batch = udp.batch.max(1);
        config.max_datagram = udp.max_datagram;
        config.max_message = max_message as usize;
        config.io_uring = udp.io_uring;
        config.socket.recv_buffer = udp.recv_buffer;
        config.socket.send_buffer = udp.send_buffer;
        config.socket.busy_poll_us = udp.busy_poll_us;
        config.socket.timestamps = udp.timestamps;
        config.socket.reuse_port = udp.receive_threads > 1 || config.socket.reuse_port;

        let capacity = match options.capacity {
            Some(c) => c,
            None => {
                let fit = MAX_RING_BYTES / (u64::from(slot_size) + 64);
                (4096u64.min(fit.max(16)) as u32).next_power_of_two().min(4096)
            }
        };
        let layout = Layout { slot_size, capacity, max_subscribers: 2 };
        let segment = Arc::new(Segment::private(layout)?);
        let subscriber = match options.role {
            Role::Publisher => None,
            _ => Some(Subscriber::new(segment.clone())?),
        };

        let io_endpoint = UdpEndpoint::bind(config.clone()).map_err(|e| io_error(&format!("bind {addr}"), e))?;
        let local = io_endpoint.local_addr().map_err(|e| io_error("local address", e))?;
        // SAFETY: eventfd returns a new descriptor or -1; nothing else owns it.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io_error("eventfd", io::Error::last_os_error()));
        }
        let shared = Arc::new(Shared {
            io: Mutex::new(Some(Io { endpoint: io_endpoint, inlet: RingInlet::new(segment.clone()) })),
            // SAFETY: `wake` is a fresh descriptor owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
            io_deadline_us: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            pumps: AtomicU64::new(0),
            reader_parked: AtomicBool::new(true),
            io_ignores_socket: AtomicBool::new(false),
            on_receive: Mutex::new(None),
        });
        let group = if udp.receive_threads > 1 {
            let mut group_config = config.clone();
            group_config.bind = local;
            // One inlet per receive thread, so that each thread's backlog keeps its order.
            let inlets: Arc<Vec<Mutex<RingInlet>>> =
                Arc::new((1..udp.receive_threads).map(|_| Mutex::new(RingInlet::new(segment.clone()))).collect());
            let (s, mine) = (shared.clone(), inlets.clone());
            let deliver: zerohop_udp::Deliver = Arc::new(move |i, r| {
                mine[i].lock().unwrap_or_else(|p| p.into_inner()).deliver(&r);
                s.delivered();
            });
            let s = shared.clone();
            let gate: zerohop_udp::Gate = Arc::new(move |i, timeout| {
                let inlet = inlets[i].lock().unwrap_or_else(|p| p.into_inner());
                if inlet.has_room_for_a_batch() {
                    return true;
                }
                drop(inlet);
                std::thread::sleep(timeout.min(ROOM_POLL));
                let mut inlet = inlets[i].lock().unwrap_or_else(|p| p.into_inner());
                if inlet.drain() {
                    s.delivered();
                }
                inlet.has_room_for_a_batch()
            });
            let first_core = usize::from(udp.pin_threads);
            Some(
                ReceiverGroup::start_from(
                    group_config,
                    udp.receive_threads - 1,
                    udp.pin_threads,
                    first_core,
                    deliver,
                    Some(gate),
                )
                .map_err(|e| io_error("receive threads", e))?,
            )
        } else {
            None
        };
        let s = shared.clone();
        let pin = udp.pin_threads;
        let io_thread = std::thread::Builder::new()
            .name("zerohop-udp-io".into())
            .spawn(move || {
                if pin {
                    zerohop_udp::pin_to(0);
                }
                io_loop(&s)
            })
            .map_err(|e| io_error("spawn the I/O thread", e))?;
        let link = UdpLink { shared, max_message: max_message as usize, can_publish: options.role != Role::Subscriber };
        Ok(Self {
            link,
            io_thread: Some(io_thread),
            group,
            segment,
            subscriber,
            local,
            spin: options.spin,
            published: 0,
            published_bytes: 0,
            never_cancelled: AtomicBool::new(false),
        })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The receive ring (the Node binding reads it in place).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Replaces where published messages go.
    pub fn set_peers(&self, peers: &[String]) -> Result<()> {
        let parsed = peers.iter().map(|p| parse_peer(p, Some(&self.local))).collect::<Result<Vec<_>>>()?;
        self.shared().with_io(|io| io.endpoint.set_peers(parsed))?.map_err(|e| io_error("set peers", e))
    }

    /// Sends everything queued now.
    pub fn flush(&self) -> Result<()> {
        self.shared().with_io(|io| io.endpoint.flush())?.map_err(|e| io_error("flush", e))
    }

    /// Queues `messages` (an iterator, so callers need not collect) under one lock.
    /// Returns how many were queued; stops at the first error.
    pub fn publish_all<'a>(&mut self, messages: impl IntoIterator<Item = &'a [u8]>) -> Result<usize> {
        let mut bytes = 0;
        let result = self.link.publish_all(messages.into_iter().inspect(|m| bytes += m.len()));
        let n = *result.as_ref().unwrap_or(&0);
        self.published += n as u64;
        self.published_bytes += bytes as u64;
        result
    }

    /// Receives on the caller's thread what waits on the socket (if no other thread is
    /// at it); returns datagrams read, or 1 if only the backlog moved into the ring.
    pub fn pump(&self) -> Result<usize> {
        self.link.pump()
    }

    /// A handle on the publish and pump paths that can be shared (the Node binding
    /// calls them through it, once per message).
    pub fn link(&self) -> UdpLink {
        self.link.clone()
    }

    /// Sets what runs (on an I/O thread) after messages arrive while armed.
    pub fn set_on_receive(&self, callback: Option<OnReceive>) {
        *self.shared().on_receive.lock().unwrap_or_else(|p| p.into_inner()) = callback;
    }

    /// Asks for one `on_receive` call once messages arrive; `readable` says whether the
    /// caller's cursor is already behind the ring's tail, in which case it fires now.
    pub fn arm(&self, readable_now: impl FnOnce() -> bool) {
        self.shared().armed.store(true, Ordering::SeqCst);
        self.shared().reader_parks();
        std::sync::atomic::fence(Ordering::SeqCst); // see `Shared::delivered`
        if readable_now() {
            self.shared().delivered();
        }
    }

    /// Cancels an `arm`.
    pub fn disarm(&self) {
        self.shared().armed.store(false, Ordering::SeqCst);
    }

    /// The socket's counters, with the traffic of the other receive sockets added
    /// (theirs are at most [`zerohop_udp::group::METRICS_EVERY`] old).
    pub fn udp_metrics(&self) -> UdpMetrics {
        let mut m = self.shared().with_io(|io| io.endpoint.metrics()).unwrap_or_default();
        for other in self.group.iter().flat_map(ReceiverGroup::metrics) {
            m.absorb(&other);
        }
        m
    }

    /// How many sockets receive on the port.
    pub fn receive_sockets(&self) -> usize {
        1 + self.group.as_ref().map_or(0, ReceiverGroup::len)
    }

    /// The next message into `out` (payload only), with its sender and, with
    /// `timestamps`, the kernel's receive time in ns since the Unix epoch; `None` if
    /// nothing is waiting.
    pub fn try_recv_from(&mut self, out: &mut Vec<u8>) -> Result<Option<(SocketAddr, Option<u64>)>> {
        let sub = self
            .subscriber
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))?;
        let got = sub.try_recv(out).is_some() || {
            self.pump()?;
            self.subscriber.as_mut().is_some_and(|s| s.try_recv(out).is_some())
        };
        if !got {
            return Ok(None);
        }
        let env = envelope::Envelope::read(out);
        out.drain(..envelope::LEN.min(out.len())); // the payload only
        // Every message in the ring was written with a sender; a missing one is a bug.
        let from =
            env.and_then(|e| e.from).ok_or_else(|| Error::new(ErrorCode::Io, "a received message without a sender"))?;
        Ok(Some((from, env.and_then(|e| e.timestamp_ns))))
    }

    /// Gives up the transport's own receive cursor, for a caller that reads the ring
    /// with one of its own (the Node binding reads it from JavaScript).
    pub fn release_subscriber(&mut self) {
        self.subscriber = None;
    }

    /// Stops the I/O threads (sending what is queued first). Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(t) = self.io_thread.take() {
            let _ = self.shared().with_io(|io| io.endpoint.flush());
            self.shared().stop.store(true, Ordering::SeqCst);
            self.shared().wake_io();
            let _ = t.join();
        }
        // Close the socket now; late users of `Shared` get ERR_CLOSED.
        drop(self.shared().lock().take());
        if let Some(g) = self.group.take() {
            let _ = g.stop();
        }
        self.set_on_receive(None);
    }
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long after the reader's last `pump` the I/O thread leaves the socket to it (it
/// notices the pumps stopping within twice this).
const READER_ACTIVE: Duration = Duration::from_millis(1);

/// The I/O thread: waits for datagrams, its wake-up eventfd or the flush deadline.
fn io_loop(shared: &Shared) {
    let wake_fd = shared.wake.as_raw_fd();
    let Ok(recv_fd) = shared.with_io(|io| io.endpoint.readiness_fd()) else { return };
    let (mut pumps_seen, mut pumps_changed) = (0u64, Instant::now() - READER_ACTIVE);
    while !shared.stop.load(Ordering::Acquire) {
        let pumps = shared.pumps.load(Ordering::Relaxed);
        if pumps != pumps_seen {
            (pumps_seen, pumps_changed) = (pumps, Instant::now());
        }
        let reader_pumps = || !shared.reader_parked.load(Ordering::SeqCst) && pumps_changed.elapsed() < READER_ACTIVE;
        // Shut down only after this thread stopped, so `Io` is always there; leave if not.
        let Ok((room, flush_in)) = shared.with_io(|io| (io.inlet.has_room_for_a_batch(), io.endpoint.flush_deadline()))
        else {
            return;
        };
        if !room && !reader_pumps() {
            // The ring is (half) full: leave datagrams in the socket buffer until the reader
            // makes room, but keep the flush timer running (and the lock free for publishers).
            std::thread::sleep(flush_in.unwrap_or(ROOM_POLL).min(ROOM_POLL));
            let moved = shared
                .with_io(|io| {
                    let _ = io.endpoint.poll_flush();
                    io.inlet.drain()
                })
                .unwrap_or(false);
            if moved {
                shared.delivered();
            }
            continue;
        }
        let now = shared.now_us();
        let mut timeout = {
            match flush_in {
                Some(d) => {
                    shared.io_deadline_us.store(now + d.as_micros() as u64, Ordering::Release);
                    Some(d)
                }
                None => {
                    shared.io_deadline_us.store(u64::MAX, Ordering::Release);
                    None
                }
            }
        };
        // A reader that polls the socket itself (`pump`) is faster without this thread
        // waking on every datagram (on a busy core, the two would take turns): leave the
        // socket to it until it stops or parks (`arm`).
        // Announce first, then look (as `arm` stores, then looks): either `arm` sees the
        // announcement and wakes this thread, or this thread sees that the reader parked.
        shared.io_ignores_socket.store(true, Ordering::SeqCst);
        let reader_spinning = reader_pumps();
        if reader_spinning {
            timeout = Some(timeout.map_or(READER_ACTIVE, |t| t.min(READER_ACTIVE)));
        } else {
            shared.io_ignores_socket.store(false, Ordering::SeqCst);
        }
        // poll(2) counts whole milliseconds: round up, never spin on 0.
        let timeout_ms = timeout.map_or(-1, |d| d.as_micros().div_ceil(1000).max(u128::from(!d.is_zero())) as i32);
        let mut fds = [
            libc::pollfd { fd: if reader_spinning { -1 } else { recv_fd }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake_fd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if r < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a valid u64 from our eventfd (resets it).
            unsafe { libc::read(wake_fd, (&mut count as *mut u64).cast(), 8) };
        }
        let readable = fds[0].revents != 0;
        let received = shared
            .with_io(|io| {
                let n = if readable { Shared::receive(io).unwrap_or(0) } else { 0 };
                let _ = io.endpoint.poll_flush();
                n
            })
            .unwrap_or(0);
        if received > 0 {
            shared.delivered();
        }
    }
}

impl Transport for UdpTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Udp
    }

    fn max_message_size(&self) -> usize {
        self.link.max_message
    }

    fn publish(&mut self, payload: &[u8]) -> Result<Delivery> {
        self.publish_all([payload]).map(|_| Delivery::Accepted)
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        Ok(self.try_recv_from(out)?.is_some())
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let sub = self
            .subscriber
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))?;
        // Parking on the ring (not through `arm`): the I/O thread must read the socket.
        self.link.shared.reader_parks();
        Ok(sub.wait(self.spin, timeout, &self.never_cancelled))
    }

    fn udp(&self) -> Option<&UdpTransport> {
        Some(self)
    }

    fn udp_mut(&mut self) -> Option<&mut UdpTransport> {
        Some(self)
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new(TransportKind::Udp, false);
        m.published = self.published;
        m.published_bytes = self.published_bytes;
        m.with_subscriber(self.subscriber.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hub;

    fn opts(peers: Vec<String>) -> HubOptions {
        HubOptions { udp: UdpOptions { peers, ..UdpOptions::default() }, ..HubOptions::default() }
    }

    fn recv(hub: &mut Hub) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(hub.recv(&mut out, Some(Duration::from_secs(5))).unwrap(), "nothing arrived");
        out
    }

    #[test]
    fn unicast_both_ways_and_a_lone_message_is_flushed_by_the_timer() {
        let mut a = Hub::open("udp://127.0.0.1:0", opts(vec![])).unwrap();
        let a_addr = a.udp().unwrap().local_addr().to_string();
        let mut b = Hub::open("udp://127.0.0.1:0", opts(vec![a_addr])).unwrap();
        let b_addr = b.udp().unwrap().local_addr().to_string();
        a.udp().unwrap().set_peers(&[b_addr]).unwrap();
        // No flush: the I/O thread's timer sends it within the interval.
        b.publish(b"ping").unwrap();
        assert_eq!(recv(&mut a), b"ping");
        a.publish(b"pong").unwrap();
        assert_eq!(recv(&mut b), b"pong");
        let m = a.metrics();
        assert_eq!((m.transport, m.published, m.received), (TransportKind::Udp, 1, 1));
        // Who sent it, and (asked for) when it arrived.
        let timed = HubOptions { udp: UdpOptions { timestamps: true, ..UdpOptions::default() }, ..opts(vec![]) };
        let mut c = Hub::open("udp://127.0.0.1:0", timed).unwrap();
        b.udp().unwrap().set_peers(&[c.udp().unwrap().local_addr().to_string()]).unwrap();
        b.publish(b"timed").unwrap();
        b.udp().unwrap().flush().unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (from, ts) = loop {
            if let Some(got) = c.udp_mut().unwrap().try_recv_from(&mut out).unwrap() {
                break got;
            }
            assert!(Instant::now() < deadline, "nothing arrived");
            std::thread::yield_now();
        };
        assert_eq!((out.as_slice(), from), (&b"timed"[..], b.udp().unwrap().local_addr()));
        let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let ts = ts.expect("a kernel timestamp");
        assert!(ts <= now_ns && now_ns - ts < 10_000_000_000, "{ts} vs {now_ns}");
    }

    #[test]
    fn large_messages_are_fragmented_into_the_ring_and_oversize_ones_refused() {
        let mut rx = Hub::open("udp://127.0.0.1:0", HubOptions { slot_size: Some(1 << 20), ..opts(vec![]) }).unwrap();
        let to = rx.udp().unwrap().local_addr().to_string();
        let mut tx = Hub::open("udp://127.0.0.1:0", HubOptions { slot_size: Some(1 << 20), ..opts(vec![to]) }).unwrap();
        let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7) as u8).collect();
        tx.publish(&big).unwrap();
        assert_eq!(recv(&mut rx), big);
        let err = tx.publish(&vec![0; (1 << 20) + 1]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn a_slow_reader_of_a_small_ring_loses_nothing_the_socket_buffer_can_hold() {
        let small = HubOptions { capacity: Some(16), ..opts(vec![]) };
        let mut rx = Hub::open("udp://127.0.0.1:0", small).unwrap();
        let to = rx.udp().unwrap().local_addr().to_string();
        let mut tx = Hub::open("udp://127.0.0.1:0", opts(vec![to])).unwrap();
        for i in 0..3000u32 {
            tx.publish(&i.to_le_bytes()).unwrap();
        }
        tx.udp().unwrap().flush().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // everything has arrived; the ring is full
        for i in 0..3000u32 {
            assert_eq!(recv(&mut rx), i.to_le_bytes());
        }
        assert_eq!(rx.metrics().lapped, 0);
        assert_eq!(rx.udp().unwrap().udp_metrics().lost, 0);
    }

    #[test]
    fn two_receive_sockets_share_the_port() {
        let o = HubOptions { udp: UdpOptions { receive_threads: 2, ..UdpOptions::default() }, ..opts(vec![]) };
        let mut rx = Hub::open("udp://127.0.0.1:0", o).unwrap();
        let to = rx.udp().unwrap().local_addr().to_string();
        let mut senders: Vec<Hub> =
            (0..6).map(|_| Hub::open("udp://127.0.0.1:0", opts(vec![to.clone()])).unwrap()).collect();
        for (i, s) in senders.iter_mut().enumerate() {
            s.publish(&[i as u8]).unwrap();
            s.udp().unwrap().flush().unwrap();
        }
        let mut got: Vec<u8> = (0..6).map(|_| recv(&mut rx)[0]).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn bad_peers_and_urls_are_typed_errors() {
        let err = Hub::open("udp://127.0.0.1:0", opts(vec!["nope".into()])).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadOption);
        let err = Hub::open("udp://239.1.2.3:0", opts(vec![])).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadUrl);
        let taken = Hub::open("udp://127.0.0.1:0", opts(vec![])).unwrap();
        let url = format!("udp://{}", taken.udp().unwrap().local_addr());
        assert_eq!(Hub::open(&url, opts(vec![])).unwrap_err().code(), ErrorCode::BadUrl);
    }
}
