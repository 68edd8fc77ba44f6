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
//!
//! - [`config`]: the configuration, status events, the [`Inbox`] trait, errors, counters.
//! - `send`: channel writers, acknowledgements, full queues and slow consumers.
//! - `connect`: the connecting loop (backoff, 0-RTT) and the listener's accept path.
//! - `receive`: streams and datagrams into the inbox, acknowledging what was read.
//! - `request`: one stream per request, both sides.
//!
//! Here: [`QuicNode`] (the public handle), the state its tasks share, and peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::Notify;
use zerohop_proto::lifecycle::{Event, Lifecycle, Status};
use zerohop_proto::session::{ReceiveWindow, SendQueue, StreamHeader, StreamKind, get_varint, put_varint};
use zerohop_proto::stream::{MAX_PREFIX_LEN, StreamDecoder, StreamError, write_prefix};

use crate::runtime::SharedRuntime;

pub mod config;
mod connect;
mod receive;
mod request;
mod send;

use crate::tls::{self, Identity, TlsError};
pub use config::*;

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
    let mut field = [0u8; MAX_PREFIX_LEN];
    let a = write_prefix(usize::from(channel), &mut field);
    out[..a].copy_from_slice(&field[..a]);
    let b = write_prefix(seq as usize, &mut field);
    out[a..a + b].copy_from_slice(&field[..b]);
    a + b
}

fn decode_datagram_head(bytes: &[u8]) -> Option<(u16, u32, usize)> {
    let (channel, a) = get_varint(bytes).ok()??;
    let (seq, b) = get_varint(&bytes[a..]).ok()??;
    Some((u16::try_from(channel).ok()?, u32::try_from(seq).ok()?, a + b))
}

impl Shared {
    /// Sleeps for `d`; false if the node closed meanwhile (or before).
    pub(super) async fn sleep_unless_closed(&self, d: Duration) -> bool {
        let mut closed = self.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => !*self.shutdown.borrow(),
            _ = closed.wait_for(|c| *c) => false,
        }
    }

    pub(super) fn spawn_writer(self: &Arc<Self>, conn: Connection, channel: Arc<OutChannel>, generation: u64) {
        let s = self.clone();
        self.runtime.handle().spawn(async move { s.write_channel(conn, channel, generation).await });
    }

    pub(super) fn wait_for_room(&self, ch: &OutChannel, len: usize, timeout: Duration) -> bool {
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

    pub(super) fn room_freed(&self) {
        let (m, cv) = &self.room;
        drop(lock(m));
        cv.notify_all();
    }

    /// A listener's peer that does not read: closed, forgotten (so its queue no longer
    /// holds anyone up), and counted.
    pub(super) fn disconnect_slow(&self, peer: &Arc<Peer>) {
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

    pub(super) fn forget(&self, peer: &Arc<Peer>) {
        peer.gone.store(true, Ordering::SeqCst);
        self.peers.write().unwrap_or_else(|p| p.into_inner()).retain(|p| !Arc::ptr_eq(p, peer));
        self.room_freed();
    }

    pub(super) fn violation(&self, conn: &Connection, code: CloseCode, why: &str) {
        self.counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
        conn.close(code.varint(), why.as_bytes());
    }

    /// Makes `conn` the peer's connection and starts a writer for each of its channels.
    pub(super) fn attach(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Connection) {
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

    pub(super) fn detach(&self, peer: &Arc<Peer>, conn: &Connection) {
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
}
