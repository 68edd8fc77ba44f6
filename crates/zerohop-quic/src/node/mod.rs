//! [`QuicNode`]: one side of a `quic://` hub, listening for any number of peers or
//! connecting to one.
//!
//! What it sends:
//! - **Channels** (reliable): each channel is its own bidirectional stream per peer, so
//!   a slow channel does not hold up another. Messages are framed
//!   ([`zerohop_proto::stream`]) and kept in a [`SendQueue`](zerohop_proto::session::SendQueue)
//!   until the peer's *application* has read them; the peer acknowledges on the same
//!   stream, and after a reconnect the unacknowledged ones go again and the peer drops
//!   what it has already delivered ([`zerohop_proto::session`]). So no accepted message
//!   is lost while the sender lives, even across a restart of the receiver.
//! - **Datagrams** (unreliable, opt-in): one QUIC datagram per message, numbered so the
//!   receiver counts what was lost.
//! - **Requests**: one stream each.
//!
//! What it receives goes to an [`Inbox`] (the hub's receive ring), which says where the
//! message landed and how far the application has read; a full inbox makes the stream
//! wait, and QUIC flow control then pushes back on the sender.
//!
//! ## Threads
//!
//! quinn-proto is a state machine without I/O; the node drives it with its own socket
//! (`io`) in an [`engine`] behind one lock. Whoever holds the lock moves it on:
//!
//! ```text
//!   publish ──► engine: queue, stream, encrypt ──► sendmsg (GSO)      caller's thread
//!   poll    ──► engine: recvmsg, decrypt, deliver ──► inbox           caller's thread
//!   socket readable / timer due ──► engine ──► inbox, doorbell        the node's I/O thread
//! ```
//!
//! So a message leaves on the thread that publishes it, and a receiver that polls reads
//! the socket itself: neither waits for a thread hop. The I/O thread does the rest
//! (acknowledgements, retransmissions, keep-alives, handshakes) and delivers while
//! nobody polls; it leaves the socket to a reader that is polling it.
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
//! - `engine`: connections, peers, timers, events, publishing.
//! - `connect`: connecting (backoff, 0-RTT, the hello) and the listener's peers.
//! - `channel`: channel streams both ways, and reading every kind of stream.
//! - `request`: one stream per request, both sides.
//! - `io`: the socket, sending (GSO, a full kernel buffer), the I/O thread's wake-up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use quinn_proto::VarInt;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use zerohop_proto::lifecycle::{Lifecycle, Status};
use zerohop_proto::session::get_varint;
use zerohop_proto::stream::{MAX_PREFIX_LEN, write_prefix};

mod channel;
pub mod config;
mod connect;
mod engine;
mod io;
mod request;

use crate::tls::{self, Identity, TlsError};
pub use config::*;
use connect::Connector;
use engine::Engine;

/// The largest UDP payload path MTU discovery tries (16 KiB: on loopback, 64 KiB
/// messages then take 4 packets instead of 45, and larger packets gained nothing).
const MAX_UDP_PAYLOAD: u16 = 16 << 10;

/// How long a reader that polls the socket itself keeps the I/O thread off it after
/// its last poll.
const READER_ACTIVE: Duration = Duration::from_millis(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the node's handle, its I/O thread and its pollers share.
struct Shared {
    config: Arc<NodeConfig>,
    engine: Mutex<Engine>,
    /// Blocked publishers and `drain` wait here (on the engine's lock) for room.
    room: Condvar,
    wake: io::Wake,
    /// When the I/O thread wakes by itself next, in µs since `epoch` (MAX: not).
    io_deadline_us: AtomicU64,
    epoch: Instant,
    stop: AtomicBool,
    /// How many times a reader polled ([`QuicNode::pump`]); the I/O thread watches it.
    pumps: AtomicU64,
    /// Set when the reader parks ([`QuicNode::reader_parks`]), cleared by its next poll.
    reader_parked: AtomicBool,
    /// Whether the I/O thread leaves the socket to a polling reader now.
    io_ignores_socket: AtomicBool,
    local: SocketAddr,
}

impl Shared {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    /// After the caller's thread worked on the engine: wake publishers if room was
    /// freed, and (with `wake_io`) the I/O thread if something is due before it would
    /// wake. A polling reader does not: it runs the timers itself while it polls.
    fn after(&self, mut e: MutexGuard<'_, Engine>, wake_io: bool) {
        let freed = std::mem::take(&mut e.room_freed);
        // Compared under the lock: the I/O thread stores its deadline under it too.
        let wake = wake_io
            && e.next_deadline().is_some_and(|due| {
                let due_us = due.saturating_duration_since(self.epoch).as_micros() as u64;
                due_us < self.io_deadline_us.load(Ordering::Acquire)
            });
        drop(e);
        if freed {
            self.room.notify_all();
        }
        if wake {
            self.wake.wake();
        }
    }
}

/// A QUIC node: see the module docs.
pub struct QuicNode {
    shared: Arc<Shared>,
    io_thread: Mutex<Option<JoinHandle<()>>>,
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

fn transport_config(config: &NodeConfig) -> Result<quinn_proto::TransportConfig, StartError> {
    let mut t = quinn_proto::TransportConfig::default();
    let idle = quinn_proto::IdleTimeout::try_from(config.idle_timeout)
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
    // Path MTU discovery may grow packets past Ethernet's 1500 bytes where the path
    // allows (loopback, jumbo frames): fewer, larger packets cost less per byte.
    let mut mtu = quinn_proto::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

/// The endpoint's socket, bound where the role says.
fn bind_for(config: &NodeConfig) -> Result<io::Socket, StartError> {
    let bind: SocketAddr = match config.role {
        Role::Listen => config.addr,
        Role::Connect { .. } if config.addr.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        Role::Connect { .. } => SocketAddr::from(([0u16; 8], 0)),
    };
    io::Socket::bind(bind).map_err(StartError::Io)
}

impl QuicNode {
    /// Binds, and starts listening or connecting; status events and messages go to `inbox`.
    pub fn start(config: NodeConfig, inbox: Arc<dyn Inbox>) -> Result<QuicNode, StartError> {
        if config.max_channels == 0 {
            return Err(StartError::Config("max_channels must be at least 1".into()));
        }
        let transport = Arc::new(transport_config(&config)?);
        let (server, client) = match &config.role {
            Role::Listen => {
                let identity =
                    config.identity.clone().unwrap_or(Identity::SelfSigned { names: vec!["localhost".into()] });
                let tls = tls::server_config(&identity, config.client_ca.as_deref()).map_err(StartError::Tls)?;
                let crypto = QuicServerConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
                server.transport_config(transport);
                (Some(Arc::new(server)), None)
            }
            Role::Connect { .. } => {
                let mut tls = tls::client_config(&config.trust, config.identity.as_ref()).map_err(StartError::Tls)?;
                tls.resumption = rustls::client::Resumption::store(tls::session_cache_for(config.addr));
                let crypto = QuicClientConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut client = quinn_proto::ClientConfig::new(Arc::new(crypto));
                client.transport_config(transport);
                (None, Some(client))
            }
        };
        let socket = bind_for(&config)?;
        let local = socket.local_addr().map_err(StartError::Io)?;
        let socket_fd = socket.fd();
        let mut endpoint_config = quinn_proto::EndpointConfig::default();
        // What peers may send us: as large as our own path MTU discovery may go.
        endpoint_config.max_udp_payload_size(MAX_UDP_PAYLOAD).expect("within QUIC's bounds");
        let endpoint = quinn_proto::Endpoint::new(Arc::new(endpoint_config), server, !socket.may_fragment(), None);
        let config = Arc::new(config);
        let session = session_id();
        let mut engine = Engine::new(config.clone(), inbox, socket, endpoint, client, session);
        let now = Instant::now();
        match &config.role {
            Role::Listen => {
                engine.inbox.status(StatusEvent { status: Status::Connected, peer: None, error: None });
            }
            Role::Connect { server_name } => {
                engine.peers.push(engine::Peer::new(1, config.addr));
                engine.next_peer = 2;
                engine.connector = Some(Connector {
                    life: Lifecycle::new(config.backoff, session),
                    server_name: server_name.clone(),
                    ever_connected: false,
                    retry_at: None,
                });
                engine.inbox.status(StatusEvent { status: Status::Connecting, peer: Some(config.addr), error: None });
                engine.connect(now);
                engine.process_dirty(now);
            }
        }
        let shared = Arc::new(Shared {
            config,
            engine: Mutex::new(engine),
            room: Condvar::new(),
            wake: io::Wake::new().map_err(StartError::Io)?,
            io_deadline_us: AtomicU64::new(0),
            epoch: now,
            stop: AtomicBool::new(false),
            pumps: AtomicU64::new(0),
            reader_parked: AtomicBool::new(true),
            io_ignores_socket: AtomicBool::new(false),
            local,
        });
        let s = shared.clone();
        let io_thread = std::thread::Builder::new()
            .name("zerohop-quic-io".into())
            .spawn(move || io_loop(&s, socket_fd))
            .map_err(StartError::Io)?;
        Ok(QuicNode { shared, io_thread: Mutex::new(Some(io_thread)), datagram_buf: Mutex::new(BytesMut::new()) })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.shared.local)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Queues `message` on `channel` for every peer (reliable, in order per channel) and
    /// sends it (in a burst, with the messages that follow it within microseconds).
    pub fn publish(&self, channel: u16, message: &[u8]) -> Result<Sent, PublishError> {
        let s = &self.shared;
        if message.len() > s.config.max_message {
            return Err(PublishError::TooLarge { len: message.len(), max: s.config.max_message });
        }
        if channel >= s.config.max_channels {
            return Err(PublishError::BadChannel { channel, max: s.config.max_channels });
        }
        let mut e = s.engine();
        if e.closing {
            return Err(PublishError::Closed);
        }
        let now = Instant::now();
        // The usual case: every peer has room.
        let full = match e.publish(channel, message, now) {
            Ok(()) => {
                s.after(e, true);
                return Ok(Sent::Accepted);
            }
            Err(full) => full,
        };
        // Some peer is a queue behind: apply the policy to it.
        let mut skipped = Vec::new();
        for peer in full {
            let len = message.len();
            let has_room = |e: &mut Engine| e.peer(peer).is_none_or(|p| p.has_room(channel, len));
            match s.config.overflow {
                Overflow::FailFast => return Err(PublishError::Full),
                Overflow::DropNew => {
                    e.counters.dropped += 1;
                    skipped.push(peer);
                }
                Overflow::Block(timeout) => {
                    let deadline = now + timeout;
                    while !has_room(&mut e) && !e.closing {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        e = s
                            .room
                            .wait_timeout(e, left.min(Duration::from_millis(10)))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if e.closing {
                        return Err(PublishError::Closed);
                    }
                    if !has_room(&mut e) {
                        if matches!(s.config.role, Role::Listen) {
                            e.disconnect_slow(peer, Instant::now());
                            continue;
                        }
                        return Err(PublishError::Timeout);
                    }
                }
            }
        }
        for i in 0..e.peers.len() {
            if !skipped.contains(&e.peers[i].id) {
                e.queue_for(i, channel, message);
            }
        }
        e.sent(message.len(), Instant::now());
        s.after(e, true);
        Ok(if skipped.is_empty() { Sent::Accepted } else { Sent::Dropped })
    }

    /// Sends `message` as one QUIC datagram to every connected peer (unreliable).
    pub fn publish_datagram(&self, channel: u16, message: &[u8]) -> Result<Sent, PublishError> {
        let s = &self.shared;
        let start = Instant::now();
        let mut buf = lock(&self.datagram_buf);
        let mut guard = s.engine();
        if guard.closing {
            return Err(PublishError::Closed);
        }
        let e = &mut *guard;
        let mut outcome = Sent::Accepted;
        for p in e.peers.iter_mut() {
            let Some((ch, c)) = p.conn.and_then(|ch| e.conns.get_mut(&ch).map(|c| (ch, c))).filter(|(_, c)| !c.lost)
            else {
                outcome = Sent::Dropped;
                continue;
            };
            let Some(max) = c.q.datagrams().max_size() else {
                outcome = Sent::Dropped; // not known before the handshake
                continue;
            };
            let mut head = [0u8; 16];
            let n = encode_datagram_head(channel, p.datagram_seq, &mut head);
            if n + message.len() > max {
                return Err(PublishError::TooLarge { len: message.len(), max: max.saturating_sub(n) });
            }
            p.datagram_seq = p.datagram_seq.wrapping_add(1);
            if buf.capacity() < n + message.len() {
                buf.reserve((64 << 10).max(n + message.len()));
            }
            buf.put_slice(&head[..n]);
            buf.put_slice(message);
            match c.q.datagrams().send(buf.split().freeze(), true) {
                Ok(()) => e.counters.datagrams_sent += 1,
                Err(_) => outcome = Sent::Dropped,
            }
            engine::mark(&mut e.dirty, ch);
        }
        e.sent(message.len(), start);
        s.after(guard, true);
        Ok(outcome)
    }

    /// Sends a request to the server on a stream of its own; the reply arrives in the
    /// inbox as [`Kind::Response`] (or [`Kind::Failed`]) with the key returned here.
    /// Connecting nodes only: fails with `NotConnected` while not connected, and always
    /// on a listener.
    pub fn request(&self, body: &[u8]) -> Result<u64, PublishError> {
        let s = &self.shared;
        if body.len() > s.config.max_message {
            return Err(PublishError::TooLarge { len: body.len(), max: s.config.max_message });
        }
        let mut e = s.engine();
        if e.closing {
            return Err(PublishError::Closed);
        }
        let key = e.request(body, Instant::now());
        s.after(e, true);
        key
    }

    /// Gives up on request `key`: its stream is reset both ways (the server sees the
    /// cancellation) and no reply will be delivered. False if it already ended.
    pub fn cancel(&self, key: u64) -> bool {
        let mut e = self.shared.engine();
        let done = e.cancel(key, Instant::now());
        self.shared.after(e, true);
        done
    }

    /// Answers request `key` (delivered as [`Kind::Request`]): `ok` with the reply, or
    /// not ok with why. False if the request is gone (cancelled, or its peer left).
    pub fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        let mut e = self.shared.engine();
        let done = e.respond(key, ok, body, Instant::now());
        self.shared.after(e, true);
        done
    }

    /// Reads the socket on the caller's thread (if no other thread is at it), delivering
    /// what arrived into the inbox; returns datagrams read. A reader that polls for
    /// messages calls this when the inbox is empty: the I/O thread then leaves the socket
    /// to it until it stops polling or [parks](Self::reader_parks).
    pub fn pump(&self) -> usize {
        let s = &self.shared;
        // One thread polls a node, so a plain increment suffices.
        s.pumps.store(s.pumps.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        if s.reader_parked.load(Ordering::Relaxed) {
            s.reader_parked.store(false, Ordering::SeqCst);
        }
        let mut e = match s.engine.try_lock() {
            Ok(e) => e,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        };
        let n = e.drive(Instant::now(), true);
        s.after(e, false);
        n
    }

    /// The reader stops polling and waits for the inbox: the I/O thread must watch the
    /// socket again, now.
    pub fn reader_parks(&self) {
        let s = &self.shared;
        s.reader_parked.store(true, Ordering::SeqCst);
        if s.io_ignores_socket.load(Ordering::SeqCst) {
            s.wake.wake();
        }
    }

    /// Counters, with the current connections' transport statistics.
    pub fn metrics(&self) -> NodeMetrics {
        let e = self.shared.engine();
        let mut m = NodeMetrics {
            requests_pending: e.requests.len() as u64,
            answers_pending: e.answers.len() as u64,
            ..e.counters
        };
        for peer in &e.peers {
            m.unacked_bytes += peer.unacked_bytes();
            let Some(conn) = peer.conn.and_then(|ch| e.conns.get(&ch)).filter(|c| !c.lost && c.established) else {
                continue;
            };
            let st = conn.q.stats();
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
        m
    }

    /// Waits up to `linger` for every peer to read what was queued for it and to receive
    /// every answer given; true if nothing is left. Publishing may go on meanwhile.
    pub fn drain(&self, linger: Duration) -> bool {
        let deadline = Instant::now() + linger;
        let mut e = self.shared.engine();
        loop {
            if e.drained() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || e.closing {
                return false;
            }
            e = self
                .shared
                .room
                .wait_timeout(e, left.min(Duration::from_millis(5)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Closes every connection (the close frames go out now) and the socket. Call
    /// [`drain`](Self::drain) first to let queued messages reach their peers. Idempotent.
    pub fn close(&self) {
        let s = &self.shared;
        {
            let mut e = s.engine();
            if e.closing {
                return;
            }
            e.close(Instant::now());
            e.inbox.status(StatusEvent { status: Status::Closed, peer: None, error: None });
        }
        s.room.notify_all();
        s.stop.store(true, Ordering::Release);
        s.wake.wake();
        if let Some(t) = lock(&self.io_thread).take() {
            let _ = t.join();
        }
        s.engine().net.close();
    }
}

impl Drop for QuicNode {
    fn drop(&mut self) {
        self.close();
    }
}

/// The I/O thread: sleeps until the socket is readable, a timer is due, or someone
/// wakes it; then drives the engine.
fn io_loop(s: &Shared, socket: std::os::fd::RawFd) {
    let (mut pumps_seen, mut pumps_changed) = (0u64, Instant::now() - READER_ACTIVE);
    while !s.stop.load(Ordering::Acquire) {
        let pumps = s.pumps.load(Ordering::Relaxed);
        if pumps != pumps_seen {
            (pumps_seen, pumps_changed) = (pumps, Instant::now());
        }
        // A reader that polls the socket itself (`pump`) is faster without this thread
        // waking on every datagram (on a busy core, the two would take turns): leave the
        // socket to it until it stops or parks. Announce first, then look (as
        // `reader_parks` stores, then looks): either it sees the announcement and wakes
        // this thread, or this thread sees that the reader parked.
        s.io_ignores_socket.store(true, Ordering::SeqCst);
        let reader_polls = !s.reader_parked.load(Ordering::SeqCst) && pumps_changed.elapsed() < READER_ACTIVE;
        if !reader_polls {
            s.io_ignores_socket.store(false, Ordering::SeqCst);
        }
        let (deadline, want_write) = {
            let mut e = s.engine();
            let mut deadline = e.next_deadline();
            if reader_polls {
                let check = Instant::now() + READER_ACTIVE;
                deadline = Some(deadline.map_or(check, |d| d.min(check)));
            }
            // Stored under the lock, so a caller that sets an earlier timer after this
            // sees this deadline and wakes the thread.
            let due_us = deadline.map_or(u64::MAX, |d| d.saturating_duration_since(s.epoch).as_micros() as u64);
            s.io_deadline_us.store(due_us, Ordering::Release);
            (deadline, e.net.blocked.is_some())
        };
        let (readable, writable) = io::wait((!reader_polls).then_some(socket), want_write, &s.wake, deadline);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let mut e = s.engine();
        if writable {
            e.on_writable();
        }
        e.drive(Instant::now(), readable);
        s.io_deadline_us.store(0, Ordering::Release);
        let freed = std::mem::take(&mut e.room_freed);
        drop(e);
        if freed {
            s.room.notify_all();
        }
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
