//! [`QuicNode`]: one side of a `quic://` hub, listening for any number of peers or
//! connecting to one, on the process's [`SharedRuntime`].
//!
//! What it sends:
//! - **Channels** (reliable): each channel is its own bidirectional stream per peer, so
//!   a slow channel does not hold up another. Messages are framed
//!   ([`zerohop_proto::stream`]) and kept in a [`SendQueue`] until the peer's
//!   *application* has read them; the peer acknowledges on the same stream, and after a
//!   reconnect the unacknowledged ones go again and the peer drops what it has already
//!   delivered ([`zerohop_proto::session`]). So no accepted message is lost while the
//!   sender lives, even across a restart of the receiver.
//! - **Datagrams** (unreliable, opt-in): one QUIC datagram per message, numbered so the
//!   receiver counts what was lost.
//!
//! What it receives goes to an [`Inbox`] (the hub's receive ring), which says where the
//! message landed and how far the application has read; a full inbox makes the stream
//! wait, and QUIC flow control then pushes back on the sender.
//!
//! Connection status goes to the inbox too, as [`StatusEvent`]s: a connecting node
//! reconnects with exponential backoff ([`zerohop_proto::lifecycle`]) and reports
//! `reconnecting`, a listening node reports each peer that comes and goes.
//!
//! A peer that misbehaves fails alone: garbage on a stream or an oversize message
//! closes its connection with an application error code ([`CloseCode`]), a peer too slow
//! to read what it is sent is disconnected as a slow consumer; the node and the other
//! peers go on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::Notify;
use zerohop_proto::lifecycle::{Backoff, Event, Lifecycle, Status};
use zerohop_proto::session::{ReceiveWindow, SendQueue, StreamHeader, StreamKind, get_varint, put_varint};
use zerohop_proto::stream::{StreamDecoder, StreamError};

use crate::runtime::SharedRuntime;
use crate::tls::{self, HandshakeFailure, Identity, TlsError, Trust};

/// Which side of the connection this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accept any number of peers on the address.
    Listen,
    /// Connect to the server at the address, verifying it as `server_name`.
    Connect { server_name: String },
}

/// What `publish` does when a peer's send queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Wait up to the timeout for the peer to read. A listener then disconnects the peer
    /// as a slow consumer (the others go on); a connecting node fails the publish.
    Block(Duration),
    /// That peer does not get the message.
    DropNew,
    /// The publish fails at once, and no peer gets the message.
    FailFast,
}

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub role: Role,
    /// The address to listen on, or the server's.
    pub addr: SocketAddr,
    /// Ours: required to listen (a self-signed one for development); optional to
    /// connect (mutual TLS).
    pub identity: Option<Identity>,
    /// Connecting: whom to believe.
    pub trust: Trust,
    /// Listening: require client certificates signed by this CA bundle (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Send a keep-alive this often when idle (`None`: never).
    pub keep_alive: Option<Duration>,
    /// Close a connection that heard nothing this long; also the handshake timeout.
    pub idle_timeout: Duration,
    /// Reconnect schedule of a connecting node.
    pub backoff: Backoff,
    /// Largest message, both ways; a peer sending more is disconnected.
    pub max_message: usize,
    /// Channels per peer (reliable streams), numbered from 0.
    pub max_channels: u16,
    /// Bytes kept per peer and channel until the peer has read them.
    pub send_queue_bytes: usize,
    pub overflow: Overflow,
    /// How long a listener keeps a disconnected peer's unacknowledged messages for its
    /// reconnect.
    pub peer_linger: Duration,
}

impl NodeConfig {
    /// Defaults for `role` at `addr`.
    pub fn new(role: Role, addr: SocketAddr) -> Self {
        Self {
            role,
            addr,
            identity: None,
            trust: Trust::DangerouslyAcceptAnyServer,
            client_ca: None,
            // A peer that vanished (killed, unplugged) is noticed after the idle timeout:
            // QUIC has no other sign of it. Keep-alives keep quiet connections open.
            keep_alive: Some(Duration::from_secs(2)),
            idle_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_message: 16 << 20,
            max_channels: 16,
            send_queue_bytes: 64 << 20,
            overflow: Overflow::Block(Duration::from_secs(5)),
            peer_linger: Duration::from_secs(30),
        }
    }
}

/// Application error codes a node closes a connection with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// Closed on purpose.
    Closed = 0,
    /// The peer sent something that is not the zerohop protocol.
    Protocol = 1,
    /// The peer sent a message above the limit.
    TooLarge = 2,
    /// The peer did not read what it was sent in time.
    SlowConsumer = 3,
}

impl CloseCode {
    fn of(code: u64) -> Option<CloseCode> {
        Some(match code {
            0 => CloseCode::Closed,
            1 => CloseCode::Protocol,
            2 => CloseCode::TooLarge,
            3 => CloseCode::SlowConsumer,
            _ => return None,
        })
    }

    fn varint(self) -> VarInt {
        VarInt::from_u32(self as u32)
    }
}

/// Why a connection ended or could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The TLS handshake failed.
    Tls(HandshakeFailure),
    /// Nobody answered in time (no server, or the path is down).
    TimedOut,
    /// The connection was lost (reset, or closed by the peer without a reason).
    Lost,
    /// We closed it: the peer broke the protocol. Or the peer closed it because we did.
    Protocol { by_peer: bool },
    /// A message above the limit (ours, or the peer's if `by_peer`).
    TooLarge { by_peer: bool },
    /// We did not read fast enough for the peer (`by_peer`), or the peer for us.
    SlowConsumer { by_peer: bool },
    /// The peer closed the connection on purpose.
    ClosedByPeer,
}

/// A failure with what the library said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    fn of(e: &ConnectionError) -> Failure {
        let kind = if let Some(h) = HandshakeFailure::of(e) {
            FailureKind::Tls(h)
        } else {
            match e {
                ConnectionError::TimedOut => FailureKind::TimedOut,
                ConnectionError::ApplicationClosed(c) => match CloseCode::of(c.error_code.into_inner()) {
                    Some(CloseCode::Protocol) => FailureKind::Protocol { by_peer: true },
                    Some(CloseCode::TooLarge) => FailureKind::TooLarge { by_peer: true },
                    Some(CloseCode::SlowConsumer) => FailureKind::SlowConsumer { by_peer: true },
                    _ => FailureKind::ClosedByPeer,
                },
                ConnectionError::LocallyClosed => FailureKind::Lost,
                _ => FailureKind::Lost,
            }
        };
        Failure { kind, message: e.to_string() }
    }

    /// Whether trying again cannot help (a certificate problem).
    pub fn is_permanent(&self) -> bool {
        matches!(self.kind, FailureKind::Tls(_))
    }
}

/// A change of status: of the node's connection (connecting side, `peer` is the server),
/// or of one peer (listening side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub status: Status,
    pub peer: Option<SocketAddr>,
    /// Why, when it is a loss or a failure.
    pub error: Option<Failure>,
}

/// What a received item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A published message.
    Message = 0,
    /// A request to answer with [`QuicNode::respond`] (`request` is its key).
    Request = 1,
    /// The reply to our request `request`.
    Response = 2,
    /// Our request `request` failed on the server; the body says why.
    Failed = 3,
    /// The peer gave up on request `request` (it timed out or was aborted there).
    Cancelled = 4,
}

/// A received message.
#[derive(Debug)]
pub struct Inbound<'a> {
    /// The peer's number on this node (stable across its reconnects).
    pub peer: u32,
    pub from: SocketAddr,
    pub channel: u16,
    pub kind: Kind,
    /// Requests: the key that pairs a request, its reply and its cancellation.
    pub request: u64,
    pub body: &'a [u8],
}

/// Where received messages and status events go.
pub trait Inbox: Send + Sync + 'static {
    /// Puts `message` where the application reads it and returns its position in the
    /// application's order, or `None` when there is no room now (it is offered again).
    fn deliver(&self, message: &Inbound<'_>) -> Option<u64>;
    /// Positions below this have been read by the application.
    fn consumed(&self) -> u64;
    /// The status changed.
    fn status(&self, event: StatusEvent);
}

/// Why a publish failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// Above `max_message` (or, for datagrams, the path's datagram size).
    TooLarge { len: usize, max: usize },
    /// A channel number at or above `max_channels`.
    BadChannel { channel: u16, max: u16 },
    /// `FailFast`: a peer's queue is full.
    Full,
    /// `Block`: the server did not read in time.
    Timeout,
    /// The node is closed.
    Closed,
    /// A request needs a connection, and there is none now.
    NotConnected,
}

/// What became of a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued for every peer (or sent, for a datagram).
    Accepted,
    /// `DropNew`, or a datagram with nowhere to go: some peer did not get it.
    Dropped,
}

/// Counters of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeMetrics {
    /// Peers connected now.
    pub peers: u32,
    /// Successful reconnections (connecting side) or peer reconnections (listening).
    pub reconnects: u64,
    /// Connections whose first flight carried data (0-RTT), and whether the latest did.
    pub zero_rtt_connections: u64,
    pub last_zero_rtt: bool,
    /// Handshakes that failed (certificates, timeouts).
    pub handshake_failures: u64,
    /// Peers disconnected for breaking the protocol, sending too much, or reading too slowly.
    pub protocol_violations: u64,
    pub slow_consumers: u64,
    /// Messages not queued for some peer (`DropNew`).
    pub dropped: u64,
    /// Datagrams sent, received, and found missing by their sequence numbers.
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub datagrams_lost: u64,
    /// Streams opened by us and by peers.
    pub streams_opened: u64,
    pub streams_accepted: u64,
    /// Bytes queued and not yet acknowledged, over every peer and channel.
    pub unacked_bytes: u64,
    /// Our requests waiting for a reply, and requests we were sent and have not answered.
    pub requests_pending: u64,
    pub answers_pending: u64,
    /// Of the current connections (summed): UDP bytes, packets lost; the smallest RTT
    /// estimate and its congestion window.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_lost: u64,
    pub rtt: Duration,
    pub cwnd: u64,
    /// The path's largest UDP payload now (what path MTU discovery found).
    pub mtu: u16,
}

/// How long a reader waits before it offers a message to a full inbox again.
const ROOM_POLL: Duration = Duration::from_millis(1);
/// How often a reader looks whether the application has read more (to acknowledge it)
/// while delivered messages wait to be read.
const ACK_TICK: Duration = Duration::from_millis(2);
/// The most a writer copies out of a send queue per write.
const WRITE_CHUNK: usize = 256 << 10;
/// Kernel socket buffers asked for.
const SOCKET_BUFFER: usize = 4 << 20;
/// How long `close` waits for the close frames to leave.
const CLOSE_GRACE: Duration = Duration::from_millis(5);
/// The most a peer may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One reliable channel to one peer.
struct OutChannel {
    index: u16,
    state: Mutex<OutState>,
    /// Wakes the channel's writer (data queued, or its stream should start).
    ready: Notify,
}

struct OutState {
    queue: SendQueue,
    /// Which connection's writer owns the queue's sent position, and whether one is
    /// running for it (a channel opened while a connection is attached could otherwise
    /// get two).
    stream_generation: u64,
    writer_active: bool,
}

impl OutState {
    /// Claims the queue for a writer of connection `generation`; false if a newer
    /// connection, or another writer of this one, has it.
    fn claim(&mut self, generation: u64) -> bool {
        if generation < self.stream_generation || (generation == self.stream_generation && self.writer_active) {
            return false;
        }
        self.stream_generation = generation;
        self.writer_active = true;
        true
    }

    fn owned_by(&self, generation: u64) -> bool {
        self.stream_generation == generation && self.writer_active
    }
}

/// Where the application's answer to a request goes: ok or not, and the body.
type Answer = tokio::sync::oneshot::Sender<(bool, Vec<u8>)>;

/// Inbound state of one peer session and channel.
type Windows = HashMap<u16, Arc<Mutex<ReceiveWindow>>>;

/// A peer: its connection (while connected) and what outlives a reconnect.
struct Peer {
    id: u32,
    addr: Mutex<SocketAddr>,
    /// The connection and its generation (bumped on every attach).
    conn: Mutex<(Option<Connection>, u64)>,
    channels: Mutex<Vec<Option<Arc<OutChannel>>>>,
    /// The peer's session, and our receive windows for it (reset when it changes).
    inbound: Mutex<(u64, Windows)>,
    /// Our remote session id for a listener's map (the hello), 0 before it.
    session: AtomicU64,
    datagram_seq: AtomicU32,
    /// Next expected datagram sequence number.
    datagram_next: AtomicU32,
    /// When it was last detached (listener: for the linger).
    detached_at: Mutex<Option<Instant>>,
    gone: AtomicBool,
}

impl Peer {
    fn new(id: u32, addr: SocketAddr) -> Arc<Peer> {
        Arc::new(Peer {
            id,
            addr: Mutex::new(addr),
            conn: Mutex::new((None, 0)),
            channels: Mutex::new(Vec::new()),
            inbound: Mutex::new((0, HashMap::new())),
            session: AtomicU64::new(0),
            datagram_seq: AtomicU32::new(0),
            datagram_next: AtomicU32::new(0),
            detached_at: Mutex::new(None),
            gone: AtomicBool::new(false),
        })
    }

    fn connection(&self) -> Option<Connection> {
        lock(&self.conn).0.clone()
    }

    fn channel(&self, node: &Arc<Shared>, index: u16) -> Arc<OutChannel> {
        let mut channels = lock(&self.channels);
        if let Some(Some(c)) = channels.get(usize::from(index)) {
            return c.clone();
        }
        if channels.len() <= usize::from(index) {
            channels.resize(usize::from(index) + 1, None);
        }
        let c = Arc::new(OutChannel {
            index,
            state: Mutex::new(OutState {
                queue: SendQueue::new(node.config.send_queue_bytes),
                stream_generation: 0,
                writer_active: false,
            }),
            ready: Notify::new(),
        });
        channels[usize::from(index)] = Some(c.clone());
        drop(channels);
        // A channel opened while connected starts its stream now.
        let conn = lock(&self.conn).clone();
        if let (Some(conn), generation) = conn {
            node.spawn_writer(conn, c.clone(), generation);
        }
        c
    }

    fn window(&self, session: u64, channel: u16) -> Arc<Mutex<ReceiveWindow>> {
        let mut inbound = lock(&self.inbound);
        if inbound.0 != session {
            // A new incarnation of the peer: what we knew of the old one is void.
            *inbound = (session, HashMap::new());
        }
        inbound.1.entry(channel).or_default().clone()
    }

    fn unacked_bytes(&self) -> u64 {
        lock(&self.channels).iter().flatten().map(|c| lock(&c.state).queue.queued_bytes() as u64).sum()
    }
}

struct Shared {
    config: NodeConfig,
    runtime: SharedRuntime,
    endpoint: quinn::Endpoint,
    client: Option<quinn::ClientConfig>,
    session: u64,
    inbox: Arc<dyn Inbox>,
    peers: RwLock<Vec<Arc<Peer>>>,
    next_peer: AtomicU32,
    closing: AtomicBool,
    /// Blocked publishers wait here for acknowledgements to free room.
    room: (Mutex<()>, Condvar),
    /// Our requests under way: what cancels each (client side).
    requests: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    next_request: AtomicU64,
    /// Requests we were sent and have not answered: where each answer goes (server side).
    answers: Mutex<HashMap<u64, Answer>>,
    /// Turns true on close: ends the sleeps of connect loops and lingering peers.
    shutdown: tokio::sync::watch::Sender<bool>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    zero_rtt: AtomicU64,
    last_zero_rtt: AtomicBool,
    handshake_failures: AtomicU64,
    protocol_violations: AtomicU64,
    slow_consumers: AtomicU64,
    dropped: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    datagrams_lost: AtomicU64,
    streams_opened: AtomicU64,
    streams_accepted: AtomicU64,
}

/// A QUIC node: see the module docs.
pub struct QuicNode {
    shared: Arc<Shared>,
    /// Scratch for datagrams: one allocation per many datagrams (`split` hands out the
    /// front, the rest is reused).
    datagram_buf: Mutex<BytesMut>,
}

impl core::fmt::Debug for QuicNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QuicNode").field("role", &self.shared.config.role).finish_non_exhaustive()
    }
}

/// Why a node could not start.
#[derive(Debug)]
pub enum StartError {
    Tls(TlsError),
    Io(std::io::Error),
    /// An option out of range.
    Config(String),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StartError {}

fn transport_config(config: &NodeConfig) -> Result<quinn::TransportConfig, StartError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| StartError::Config(format!("idle timeout {:?} is too long", config.idle_timeout)))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(config.keep_alive);
    // Channels, plus room for requests (one stream each).
    t.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(config.max_channels) + 256));
    t.max_concurrent_uni_streams(VarInt::from_u32(4));
    // Windows for a gigabit over a few milliseconds of RTT.
    t.stream_receive_window(VarInt::from_u32(8 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    Ok(t)
}

/// A quinn endpoint on `bind`, on a socket with 4 MiB kernel buffers (the default of
/// about 200 KiB overflows under a burst, and every loss costs QUIC a retransmission).
fn endpoint(bind: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, StartError> {
    let domain = if bind.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket =
        socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(StartError::Io)?;
    // What the kernel grants may be less (net.core.rmem_max); quinn works with that.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&bind.into()).map_err(StartError::Io)?;
    let config = quinn::EndpointConfig::default();
    quinn::Endpoint::new(config, server, socket.into(), Arc::new(quinn::TokioRuntime)).map_err(StartError::Io)
}

impl QuicNode {
    /// Binds, and starts listening or connecting; status events and messages go to `inbox`.
    pub fn start(config: NodeConfig, inbox: Arc<dyn Inbox>) -> Result<QuicNode, StartError> {
        if config.max_channels == 0 {
            return Err(StartError::Config("max_channels must be at least 1".into()));
        }
        let runtime = SharedRuntime::get().map_err(StartError::Io)?;
        let transport = Arc::new(transport_config(&config)?);
        let _guard = runtime.handle().enter();
        let (endpoint, client) = match &config.role {
            Role::Listen => {
                let identity =
                    config.identity.clone().unwrap_or(Identity::SelfSigned { names: vec!["localhost".into()] });
                let tls = tls::server_config(&identity, config.client_ca.as_deref()).map_err(StartError::Tls)?;
                let crypto = QuicServerConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
                server.transport_config(transport);
                (endpoint(config.addr, Some(server))?, None)
            }
            Role::Connect { .. } => {
                let mut tls = tls::client_config(&config.trust, config.identity.as_ref()).map_err(StartError::Tls)?;
                tls.resumption = rustls::client::Resumption::store(tls::session_cache_for(config.addr));
                let crypto = QuicClientConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                client.transport_config(transport);
                let bind: SocketAddr =
                    if config.addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
                (endpoint(bind, None)?, Some(client))
            }
        };
        let shared = Arc::new(Shared {
            session: session_id(),
            config,
            runtime,
            endpoint,
            client,
            inbox,
            peers: RwLock::new(Vec::new()),
            next_peer: AtomicU32::new(1),
            closing: AtomicBool::new(false),
            room: (Mutex::new(()), Condvar::new()),
            shutdown: tokio::sync::watch::Sender::new(false),
            requests: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            answers: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        match shared.config.role {
            Role::Listen => {
                shared.inbox.status(StatusEvent { status: Status::Connected, peer: None, error: None });
                let s = shared.clone();
                shared.runtime.handle().spawn(async move { s.accept_loop().await });
            }
            Role::Connect { .. } => {
                let peer = Peer::new(shared.next_peer.fetch_add(1, Ordering::Relaxed), shared.config.addr);
                shared.peers.write().unwrap_or_else(|p| p.into_inner()).push(peer.clone());
                let s = shared.clone();
                shared.runtime.handle().spawn(async move { s.connect_loop(peer).await });
            }
        }
        Ok(QuicNode { shared, datagram_buf: Mutex::new(BytesMut::new()) })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Queues `message` on `channel` for every peer (reliable, in order per channel).
    pub fn publish(&self, channel: u16, message: &[u8]) -> Result<Sent, PublishError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Relaxed) {
            return Err(PublishError::Closed);
        }
        if message.len() > s.config.max_message {
            return Err(PublishError::TooLarge { len: message.len(), max: s.config.max_message });
        }
        if channel >= s.config.max_channels {
            return Err(PublishError::BadChannel { channel, max: s.config.max_channels });
        }
        // The usual case, without allocating: every peer has room.
        {
            let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
            let all_room = peers.iter().all(|p| lock(&p.channel(s, channel).state).queue.has_room(message.len()));
            if all_room {
                for peer in peers.iter() {
                    let ch = peer.channel(s, channel);
                    lock(&ch.state).queue.push(message);
                    ch.ready.notify_one();
                }
                return Ok(Sent::Accepted);
            }
        }
        if s.config.overflow == Overflow::FailFast {
            return Err(PublishError::Full);
        }
        // Some peer is a queue behind: apply the policy to it, without holding the peer
        // list (a blocked wait must not stop peers from coming and going).
        let peers = s.peers.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut outcome = Sent::Accepted;
        for peer in &peers {
            let ch = peer.channel(s, channel);
            if !lock(&ch.state).queue.has_room(message.len()) {
                match s.config.overflow {
                    Overflow::DropNew | Overflow::FailFast => {
                        s.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        outcome = Sent::Dropped;
                        continue;
                    }
                    Overflow::Block(timeout) => {
                        if !s.wait_for_room(&ch, message.len(), timeout) {
                            if s.closing.load(Ordering::Relaxed) {
                                return Err(PublishError::Closed);
                            }
                            if matches!(s.config.role, Role::Listen) {
                                s.disconnect_slow(peer);
                                continue;
                            }
                            return Err(PublishError::Timeout);
                        }
                    }
                }
            }
            lock(&ch.state).queue.push(message);
            ch.ready.notify_one();
        }
        Ok(outcome)
    }

    /// Sends `message` as one QUIC datagram to every connected peer (unreliable).
    pub fn publish_datagram(&self, channel: u16, message: &[u8]) -> Result<Sent, PublishError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Relaxed) {
            return Err(PublishError::Closed);
        }
        let peers = s.peers.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut outcome = Sent::Accepted;
        let mut buf = lock(&self.datagram_buf);
        for peer in peers {
            let Some(conn) = peer.connection() else {
                outcome = Sent::Dropped;
                continue;
            };
            let seq = peer.datagram_seq.fetch_add(1, Ordering::Relaxed);
            if buf.capacity() < 16 + message.len() {
                buf.reserve((64 << 10).max(16 + message.len()));
            }
            let mut tmp = [0u8; 16];
            let n = encode_datagram_head(channel, seq, &mut tmp);
            buf.put_slice(&tmp[..n]);
            buf.put_slice(message);
            let datagram: Bytes = buf.split().freeze();
            let max = conn.max_datagram_size().unwrap_or(0);
            if datagram.len() > max {
                return Err(PublishError::TooLarge { len: message.len(), max: max.saturating_sub(n) });
            }
            match conn.send_datagram(datagram) {
                Ok(()) => {
                    s.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => outcome = Sent::Dropped,
            }
        }
        Ok(outcome)
    }

    /// Sends a request to the server on a stream of its own; the reply arrives in the
    /// inbox as [`Kind::Response`] (or [`Kind::Failed`]) with the key returned here.
    /// Connecting nodes only; fails with `NotConnected` while not connected.
    pub fn request(&self, body: &[u8]) -> Result<u64, PublishError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Relaxed) {
            return Err(PublishError::Closed);
        }
        if body.len() > s.config.max_message {
            return Err(PublishError::TooLarge { len: body.len(), max: s.config.max_message });
        }
        let peer = s.peers.read().unwrap_or_else(|p| p.into_inner()).first().cloned();
        let Some((peer, conn)) = peer.and_then(|p| p.connection().map(|c| (p, c))) else {
            return Err(PublishError::NotConnected);
        };
        let key = s.next_request.fetch_add(1, Ordering::Relaxed);
        let mut wire = Vec::with_capacity(StreamHeader::MAX_LEN + 5 + body.len());
        StreamHeader { kind: StreamKind::Request, session: s.session, channel: 0, first_seq: key }.encode(&mut wire);
        zerohop_proto::stream::encode_prefix(body.len(), &mut wire);
        wire.extend_from_slice(body);
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        lock(&s.requests).insert(key, cancel);
        let s2 = s.clone();
        s.runtime.handle().spawn(async move { s2.run_request(peer, conn, key, wire, cancelled).await });
        Ok(key)
    }

    /// Gives up on request `key`: its stream is reset both ways (the server sees the
    /// cancellation) and no reply will be delivered. False if it already ended.
    pub fn cancel(&self, key: u64) -> bool {
        match lock(&self.shared.requests).remove(&key) {
            Some(cancel) => cancel.send(()).is_ok(),
            None => false,
        }
    }

    /// Answers request `key` (delivered as [`Kind::Request`]): `ok` with the reply, or
    /// not ok with why. False if the request is gone (cancelled, or its peer left).
    pub fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        match lock(&self.shared.answers).remove(&key) {
            Some(answer) => answer.send((ok, body.to_vec())).is_ok(),
            None => false,
        }
    }

    /// Counters, with the current connections' transport statistics.
    pub fn metrics(&self) -> NodeMetrics {
        let s = &self.shared;
        let c = &s.counters;
        let mut m = NodeMetrics {
            reconnects: c.reconnects.load(Ordering::Relaxed),
            zero_rtt_connections: c.zero_rtt.load(Ordering::Relaxed),
            last_zero_rtt: c.last_zero_rtt.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            protocol_violations: c.protocol_violations.load(Ordering::Relaxed),
            slow_consumers: c.slow_consumers.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
            datagrams_received: c.datagrams_received.load(Ordering::Relaxed),
            datagrams_lost: c.datagrams_lost.load(Ordering::Relaxed),
            streams_opened: c.streams_opened.load(Ordering::Relaxed),
            streams_accepted: c.streams_accepted.load(Ordering::Relaxed),
            ..NodeMetrics::default()
        };
        m.requests_pending = lock(&s.requests).len() as u64;
        m.answers_pending = lock(&s.answers).len() as u64;
        for peer in s.peers.read().unwrap_or_else(|p| p.into_inner()).iter() {
            m.unacked_bytes += peer.unacked_bytes();
            if let Some(conn) = peer.connection() {
                let st = conn.stats();
                m.peers += 1;
                m.bytes_sent += st.udp_tx.bytes;
                m.bytes_received += st.udp_rx.bytes;
                m.packets_lost += st.path.lost_packets;
                if m.rtt.is_zero() || st.path.rtt < m.rtt {
                    m.rtt = st.path.rtt;
                    m.cwnd = st.path.cwnd;
                    m.mtu = st.path.current_mtu;
                }
            }
        }
        m
    }

    /// Waits up to `linger` for every peer to acknowledge what was queued; true if
    /// nothing is left unacknowledged. Publishing may go on meanwhile.
    pub fn drain(&self, linger: Duration) -> bool {
        let deadline = Instant::now() + linger;
        loop {
            let left: u64 =
                self.shared.peers.read().unwrap_or_else(|p| p.into_inner()).iter().map(|p| p.unacked_bytes()).sum();
            if left == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let (m, cv) = &self.shared.room;
            let g = lock(m);
            let _ = cv.wait_timeout(g, (deadline - now).min(Duration::from_millis(5)));
        }
    }

    /// Closes every connection and the socket. Call [`drain`](Self::drain) first to let
    /// queued messages reach their peers. Idempotent.
    pub fn close(&self) {
        let s = &self.shared;
        if s.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let peers = std::mem::take(&mut *s.peers.write().unwrap_or_else(|p| p.into_inner()));
        for peer in &peers {
            if let Some(conn) = lock(&peer.conn).0.take() {
                conn.close(CloseCode::Closed.varint(), b"closed");
            }
        }
        drop(peers);
        s.endpoint.close(CloseCode::Closed.varint(), b"closed");
        s.shutdown.send_replace(true);
        let (_, cv) = &s.room;
        cv.notify_all();
        // Let the close frames go out; not the whole draining period (bounded: the
        // runtime is shared and stays up).
        if tokio::runtime::Handle::try_current().is_err() {
            let endpoint = s.endpoint.clone();
            let _ =
                s.runtime.handle().block_on(async { tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await });
        }
        s.inbox.status(StatusEvent { status: Status::Closed, peer: None, error: None });
    }
}

impl Drop for QuicNode {
    fn drop(&mut self) {
        self.close();
    }
}

fn session_id() -> u64 {
    // Unique enough across restarts: time and process, mixed.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut x = (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    x ^= COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x.max(1)
}

/// A datagram starts with its channel and sequence number (LEB128 each).
fn encode_datagram_head(channel: u16, seq: u32, out: &mut [u8; 16]) -> usize {
    let mut n = 0;
    for mut x in [u64::from(channel), u64::from(seq)] {
        loop {
            let byte = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                out[n] = byte;
                n += 1;
                break;
            }
            out[n] = byte | 0x80;
            n += 1;
        }
    }
    n
}

fn decode_datagram_head(bytes: &[u8]) -> Option<(u16, u32, usize)> {
    let (channel, a) = get_varint(bytes).ok()??;
    let (seq, b) = get_varint(&bytes[a..]).ok()??;
    Some((u16::try_from(channel).ok()?, u32::try_from(seq).ok()?, a + b))
}

impl Shared {
    /// Sleeps for `d`; false if the node closed meanwhile (or before).
    async fn sleep_unless_closed(&self, d: Duration) -> bool {
        let mut closed = self.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => !*self.shutdown.borrow(),
            _ = closed.wait_for(|c| *c) => false,
        }
    }

    fn spawn_writer(self: &Arc<Self>, conn: Connection, channel: Arc<OutChannel>, generation: u64) {
        let s = self.clone();
        self.runtime.handle().spawn(async move { s.write_channel(conn, channel, generation).await });
    }

    fn wait_for_room(&self, ch: &OutChannel, len: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &self.room;
        let mut g = lock(m);
        loop {
            if lock(&ch.state).queue.has_room(len) {
                return true;
            }
            if self.closing.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(10)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn room_freed(&self) {
        let (m, cv) = &self.room;
        drop(lock(m));
        cv.notify_all();
    }

    /// A listener's peer that does not read: closed, forgotten (so its queue no longer
    /// holds anyone up), and counted.
    fn disconnect_slow(&self, peer: &Arc<Peer>) {
        self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = peer.connection() {
            conn.close(CloseCode::SlowConsumer.varint(), b"slow consumer: did not read in time");
        }
        self.forget(peer);
        self.inbox.status(StatusEvent {
            status: Status::Disconnected,
            peer: Some(*lock(&peer.addr)),
            error: Some(Failure {
                kind: FailureKind::SlowConsumer { by_peer: false },
                message: "the peer did not read what it was sent in time".into(),
            }),
        });
    }

    fn forget(&self, peer: &Arc<Peer>) {
        peer.gone.store(true, Ordering::SeqCst);
        self.peers.write().unwrap_or_else(|p| p.into_inner()).retain(|p| !Arc::ptr_eq(p, peer));
        self.room_freed();
    }

    fn violation(&self, conn: &Connection, code: CloseCode, why: &str) {
        self.counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
        conn.close(code.varint(), why.as_bytes());
    }

    /// Makes `conn` the peer's connection and starts a writer for each of its channels.
    fn attach(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Connection) {
        *lock(&peer.addr) = conn.remote_address();
        *lock(&peer.detached_at) = None;
        let generation = {
            let mut c = lock(&peer.conn);
            c.1 += 1;
            c.0 = Some(conn.clone());
            c.1
        };
        let channels: Vec<Arc<OutChannel>> = lock(&peer.channels).iter().flatten().cloned().collect();
        for ch in channels {
            self.spawn_writer(conn.clone(), ch, generation);
        }
    }

    fn detach(&self, peer: &Arc<Peer>, conn: &Connection) {
        let mut c = lock(&peer.conn);
        if c.0.as_ref().is_some_and(|cur| cur.stable_id() == conn.stable_id()) {
            c.0 = None;
            *lock(&peer.detached_at) = Some(Instant::now());
        }
        drop(c);
        // Writers of the old connection stop at their next write; wake idle ones.
        for ch in lock(&peer.channels).iter().flatten() {
            ch.ready.notify_one();
        }
    }

    // ---- sending -----------------------------------------------------------------

    /// Runs one channel's stream on one connection: writes what is queued, reads the
    /// peer's acknowledgements. Ends with the connection.
    async fn write_channel(self: Arc<Self>, conn: Connection, ch: Arc<OutChannel>, generation: u64) {
        loop {
            if !lock(&ch.state).claim(generation) {
                return;
            }
            let result = self.write_channel_once(&conn, &ch, generation).await;
            let mut st = lock(&ch.state);
            if st.owned_by(generation) {
                st.writer_active = false;
            } else {
                // A newer writer owns the queue; a wake-up this one took is its.
                ch.ready.notify_one();
            }
            drop(st);
            match result {
                // 0-RTT data was refused: the stream is gone, open it again (1-RTT).
                Err(quinn::WriteError::ZeroRttRejected) => continue,
                _ => return,
            }
        }
    }

    async fn write_channel_once(
        self: &Arc<Self>,
        conn: &Connection,
        ch: &Arc<OutChannel>,
        generation: u64,
    ) -> Result<(), quinn::WriteError> {
        let Ok((mut send, recv)) = conn.open_bi().await else { return Ok(()) };
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut chunk = Vec::with_capacity(StreamHeader::MAX_LEN);
        {
            let mut st = lock(&ch.state);
            if !st.owned_by(generation) {
                return Ok(()); // a newer connection owns the queue
            }
            let first_seq = st.queue.rewind();
            StreamHeader { kind: StreamKind::Channel, session: self.session, channel: ch.index, first_seq }
                .encode(&mut chunk);
        }
        let acks = {
            let (s, ch) = (self.clone(), ch.clone());
            let conn = conn.clone();
            self.runtime.handle().spawn(async move { s.read_acks(conn, ch, recv).await })
        };
        let result = async {
            send.write_all(&chunk).await?;
            loop {
                chunk.clear();
                {
                    let st = lock(&ch.state);
                    if !st.owned_by(generation) {
                        return Ok(());
                    }
                    let unsent = st.queue.unsent();
                    chunk.extend_from_slice(&unsent[..unsent.len().min(WRITE_CHUNK)]);
                }
                if chunk.is_empty() {
                    tokio::select! {
                        _ = ch.ready.notified() => {}
                        _ = conn.closed() => return Ok(()),
                    }
                    continue;
                }
                send.write_all(&chunk).await?;
                let mut st = lock(&ch.state);
                if !st.owned_by(generation) {
                    return Ok(());
                }
                st.queue.mark_sent(chunk.len());
            }
        }
        .await;
        acks.abort();
        result
    }

    /// Applies the acknowledgements the peer writes back on a channel's stream.
    async fn read_acks(self: Arc<Self>, conn: Connection, ch: Arc<OutChannel>, mut recv: RecvStream) {
        let mut pending: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = recv.read_chunk(4096, true).await {
            pending.extend_from_slice(&chunk.bytes);
            let mut at = 0;
            loop {
                match get_varint(&pending[at..]) {
                    Ok(Some((ack, n))) => {
                        at += n;
                        if lock(&ch.state).queue.ack(ack).is_err() {
                            self.violation(&conn, CloseCode::Protocol, "acknowledged a message never sent");
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.violation(&conn, CloseCode::Protocol, "malformed acknowledgement");
                        return;
                    }
                }
            }
            pending.drain(..at);
            self.room_freed();
        }
    }

    // ---- connecting --------------------------------------------------------------

    async fn connect_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let Role::Connect { server_name } = &self.config.role else { return };
        let mut life = Lifecycle::new(self.config.backoff, self.session);
        let server = Some(self.config.addr);
        self.inbox.status(StatusEvent { status: Status::Connecting, peer: server, error: None });
        let mut ever_connected = false;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let failure = match self.connect_once(&peer, server_name).await {
                Ok(conn) => {
                    if ever_connected {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    life.on(Event::Connected);
                    self.inbox.status(StatusEvent { status: Status::Connected, peer: server, error: None });
                    let reason = self.serve_connection(&peer, &conn).await;
                    self.detach(&peer, &conn);
                    if self.closing.load(Ordering::SeqCst) {
                        return;
                    }
                    (Failure::of(&reason), Event::Lost)
                }
                Err(f) => {
                    self.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    (f, Event::Failed)
                }
            };
            let (failure, event) = failure;
            let next = if failure.is_permanent() {
                life.on(Event::Close); // certificates do not fix themselves
                None
            } else {
                life.on(event).retry_after
            };
            let status = match (life.status(), next) {
                (Status::Closed, _) => Status::Disconnected,
                (s, _) => s,
            };
            self.inbox.status(StatusEvent { status, peer: server, error: Some(failure) });
            let Some(wait) = next else { return };
            if !self.sleep_unless_closed(wait).await {
                return;
            }
        }
    }

    async fn connect_once(self: &Arc<Self>, peer: &Arc<Peer>, server_name: &str) -> Result<Connection, Failure> {
        let client = self.client.clone().expect("a connecting node has a client config");
        let connecting = self
            .endpoint
            .connect_with(client, self.config.addr, server_name)
            .map_err(|e| Failure { kind: FailureKind::Lost, message: e.to_string() })?;
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                // Early data: the hello and every channel's backlog go in the first flight.
                self.send_hello(&conn);
                self.attach(peer, &conn);
                if accepted.await {
                    self.counters.zero_rtt.fetch_add(1, Ordering::Relaxed);
                    self.counters.last_zero_rtt.store(true, Ordering::Relaxed);
                } else if let Some(reason) = conn.close_reason() {
                    self.detach(peer, &conn);
                    return Err(Failure::of(&reason));
                } else {
                    // Refused: what the first flight carried is gone. The hello goes again,
                    // and attaching again starts new writers that send everything
                    // unacknowledged from the start.
                    self.counters.last_zero_rtt.store(false, Ordering::Relaxed);
                    self.send_hello(&conn);
                    self.attach(peer, &conn);
                }
                Ok(conn)
            }
            Err(connecting) => match connecting.await {
                Ok(conn) => {
                    self.counters.last_zero_rtt.store(false, Ordering::Relaxed);
                    self.send_hello(&conn);
                    self.attach(peer, &conn);
                    Ok(conn)
                }
                Err(e) => Err(Failure::of(&e)),
            },
        }
    }

    fn send_hello(self: &Arc<Self>, conn: &Connection) {
        let conn = conn.clone();
        let session = self.session;
        self.runtime.handle().spawn(async move {
            let Ok(mut send) = conn.open_uni().await else { return };
            let mut hello = Vec::new();
            StreamHeader { kind: StreamKind::Hello, session, channel: 0, first_seq: 0 }.encode(&mut hello);
            if send.write_all(&hello).await.is_ok() {
                let _ = send.finish();
            }
        });
    }

    // ---- listening ---------------------------------------------------------------

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.closing.load(Ordering::SeqCst) {
                incoming.refuse();
                continue;
            }
            let s = self.clone();
            self.runtime.handle().spawn(async move { s.accept_one(incoming).await });
        }
    }

    async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let failed = |s: &Self| {
            s.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
        };
        let Ok(connecting) = incoming.accept() else { return failed(&self) };
        // The server side may always read early data.
        let (conn, established) = match connecting.into_0rtt() {
            Ok((conn, established)) => (conn, Some(established)),
            Err(connecting) => match connecting.await {
                Ok(conn) => (conn, None),
                Err(_) => return failed(&self),
            },
        };
        // With mutual TLS nobody is heard before their certificate is checked; without
        // it there is nothing more to learn from the handshake, so 0-RTT data counts.
        // (`established` resolves once the handshake is over, to whether the client's
        // early data was taken: the outcome of the handshake is the close reason.)
        if self.config.client_ca.is_some()
            && let Some(established) = established
            && (established.await, conn.close_reason()).1.is_some()
        {
            return failed(&self);
        }
        let session = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&conn)).await {
            Ok(Ok(session)) => session,
            Ok(Err(_)) if conn.close_reason().is_some() => return failed(&self),
            Ok(Err(why)) => return self.violation(&conn, CloseCode::Protocol, why),
            Err(_) => return self.violation(&conn, CloseCode::Protocol, "no hello in time"),
        };
        let (peer, returning) = self.peer_for(session, conn.remote_address());
        if returning {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.attach(&peer, &conn);
        let addr = Some(conn.remote_address());
        self.inbox.status(StatusEvent { status: Status::Connected, peer: addr, error: None });
        let reason = self.serve_connection(&peer, &conn).await;
        self.detach(&peer, &conn);
        if self.closing.load(Ordering::SeqCst) || peer.gone.load(Ordering::SeqCst) {
            return;
        }
        let failure = Failure::of(&reason);
        if failure.kind == FailureKind::ClosedByPeer {
            // It left on purpose: nothing to keep for its return, and no failure to name.
            self.inbox.status(StatusEvent { status: Status::Disconnected, peer: addr, error: None });
            if lock(&peer.conn).0.is_none() {
                self.forget(&peer);
            }
            return;
        }
        self.inbox.status(StatusEvent { status: Status::Disconnected, peer: addr, error: Some(failure) });
        // Keep what it has not acknowledged for a while, in case it comes back.
        if !self.sleep_unless_closed(self.config.peer_linger).await {
            return;
        }
        if lock(&peer.conn).0.is_none() {
            self.forget(&peer);
        }
    }

    /// The peer kept for `session` (a reconnect), or a new one.
    fn peer_for(&self, session: u64, addr: SocketAddr) -> (Arc<Peer>, bool) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.iter().find(|p| p.session.load(Ordering::Relaxed) == session) {
            if let Some(old) = p.connection() {
                // The same session on a new connection: the old one is dead.
                old.close(CloseCode::Closed.varint(), b"replaced by a reconnect");
            }
            return (p.clone(), true);
        }
        let peer = Peer::new(self.next_peer.fetch_add(1, Ordering::Relaxed), addr);
        peer.session.store(session, Ordering::Relaxed);
        peers.push(peer.clone());
        (peer, false)
    }

    // ---- requests ----------------------------------------------------------------

    /// Runs one request: writes it, reads the reply into the inbox, or resets the stream
    /// when cancelled. Nothing of it is left when it returns.
    async fn run_request(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        key: u64,
        wire: Vec<u8>,
        cancelled: tokio::sync::oneshot::Receiver<()>,
    ) {
        const CANCELLED: VarInt = VarInt::from_u32(1);
        enum Outcome {
            Reply(Vec<u8>),
            Failed(String),
            Cancelled,
        }
        let max = self.config.max_message + 6;
        let exchange = async {
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(pair) => pair,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
            let reply = async {
                send.write_all(&wire).await.map_err(|e| e.to_string())?;
                let _ = send.finish();
                recv.read_to_end(max).await.map_err(|e| e.to_string())
            };
            tokio::select! {
                r = reply => r.map_or_else(Outcome::Failed, Outcome::Reply),
                _ = cancelled => {
                    let _ = send.reset(CANCELLED);
                    let _ = recv.stop(CANCELLED);
                    Outcome::Cancelled
                }
            }
        };
        let outcome = exchange.await;
        lock(&self.requests).remove(&key);
        let (kind, body) = match &outcome {
            Outcome::Cancelled => return, // nobody waits for a reply
            Outcome::Reply(bytes) => match parse_reply(bytes) {
                Some((true, body)) => (Kind::Response, body),
                Some((false, body)) => (Kind::Failed, body),
                None => (Kind::Failed, &b"a malformed reply"[..]),
            },
            Outcome::Failed(why) => (Kind::Failed, why.as_bytes()),
        };
        let m = Inbound { peer: peer.id, from: conn.remote_address(), channel: 0, kind, request: key, body };
        self.deliver_surely(&m).await;
    }

    /// Delivers `m`, waiting for room: replies and cancellations are never dropped.
    async fn deliver_surely(&self, m: &Inbound<'_>) {
        while self.inbox.deliver(m).is_none() {
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }

    /// Serves one request stream: hands the request to the application and writes its
    /// answer; if the client gives up first, tells the application so.
    async fn serve_request(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        first_bytes: Bytes,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let max = self.config.max_message + 5;
        let mut request = first_bytes.to_vec();
        let rest = match recv.read_to_end(max.saturating_sub(request.len())).await {
            Ok(rest) => rest,
            Err(quinn::ReadToEndError::TooLong) => {
                return self.violation(&conn, CloseCode::TooLarge, "request above the limit");
            }
            Err(_) => return, // the client gave up before sending it whole
        };
        request.extend_from_slice(&rest);
        let Some((len, at)) = get_varint(&request).ok().flatten() else {
            return self.violation(&conn, CloseCode::Protocol, "malformed request");
        };
        if request.len() - at != len as usize {
            return self.violation(&conn, CloseCode::Protocol, "request length does not match");
        }
        let key = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        lock(&self.answers).insert(key, answer);
        let from = conn.remote_address();
        let m = Inbound { peer: peer.id, from, channel: 0, kind: Kind::Request, request: key, body: &request[at..] };
        self.deliver_surely(&m).await;
        tokio::select! {
            reply = answered => {
                if let Ok((ok, body)) = reply {
                    let mut wire = Vec::with_capacity(6 + body.len());
                    wire.push(u8::from(ok));
                    zerohop_proto::stream::encode_prefix(body.len(), &mut wire);
                    wire.extend_from_slice(&body);
                    if send.write_all(&wire).await.is_ok() {
                        let _ = send.finish();
                    }
                }
            }
            _ = send.stopped() => {
                // The client gave up (timeout, abort) or left: the handler may stop too.
                if lock(&self.answers).remove(&key).is_some() {
                    let m = Inbound { peer: peer.id, from, channel: 0, kind: Kind::Cancelled, request: key, body: &[] };
                    self.deliver_surely(&m).await;
                }
            }
        }
    }

    // ---- receiving ---------------------------------------------------------------

    /// Reads the peer's streams and datagrams until the connection ends; returns why.
    async fn serve_connection(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Connection) -> ConnectionError {
        let datagrams = {
            let (s, p, c) = (self.clone(), peer.clone(), conn.clone());
            self.runtime.handle().spawn(async move { s.read_datagrams(p, c).await })
        };
        let streams = {
            let (s, p, c) = (self.clone(), peer.clone(), conn.clone());
            self.runtime.handle().spawn(async move {
                while let Ok((send, recv)) = c.accept_bi().await {
                    s.counters.streams_accepted.fetch_add(1, Ordering::Relaxed);
                    let (s2, p2, c2) = (s.clone(), p.clone(), c.clone());
                    s.runtime.handle().spawn(async move { s2.read_stream(p2, c2, send, recv).await });
                }
            })
        };
        let reason = conn.closed().await;
        datagrams.abort();
        streams.abort();
        reason
    }

    async fn read_datagrams(self: Arc<Self>, peer: Arc<Peer>, conn: Connection) {
        while let Ok(d) = conn.read_datagram().await {
            let Some((channel, seq, at)) = decode_datagram_head(&d) else {
                self.counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
            let expected = peer.datagram_next.load(Ordering::Relaxed);
            let gap = seq.wrapping_sub(expected);
            if gap < u32::MAX / 2 {
                self.counters.datagrams_lost.fetch_add(u64::from(gap), Ordering::Relaxed);
                peer.datagram_next.store(seq.wrapping_add(1), Ordering::Relaxed);
            }
            let m = Inbound {
                peer: peer.id,
                from: conn.remote_address(),
                channel,
                kind: Kind::Message,
                request: 0,
                body: &d[at..],
            };
            if self.inbox.deliver(&m).is_none() {
                // Unreliable: no room means lost, and counted as such.
                self.counters.datagrams_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn read_stream(self: Arc<Self>, peer: Arc<Peer>, conn: Connection, send: SendStream, mut recv: RecvStream) {
        let mut head = Vec::new();
        let (header, rest) = loop {
            match StreamHeader::decode(&head) {
                Ok(Some((h, n))) => break (h, Bytes::from(head.split_off(n))),
                Ok(None) if head.len() < StreamHeader::MAX_LEN => {}
                _ => return self.violation(&conn, CloseCode::Protocol, "not a zerohop stream"),
            }
            match recv.read_chunk(StreamHeader::MAX_LEN - head.len(), true).await {
                Ok(Some(c)) => head.extend_from_slice(&c.bytes),
                _ => return,
            }
        };
        match header.kind {
            StreamKind::Channel if header.channel < self.config.max_channels => {
                self.read_channel(peer, conn, header, rest, send, recv).await
            }
            StreamKind::Channel => self.violation(&conn, CloseCode::Protocol, "channel out of range"),
            StreamKind::Request if matches!(self.config.role, Role::Listen) => {
                self.serve_request(peer, conn, rest, send, recv).await
            }
            _ => self.violation(&conn, CloseCode::Protocol, "unexpected stream kind"),
        }
    }

    /// Delivers one channel stream's messages, acknowledging what the application read.
    async fn read_channel(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        header: StreamHeader,
        first_bytes: Bytes,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let window = peer.window(header.session, header.channel);
        lock(&window).start_stream(header.first_seq);
        let from = conn.remote_address();
        let mut decoder = StreamDecoder::new(self.config.max_message);
        // Messages the inbox had no room for, end to end, and their lengths.
        let mut backlog: Vec<u8> = Vec::new();
        let mut lens: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
        let mut backlog_at = 0;
        let mut ack_buf: Vec<u8> = Vec::with_capacity(10);
        let mut input = Some(first_bytes);
        let mut ended = false;
        loop {
            // Offer what waits; then take new bytes only if nothing waits.
            while let Some(&len) = lens.front() {
                let m = Inbound {
                    peer: peer.id,
                    from,
                    channel: header.channel,
                    kind: Kind::Message,
                    request: 0,
                    body: &backlog[backlog_at..backlog_at + len],
                };
                let Some(pos) = self.inbox.deliver(&m) else { break };
                lock(&window).delivered(pos);
                lens.pop_front();
                backlog_at += len;
            }
            if lens.is_empty() {
                backlog.clear();
                backlog_at = 0;
            }
            let ack = lock(&window).consumed(self.inbox.consumed());
            if let Some(ack) = ack {
                ack_buf.clear();
                put_varint(ack, &mut ack_buf);
                if send.write_all(&ack_buf).await.is_err() {
                    return;
                }
            }
            if let Some(bytes) = input.take() {
                let pushed = {
                    let mut w = lock(&window);
                    let inbox = &self.inbox;
                    decoder.push(&bytes, |body| {
                        if !w.accept() {
                            return;
                        }
                        if lens.is_empty() {
                            let m = Inbound {
                                peer: peer.id,
                                from,
                                channel: header.channel,
                                kind: Kind::Message,
                                request: 0,
                                body,
                            };
                            if let Some(pos) = inbox.deliver(&m) {
                                w.delivered(pos);
                                return;
                            }
                        }
                        backlog.extend_from_slice(body);
                        lens.push_back(body.len());
                    })
                };
                match pushed {
                    Ok(()) => {}
                    Err(StreamError::TooLarge { .. }) => {
                        return self.violation(&conn, CloseCode::TooLarge, "message above the limit");
                    }
                    Err(StreamError::BadPrefix) => {
                        return self.violation(&conn, CloseCode::Protocol, "malformed length prefix");
                    }
                }
                continue;
            }
            let waiting = !lens.is_empty();
            let unread = lock(&window).has_unread();
            if ended && !waiting && !unread {
                let _ = send.finish();
                return;
            }
            if waiting || ended {
                tokio::select! {
                    _ = tokio::time::sleep(if waiting { ROOM_POLL } else { ACK_TICK }) => {}
                    _ = conn.closed() => return,
                }
                continue;
            }
            tokio::select! {
                chunk = recv.read_chunk(WRITE_CHUNK, true) => match chunk {
                    Ok(Some(c)) => input = Some(c.bytes),
                    Ok(None) => ended = true,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(ACK_TICK), if unread => {}
            }
        }
    }
}

/// A reply: a status byte (1 ok, 0 failed) and the framed body.
fn parse_reply(bytes: &[u8]) -> Option<(bool, &[u8])> {
    let (&status, rest) = bytes.split_first()?;
    let (len, at) = get_varint(rest).ok()??;
    (rest.len() - at == len as usize && status <= 1).then(|| (status == 1, &rest[at..]))
}

/// Reads the connecting side's hello: its session.
async fn read_hello(conn: &Connection) -> Result<u64, &'static str> {
    let mut recv = conn.accept_uni().await.map_err(|_| "connection closed before its hello")?;
    let bytes = recv.read_to_end(StreamHeader::MAX_LEN).await.map_err(|_| "hello too long or cut")?;
    match StreamHeader::decode(&bytes) {
        Ok(Some((h, _))) if h.kind == StreamKind::Hello => Ok(h.session),
        _ => Err("not a zerohop hello"),
    }
}
