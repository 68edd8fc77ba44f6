//! A UDP pipeline: one socket, the datagram packing and unpacking of `zerohop-proto`, and batches.
//!
//! Outgoing messages go through one [`Outbox`] (numbered, packed or fragmented) and
//! each finished datagram is sent to every peer with `sendmmsg`. Incoming datagrams
//! arrive `batch` at a time with `recvmmsg` and go to the [`Inbox`] of the address they
//! came from, which counts what was malformed, lost, late or duplicated. Nothing here
//! blocks: the owner calls [`UdpPipeline::poll_recv`] when the socket is readable and
//! [`UdpPipeline::poll_flush`] when [`UdpPipeline::flush_deadline`] passes.
//!
//! UDP stays unreliable: what the network drops is counted (by sequence gaps), never
//! retransmitted, except on the channels asked to be reliable
//! ([`PipelineConfig::reliable_channels`]): there every datagram is kept until each
//! peer acknowledged it, and resent (`zerohop_proto::reliable`). Each channel has its
//! own numbering (its *lane*), so lossy realtime channels and reliable ones share a
//! socket.
//!
//! With faults asked for ([`PipelineConfig::chaos`]) every datagram sent and received
//! passes through [`Faults`]; what they hold comes out at [`UdpPipeline::flush_due`]
//! (the readiness descriptor then also wakes for it), and zero-copy sends are off.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use zerohop_net::chaos::WakingFaults;
use zerohop_proto::FrameFlags;
use zerohop_proto::datagram::{Inbox, Outbox};
use zerohop_proto::flow::{FlowWindow, MAX_WINDOW, MIN_WINDOW};
use zerohop_proto::frag::{FragmentError, ReassemblyLimits};
use zerohop_proto::reliable::{ResendConfig, ResendStats, ResendWindow};
use zerohop_proto::{FRAME_HEADER_LEN, FrameHeader};
use zerohop_transport::chaos::{ChaosConfig, ChaosReport};

use crate::batch::{RecvBatch, SendBatch};
use crate::socket::{Granted, MAX_DATAGRAM, SocketOptions, bind, path_datagram};
use crate::uring::{UringReceiver, UringSender};

/// Which receive path to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UringMode {
    /// io_uring when the kernel allows it, `recvmmsg` otherwise.
    #[default]
    Auto,
    /// io_uring or fail.
    Force,
    /// `recvmmsg` only.
    Off,
}

enum Receiver {
    Uring(Box<UringReceiver>),
    Mmsg(RecvBatch),
}

/// How to set up a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Local address to bind (`port 0` picks one).
    pub bind: SocketAddr,
    /// Where published messages go. With exactly one peer the socket is connected.
    pub peers: Vec<SocketAddr>,
    pub socket: SocketOptions,
    /// Largest datagram sent, header included; `None` follows the path to the peers
    /// ([`path_datagram`]: 65,507 on loopback, 1472 across an Ethernet MTU). Receivers
    /// take datagrams and fragments of any size up to [`MAX_DATAGRAM`], so peers with
    /// different sizes still talk.
    pub max_datagram: Option<usize>,
    /// Datagrams per `recvmmsg`.
    pub batch: usize,
    /// A queued message waits at most this long for more to pack with it (zero: every
    /// message goes out at once, unpacked).
    pub flush_interval: Duration,
    /// Largest message reassembled from fragments.
    pub max_message: usize,
    /// The receive path.
    pub io_uring: UringMode,
    /// Datagrams of at least this many bytes go out with io_uring's zero-copy send
    /// (when io_uring is in use); smaller ones with `sendmmsg`.
    pub zerocopy_min: usize,
    /// Most senders tracked at once (each has a sequence window and reassembly state);
    /// the least recently heard is forgotten beyond it.
    pub max_peers: usize,
    /// The session our datagrams carry. Datagrams with it are our own coming back (a
    /// multicast group with loopback): dropped, so a hub never receives what it sent.
    /// Pipelines sharing a port share it.
    pub session: u32,
    /// Faults injected into every datagram sent and received (`?chaos=`).
    pub chaos: Option<ChaosConfig>,
    /// Channels whose messages are delivered at least once (acknowledged, resent).
    pub reliable_channels: Vec<u16>,
    /// How reliable channels resend.
    pub resend: ResendConfig,
    /// LZ4: each datagram whose payload shrinks goes compressed (and says so).
    pub compression: bool,
    /// Flow control of the unreliable channels ([`zerohop_proto::flow`]): at most a
    /// window of bytes in flight to each unicast peer, as large as the peer's socket
    /// buffer allows; a peer that says nothing for `flow_silence` stops holding back.
    pub flow_control: bool,
    pub flow_silence: Duration,
}

/// What a flow-controlled sender may have in flight before the peer's first report.
const INITIAL_FLOW_WINDOW: u64 = 256 << 10;

impl PipelineConfig {
    /// Defaults for `bind`, sending to `peers`.
    pub fn new(bind: SocketAddr, peers: Vec<SocketAddr>) -> Self {
        Self {
            bind,
            peers,
            socket: SocketOptions::default(),
            max_datagram: None,
            batch: 32,
            flush_interval: Duration::from_millis(1),
            max_message: 16 << 20,
            io_uring: UringMode::Auto,
            zerocopy_min: 16 << 10,
            max_peers: 1024,
            session: new_session(),
            chaos: None,
            reliable_channels: Vec::new(),
            resend: ResendConfig::default(),
            compression: false,
            flow_control: true,
            flow_silence: Duration::from_secs(1),
        }
    }
}

/// Counters of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpMetrics {
    pub messages_sent: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub send_batches: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub send_dropped: u64,
    /// Datagrams the kernel dropped on arrival because the socket's receive buffer was
    /// full (`SO_RXQ_OVFL`; counted from the first datagram that says so).
    pub kernel_dropped: u64,
    /// The largest datagram sent now, header included (see [`PipelineConfig::max_datagram`]).
    pub max_datagram: usize,
    pub messages_received: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub recv_batches: u64,
    /// Datagrams that were not ours, corrupt, truncated, or held invalid records.
    pub malformed: u64,
    /// Messages missing by sequence gaps.
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Fragmented messages given up (timed out, evicted, too large).
    pub reassembly_failures: u64,
    /// Our own datagrams that came back (multicast loopback), dropped.
    pub own: u64,
    /// What the kernel granted when the socket was set up.
    pub granted: Granted,
    /// `"io_uring"` or `"recvmmsg"`.
    pub backend: &'static str,
    /// Datagrams sent with io_uring's zero-copy send.
    pub zerocopy_datagrams: u64,
    /// Reliable channels: datagrams resent, messages given up, acknowledgements sent and
    /// taken, and messages in flight now.
    pub resent: u64,
    /// Of those, resent at once on repeated acknowledgements of a hole.
    pub fast_resent: u64,
    pub given_up: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    pub in_flight: u64,
    /// Bytes LZ4 saved of what was sent (`compression: 'lz4'`).
    pub bytes_saved: u64,
    /// Flow control: messages refused because a peer's window was full, and the peers
    /// that stopped reporting (they no longer hold the sender back).
    pub flow_refused: u64,
    pub flow_silent_peers: u64,
    /// Why io_uring is not in use, when it was wanted.
    pub io_uring_unavailable: Option<String>,
}

impl UdpMetrics {
    /// Adds the traffic counters of another socket (of the same hub) to these.
    pub fn absorb(&mut self, o: &UdpMetrics) {
        self.messages_sent += o.messages_sent;
        self.datagrams_sent += o.datagrams_sent;
        self.bytes_sent += o.bytes_sent;
        self.send_batches += o.send_batches;
        self.send_dropped += o.send_dropped;
        self.kernel_dropped += o.kernel_dropped;
        self.messages_received += o.messages_received;
        self.datagrams_received += o.datagrams_received;
        self.bytes_received += o.bytes_received;
        self.recv_batches += o.recv_batches;
        self.malformed += o.malformed;
        self.lost += o.lost;
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.reassembly_failures += o.reassembly_failures;
        self.own += o.own;
        self.zerocopy_datagrams += o.zerocopy_datagrams;
        self.resent += o.resent;
        self.fast_resent += o.fast_resent;
        self.given_up += o.given_up;
        self.acks_sent += o.acks_sent;
        self.acks_received += o.acks_received;
        self.in_flight += o.in_flight;
        self.bytes_saved += o.bytes_saved;
        self.flow_refused += o.flow_refused;
        self.flow_silent_peers += o.flow_silent_peers;
    }
}

/// One UDP socket with its send pipeline and a receive pipeline per peer.
pub struct UdpPipeline {
    socket: UdpSocket,
    config: PipelineConfig,
    connected: bool,
    /// The largest datagram sent now (the config's, or the path's to the peers).
    datagram: usize,
    /// One per channel published on, channel 0's first.
    lanes: Vec<Lane>,
    send: SendBatch,
    zerocopy: Option<UringSender>,
    receiver: Receiver,
    /// Per sender and channel: its pipeline and when it was last heard (ms).
    inboxes: HashMap<(SocketAddr, u16), (Inbox, u64)>,
    /// Inboxes that took a reliable frame in this receive: they owe an acknowledgement.
    owing: Vec<(SocketAddr, u16)>,
    /// Room was freed on a reliable channel since the last look.
    room_freed: bool,
    last_expire_ms: u64,
    metrics: UdpMetrics,
    epoch: Instant,
    chaos: Option<Box<WakingFaults<Route>>>,
}

/// One channel's sending: its numbering and packing, and, reliable, what waits for
/// acknowledgements, or, flow controlled, what the peers allow in flight.
struct Lane {
    channel: u16,
    outbox: Outbox,
    window: Option<ResendWindow<SocketAddr>>,
    flow: Option<FlowWindow<SocketAddr>>,
}

impl Lane {
    fn new(config: &PipelineConfig, channel: u16, datagram: usize) -> Lane {
        let mut outbox = Outbox::new(datagram, config.session, channel);
        if config.compression {
            outbox.set_compression();
        }
        let window = config.reliable_channels.contains(&channel).then(|| {
            outbox.set_reliable();
            ResendWindow::new(config.resend, &config.peers)
        });
        let mut lane = Lane { channel, outbox, window, flow: None };
        lane.set_flow(config);
        lane
    }

    /// Flow control for the config's peers, where it applies: on an unreliable channel
    /// (a reliable one has its own window) to unicast peers (a multicast group's members
    /// are not known one by one).
    fn set_flow(&mut self, config: &PipelineConfig) {
        let applies =
            config.flow_control && self.window.is_none() && !config.peers.iter().any(|p| p.ip().is_multicast());
        match (&mut self.flow, applies) {
            (Some(f), true) => f.set_peers(&config.peers),
            (None, true) => {
                let silence = config.flow_silence.as_micros() as u64;
                self.flow = Some(FlowWindow::new(&config.peers, INITIAL_FLOW_WINDOW, silence));
            }
            (_, false) => self.flow = None,
        }
        self.outbox.set_flow(applies);
    }

    /// Whether another message may go now.
    fn has_room(&self) -> bool {
        self.window.as_ref().is_none_or(|w| w.has_room(1)) && self.flow.as_ref().is_none_or(FlowWindow::has_room)
    }
}

/// Where a datagram goes (`None`: the connected peer) or came from, and its kernel
/// receive time.
type Route = (Option<SocketAddr>, Option<u64>);

/// Queues datagram `d` to `to`, through the faults if there are any (at `now`).
fn queue(
    send: &mut SendBatch,
    chaos: Option<&mut WakingFaults<Route>>,
    now: Instant,
    d: &[u8],
    to: Option<SocketAddr>,
) {
    match chaos {
        None => send.push(d, to),
        Some(c) => c.faults.send(now, d, (to, None), |d, (to, _)| send.push(d, to)),
    }
}

/// Microseconds since `epoch`: the pipeline's clock (the outbox's deadlines are in it).
fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Whether a socket sending to `peers` is connected: to a single unicast peer only (a
/// socket connected to a multicast group would accept datagrams only from the group
/// address, which never sends).
fn connects(peers: &[SocketAddr]) -> bool {
    peers.len() == 1 && !peers[0].ip().is_multicast()
}

/// A session id that differs between pipelines and runs (pid, time and a counter, mixed).
pub fn new_session() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut x = (t as u64) ^ ((std::process::id() as u64) << 32);
    x ^= COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

impl UdpPipeline {
    /// Binds the socket (connecting it when there is exactly one peer).
    pub fn bind(config: PipelineConfig) -> io::Result<Self> {
        if config.max_datagram.is_some_and(|d| d <= FRAME_HEADER_LEN + 4 || d > MAX_DATAGRAM) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "max_datagram must be 45..=65507 bytes"));
        }
        let datagram = config.max_datagram.unwrap_or_else(|| path_datagram(&config.peers));
        let (socket, granted) = bind(config.bind, &config.socket)?;
        let connected = connects(&config.peers);
        if connected {
            socket.connect(config.peers[0])?;
        }
        let mut metrics = UdpMetrics { granted, ..UdpMetrics::default() };
        let entries = (config.batch.max(1) * 4).next_power_of_two().min(32768) as u16;
        let receiver = match config.io_uring {
            UringMode::Off => Receiver::Mmsg(RecvBatch::new(config.batch.max(1), MAX_DATAGRAM)),
            mode => match UringReceiver::new(&socket, entries, MAX_DATAGRAM) {
                Ok(u) => Receiver::Uring(Box::new(u)),
                Err(e) if mode == UringMode::Force => return Err(e),
                Err(e) => {
                    // EPERM (disabled, seccomp), ENOSYS (old kernel), ENOMEM (memlock)…
                    metrics.io_uring_unavailable = Some(e.to_string());
                    Receiver::Mmsg(RecvBatch::new(config.batch.max(1), MAX_DATAGRAM))
                }
            },
        };
        metrics.backend = match receiver {
            Receiver::Uring(_) => "io_uring",
            Receiver::Mmsg(_) => "recvmmsg",
        };
        // Zero-copy only pays for large datagrams, so only when they can occur (and
        // not under faults, which send each datagram on its own).
        let zerocopy = match receiver {
            Receiver::Uring(_)
                if datagram >= config.zerocopy_min && config.chaos.is_none() && config.reliable_channels.is_empty() =>
            {
                UringSender::new(&socket).ok()
            }
            _ => None,
        };
        let readiness = match &receiver {
            Receiver::Uring(u) => u.ring_fd(),
            Receiver::Mmsg(_) => std::os::fd::AsRawFd::as_raw_fd(&socket),
        };
        let chaos = config.chaos.map(|c| WakingFaults::new(c, readiness)).transpose()?;
        Ok(Self {
            socket,
            connected,
            datagram,
            lanes: vec![Lane::new(&config, 0, datagram)],
            send: SendBatch::new(),
            zerocopy,
            receiver,
            inboxes: HashMap::new(),
            owing: Vec::new(),
            room_freed: false,
            last_expire_ms: 0,
            metrics,
            epoch: Instant::now(),
            config,
            chaos,
        })
    }

    /// Whether faults hold a received datagram that is due by `now`.
    pub fn received_due(&self, now: Instant) -> bool {
        self.chaos.as_ref().is_some_and(|c| c.faults.received_due(now))
    }

    /// What the faults did, if any were asked for.
    pub fn chaos(&self) -> Option<ChaosReport> {
        self.chaos.as_ref().map(|c| c.faults.report())
    }

    /// Replaces the peers published messages go to (connecting the socket when there is
    /// exactly one). A connected socket only receives from that peer.
    pub fn set_peers(&mut self, peers: Vec<SocketAddr>) -> io::Result<()> {
        if connects(&peers) {
            self.socket.connect(peers[0])?;
        } else if self.connected {
            let before = self.socket.local_addr()?;
            // Dissolve the association so that datagrams from anyone arrive again.
            // SAFETY: all-zero sockaddr is valid; AF_UNSPEC in it asks connect(2) to
            // disconnect, and the kernel reads only `size_of::<sockaddr>()` bytes.
            let r = unsafe {
                let mut unspec: libc::sockaddr = std::mem::zeroed();
                unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
                libc::connect(
                    std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                    &unspec,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            // Linux also releases a port that bind() picked (port 0 was asked for): take
            // the same address again so that peers still reach us.
            if self.socket.local_addr().map(|a| a.port()).unwrap_or(0) != before.port() {
                socket2::SockRef::from(&self.socket).bind(&before.into())?;
            }
        }
        self.connected = connects(&peers);
        for w in self.lanes.iter_mut().filter_map(|l| l.window.as_mut()) {
            w.set_peers(&peers);
        }
        self.config.peers = peers;
        for lane in &mut self.lanes {
            lane.set_flow(&self.config);
        }
        if self.config.max_datagram.is_none() {
            // The path changed: so may the size. What was packed goes out at the old one.
            self.datagram = path_datagram(&self.config.peers);
            for lane in &mut self.lanes {
                lane.outbox.set_max_datagram(self.datagram);
            }
            if self.lanes.iter().any(|l| l.outbox.ready() > 0) {
                self.send_ready()?;
            }
        }
        Ok(())
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket, for readiness polling.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Counters.
    pub fn metrics(&self) -> UdpMetrics {
        let mut m = self.metrics.clone();
        m.max_datagram = self.datagram;
        m.bytes_sent += self.send.sent_bytes();
        m.bytes_saved += self.lanes.iter().map(|l| l.outbox.saved()).sum::<u64>();
        for f in self.lanes.iter().filter_map(|l| l.flow.as_ref()) {
            m.flow_silent_peers += f.silent() as u64;
        }
        for w in self.lanes.iter().filter_map(|l| l.window.as_ref()) {
            let s: ResendStats = w.stats();
            m.resent += s.resent;
            m.fast_resent += s.fast_resent;
            m.given_up += s.given_up;
            m.in_flight += w.in_flight();
        }
        for (inbox, _) in self.inboxes.values() {
            let s = inbox.stats();
            let r = inbox.reassembly_stats();
            m.malformed += s.malformed;
            m.lost += s.lost;
            m.late += s.late;
            m.duplicates += s.duplicates;
            m.reassembly_failures += r.timed_out + r.evicted + r.too_large;
        }
        m
    }

    /// The outbox's clock: microseconds, so flush intervals below a millisecond work.
    fn now_us(&self) -> u64 {
        micros_since(self.epoch)
    }

    fn interval_us(&self) -> u64 {
        self.config.flush_interval.as_micros() as u64
    }

    /// Queues a message on channel 0 for every peer; full datagrams go out at once, a
    /// partly filled one at the next flush.
    pub fn publish(&mut self, message: &[u8]) -> Result<(), PublishError> {
        self.publish_on(0, message)
    }

    /// The lane of `channel`, made at its first message.
    fn lane(&mut self, channel: u16) -> usize {
        if channel == 0 {
            return 0;
        }
        match self.lanes.iter().position(|l| l.channel == channel) {
            Some(i) => i,
            None => {
                self.lanes.push(Lane::new(&self.config, channel, self.datagram));
                self.lanes.len() - 1
            }
        }
    }

    /// [`publish`](Self::publish) on `channel`. A reliable channel with as much in
    /// flight as it may have, or a flow-controlled one with a peer's window full,
    /// refuses it (`PublishError::Full`).
    pub fn publish_on(&mut self, channel: u16, message: &[u8]) -> Result<(), PublishError> {
        self.publish_expiring(channel, message, None)
    }

    /// [`publish_on`](Self::publish_on), with the time after which the message is not
    /// worth reading (`ttlMs`: ns since the Unix epoch) if it has one.
    pub fn publish_expiring(
        &mut self,
        channel: u16,
        message: &[u8],
        expiry_ns: Option<u64>,
    ) -> Result<(), PublishError> {
        let i = self.lane(channel);
        let lane = &mut self.lanes[i];
        if !lane.has_room() {
            if lane.flow.is_some() {
                self.metrics.flow_refused += 1;
            }
            return Err(PublishError::Full);
        }
        if let Some(w) = &lane.window {
            lane.outbox.set_floor(w.floor());
        }
        // The clock matters only to a message that starts a datagram (it sets the
        // deadline); reading it costs more than the rest of this call.
        let epoch = self.epoch;
        let now = || micros_since(epoch);
        match expiry_ns {
            None => lane.outbox.push_with(message, now),
            Some(e) => lane.outbox.push_expiring(message, e, now),
        }
        .map_err(PublishError::TooLarge)?;
        self.metrics.messages_sent += 1;
        if self.config.flush_interval.is_zero() {
            lane.outbox.flush();
        }
        if lane.outbox.ready() > 0 {
            self.send_ready().map_err(PublishError::Io)?;
        }
        Ok(())
    }

    /// Whether a message on `channel` would be taken now (a reliable channel's flight
    /// has room).
    pub fn has_room(&self, channel: u16) -> bool {
        self.lanes.iter().find(|l| l.channel == channel).is_none_or(Lane::has_room)
    }

    /// Sends the acknowledgements the last receive owes: one per sender and reliable
    /// channel, saying below which sequence number it has everything.
    fn acknowledge(&mut self) {
        if self.owing.is_empty() {
            return;
        }
        let now = Instant::now();
        // (Counting the senders costs a look at each: only when a report is owed.)
        let reporting = self.owing.iter().any(|k| self.inboxes.get(k).is_some_and(|(i, _)| i.owes_report()));
        let window = if reporting { self.flow_window() } else { MIN_WINDOW };
        let mut frame = [0u8; FRAME_HEADER_LEN];
        for key in std::mem::take(&mut self.owing) {
            let Some((inbox, _)) = self.inboxes.get_mut(&key) else { continue };
            let to = if self.connected && self.config.peers.first() == Some(&key.0) { None } else { Some(key.0) };
            let ack =
                inbox.acknowledgement().map(|(session, channel, ack)| (FrameFlags::ACK, session, channel, ack, 0));
            let report = inbox
                .flow_report()
                .map(|(session, channel, next)| (FrameFlags::ACK | FrameFlags::FLOW, session, channel, next, window));
            if report.is_some() {
                inbox.set_report_every(window / 4);
            }
            for (flags, session, channel, ack, seq) in ack.into_iter().chain(report) {
                let h = FrameHeader { flags: FrameFlags(flags), session, channel, ack, seq, ..FrameHeader::new(0) };
                h.encode_in_place(&mut frame).expect("an empty frame");
                queue(&mut self.send, self.chaos.as_deref_mut(), now, &frame, to);
                self.metrics.acks_sent += 1;
            }
        }
        if let Some(c) = &mut self.chaos {
            c.arm(now);
        }
        self.send_queued();
    }

    /// The window this receiver allows each flow-controlled sender, in bytes: half its
    /// socket buffer (the kernel counts each datagram's overhead against the buffer
    /// too), shared among the senders heard in the last second.
    fn flow_window(&self) -> u64 {
        let now = micros_since(self.epoch) / 1000;
        let senders = self.inboxes.values().filter(|(_, seen)| now.saturating_sub(*seen) < 1000).count().max(1);
        (self.metrics.granted.recv_buffer as u64 / 2 / senders as u64).clamp(MIN_WINDOW, MAX_WINDOW)
    }

    /// Whether acknowledgements freed room on a reliable channel since the last call.
    pub fn take_room_freed(&mut self) -> bool {
        std::mem::take(&mut self.room_freed)
    }

    /// Sends everything queued now.
    pub fn flush(&mut self) -> io::Result<()> {
        for lane in &mut self.lanes {
            lane.outbox.flush();
        }
        self.send_ready()
    }

    /// Flushes if the oldest queued message has waited `flush_interval` (and sends
    /// what the faults held that is due).
    pub fn poll_flush(&mut self) -> io::Result<bool> {
        if let Some(c) = &mut self.chaos {
            let now = Instant::now();
            c.take_fired(now);
            let send = &mut self.send;
            c.faults.release_sent(now, |d, (to, _)| send.push(d, to));
            c.arm(now);
            self.send_queued();
        }
        let now = self.now_us();
        self.resend(now);
        for f in self.lanes.iter_mut().filter_map(|l| l.flow.as_mut()) {
            // A peer that holds the sender back but says nothing turns silent.
            self.room_freed |= f.poll(now);
        }
        let interval = self.interval_us();
        let mut flushed = false;
        for lane in &mut self.lanes {
            flushed |= lane.outbox.poll_flush(now, interval);
        }
        if flushed {
            self.send_ready()?;
        }
        Ok(flushed)
    }

    /// Resends what the reliable channels have due.
    fn resend(&mut self, now_us: u64) {
        let connected = self.connected;
        let mut any = false;
        let now = Instant::now();
        for lane in &mut self.lanes {
            if let Some(w) = &mut lane.window
                && w.due_us().is_some_and(|d| d <= now_us)
            {
                let (send, chaos) = (&mut self.send, &mut self.chaos);
                w.resend(now_us, |d, peer| queue(send, chaos.as_deref_mut(), now, d, (!connected).then_some(peer)));
                any = true;
            }
        }
        if any {
            if let Some(c) = &mut self.chaos {
                c.arm(now);
            }
            self.send_queued();
        }
    }

    /// Whether the last `poll_recv` emptied the socket as far as it can tell, so that
    /// another at once would most likely find nothing (io_uring: its completions are
    /// read without a system call, so it never says so).
    pub fn drained(&self) -> bool {
        match &self.receiver {
            Receiver::Uring(_) => false,
            Receiver::Mmsg(batch) => batch.drained(),
        }
    }

    /// The descriptor that polls readable when `poll_recv` has work: with io_uring the
    /// ring (the receive is always armed when `poll_recv` returns), otherwise the socket;
    /// under faults, a [`Waker`] that also wakes when a held datagram is due.
    pub fn readiness_fd(&self) -> std::os::fd::RawFd {
        if let Some(c) = &self.chaos {
            return c.fd();
        }
        match &self.receiver {
            Receiver::Uring(u) => u.ring_fd(),
            Receiver::Mmsg(_) => std::os::fd::AsRawFd::as_raw_fd(&self.socket),
        }
    }

    /// Blocks until datagrams may be waiting (or `timeout_ms` passes); true if so.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd { fd: self.readiness_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
        }
        Ok(r > 0)
    }

    /// Whether a partly filled datagram waits for more messages or for the interval.
    pub fn flush_pending(&self) -> bool {
        self.lanes.iter().any(|l| l.outbox.waiting())
    }

    /// How long from now until `poll_flush` has work, if anything is queued.
    pub fn flush_deadline(&self) -> Option<Duration> {
        self.flush_due().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// When `poll_flush` (or, for what faults held on the way in, `poll_recv`) has work,
    /// if anything is queued (without reading the clock).
    pub fn flush_due(&self) -> Option<Instant> {
        let interval = self.interval_us();
        let lanes = self.lanes.iter().flat_map(|l| {
            [
                l.outbox.flush_deadline(interval),
                l.window.as_ref().and_then(ResendWindow::due_us),
                l.flow.as_ref().and_then(FlowWindow::due_us),
            ]
        });
        let flush = lanes.flatten().min().map(|d| self.epoch + Duration::from_micros(d));
        match &self.chaos {
            None => flush,
            Some(c) => [flush, c.faults.due()].into_iter().flatten().min(),
        }
    }

    fn send_ready(&mut self) -> io::Result<()> {
        if let Some(zc) = &mut self.zerocopy
            && self.lanes.iter().any(|l| l.outbox.datagrams().any(|d| d.len() >= self.config.zerocopy_min))
        {
            // In order, every datagram of this flush through the zero-copy path.
            let peers: Vec<Option<SocketAddr>> =
                if self.connected { vec![None] } else { self.config.peers.iter().copied().map(Some).collect() };
            let list: Vec<(&[u8], Option<SocketAddr>)> = self
                .lanes
                .iter()
                .flat_map(|l| l.outbox.datagrams())
                .flat_map(|d| peers.iter().map(move |&p| (d, p)))
                .collect();
            // Like the sendmmsg path, UDP drops rather than fails: count what did not go.
            let sent = zc.send_all(&list).unwrap_or(0);
            self.metrics.send_dropped += (list.len() - sent) as u64;
            self.metrics.datagrams_sent += sent as u64;
            self.metrics.zerocopy_datagrams += sent as u64;
            self.metrics.bytes_sent += list[..sent].iter().map(|(d, _)| d.len() as u64).sum::<u64>();
            self.metrics.send_batches += 1;
            let now_us = micros_since(self.epoch);
            for lane in &mut self.lanes {
                if let Some(f) = &mut lane.flow {
                    for (datagram, _, last) in lane.outbox.datagrams_with_seqs() {
                        f.sent(last, datagram.len() as u64, now_us);
                    }
                }
                let ready = lane.outbox.ready();
                lane.outbox.consume(ready);
            }
            return Ok(());
        }
        let (send, chaos) = (&mut self.send, &mut self.chaos);
        let now = if chaos.is_some() { Instant::now() } else { self.epoch };
        let mut push = |d: &[u8], to: Option<SocketAddr>| queue(send, chaos.as_deref_mut(), now, d, to);
        let now_us = micros_since(self.epoch);
        for lane in &mut self.lanes {
            for (datagram, first, last) in lane.outbox.datagrams_with_seqs() {
                if self.connected {
                    push(datagram, None);
                } else {
                    for &peer in &self.config.peers {
                        push(datagram, Some(peer));
                    }
                }
                if let Some(w) = &mut lane.window {
                    w.sent(first, last, datagram, now_us);
                }
                if let Some(f) = &mut lane.flow {
                    f.sent(last, datagram.len() as u64, now_us);
                }
            }
            let ready = lane.outbox.ready();
            lane.outbox.consume(ready);
        }
        if let Some(c) = &mut self.chaos {
            c.arm(now);
        }
        self.send_queued();
        Ok(())
    }

    /// Sends what the send batch holds.
    fn send_queued(&mut self) {
        while !self.send.is_empty() {
            match self.send.send(&self.socket) {
                Ok(0) => {
                    // The socket buffer is full: UDP drops rather than blocks. Count what
                    // is dropped here; receivers see it as a gap.
                    self.metrics.send_dropped += self.send.len() as u64;
                    self.send.clear();
                }
                Ok(sent) => {
                    self.metrics.send_batches += 1;
                    self.metrics.datagrams_sent += sent as u64;
                }
                Err(_) => {
                    // The first queued datagram cannot go (an unreachable peer, …): drop
                    // it and carry on, so one bad peer cannot starve the others.
                    self.send.drain_front(1);
                    self.metrics.send_dropped += 1;
                }
            }
        }
    }

    /// Receives what is waiting (one `recvmmsg`, or the io_uring completions) and hands
    /// each complete message to `deliver`. Returns how many datagrams arrived.
    pub fn poll_recv(&mut self, mut deliver: impl FnMut(Received<'_>)) -> io::Result<usize> {
        // The clock only for datagrams that arrived: a reader polling an idle socket
        // would spend more on it than on the poll.
        let epoch = self.epoch;
        let mut now_cache = None;
        let mut now = move || *now_cache.get_or_insert_with(|| epoch.elapsed().as_millis() as u64);
        let limits = ReassemblyLimits {
            // (An expiring message comes after its 8-byte expiry.)
            max_message: self.config.max_message + 8,
            ..ReassemblyLimits::new(MAX_DATAGRAM - FRAME_HEADER_LEN)
        };
        let inboxes = &mut self.inboxes;
        let metrics = &mut self.metrics;
        let (lanes, owing, room_freed) = (&mut self.lanes, &mut self.owing, &mut self.room_freed);
        let max_peers = self.config.max_peers.max(1);
        let own = self.config.session;
        let mut handle_now = |bytes: &[u8], from: Option<SocketAddr>, truncated: bool, timestamp_ns: Option<u64>| {
            metrics.datagrams_received += 1;
            metrics.bytes_received += bytes.len() as u64;
            let flags = bytes.get(3).copied().unwrap_or(0);
            if flags & FrameFlags::ACK != 0 && bytes.len() == FRAME_HEADER_LEN {
                // An acknowledgement of one of our reliable channels (it names our session).
                match (from, FrameHeader::decode_frame(bytes)) {
                    (Some(from), Ok((h, _))) if h.session == own => {
                        metrics.acks_received += 1;
                        let lane = lanes.iter_mut().find(|l| l.channel == h.channel);
                        if flags & FrameFlags::FLOW != 0 {
                            // A flow report: how far the peer read, and the window it allows.
                            if let Some(f) = lane.and_then(|l| l.flow.as_mut()) {
                                *room_freed |= f.on_report(from, h.ack, h.seq, micros_since(epoch));
                            }
                        } else if let Some(w) = lane.and_then(|l| l.window.as_mut()) {
                            let before = w.in_flight();
                            w.on_ack(from, h.ack, micros_since(epoch));
                            *room_freed |= w.in_flight() < before;
                        }
                    }
                    _ => metrics.malformed += 1,
                }
                return;
            }
            if zerohop_proto::peek_session(bytes) == Some(own) {
                metrics.own += 1;
                return;
            }
            let Some(from) = from.filter(|_| !truncated) else {
                metrics.malformed += 1;
                return;
            };
            let channel = bytes.get(4..6).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
            let key = (from, channel);
            if !inboxes.contains_key(&key) {
                // Per-sender state only for senders of valid frames, and only so many.
                if FrameHeader::decode_frame(bytes).is_err() {
                    metrics.malformed += 1;
                    return;
                }
                if inboxes.len() >= max_peers
                    && let Some(oldest) = inboxes.iter().min_by_key(|(_, (_, seen))| *seen).map(|(a, _)| *a)
                {
                    inboxes.remove(&oldest);
                }
            }
            let now = now();
            let (inbox, seen) = inboxes.entry(key).or_insert_with(|| (Inbox::with_limits(limits), now));
            *seen = now;
            let received = &mut metrics.messages_received;
            inbox.receive_expiring(bytes, now, |seq, message, expiry_ns| {
                *received += 1;
                deliver(Received { from, channel, seq, timestamp_ns, expiry_ns, message });
            });
            if flags & (FrameFlags::RELIABLE | FrameFlags::FLOW) != 0 && !owing.contains(&key) {
                owing.push(key);
            }
        };
        // Under faults, what arrived goes through them first, after what they held.
        let mut chaos = self.chaos.as_deref_mut().map(|c| (c, Instant::now()));
        if let Some((c, now)) = &mut chaos {
            c.take_fired(*now);
            c.faults.release_received(*now, |d, (from, ts)| handle_now(d, from, false, ts));
        }
        let mut handle =
            |bytes: &[u8], from: Option<SocketAddr>, truncated: bool, timestamp_ns: Option<u64>| match &mut chaos {
                Some((c, now)) if !truncated => {
                    c.faults.receive(*now, bytes, (from, timestamp_ns), |d, (from, ts)| handle_now(d, from, false, ts))
                }
                _ => handle_now(bytes, from, truncated, timestamp_ns),
            };
        // The kernel's count of what it dropped, as the last datagram that said it.
        let mut kernel_dropped = None;
        let result = match &mut self.receiver {
            Receiver::Uring(u) => u.recv(|d| {
                kernel_dropped = d.dropped.or(kernel_dropped);
                handle(d.bytes, d.from, d.truncated, d.timestamp_ns)
            }),
            Receiver::Mmsg(batch) => batch.recv(&self.socket).inspect(|_| {
                for d in batch.iter() {
                    kernel_dropped = d.dropped.or(kernel_dropped);
                    handle(d.bytes, d.from, d.truncated, d.timestamp_ns);
                }
            }),
        };
        if let Some(d) = kernel_dropped {
            self.metrics.kernel_dropped = u64::from(d);
        }
        let n = match result {
            Ok(n) => n,
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && self.config.io_uring == UringMode::Auto
                    && matches!(self.receiver, Receiver::Uring(_)) =>
            {
                // The ring was set up but the kernel refuses multishot recvmsg (< 6.0).
                self.receiver = Receiver::Mmsg(RecvBatch::new(self.config.batch.max(1), MAX_DATAGRAM));
                self.metrics.backend = "recvmmsg";
                self.metrics.io_uring_unavailable = Some(format!("multishot recvmsg refused: {e}"));
                if let Some((c, _)) = &chaos {
                    c.watch(std::os::fd::AsRawFd::as_raw_fd(&self.socket))?;
                }
                0
            }
            Err(e) => return Err(e),
        };
        if let Some((c, now)) = chaos {
            c.arm(now);
        }
        self.acknowledge();
        if n > 0 {
            self.metrics.recv_batches += 1;
        }
        if n > 0
            && let now = now()
            && now.saturating_sub(self.last_expire_ms) >= 100
        {
            self.last_expire_ms = now;
            for (inbox, _) in self.inboxes.values_mut() {
                inbox.expire(now);
            }
        }
        Ok(n)
    }
}

impl core::fmt::Debug for UdpPipeline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpPipeline").field("socket", &self.socket).field("backend", &self.metrics.backend).finish()
    }
}

/// A message [`UdpPipeline::poll_recv`] delivers.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    /// The sender.
    pub from: SocketAddr,
    /// The channel it came on.
    pub channel: u16,
    /// Its sequence number in the sender's stream on that channel.
    pub seq: u64,
    /// When the kernel received the datagram (the last one, for a fragmented message),
    /// in ns since the Unix epoch, if the socket asked for timestamps.
    pub timestamp_ns: Option<u64>,
    /// When it stops being worth reading (`ttlMs`), ns since the Unix epoch.
    pub expiry_ns: Option<u64>,
    pub message: &'a [u8],
}

/// Why `publish` failed.
#[derive(Debug)]
pub enum PublishError {
    /// Needs more than 65535 fragments.
    TooLarge(FragmentError),
    /// A reliable channel has as much in flight as it may.
    Full,
    /// The socket refused the send.
    Io(io::Error),
}

impl core::fmt::Display for PublishError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLarge(e) => e.fmt(f),
            Self::Full => f.write_str("the reliable channel has as much in flight as it may"),
            Self::Io(e) => write!(f, "send failed: {e}"),
        }
    }
}

impl std::error::Error for PublishError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every test runs once per receive path (io_uring only where the kernel has it).
    fn backends() -> Vec<UringMode> {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        match UringReceiver::new(&probe, 4, 64) {
            Ok(_) => vec![UringMode::Off, UringMode::Force],
            Err(e) => {
                eprintln!("io_uring unavailable ({e}): testing recvmmsg only");
                vec![UringMode::Off]
            }
        }
    }

    thread_local!(static MODE: std::cell::Cell<UringMode> = const { std::cell::Cell::new(UringMode::Off) });

    fn pipeline(peers: Vec<SocketAddr>) -> UdpPipeline {
        let config =
            PipelineConfig { io_uring: MODE.get(), ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), peers) };
        let e = UdpPipeline::bind(config).unwrap();
        assert_eq!(e.metrics().backend, if MODE.get() == UringMode::Force { "io_uring" } else { "recvmmsg" });
        e
    }

    fn each_backend(test: impl Fn()) {
        for mode in backends() {
            MODE.set(mode);
            test();
        }
    }

    fn collect(rx: &mut UdpPipeline, want: usize) -> Vec<(SocketAddr, u64, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(Instant::now() < deadline, "{} of {want} messages arrived; {:?}", got.len(), rx.metrics());
            if rx.poll_recv(|r| got.push((r.from, r.seq, r.message.to_vec()))).unwrap() == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        got
    }

    #[test]
    fn messages_from_1_byte_to_1_mb_arrive_whole_and_in_order() {
        each_backend(|| {
            let mut rx = pipeline(vec![]);
            let mut tx = pipeline(vec![rx.local_addr().unwrap()]);
            let sizes = [1usize, 10, 100, 1400, 1432, 1433, 5_000, 64 << 10, 1 << 20];
            let messages: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect()).collect();
            let mut got = Vec::new();
            for m in &messages {
                tx.publish(m).unwrap();
                tx.flush().unwrap();
                // Drain as we go so a 1 MB message does not overrun the receive buffer.
                got.extend(collect(&mut rx, 1));
            }
            assert_eq!(got.iter().map(|g| g.2.clone()).collect::<Vec<_>>(), messages);
            assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), (0..sizes.len() as u64).collect::<Vec<_>>());
            let m = rx.metrics();
            assert_eq!((m.lost, m.malformed, m.duplicates), (0, 0, 0));
            assert!(m.recv_batches <= m.datagrams_received);
        });
    }

    #[test]
    fn a_dropped_pipeline_frees_its_port_at_once() {
        each_backend(|| {
            let addr = pipeline(vec![]).local_addr().unwrap();
            for _ in 0..50 {
                let config = PipelineConfig { io_uring: MODE.get(), ..PipelineConfig::new(addr, vec![]) };
                drop(UdpPipeline::bind(config).expect("the port is free again as soon as the pipeline is dropped"));
            }
        });
    }

    #[test]
    fn small_messages_are_packed_and_a_lone_one_waits_only_the_flush_interval() {
        each_backend(|| {
            let mut rx = pipeline(vec![]);
            let mut tx = pipeline(vec![rx.local_addr().unwrap()]);
            for i in 0..100u32 {
                tx.publish(&i.to_le_bytes()).unwrap();
            }
            tx.flush().unwrap();
            let got = collect(&mut rx, 100);
            assert_eq!(got.len(), 100);
            assert!(tx.metrics().datagrams_sent < 10, "100 tiny messages packed into a few datagrams");
            let sent = tx.metrics();
            assert!(sent.bytes_sent >= 400 && sent.bytes_sent == rx.metrics().bytes_received, "{sent:?}");
            tx.publish(b"lone").unwrap();
            assert!(tx.flush_deadline().is_some());
            std::thread::sleep(Duration::from_millis(3));
            assert!(tx.poll_flush().unwrap());
            assert_eq!(collect(&mut rx, 1)[0].2, b"lone");
        });
    }

    #[test]
    fn fan_in_from_two_senders_keeps_their_sequences_apart() {
        each_backend(|| {
            let mut rx = pipeline(vec![]);
            let mut a = pipeline(vec![rx.local_addr().unwrap()]);
            let mut b = pipeline(vec![rx.local_addr().unwrap()]);
            for i in 0..50u8 {
                a.publish(&[b'a', i]).unwrap();
                b.publish(&[b'b', i]).unwrap();
            }
            a.flush().unwrap();
            b.flush().unwrap();
            let got = collect(&mut rx, 100);
            for (who, addr) in [(b'a', a.local_addr().unwrap()), (b'b', b.local_addr().unwrap())] {
                let mine: Vec<_> = got.iter().filter(|g| g.0 == addr).collect();
                assert_eq!(mine.len(), 50);
                assert!(mine.iter().enumerate().all(|(i, g)| g.1 == i as u64 && g.2 == [who, i as u8]));
            }
            assert_eq!(rx.metrics().lost, 0);
        });
    }

    #[test]
    fn garbage_datagrams_are_counted_and_dropped() {
        each_backend(|| {
            let mut rx = pipeline(vec![]);
            let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for n in [0usize, 1, 39, 40, 41, 500, 1472] {
                junk.send_to(&vec![0xAB; n], rx.local_addr().unwrap()).unwrap();
            }
            let oversize = vec![0u8; 30_000]; // large, and not a frame either
            junk.send_to(&oversize, rx.local_addr().unwrap()).unwrap();
            let mut tx = pipeline(vec![rx.local_addr().unwrap()]);
            tx.publish(b"real").unwrap();
            tx.flush().unwrap();
            let got = collect(&mut rx, 1);
            assert_eq!(got[0].2, b"real");
            assert_eq!(rx.metrics().malformed, 8);
        });
    }

    /// Multicast needs a multicast-capable interface. The test runs itself again in a
    /// fresh network namespace (`unshare -n`) and enables multicast on that namespace's
    /// loopback, so the host's network is never touched. Where namespaces cannot be
    /// created it says so and passes without checking anything.
    #[test]
    fn multicast_reaches_every_member() {
        if std::env::var_os("ZEROHOP_NETNS_CHILD").is_some() {
            multicast_in_namespace();
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let status = std::process::Command::new("unshare")
            .arg("-n")
            .arg("--")
            .arg(exe)
            .args(["--exact", "pipeline::tests::multicast_reaches_every_member", "--nocapture", "--test-threads", "1"])
            .env("ZEROHOP_NETNS_CHILD", "1")
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) if s.code() == Some(101) => panic!("the multicast test failed inside its namespace"),
            Ok(s) => eprintln!("SKIPPED: cannot create a network namespace here (unshare exited with {s})"),
            Err(e) => eprintln!("SKIPPED: unshare is not available ({e})"),
        }
    }

    fn multicast_in_namespace() {
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "set", "lo", "multicast", "on"],
            &["route", "add", "224.0.0.0/4", "dev", "lo"],
        ] {
            let ok = std::process::Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "ip {args:?} failed inside the namespace");
        }
        let group: std::net::Ipv4Addr = "239.1.2.3".parse().unwrap();
        let member = |port: u16| {
            let socket = SocketOptions {
                multicast: Some(crate::socket::Multicast {
                    interface_v4: std::net::Ipv4Addr::LOCALHOST,
                    ..crate::socket::Multicast::group(group.into())
                }),
                ..SocketOptions::default()
            };
            let config =
                PipelineConfig { socket, ..PipelineConfig::new(format!("0.0.0.0:{port}").parse().unwrap(), vec![]) };
            UdpPipeline::bind(config).unwrap()
        };
        let first = member(0);
        let port = first.local_addr().unwrap().port();
        let mut members = vec![member(port), member(port)];
        assert_eq!(first.metrics().granted.multicast_group, Some(group.into()));
        let sender_socket = SocketOptions {
            multicast: Some(crate::socket::Multicast {
                interface_v4: std::net::Ipv4Addr::LOCALHOST,
                ..crate::socket::Multicast::group(group.into())
            }),
            ..SocketOptions::default()
        };
        let mut tx = UdpPipeline::bind(PipelineConfig {
            socket: sender_socket,
            ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![SocketAddr::new(group.into(), port)])
        })
        .unwrap();
        let messages: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![7u8; 5000], b"c".to_vec()];
        for m in &messages {
            tx.publish(m).unwrap();
        }
        tx.flush().unwrap();
        members.push(first);
        for (i, m) in members.iter_mut().enumerate() {
            let got = collect(m, 3);
            assert_eq!(got.iter().map(|g| g.2.clone()).collect::<Vec<_>>(), messages, "member {i}");
        }
    }

    /// Deletes the test's network namespaces however the test ends.
    struct Namespaces(Vec<String>);

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false)
    }

    /// Two hosts: network namespaces joined by a veth pair, 10.201.0.1/30 and .2/30,
    /// with a receiver process in one and a sender process in the other. Skipped with a
    /// message where namespaces cannot be created.
    #[test]
    fn two_hosts_over_a_veth_pair() {
        if let Ok(role) = std::env::var("ZEROHOP_VETH_ROLE") {
            veth_role(&role);
            return;
        }
        let pid = std::process::id();
        let (a, b) = (format!("zh{pid}a"), format!("zh{pid}b"));
        if !ip(&["netns", "add", &a]) {
            eprintln!("SKIPPED: cannot create network namespaces here");
            return;
        }
        let _cleanup = Namespaces(vec![a.clone(), b.clone()]);
        let (va, vb) = (format!("zva{pid}"), format!("zvb{pid}"));
        for args in [
            vec!["netns", "add", &b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &a],
            vec!["link", "set", &vb, "netns", &b],
            vec!["-n", &a, "addr", "add", "10.201.0.1/30", "dev", &va],
            vec!["-n", &b, "addr", "add", "10.201.0.2/30", "dev", &vb],
            vec!["-n", &a, "link", "set", &va, "up"],
            vec!["-n", &b, "link", "set", &vb, "up"],
            vec!["-n", &a, "link", "set", "lo", "up"],
            vec!["-n", &b, "link", "set", "lo", "up"],
        ] {
            assert!(ip(&args), "ip {args:?} failed");
        }
        let exe = std::env::current_exe().unwrap();
        let spawn = |ns: &str, role: &str| {
            std::process::Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&exe)
                .args(["--exact", "pipeline::tests::two_hosts_over_a_veth_pair", "--nocapture", "--test-threads", "1"])
                .env("ZEROHOP_VETH_ROLE", role)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut receiver = spawn(&a, "receiver");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(receiver.stdout.take().unwrap()));
        assert!(lines.any(|l| l.unwrap().contains("VETH READY")), "the receiver never got ready");
        let sender = spawn(&b, "sender").wait_with_output().unwrap();
        assert!(sender.status.success(), "sender failed");
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(receiver.wait().unwrap().success(), "receiver failed: {rest:?}");
        assert!(rest.iter().any(|l| l.contains("VETH OK")), "{rest:?}");
    }

    fn veth_messages() -> Vec<Vec<u8>> {
        (0..200u32).map(|i| if i % 50 == 49 { vec![i as u8; 100_000] } else { i.to_le_bytes().to_vec() }).collect()
    }

    fn veth_role(role: &str) {
        let server: SocketAddr = "10.201.0.1:47000".parse().unwrap();
        if role == "receiver" {
            let mut rx = UdpPipeline::bind(PipelineConfig::new(server, vec![])).unwrap();
            println!("VETH READY");
            let got = collect(&mut rx, 200);
            assert_eq!(got.into_iter().map(|g| g.2).collect::<Vec<_>>(), veth_messages());
            assert!(got_from_other_host(&rx));
            println!("VETH OK");
        } else {
            // (Paced by hand below, and never polled for flow reports: no flow control.)
            let config = PipelineConfig {
                flow_control: false,
                ..PipelineConfig::new("10.201.0.2:0".parse().unwrap(), vec![server])
            };
            let mut tx = UdpPipeline::bind(config).unwrap();
            for m in veth_messages() {
                tx.publish(&m).unwrap();
                tx.flush().unwrap();
                // Pace the 100 KB messages so the veth queue never drops (UDP would).
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn got_from_other_host(rx: &UdpPipeline) -> bool {
        rx.inboxes.keys().all(|a| a.0.ip() == "10.201.0.2".parse::<std::net::IpAddr>().unwrap())
    }

    #[test]
    fn a_garbage_flood_is_counted_and_real_traffic_still_gets_through() {
        each_backend(|| {
            let mut rx = pipeline(vec![]);
            let to = rx.local_addr().unwrap();
            use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let flooded = std::sync::Arc::new(AtomicU64::new(0));
            let flood = {
                let (stop, flooded) = (stop.clone(), flooded.clone());
                std::thread::spawn(move || {
                    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
                    let mut x = 0x2545_F491_4F6C_DD1Du64;
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) && sent < 200_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let len = (x % 1500) as usize;
                        let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
                        if junk.send_to(&bytes, to).is_ok() {
                            sent += 1;
                            flooded.store(sent, Ordering::Relaxed);
                        }
                    }
                })
            };
            // Real traffic starts once the flood is under way.
            while flooded.load(Ordering::Relaxed) < 2_000 {
                std::thread::yield_now();
            }
            let mut tx = pipeline(vec![to]);
            let mut real = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            // Keep sending numbered messages until 100 distinct ones made it through.
            let mut next = 0u32;
            while real.len() < 100 {
                assert!(Instant::now() < deadline, "real traffic starved: {:?}", rx.metrics());
                tx.publish(&next.to_le_bytes()).unwrap();
                tx.flush().unwrap();
                next += 1;
                rx.poll_recv(|r| real.push(u32::from_le_bytes(r.message.try_into().unwrap()))).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            flood.join().unwrap();
            assert!(real.windows(2).all(|w| w[0] < w[1]), "real messages arrive intact and in order");
            let m = rx.metrics();
            assert!(m.malformed > 0, "the flood was counted: {m:?}");
            assert_eq!(m.messages_received as usize, real.len());
        });
    }

    #[test]
    fn large_datagrams_use_zero_copy_send_when_io_uring_is_in_use() {
        each_backend(|| {
            let big = |peers| {
                // (The sender here is never polled for flow reports: no flow control.)
                let config = PipelineConfig {
                    io_uring: MODE.get(),
                    max_datagram: Some(65_507),
                    flow_control: false,
                    ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), peers)
                };
                UdpPipeline::bind(config).unwrap()
            };
            let mut rx = big(vec![]);
            let mut tx = big(vec![rx.local_addr().unwrap()]);
            let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            tx.publish(&message).unwrap();
            tx.publish(b"small").unwrap();
            tx.flush().unwrap();
            let got = collect(&mut rx, 2);
            assert_eq!(got[0].2, message);
            assert_eq!(got[1].2, b"small");
            let m = tx.metrics();
            if MODE.get() == UringMode::Force {
                assert!(m.zerocopy_datagrams >= 4, "{m:?}");
            } else {
                assert_eq!(m.zerocopy_datagrams, 0);
            }
        });
    }

    #[test]
    fn per_sender_state_is_bounded_and_set_peers_can_disconnect() {
        let config = PipelineConfig { max_peers: 3, ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![]) };
        let mut rx = UdpPipeline::bind(config).unwrap();
        let to = rx.local_addr().unwrap();
        // Junk from many ports creates no state.
        for _ in 0..20 {
            UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"junk", to).unwrap();
        }
        let mut senders: Vec<UdpPipeline> = (0..6).map(|_| pipeline(vec![to])).collect();
        for s in &mut senders {
            s.publish(b"hi").unwrap();
            s.flush().unwrap();
        }
        collect(&mut rx, 6);
        assert!(rx.inboxes.len() <= 3, "{}", rx.inboxes.len());
        assert!(rx.metrics().malformed >= 20);
        // Connected to one peer, then to two: the socket must hear from anyone again.
        let mut a = pipeline(vec![senders[0].local_addr().unwrap()]);
        a.set_peers(vec![senders[0].local_addr().unwrap(), senders[1].local_addr().unwrap()]).unwrap();
        let mut c = pipeline(vec![a.local_addr().unwrap()]);
        c.publish(b"from c").unwrap();
        c.flush().unwrap();
        assert_eq!(collect(&mut a, 1)[0].2, b"from c");
    }

    #[test]
    fn several_peers_each_get_every_message() {
        each_backend(|| {
            let mut r1 = pipeline(vec![]);
            let mut r2 = pipeline(vec![]);
            let mut tx = pipeline(vec![r1.local_addr().unwrap(), r2.local_addr().unwrap()]);
            tx.publish(&[1u8; 3000]).unwrap();
            tx.publish(b"x").unwrap();
            tx.flush().unwrap();
            for r in [&mut r1, &mut r2] {
                let got = collect(r, 2);
                assert_eq!(got[0].2, vec![1u8; 3000]);
                assert_eq!(got[1].2, b"x");
            }
        });
    }

    /// Faults on either side act on exactly the seeded datagrams: losses on the way out
    /// are the sender's seed's, on the way in the receiver's; a delay holds datagrams
    /// until their time, and the readiness descriptor wakes for them.
    #[test]
    fn faults_inside_the_pipeline_are_the_seeded_ones() {
        use zerohop_proto::chaos::{Chaos, ChaosSpec, Fate};
        each_backend(|| {
            for (side, spec) in [("sender", "loss:0.2"), ("receiver", "loss:0.2"), ("receiver", "delay:3ms,loss:0.1")] {
                let parsed = ChaosSpec::parse(spec).unwrap();
                let chaos = Some(ChaosConfig { spec: parsed, seed: 7 });
                let mut rx_config = PipelineConfig {
                    io_uring: MODE.get(),
                    ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![])
                };
                if side == "receiver" {
                    rx_config.chaos = chaos;
                }
                let mut rx = UdpPipeline::bind(rx_config).unwrap();
                let mut tx_config = PipelineConfig {
                    flush_interval: Duration::ZERO,
                    ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![rx.local_addr().unwrap()])
                };
                if side == "sender" {
                    tx_config.chaos = chaos;
                }
                let mut tx = UdpPipeline::bind(tx_config).unwrap();
                let n = 500u32;
                for i in 0..n {
                    tx.publish(&i.to_le_bytes()).unwrap();
                }
                // The receiver's direction is seeded apart from the sender's.
                let seed = if side == "sender" { 7 } else { 7 ^ zerohop_proto::chaos::RECEIVED_SALT };
                let mut fates = Chaos::new(parsed, seed);
                let expected: Vec<u32> = (0..n).filter(|_| fates.decide() != Fate::Drop).collect();
                let start = Instant::now();
                let mut got = Vec::new();
                while got.len() < expected.len() {
                    assert!(start.elapsed() < Duration::from_secs(10), "{} of {}", got.len(), expected.len());
                    let mut pfd = libc::pollfd { fd: rx.readiness_fd(), events: libc::POLLIN, revents: 0 };
                    // SAFETY: one valid pollfd for the call.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                    rx.poll_recv(|r| got.push(u32::from_le_bytes(r.message.try_into().unwrap()))).unwrap();
                }
                if spec.contains("delay") {
                    assert!(start.elapsed() >= Duration::from_millis(3), "held for the delay");
                }
                assert_eq!(got, expected, "{side} {spec}");
                let report = if side == "sender" { tx.chaos() } else { rx.chaos() }.unwrap();
                let seen = if side == "sender" { report.sent } else { report.received };
                assert_eq!((seen.seen, seen.dropped), (u64::from(n), u64::from(n) - expected.len() as u64));
                assert_eq!((report.spec, report.seed), (parsed.to_url_form(), 7));
            }
        });
    }

    /// A reliable channel and a lossy one on one socket, through 20 % loss each way
    /// (acknowledgements too): every message of the reliable one arrives once; the lossy
    /// one counts what it lost.
    #[test]
    fn a_reliable_channel_delivers_everything_once_through_loss_beside_a_lossy_one() {
        use zerohop_proto::chaos::ChaosSpec;
        each_backend(|| {
            let faults =
                Some(ChaosConfig { spec: ChaosSpec::parse("loss:0.2,dup:0.05,reorder:0.1").unwrap(), seed: 5 });
            let mut rx = UdpPipeline::bind(PipelineConfig {
                io_uring: MODE.get(),
                chaos: faults,
                ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![])
            })
            .unwrap();
            let mut tx = UdpPipeline::bind(PipelineConfig {
                flush_interval: Duration::ZERO,
                reliable_channels: vec![1],
                chaos: faults,
                ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![rx.local_addr().unwrap()])
            })
            .unwrap();
            let n = 600u32;
            let (mut reliable, mut lossy) = (Vec::new(), 0u32);
            let mut sent = 0;
            let start = Instant::now();
            while reliable.len() < n as usize {
                assert!(start.elapsed() < Duration::from_secs(20), "{} of {n}: {:?}", reliable.len(), tx.metrics());
                // Publish while the flight has room; the rest waits for acknowledgements.
                while sent < n && tx.has_room(1) {
                    tx.publish_on(1, &sent.to_le_bytes()).unwrap();
                    tx.publish_on(0, &sent.to_le_bytes()).unwrap();
                    sent += 1;
                }
                rx.poll_recv(|r| match r.channel {
                    1 => reliable.push(u32::from_le_bytes(r.message.try_into().unwrap())),
                    _ => lossy += 1,
                })
                .unwrap();
                tx.poll_recv(|_| panic!("nothing is sent to the sender")).unwrap();
                tx.poll_flush().unwrap();
                std::thread::sleep(Duration::from_micros(100));
            }
            let mut sorted = reliable.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), reliable.len(), "none twice");
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "all of them");
            let (t, r) = (tx.metrics(), rx.metrics());
            assert!(t.resent > 0 && t.acks_received > 0 && r.acks_sent > 0, "{t:?}");
            assert_eq!(t.given_up, 0);
            assert!(lossy < n, "the lossy channel lost some: {lossy} of {n}");
            assert!(r.lost > 0);
        });
    }
}
