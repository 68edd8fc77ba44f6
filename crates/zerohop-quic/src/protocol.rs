//! [`QuicProtocol`]: one side of a `quic://` hub, listening for any number of peers or
//! connecting to one, on the network-transport core's [`Driver`].
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
//! What it receives goes to a [`Sink`] (the hub's receive ring), which says where the
//! message landed and how far the application has read; a full ring makes the stream
//! wait, and QUIC flow control then pushes back on the sender.
//!
//! quinn-proto is a state machine without I/O; the engine (`engine`) drives it with its own
//! socket, behind the driver's lock, so a message leaves on the thread that publishes
//! it and a reader that polls reads the socket itself; the driver's I/O thread does the
//! rest (acknowledgements, retransmissions, keep-alives, handshakes).
//!
//! Connection status goes to the sink too: a connecting hub reconnects with
//! exponential backoff ([`zerohop_proto::lifecycle`]) and reports `reconnecting`, a
//! listening hub reports each peer that comes and goes.
//!
//! A peer that misbehaves fails alone: garbage on a stream or an oversize message
//! closes its connection with an application error code ([`CloseCode`]), a peer too slow
//! to read what it is sent is disconnected as a slow consumer; the hub and the other
//! peers go on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use quinn_proto::VarInt;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use zerohop_net::PublishTally;
use zerohop_net::driver::{Driver, Guard, Timers};
use zerohop_net::ring::Sink;
use zerohop_net::sending::Go;
use zerohop_proto::lifecycle::{Lifecycle, Status};
use zerohop_proto::qos::ChannelClasses;
use zerohop_proto::workgroup::Recipient;
use zerohop_transport::StatusEvent;

use crate::config::*;
use crate::datagram::{MAX_HEAD, encode_datagram_head};
use crate::engine::connect::Connector;
use crate::engine::io::Socket;
use crate::engine::{self, Engine};
use zerohop_tls::{self as tls, Identity, TlsError};

/// The largest UDP payload path MTU discovery tries (16 KiB: on loopback, 64 KiB
/// messages then take 4 packets instead of 45, and larger packets gained nothing).
const MAX_UDP_PAYLOAD: u16 = 16 << 10;

/// A QUIC hub's connections: see the module docs.
pub struct QuicProtocol {
    driver: Arc<Driver<Engine>>,
    config: Arc<QuicConfig>,
    local: SocketAddr,
    /// Scratch for datagrams: one allocation per many datagrams (`split` hands out the
    /// front, the rest is reused).
    datagram_buf: Mutex<BytesMut>,
    /// What was published, counted under the engine's lock (see [`PublishTally`]).
    tally: Arc<PublishTally>,
}

impl core::fmt::Debug for QuicProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QuicProtocol").field("side", &self.config.side).finish_non_exhaustive()
    }
}

/// Why a hub could not start.
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

fn transport_config(config: &QuicConfig) -> Result<quinn_proto::TransportConfig, StartError> {
    let mut t = quinn_proto::TransportConfig::default();
    let idle = quinn_proto::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| StartError::Config(format!("idle timeout {:?} is too long", config.idle_timeout)))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(config.keep_alive);
    // Channels, plus room for requests (one stream each).
    t.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(config.max_channels) + 256));
    t.max_concurrent_uni_streams(VarInt::from_u32(4));
    // Windows for a gigabit over a few milliseconds of RTT; what quinn holds for a hub
    // whose reader is slow is memory too, so `receiveQueueBytes` bounds them as well.
    let bound = |default: usize| config.receive_queue_bytes.map_or(default, |b| b.clamp(64 << 10, default));
    t.stream_receive_window(VarInt::from_u32(bound(8 << 20) as u32));
    t.receive_window(VarInt::from_u32(bound(32 << 20) as u32));
    t.send_window(32 << 20);
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    // Path MTU discovery may grow packets past Ethernet's 1500 bytes where the path
    // allows (loopback, jumbo frames): fewer, larger packets cost less per byte.
    let mut mtu = quinn_proto::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    // (Fewer acknowledgements, quinn's ACK frequency extension asking for one every
    // 16th or 4th packet, were tried, 2026-12-07: a long 64-byte stream went 3.8 → 3.9 M
    // msg/s, but a 200,000-message burst, whose slow start is paced by ACKs, fell 2.0 →
    // 1.2–1.8 M. Not worth it.)
    Ok(t)
}

/// The endpoint's socket, bound where the side says.
fn bind_for(config: &QuicConfig) -> Result<Socket, StartError> {
    let bind: SocketAddr = match config.side {
        Side::Listen => config.addr,
        Side::Connect { .. } if config.addr.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        Side::Connect { .. } => SocketAddr::from(([0u16; 8], 0)),
    };
    Socket::bind(bind).map_err(StartError::Io)
}

impl QuicProtocol {
    /// Binds, and starts listening or connecting; status events and messages go to `sink`.
    pub fn start(config: QuicConfig, sink: Arc<dyn Sink>) -> Result<QuicProtocol, StartError> {
        if config.max_channels == 0 {
            return Err(StartError::Config("max_channels must be at least 1".into()));
        }
        let transport = Arc::new(transport_config(&config)?);
        let (server, client) = match &config.side {
            Side::Listen => {
                let identity =
                    config.identity.clone().unwrap_or(Identity::SelfSigned { names: vec!["localhost".into()] });
                let mut tls = tls::server_config(&identity, config.client_ca.as_deref()).map_err(StartError::Tls)?;
                // QUIC allows 0 or u32::MAX; the latter turns on 0-RTT.
                tls.max_early_data_size = u32::MAX;
                let crypto = QuicServerConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
                server.transport_config(transport);
                (Some(Arc::new(server)), None)
            }
            Side::Connect { .. } => {
                let mut tls = tls::client_config(&config.trust, config.identity.as_ref()).map_err(StartError::Tls)?;
                tls.resumption = rustls::client::Resumption::store(tls::session_cache_for(config.addr));
                tls.enable_early_data = true;
                let crypto = QuicClientConfig::try_from(tls).map_err(|e| StartError::Config(e.to_string()))?;
                let mut client = quinn_proto::ClientConfig::new(Arc::new(crypto));
                client.transport_config(transport);
                (None, Some(client))
            }
        };
        let mut socket = bind_for(&config)?;
        if matches!(config.side, Side::Connect { .. }) {
            // A client talks to its server only (reconnects included).
            socket.connect(config.addr).map_err(StartError::Io)?;
        }
        let local = socket.local_addr().map_err(StartError::Io)?;
        let mut endpoint_config = quinn_proto::EndpointConfig::default();
        // What peers may send us: as large as our own path MTU discovery may go.
        endpoint_config.max_udp_payload_size(MAX_UDP_PAYLOAD).expect("within QUIC's bounds");
        let endpoint = quinn_proto::Endpoint::new(Arc::new(endpoint_config), server, !socket.may_fragment(), None);
        let config = Arc::new(config);
        let session = zerohop_net::session_id();
        let mut engine =
            Engine::new(config.clone(), sink, socket, endpoint, client, session).map_err(StartError::Io)?;
        let now = Instant::now();
        match &config.side {
            Side::Listen => engine.report(Status::Connected, None, None),
            Side::Connect { server_name } => {
                engine.peers.push(engine::Peer::new(1, config.addr, ChannelClasses::new(config.priorities.clone())));
                engine.next_peer = 2;
                engine.connector = Some(Connector {
                    life: Lifecycle::new(config.backoff, session),
                    server_name: server_name.clone(),
                    ever_connected: false,
                    retry_at: None,
                });
                engine.report(Status::Connecting, Some(config.addr), None);
                engine.connect(now);
                engine.process_dirty(now);
            }
        }
        let driver = Driver::start("zerohop-quic-io", engine, || {}).map_err(|e| StartError::Config(e.to_string()))?;
        let driver = Arc::new(driver);
        Ok(QuicProtocol { driver, config, local, datagram_buf: Mutex::new(BytesMut::new()), tally: Arc::default() })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What it published (counted under the engine's lock).
    pub(crate) fn publish_tally(&self) -> &Arc<PublishTally> {
        &self.tally
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &QuicConfig {
        &self.config
    }

    /// The driver (for the transport: the reader's side).
    pub(crate) fn driver(&self) -> &Arc<Driver<Engine>> {
        &self.driver
    }

    fn engine(&self) -> Result<Guard<'_, Engine>, PublishError> {
        self.driver.lock().map_err(|_| PublishError::Closed)
    }

    /// Queues `message` on `channel` for every peer (reliable, in order per channel) and
    /// sends it (in a burst, with the messages that follow it within microseconds).
    pub fn publish(&self, channel: u16, message: &[u8]) -> Result<Sent, PublishError> {
        self.publish_expiring(channel, message, None)
    }

    /// [`publish`](Self::publish) with the time after which the message is not worth
    /// reading (`ttlMs`: ns since the Unix epoch), if it has one.
    pub fn publish_expiring(&self, channel: u16, message: &[u8], expiry_ns: Option<u64>) -> Result<Sent, PublishError> {
        let config = &self.config;
        if message.len() > config.max_message {
            return Err(PublishError::TooLarge { len: message.len(), max: config.max_message });
        }
        if channel >= config.max_channels {
            return Err(PublishError::BadChannel { channel, max: config.max_channels });
        }
        let mut g = self.engine()?;
        let e = g.as_mut().expect("checked by engine()");
        if e.closing {
            return Err(PublishError::Closed);
        }
        // The usual case: every peer has room.
        let full = match e.publish(channel, message, expiry_ns, Instant::now) {
            Ok(sent) => {
                self.after_publish(g, sent, message.len(), Sent::Accepted);
                return Ok(Sent::Accepted);
            }
            Err(full) => full,
        };
        // Some peer is a queue behind: apply the policy to it.
        let mut skipped = Vec::new();
        for recipient in full {
            let len = message.len();
            let has_room = |g: &mut Guard<'_, Engine>| g.as_mut().is_none_or(|e| e.has_room(recipient, channel, len));
            let closing = |g: &Guard<'_, Engine>| g.as_ref().is_none_or(|e| e.closing);
            match config.overflow {
                Overflow::FailFast => return Err(PublishError::Full),
                Overflow::DropNew => {
                    if let Some(e) = g.as_mut() {
                        e.counters.dropped += 1;
                    }
                    skipped.push(recipient);
                }
                Overflow::Block(timeout) => {
                    let deadline = Instant::now() + timeout;
                    while !has_room(&mut g) && !closing(&g) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        g = self.driver.wait(g, left.min(Duration::from_millis(10)));
                    }
                    if closing(&g) {
                        return Err(PublishError::Closed);
                    }
                    if !has_room(&mut g) {
                        // A listener's slow peer is a slow consumer; a work group is waited for.
                        if let (Side::Listen, Recipient::Peer(peer)) = (&config.side, recipient) {
                            g.as_mut().expect("not closing").disconnect_slow(peer, Instant::now());
                            continue;
                        }
                        return Err(PublishError::Timeout);
                    }
                }
            }
        }
        let e = g.as_mut().expect("not closing");
        e.queue_all(channel, message, expiry_ns, &skipped);
        let sent = e.sent(message.len(), Instant::now);
        let outcome = if skipped.is_empty() { Sent::Accepted } else { Sent::Dropped };
        self.after_publish(g, sent, message.len(), outcome);
        Ok(outcome)
    }

    /// A publish's end, still under the engine's lock: it is counted, and a burst it
    /// sent in the middle of a flood reads what came back.
    fn after_publish(&self, g: Guard<'_, Engine>, (timers, go): (Timers, Go), len: usize, outcome: Sent) {
        self.tally.count_locked(len, outcome == Sent::Dropped);
        match go {
            Go::Burst => self.driver.read_back(g),
            Go::Now | Go::Wait => self.driver.after_timers(g, timers),
        }
    }

    /// Sends `message` as one QUIC datagram to every connected peer (unreliable), with
    /// the time after which it is not worth reading (`ttlMs`), if it has one.
    pub fn publish_datagram(&self, channel: u16, message: &[u8], expiry_ns: Option<u64>) -> Result<Sent, PublishError> {
        let start = Instant::now();
        let mut buf = self.datagram_buf.lock().unwrap_or_else(|p| p.into_inner());
        let mut g = self.engine()?;
        let e = g.as_mut().expect("checked by engine()");
        if e.closing {
            return Err(PublishError::Closed);
        }
        let mut outcome = Sent::Accepted;
        // Everyone not in a work group, and one member of each group.
        let members = e.datagram_members(channel);
        for (i, p) in e.peers.iter_mut().enumerate() {
            if p.group.is_some() && !members.contains(&i) {
                continue;
            }
            let Some((ch, c)) = p.conn.and_then(|ch| e.conns.get_mut(&ch).map(|c| (ch, c))).filter(|(_, c)| !c.lost)
            else {
                outcome = Sent::Dropped;
                continue;
            };
            let Some(max) = c.q.datagrams().max_size() else {
                outcome = Sent::Dropped; // not known before the handshake
                continue;
            };
            let mut head = [0u8; MAX_HEAD];
            let n = encode_datagram_head(channel, p.datagram_seq, expiry_ns, &mut head);
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
        let sent = e.sent(message.len(), || start);
        self.after_publish(g, sent, message.len(), outcome);
        Ok(outcome)
    }

    /// Sends a request to the server on a stream of its own; the reply arrives in the
    /// sink as a `Response` (or `Failed`) with the key returned here. Connecting hubs
    /// only: fails with `NotConnected` while not connected, and always on a listener.
    pub fn request(&self, body: &[u8]) -> Result<u64, PublishError> {
        if body.len() > self.config.max_message {
            return Err(PublishError::TooLarge { len: body.len(), max: self.config.max_message });
        }
        let mut g = self.engine()?;
        let e = g.as_mut().expect("checked by engine()");
        if e.closing {
            return Err(PublishError::Closed);
        }
        let key = e.request(body, Instant::now());
        self.driver.after(g);
        key
    }

    /// Gives up on request `key`: its stream is reset both ways (the server sees the
    /// cancellation) and no reply will be delivered. False if it already ended.
    pub fn cancel(&self, key: u64) -> bool {
        self.driver.with(|e| e.cancel(key, Instant::now())).unwrap_or(false)
    }

    /// Answers request `key` (delivered as a `Request`): `ok` with the reply, or not ok
    /// with why. False if the request is gone (cancelled, or its peer left).
    pub fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        self.driver.with(|e| e.respond(key, ok, body, Instant::now())).unwrap_or(false)
    }

    /// Reads the socket on the caller's thread (see [`Driver::pump`]).
    pub fn pump(&self) -> usize {
        self.driver.pump().unwrap_or(0)
    }

    /// Counters, with the current connections' transport statistics.
    pub fn metrics(&self) -> QuicMetrics {
        self.driver
            .with(|e| {
                let mut m = QuicMetrics {
                    requests_pending: e.requests.len() as u64,
                    answers_pending: e.answers.len() as u64,
                    ..e.counters
                };
                for peer in &e.peers {
                    m.unacked_bytes += peer.unacked_bytes();
                    let Some(conn) = peer.conn.and_then(|ch| e.conns.get(&ch)).filter(|c| !c.lost && c.established)
                    else {
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
            })
            .unwrap_or_default()
    }

    /// Whether every peer has room for a `len`-byte message on `channel`.
    pub fn has_room(&self, channel: u16, len: usize) -> bool {
        self.driver.with(|e| e.peers.iter().all(|p| p.has_room(channel, len))).unwrap_or(true)
    }

    /// What `?chaos=` did, if faults were asked for.
    pub fn chaos(&self) -> Option<zerohop_transport::chaos::ChaosReport> {
        self.driver.with(|e| e.net.chaos()).ok().flatten()
    }

    /// Waits up to `linger` for every peer to read what was queued for it and to receive
    /// every answer given; true if nothing is left. Publishing may go on meanwhile.
    pub fn linger(&self, linger: Duration) -> bool {
        self.driver.wait_until(linger, Engine::drained, |e| e.closing)
    }

    /// Closes every connection (the close frames go out now) and the socket. Call
    /// [`linger`](Self::linger) first to let queued messages reach their peers. Idempotent.
    pub fn close(&self) {
        self.driver.shutdown(|e| {
            if !e.closing {
                e.close(Instant::now());
                e.sink.status(StatusEvent { status: Status::Closed, peer: None, error: None });
            }
        });
    }
}

impl Drop for QuicProtocol {
    fn drop(&mut self) {
        self.close();
    }
}
