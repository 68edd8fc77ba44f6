//! The `udp://` transport: a [`UdpPipeline`] on the network-transport core.
//!
//! ```text
//!   publish ──► Outbox (packs, fragments) ──► sendmmsg / io_uring ──► peers
//!
//!   socket ──► engine (I/O thread, or the polling reader): recvmmsg / io_uring
//!              ──► Inbox (per sender) ──► receive ring ──► reader
//!                 └── also sends what waited `flushInterval`
//! ```
//!
//! Publishing runs on the caller's thread: the message is packed into the current
//! datagram, and full datagrams go out at once. A partly filled datagram goes out on
//! [`Batching::flush`], or when it has waited `flush_interval` (the I/O thread's deadline);
//! a zero interval sends every message at once. Receiving lands in the core's
//! [`ReceiveRing`], flow controlled: while the reader is half a ring behind the socket
//! is not read, and a burst waits in the kernel's buffer.
//!
//! With `receive_threads > 1`, more sockets join the port with `SO_REUSEPORT`, each with
//! its own thread ([`ReceiverGroup`]); the kernel spreads senders over them, and all of
//! them deliver into the same ring.
//!
//! UDP stays unreliable: what the network drops is counted (sequence gaps, `lost`),
//! never retransmitted; a full send buffer drops datagrams (`sendDropped`), so the one
//! backpressure policy that applies is `drop_new`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerohop_net::address::{parse_peer, resolve};
use zerohop_net::driver::{Drive, Driver, Ready};
use zerohop_net::ring::{Deliveries, Inbound, ReceiveRing, RingOptions};
use zerohop_net::sending::Overflow;
use zerohop_net::transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, Reader};
use zerohop_transport::chaos::{ChaosReport, Injects};
use zerohop_transport::{
    Backpressure, Batching, Delivery, Endpoint, Error, ErrorCode, FromOptions, HubOptions, Options, Peers, Result,
    Target, Transport, TransportKind, TransportOptions, Value,
};

use crate::group::{ReceiverGroup, pin_to};
use crate::pipeline::{PipelineConfig, PublishError, Received, UdpMetrics, UdpPipeline, UringMode};

/// Default largest message over UDP (or `slotSize`, if larger).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 10;
/// The most `maxMessageSize` may be: what a reassembler holds for one message.
const MOST_MAX_MESSAGE: usize = 16 << 20;

/// Largest receive ring, in bytes of address space: capacity shrinks for large slots.
/// Memory is only committed where messages are written, so a ring of 1 MiB slots
/// holding small messages costs about one page per slot.
const MAX_RING_BYTES: u64 = 1 << 30;

/// The options only `udp://` hubs have.
#[derive(Clone, Debug)]
pub struct UdpOptions {
    /// Where published messages go (`host:port`), besides the group of a multicast URL.
    /// Empty (and not multicast) means the hub only receives until [`Peers::set_peers`].
    pub peers: Vec<String>,
    /// A partly filled datagram waits at most this long for more messages (zero: every
    /// message is sent at once).
    pub flush_interval: std::time::Duration,
    /// Datagrams per receive batch.
    pub batch: usize,
    /// Largest datagram sent, header included; `None` (`'auto'`) follows the path to
    /// the peers. Receivers take any size, so the two sides need not agree.
    pub max_datagram: Option<usize>,
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
    /// Channels delivered at least once (acknowledged and resent), and how many
    /// messages each may have in flight.
    /// Channels (each numbered apart), from 0.
    pub channels: u16,
    pub reliable_channels: Vec<u16>,
    pub max_in_flight: u64,
    /// LZ4 on what is sent (`compression: 'lz4'`).
    pub compression: bool,
    /// Flow control of the unreliable channels to unicast peers (`flowControl`).
    pub flow_control: bool,
    /// Largest message, reassembled from fragments (`maxMessageSize`; default 64 KiB,
    /// or the hub's `slotSize` if larger).
    pub max_message: Option<usize>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        let d = PipelineConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new());
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
            channels: 16,
            reliable_channels: Vec::new(),
            max_in_flight: d.resend.max_in_flight,
            compression: false,
            flow_control: d.flow_control,
            max_message: None,
        }
    }
}

impl TransportOptions for UdpOptions {
    fn scheme(&self) -> &'static str {
        "udp"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for UdpOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        let d = UdpOptions::default();
        if o.take_text("group")?.is_some() {
            // (Said here rather than as an unknown option: work groups are a hub's.)
            return Err(Error::bad_option(
                "group is not an option of udp:// hubs: their receivers do not say they share what a hub sends \
                 (it sends to the peers it names); kcp://, quic://, tcp://, uds:// and shm:// have work groups",
            ));
        }
        let io_uring = match o.take_choice("ioUring", &["auto", "force", "off"])? {
            None | Some("auto") => UringMode::Auto,
            Some("force") => UringMode::Force,
            _ => UringMode::Off,
        };
        let multicast_interface = match o.take_text("multicastInterface")? {
            None => None,
            Some(s) => Some(
                s.parse()
                    .map_err(|_| Error::bad_option(format!("multicastInterface must be an IP address, got '{s}'")))?,
            ),
        };
        Ok(UdpOptions {
            peers: o.take_texts("peers")?.unwrap_or_default(),
            flush_interval: o.take_ms("flushIntervalMs")?.unwrap_or(d.flush_interval),
            batch: o.take_usize("batch", 1..=1024)?.unwrap_or(d.batch),
            max_datagram: match o.take("maxDatagram") {
                None => d.max_datagram,
                Some(Value::Text(t)) if t == "auto" => None,
                Some(v) => {
                    o.put_back("maxDatagram", v);
                    o.take_usize("maxDatagram", 45..=65_507)?
                }
            },
            io_uring,
            receive_threads: o.take_usize("receiveThreads", 1..=64)?.unwrap_or(d.receive_threads),
            pin_threads: o.take_bool("pinThreads")?.unwrap_or(d.pin_threads),
            recv_buffer: o.take_usize("recvBuffer", 1..=1 << 30)?.unwrap_or(d.recv_buffer),
            send_buffer: o.take_usize("sendBuffer", 1..=1 << 30)?.unwrap_or(d.send_buffer),
            busy_poll_us: o.take_u32("busyPollUs", 0..=u32::MAX)?.unwrap_or(d.busy_poll_us),
            timestamps: o.take_bool("receiveTimestamps")?.unwrap_or(d.timestamps),
            multicast_interface,
            multicast_ttl: o.take_u32("multicastTtl", 1..=255)?.unwrap_or(d.multicast_ttl),
            multicast_loopback: o.take_bool("multicastLoopback")?.unwrap_or(d.multicast_loopback),
            channels: o.take_u32("channels", 1..=65535)?.map_or(d.channels, |c| c as u16),
            reliable_channels: o
                .take_u32s("reliableChannels", 0..=u32::from(u16::MAX))?
                .map(|c| c.into_iter().map(|c| c as u16).collect())
                .unwrap_or_default(),
            max_in_flight: o.take_u64("maxInFlight", 1..=4000)?.unwrap_or(d.max_in_flight),
            compression: o.take_choice("compression", &["lz4", "none"])? == Some("lz4"),
            flow_control: o.take_bool("flowControl")?.unwrap_or(d.flow_control),
            max_message: o.take_usize("maxMessageSize", 1..=MOST_MAX_MESSAGE)?,
        })
    }
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::io(what, e)
}

fn inbound<'a>(r: &Received<'a>) -> Inbound<'a> {
    Inbound {
        timestamp_ns: r.timestamp_ns,
        expiry_ns: r.expiry_ns,
        seq: r.seq,
        ..Inbound::message(0, r.from, r.channel, r.message)
    }
}

/// The engine the driver moves on: the main socket's pipeline and the ring it fills.
pub struct UdpEngine {
    pipeline: UdpPipeline,
    ring: Arc<ReceiveRing>,
    /// When a publish without room last read the socket (see `UdpProtocol::publish_all`).
    looked_back: Option<Instant>,
}

/// How often a publish that finds no room reads the socket for the reports that would
/// make it, at most: a publisher that goes on dropping (`drop_new` into a window that
/// stays full) then makes a system call for it every so often, not every message.
const LOOK_BACK: Duration = Duration::from_micros(20);

impl UdpEngine {
    /// Whether a publish without room may read the socket now (see [`LOOK_BACK`]).
    fn look_back_due(&mut self) -> bool {
        let now = Instant::now();
        if self.looked_back.is_some_and(|t| now.saturating_duration_since(t) < LOOK_BACK) {
            return false;
        }
        self.looked_back = Some(now);
        true
    }

    /// Receives what waits on the socket into the ring; datagrams read.
    fn receive(&mut self) -> usize {
        let UdpEngine { pipeline, ring, .. } = self;
        let mut total = 0;
        // A few batches per turn, so that the flush deadline is not starved by a flood.
        for _ in 0..8 {
            if !ring.has_room_for_a_batch() {
                break;
            }
            // One lock of the ring and one wake-up for the batch, not one a message.
            let mut deliveries = ring.deliveries();
            let n = pipeline
                .poll_recv(|r| {
                    // No room: held, in order, until there is (the socket is not read meanwhile).
                    deliveries.deliver_or_hold(&inbound(&r), usize::MAX);
                })
                .unwrap_or(0);
            drop(deliveries);
            total += n;
            // A short batch emptied the socket: another call would be a wasted one.
            if n == 0 || pipeline.drained() {
                break;
            }
        }
        total
    }
}

impl Drive for UdpEngine {
    fn readiness_fd(&self) -> RawFd {
        self.pipeline.readiness_fd()
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.pipeline.flush_due()
    }

    fn may_read(&self) -> bool {
        self.ring.has_room_for_a_batch()
    }

    fn take_changed(&mut self) -> bool {
        self.pipeline.take_room_freed()
    }

    fn drive(&mut self, now: Instant, ready: Ready) -> usize {
        self.ring.deliver_held();
        let n = if ready.readable || self.pipeline.received_due(now) { self.receive() } else { 0 };
        // UDP drops rather than fails: what could not go is counted.
        let _ = self.pipeline.poll_flush();
        n
    }

    /// Without the clock: a polling reader reads; flushing is the deadline's business.
    fn pump(&mut self, _alone: bool) -> usize {
        let moved = self.ring.deliver_held();
        let n = self.receive();
        if moved { n.max(1) } else { n }
    }
}

/// A `udp://` hub's sockets and threads.
pub struct UdpProtocol {
    driver: Arc<Driver<UdpEngine>>,
    group: Mutex<Option<ReceiverGroup>>,
    local: SocketAddr,
    max_message: usize,
    flush_at_end_of_turn: bool,
    /// What a publish on a reliable channel with a full flight does.
    overflow: Overflow,
    channels: u16,
}

impl UdpProtocol {
    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's counters, with the traffic of the other receive sockets added
    /// (theirs are at most [`crate::group::METRICS_EVERY`] old).
    pub fn udp_metrics(&self) -> UdpMetrics {
        let mut m = self.driver.with(|e| e.pipeline.metrics()).unwrap_or_default();
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        for other in group.iter().flat_map(ReceiverGroup::metrics) {
            m.absorb(&other);
        }
        m
    }

    /// How many sockets receive on the port.
    pub fn receive_sockets(&self) -> usize {
        1 + self.group.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, ReceiverGroup::len)
    }

    fn publish_all<'a>(
        &self,
        channel: u16,
        expiry_ns: Option<u64>,
        messages: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<usize> {
        if channel >= self.channels {
            return Err(Error::bad_option(format!(
                "udp:// hub has {} channels (0..{}); got {channel}",
                self.channels,
                self.channels - 1
            )));
        }
        let mut g = self.driver.lock()?;
        let mut n = 0;
        let mut result = Ok(());
        let mut looked = false;
        for m in messages {
            if let Overflow::Block(timeout) = self.overflow
                && !g.as_ref().is_none_or(|e| e.pipeline.has_room(channel))
            {
                // The flight is full (a reliable channel's, or a peer's window): wait for reports.
                let deadline = Instant::now() + timeout;
                while g.as_ref().is_some_and(|e| !e.pipeline.has_room(channel)) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        result = Err(Error::new(
                            ErrorCode::Timeout,
                            "no acknowledgements or flow reports came in time (in flight: full)",
                        ));
                        break;
                    }
                    g = self.driver.wait(g, left.min(Duration::from_millis(10)));
                }
                if result.is_err() {
                    break;
                }
            }
            let Some(e) = g.as_mut() else {
                result = Err(Error::closed());
                break;
            };
            if m.len() > self.max_message {
                result = Err(Error::new(
                    ErrorCode::MessageTooLarge,
                    format!("message of {} bytes exceeds maxMessageSize {}", m.len(), self.max_message),
                ));
                break;
            }
            if !looked && !e.pipeline.has_room(channel) && e.look_back_due() {
                // No room: reports that reopen it may wait unread on the socket, the I/O
                // thread being off the CPU this publisher holds. Read them, once a call
                // (and not more often than LOOK_BACK), before the policy applies.
                looked = true;
                e.receive();
            }
            match e.pipeline.publish_expiring(channel, m, expiry_ns) {
                Ok(()) => n += 1,
                Err(PublishError::Full) if self.overflow == Overflow::FailFast => {
                    result = Err(Error::new(
                        ErrorCode::Backpressure,
                        "the channel has as much in flight as it may (a reliable one, or a peer's flow-control window)",
                    ));
                    break;
                }
                Err(PublishError::Full) => {} // dropped (drop_new), counted by the core
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
        // A datagram that started waiting: the I/O thread's deadline must cover it.
        self.driver.after(g);
        result.map(|()| n)
    }
}

impl Protocol for UdpProtocol {
    fn kind(&self) -> TransportKind {
        TransportKind::Udp
    }

    fn max_message_size(&self) -> usize {
        self.max_message
    }

    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        let n = self.publish_all(channel, None, [payload])?;
        Ok(if n == 1 { Delivery::Accepted } else { Delivery::Dropped })
    }

    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery> {
        let n = self.publish_all(channel, Some(expiry_ns), [payload])?;
        Ok(if n == 1 { Delivery::Accepted } else { Delivery::Dropped })
    }

    fn publish_packed(&self, channel: u16, packed: &[u8], size: usize) -> Result<usize> {
        self.publish_all(channel, None, packed.chunks_exact(size))
    }

    fn has_room(&self, channel: u16, _len: usize) -> bool {
        self.driver.with(|e| e.pipeline.has_room(channel)).unwrap_or(true)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.local)
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let m = self.udp_metrics();
        let n = |v: u64| Value::Number(v as f64);
        let mut d = vec![
            ("backend", Value::Text(m.backend.to_owned())),
            ("messagesSent", n(m.messages_sent)),
            ("datagramsSent", n(m.datagrams_sent)),
            ("bytesSent", n(m.bytes_sent)),
            ("sendBatches", n(m.send_batches)),
            ("sendDropped", n(m.send_dropped)),
            ("kernelDropped", n(m.kernel_dropped)),
            ("maxDatagram", n(m.max_datagram as u64)),
            ("zerocopyDatagrams", n(m.zerocopy_datagrams)),
            ("messagesReceived", n(m.messages_received)),
            ("datagramsReceived", n(m.datagrams_received)),
            ("bytesReceived", n(m.bytes_received)),
            ("recvBatches", n(m.recv_batches)),
            ("malformed", n(m.malformed)),
            ("lost", n(m.lost)),
            ("late", n(m.late)),
            ("duplicates", n(m.duplicates)),
            ("reassemblyFailures", n(m.reassembly_failures)),
            ("own", n(m.own)),
            ("recvBuffer", n(m.granted.recv_buffer as u64)),
            ("sendBuffer", n(m.granted.send_buffer as u64)),
            ("lowDelay", Value::Bool(m.granted.low_delay)),
            ("busyPollUs", n(u64::from(m.granted.busy_poll_us))),
            ("reusePort", Value::Bool(m.granted.reuse_port)),
            ("timestamps", Value::Bool(m.granted.timestamps)),
            ("receiveSockets", n(self.receive_sockets() as u64)),
            ("resent", n(m.resent)),
            ("fastResent", n(m.fast_resent)),
            ("givenUp", n(m.given_up)),
            ("acksSent", n(m.acks_sent)),
            ("acksReceived", n(m.acks_received)),
            ("inFlight", n(m.in_flight)),
            ("bytesSaved", n(m.bytes_saved)),
            ("flowRefused", n(m.flow_refused)),
            ("flowSilentPeers", n(m.flow_silent_peers)),
        ];
        if let Some(why) = m.io_uring_unavailable {
            d.push(("ioUringUnavailable", Value::Text(why)));
        }
        if let Some(g) = m.granted.multicast_group {
            d.push(("multicastGroup", Value::Text(g.to_string())));
        }
        d
    }

    fn chaos(&self) -> Option<ChaosReport> {
        self.driver.with(|e| e.pipeline.chaos()).ok().flatten()
    }

    fn close(&self) {
        // What is queued goes first.
        self.driver.shutdown(|e| {
            let _ = e.pipeline.flush();
        });
        if let Some(g) = self.group.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = g.stop();
        }
    }

    fn peers(&self) -> Option<&dyn Peers> {
        Some(self)
    }

    fn batching(&self) -> Option<&dyn Batching> {
        Some(self)
    }
}

impl Peers for UdpProtocol {
    fn set_peers(&self, peers: &[String]) -> Result<()> {
        let parsed = peers.iter().map(|p| parse_peer(p, Some(&self.local))).collect::<Result<Vec<_>>>()?;
        self.driver.with(|e| e.pipeline.set_peers(parsed))?.map_err(|e| io_error("set peers", e))
    }
}

impl Batching for UdpProtocol {
    /// Then reads what came back (flow-control reports, acknowledgements) on this
    /// thread, so that a window the receiver reopened opens at once, not when the I/O
    /// thread gets the publisher's CPU (see `Driver::flush_then_pump`).
    fn flush(&self) -> Result<()> {
        let mut flushed = Ok(());
        self.driver.flush_then_pump(|e| flushed = e.pipeline.flush())?;
        flushed.map_err(|e| io_error("flush", e))
    }

    fn flushes_at_end_of_turn(&self) -> bool {
        self.flush_at_end_of_turn
    }
}

/// The pipeline's configuration for `udp://host:port` with `options`.
fn pipeline_config(host: &str, port: u16, udp: &UdpOptions, max_message: usize) -> Result<PipelineConfig> {
    let addr = resolve(host, port, None)?;
    let mut config = PipelineConfig::new(addr, Vec::new());
    if addr.ip().is_multicast() {
        if port == 0 {
            return Err(Error::new(ErrorCode::BadUrl, "a multicast group needs a port"));
        }
        let mut m = crate::socket::Multicast::group(addr.ip());
        m.ttl = udp.multicast_ttl;
        m.loopback = udp.multicast_loopback;
        match udp.multicast_interface {
            Some(IpAddr::V4(i)) => m.interface_v4 = i,
            Some(IpAddr::V6(_)) => {
                return Err(Error::bad_option("multicastInterface: give IPv6 interfaces by index"));
            }
            None => {}
        }
        config.socket.multicast = Some(m);
        // Members bind the group's port on every address; the group filters.
        config.bind = match addr.ip() {
            IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
        };
        config.peers = vec![addr];
    }
    for p in &udp.peers {
        let peer = parse_peer(p, Some(&addr))?;
        if !config.peers.contains(&peer) {
            config.peers.push(peer);
        }
    }
    config.flush_interval = udp.flush_interval;
    config.batch = udp.batch.max(1);
    config.max_datagram = udp.max_datagram;
    config.max_message = max_message;
    config.io_uring = udp.io_uring;
    config.socket.recv_buffer = udp.recv_buffer;
    config.socket.send_buffer = udp.send_buffer;
    config.socket.busy_poll_us = udp.busy_poll_us;
    config.socket.timestamps = udp.timestamps;
    config.socket.reuse_port = udp.receive_threads > 1 || config.socket.reuse_port;
    Ok(config)
}

/// Opens `udp://host:port` (a multicast group joins it).
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    Ok(Box::new(open_udp(endpoint, &mut options)?))
}

/// [`open`], typed (for tests and tools that want the protocol's own calls).
pub fn open_udp(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<UdpProtocol>> {
    let Target::Host { host, port } = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "udp:// needs host:port"));
    };
    let chaos =
        options.take_chaos("udp", Injects { datagrams: true, disconnects: false }, "it has no connections to drop")?;
    let udp: UdpOptions = options.take_specific("udp")?;
    if let Some(c) = udp.reliable_channels.iter().find(|&&c| c >= udp.channels) {
        return Err(Error::bad_option(format!("reliableChannels: {c} is not a channel (there are {})", udp.channels)));
    }
    if (chaos.is_some() || !udp.reliable_channels.is_empty()) && udp.receive_threads > 1 {
        return Err(Error::bad_option(
            "chaos and reliableChannels take one receiving socket: receiveThreads must be 1 with them",
        ));
    }
    // A full flight (a reliable channel's, or a peer's flow-control window) may also wait
    // or fail; without either, a full socket buffer only drops.
    let allowed: &[Backpressure] = if udp.reliable_channels.is_empty() && !udp.flow_control {
        &[Backpressure::DropNew]
    } else {
        &[Backpressure::DropNew, Backpressure::Block, Backpressure::FailFast]
    };
    let settings = options.settings(
        "udp",
        DEFAULT_SPIN,
        Backpressure::DropNew,
        allowed,
        "a full socket buffer drops datagrams, counted in metrics().udp.sendDropped: 'drop_new' is what it does \
         ('block' and 'fail_fast' apply to a full flight: with flowControl, the default, or reliableChannels)",
    )?;
    let max_message =
        udp.max_message.unwrap_or_else(|| DEFAULT_MAX_MESSAGE.max(options.slot_size.unwrap_or(0) as usize));
    if max_message > MOST_MAX_MESSAGE {
        return Err(Error::bad_option(format!("slotSize: udp:// messages are at most {MOST_MAX_MESSAGE} bytes")));
    }
    // Small slots (a message larger than one goes aside, read in place all the same),
    // so that a ring of small messages spans few pages.
    let ring_options = RingOptions::for_messages(options.slot_size, options.capacity, max_message, None);
    let slot_size = ring_options.slot_size;
    let mut config = pipeline_config(host, *port, &udp, max_message)?;
    config.chaos = chaos;
    config.reliable_channels = udp.reliable_channels.clone();
    config.resend.max_in_flight = udp.max_in_flight;
    config.compression = udp.compression;
    config.flow_control = udp.flow_control;
    let capacity = match options.capacity {
        Some(c) => c,
        None => {
            let fit = MAX_RING_BYTES / (u64::from(slot_size) + 64);
            (4096u64.min(fit.max(16)) as u32).next_power_of_two().min(4096)
        }
    };
    let ring = Arc::new(ReceiveRing::new(RingOptions { capacity, ..ring_options }, false)?);
    let pipeline = UdpPipeline::bind(config.clone()).map_err(|e| io_error(&format!("bind {}", config.bind), e))?;
    let local = pipeline.local_addr().map_err(|e| io_error("local address", e))?;
    let group = if udp.receive_threads > 1 {
        let mut group_config = config.clone();
        group_config.bind = local;
        let r = ring.clone();
        let deliver: crate::group::Deliver = Arc::new(move |_, m| {
            r.deliver_or_hold(&inbound(&m));
            r.delivered();
        });
        let r = ring.clone();
        let gate: crate::group::Gate = Arc::new(move |_, timeout| {
            if r.has_room_for_a_batch() {
                return true;
            }
            std::thread::sleep(timeout.min(zerohop_net::driver::ROOM_POLL));
            r.deliver_held();
            r.has_room_for_a_batch()
        });
        let first_core = usize::from(udp.pin_threads);
        let g = ReceiverGroup::start_from(
            group_config,
            udp.receive_threads - 1,
            udp.pin_threads,
            first_core,
            deliver,
            Some(gate),
        )
        .map_err(|e| io_error("receive threads", e))?;
        Some(g)
    } else {
        None
    };
    let pin = udp.pin_threads;
    let engine = UdpEngine { pipeline, ring: ring.clone(), looked_back: None };
    let driver = Arc::new(Driver::start("zerohop-udp-io", engine, move || {
        if pin {
            pin_to(0);
        }
    })?);
    let protocol = Arc::new(UdpProtocol {
        driver: driver.clone(),
        group: Mutex::new(group),
        local,
        max_message,
        flush_at_end_of_turn: !udp.flush_interval.is_zero(),
        overflow: Overflow::of(&settings),
        channels: udp.channels,
    });
    let reader: Arc<dyn Reader> = driver;
    NetTransport::new(Parts { protocol, reader, ring, settings, connections: false })
}
