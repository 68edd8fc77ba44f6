//! The QUIC transport: a [`zerohop_quic::QuicNode`] behind the [`Transport`] trait.
//!
//! ```text
//!   publish ──► per peer and channel: SendQueue ──► stream ──► peer (acks what its app read)
//!
//!   peer streams / datagrams ──► node (I/O thread, or the reader's) ──► receive ring (+ spill) ──► recv
//! ```
//!
//! A hub either listens (`listen: true`: any number of peers connect to it) or connects
//! to one server; publishing reaches every connected peer, receiving yields messages
//! from all of them with the sender in the [`envelope`]. As over UDP, received messages
//! land in a private ring with the shared-memory layout, so receiving (and the Node
//! binding's zero-copy reads) work as they do for `shm://`. A message larger than a
//! slot is held aside (the *spill*) and the slot says where: the ring stays small (4 KiB slots) while
//! messages go up to `max_message` (16 MiB by default).
//!
//! Reliability: messages on channels are kept by the sender until the receiving
//! application has read them, so they survive a reconnect and a restart of the receiver
//! ([`zerohop_proto::session`]). With `datagrams: true` the hub publishes QUIC
//! datagrams instead: unordered, unacknowledged, at most one path MTU each.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use zerohop_proto::lifecycle::{Backoff, Status};
use zerohop_quic::node::{Failure, FailureKind, PublishError, Sent};
use zerohop_quic::{
    HandshakeFailure, Identity, Inbound, Inbox, NodeConfig, NodeMetrics, Overflow, QuicNode, Role, StatusEvent, Trust,
};
use zerohop_shm::{Backpressure, Layout, Publisher, Segment, Subscriber};

use crate::endpoint::{Endpoint, Target, TransportKind};
use crate::envelope::{self, Envelope, Placement};
use crate::error::{Error, ErrorCode, Result};
use crate::hub::{HubOptions, Role as HubRole};
use crate::metrics::Metrics;
use crate::transport::{Delivery, Transport};

/// QUIC settings of [`HubOptions`].
#[derive(Clone, Debug)]
pub struct QuicOptions {
    /// Accept peers on the URL's address instead of connecting to it.
    pub listen: bool,
    /// Our certificate chain and key (PEM). A listener without them makes a
    /// self-signed certificate (development only).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A CA bundle (PEM): a connecting hub verifies the server against it; a listening
    /// hub requires client certificates signed by it (mutual TLS).
    pub ca: Option<PathBuf>,
    /// The name to verify the server's certificate for (default: the URL's host).
    pub server_name: Option<String>,
    /// Connect to any server, whatever its certificate (encrypted, not authenticated).
    pub dangerously_accept_any_server: bool,
    pub keep_alive: Option<Duration>,
    pub idle_timeout: Duration,
    /// The reconnect schedule of a connecting hub.
    pub reconnect: Backoff,
    /// Channels (one reliable stream each per peer).
    pub channels: u16,
    /// Bytes kept per peer and channel until the peer's application has read them.
    pub send_queue_bytes: usize,
    /// Publish unreliable datagrams instead of stream messages.
    pub datagrams: bool,
    /// Largest message (default 16 MiB).
    pub max_message: usize,
    /// How long a listener keeps a disconnected peer's unacknowledged messages.
    pub peer_linger: Duration,
}

impl Default for QuicOptions {
    fn default() -> Self {
        let d = NodeConfig::new(Role::Listen, ([127, 0, 0, 1], 0).into());
        Self {
            listen: false,
            cert: None,
            key: None,
            ca: None,
            server_name: None,
            dangerously_accept_any_server: false,
            keep_alive: d.keep_alive,
            idle_timeout: d.idle_timeout,
            reconnect: d.backoff,
            channels: d.max_channels,
            send_queue_bytes: d.send_queue_bytes,
            datagrams: false,
            max_message: d.max_message,
            peer_linger: d.peer_linger,
        }
    }
}

/// Default slot of the receive ring (envelope included): small messages stay in the
/// ring, larger ones spill.
const DEFAULT_SLOT: u32 = 4 << 10;

/// Messages larger than a slot, held until the reader takes them.
#[derive(Default)]
struct Spill {
    held: HashMap<u64, Vec<u8>>,
    bytes: usize,
    next_key: u64,
}

/// What status listeners get, and the current status.
struct StatusBoard {
    connector: bool,
    current: Status,
    log: VecDeque<StatusEvent>,
    listener: Option<StatusListener>,
}

/// Called (on the thread that drives the node) with each status event.
pub type StatusListener = Arc<dyn Fn(&StatusEvent) + Send + Sync>;

/// Runs (on the node's I/O thread, mostly) after messages arrive while armed.
pub type OnReceive = Arc<dyn Fn() + Send + Sync>;

/// The node's [`Inbox`]: the receive ring, the spill, the status board, and the
/// receiver's doorbell (rung by the thread that delivers, with no waiter thread between).
struct RingInbox {
    segment: Arc<Segment>,
    ring: Mutex<Publisher>,
    spill: Mutex<Spill>,
    spill_limit: usize,
    status: Mutex<StatusBoard>,
    /// Set by [`QuicTransport::arm`], taken by whoever delivers next.
    armed: AtomicBool,
    on_receive: Mutex<Option<OnReceive>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Status events kept for callers that poll ([`QuicTransport::take_status_events`]).
const STATUS_LOG: usize = 256;

impl Inbox for RingInbox {
    fn deliver(&self, m: &Inbound<'_>) -> Option<u64> {
        let mut ring = lock(&self.ring);
        let slot = ring.max_message_size();
        let mut env = Envelope {
            from: Some(m.from),
            timestamp_ns: None,
            channel: m.channel,
            peer: m.peer,
            placement: Placement::Inline,
            kind: m.kind as u8,
            request: m.request,
        };
        let fits = envelope::LEN + m.body.len() <= slot;
        if !fits {
            let spill = lock(&self.spill);
            if spill.bytes + m.body.len() > self.spill_limit && spill.bytes > 0 {
                return None;
            }
        }
        let mut loan = ring.loan().ok().flatten()?;
        let out = loan.as_mut_slice();
        let position = if fits {
            env.write(out);
            out[envelope::LEN..envelope::LEN + m.body.len()].copy_from_slice(m.body);
            loan.commit(envelope::LEN + m.body.len())
        } else {
            let mut spill = lock(&self.spill);
            let key = spill.next_key;
            spill.next_key += 1;
            spill.bytes += m.body.len();
            spill.held.insert(key, m.body.to_vec());
            env.placement = Placement::Spilled { key, len: m.body.len() as u32 };
            env.write(out);
            loan.commit(envelope::LEN)
        };
        drop(ring);
        self.delivered();
        Some(position)
    }

    fn consumed(&self) -> u64 {
        let ring = lock(&self.ring);
        zerohop_shm::ring::table::tail(&self.segment) - ring.slowest_lag()
    }

    fn status(&self, event: StatusEvent) {
        let mut board = lock(&self.status);
        // A connecting hub's events are its own (their peer is the server); a listening
        // hub's own have no peer, the others are its peers coming and going.
        if board.connector || event.peer.is_none() {
            board.current = event.status;
        }
        if board.log.len() == STATUS_LOG {
            board.log.pop_front();
        }
        board.log.push_back(event.clone());
        let listener = board.listener.clone();
        drop(board);
        if let Some(l) = listener {
            l(&event);
        }
    }
}

impl RingInbox {
    /// Tells an armed receiver that a message arrived (the ring's tail has moved).
    fn delivered(&self) {
        // Pairs with the fence in `arm`: either this sees `armed`, or `arm` sees the new
        // tail (a store followed by a load on each side needs SeqCst between them).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            let cb = lock(&self.on_receive).clone();
            if let Some(cb) = cb {
                cb();
            }
        }
    }

    fn take_spilled(&self, key: u64) -> Option<Vec<u8>> {
        let mut spill = lock(&self.spill);
        let bytes = spill.held.remove(&key)?;
        spill.bytes -= bytes.len();
        Some(bytes)
    }
}

/// The hot paths of a [`QuicTransport`]: publishing and reading the socket on the
/// caller's thread. Cheap to clone; every clone works on the same node.
#[derive(Clone, Debug)]
pub struct QuicLink {
    node: Arc<QuicNode>,
    datagrams: bool,
}

impl QuicLink {
    /// Publishes on `channel` (reliable, ordered per channel) or, in datagram mode, as
    /// one datagram tagged with it.
    pub fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        let sent = if self.datagrams {
            self.node.publish_datagram(channel, payload)
        } else {
            self.node.publish(channel, payload)
        };
        Ok(match sent.map_err(publish_error)? {
            Sent::Accepted => Delivery::Accepted,
            Sent::Dropped => Delivery::Dropped,
        })
    }

    /// Reads the socket on the caller's thread, delivering into the receive ring;
    /// datagrams read.
    pub fn pump(&self) -> usize {
        self.node.pump()
    }
}

/// A `quic://` hub's transport.
pub struct QuicTransport {
    /// The node, and whether it publishes datagrams.
    link: QuicLink,
    inbox: Arc<RingInbox>,
    subscriber: Option<Subscriber>,
    spin: Duration,
    can_publish: bool,
    published: u64,
    published_bytes: u64,
    dropped: u64,
    never_cancelled: AtomicBool,
}

impl core::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QuicTransport").field("node", &self.link.node).finish_non_exhaustive()
    }
}

fn bad_option(why: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadOption, why)
}

/// The error code a connection failure reports.
pub fn failure_code(f: &Failure) -> ErrorCode {
    match f.kind {
        FailureKind::Tls(HandshakeFailure::UnknownIssuer | HandshakeFailure::BadCertificate) => ErrorCode::TlsUntrusted,
        FailureKind::Tls(HandshakeFailure::Expired | HandshakeFailure::NotValidYet) => ErrorCode::TlsExpired,
        FailureKind::Tls(HandshakeFailure::WrongName) => ErrorCode::TlsNameMismatch,
        FailureKind::Tls(HandshakeFailure::ClientCertificateRequired | HandshakeFailure::RefusedByPeer) => {
            ErrorCode::TlsRefused
        }
        FailureKind::TimedOut => ErrorCode::Timeout,
        FailureKind::Lost | FailureKind::ClosedByPeer => ErrorCode::ConnectionLost,
        FailureKind::Protocol { .. } => ErrorCode::Protocol,
        FailureKind::TooLarge { .. } => ErrorCode::MessageTooLarge,
        FailureKind::SlowConsumer { .. } => ErrorCode::SlowConsumer,
    }
}

fn publish_error(e: PublishError) -> Error {
    match e {
        PublishError::TooLarge { len, max } => {
            Error::new(ErrorCode::MessageTooLarge, format!("message of {len} bytes exceeds the limit of {max} bytes"))
        }
        PublishError::BadChannel { channel, max } => {
            bad_option(format!("channel {channel} is out of range: this hub has channels 0..{max}"))
        }
        PublishError::Full => Error::new(ErrorCode::Backpressure, "a peer's send queue is full"),
        PublishError::Timeout => Error::new(ErrorCode::Timeout, "the server did not read in time (send queue full)"),
        PublishError::Closed => Error::new(ErrorCode::Closed, "the hub is closed"),
        PublishError::NotConnected => {
            Error::new(ErrorCode::ConnectionLost, "not connected to the server now (it reconnects by itself)")
        }
    }
}

impl QuicTransport {
    /// Opens `quic://host:port`: listens on it or connects to it.
    pub fn open(endpoint: &Endpoint, options: &HubOptions) -> Result<Self> {
        let Target::Host { host, port } = endpoint.target() else {
            return Err(Error::new(ErrorCode::BadUrl, "quic:// needs host:port"));
        };
        let q = &options.quic;
        let addr = crate::udp::resolve(host, *port, None)?;
        let role = if q.listen {
            Role::Listen
        } else {
            if *port == 0 {
                return Err(Error::new(ErrorCode::BadUrl, "cannot connect to port 0; listen: true to accept peers"));
            }
            Role::Connect { server_name: q.server_name.clone().unwrap_or_else(|| host.clone()) }
        };
        let mut config = NodeConfig::new(role, addr);
        config.identity = match (&q.cert, &q.key) {
            (Some(c), Some(k)) => Some(Identity::Files { cert_chain: c.clone(), key: k.clone() }),
            (None, None) if q.listen => Some(Identity::SelfSigned { names: vec!["localhost".into(), host.clone()] }),
            (None, None) => None,
            _ => return Err(bad_option("tls.cert and tls.key go together")),
        };
        if q.listen {
            config.client_ca = q.ca.clone();
        } else {
            config.trust = match (&q.ca, q.dangerously_accept_any_server) {
                (Some(ca), false) => Trust::Ca(ca.clone()),
                (None, true) => Trust::DangerouslyAcceptAnyServer,
                (Some(_), true) => {
                    return Err(bad_option("tls.ca and tls.dangerouslyAcceptAnyServer exclude each other"));
                }
                (None, false) => {
                    return Err(bad_option(
                        "connecting over quic:// needs tls.ca (the CA bundle to verify the server with) or, for \
                         development against a self-signed server, tls.dangerouslyAcceptAnyServer: true",
                    ));
                }
            };
        }
        config.keep_alive = q.keep_alive;
        config.idle_timeout = q.idle_timeout;
        config.backoff = q.reconnect;
        if q.channels == 0 {
            return Err(bad_option("channels must be at least 1"));
        }
        config.max_channels = q.channels;
        config.max_message = q.max_message;
        config.send_queue_bytes = q.send_queue_bytes.max(1);
        config.peer_linger = q.peer_linger;
        config.overflow = match options.backpressure {
            Backpressure::Block => Overflow::Block(options.publish_timeout),
            Backpressure::DropNew => Overflow::DropNew,
            Backpressure::FailFast => Overflow::FailFast,
            Backpressure::DropOld => {
                return Err(bad_option(
                    "backpressure 'drop_old' does not apply to quic:// (a reliable stream cannot overwrite what it \
                     sent); use 'block' (the default), 'drop_new' or 'fail_fast'",
                ));
            }
        };

        let slot_size = options.slot_size.map_or(DEFAULT_SLOT, |s| s + envelope::LEN as u32);
        let capacity = options.capacity.unwrap_or(4096);
        let segment = Arc::new(Segment::private(Layout { slot_size, capacity, max_subscribers: 2 })?);
        let subscriber = match options.role {
            HubRole::Publisher => None,
            _ => Some(Subscriber::new(segment.clone())?),
        };
        let inbox = Arc::new(RingInbox {
            ring: Mutex::new(Publisher::new(segment.clone(), Backpressure::DropNew)),
            segment,
            spill: Mutex::new(Spill::default()),
            spill_limit: q.max_message.saturating_mul(2).max(64 << 20),
            armed: AtomicBool::new(false),
            on_receive: Mutex::new(None),
            status: Mutex::new(StatusBoard {
                connector: !q.listen,
                current: Status::Connecting,
                log: VecDeque::new(),
                listener: None,
            }),
        });
        let node = QuicNode::start(config, inbox.clone()).map_err(|e| match e {
            zerohop_quic::node::StartError::Tls(e) => bad_option(format!("tls: {e}")),
            zerohop_quic::node::StartError::Io(e) => Error::new(ErrorCode::Io, format!("quic://{host}:{port}: {e}")),
            zerohop_quic::node::StartError::Config(e) => bad_option(e),
        })?;
        let node = Arc::new(node);
        Ok(Self {
            link: QuicLink { node, datagrams: q.datagrams },
            inbox,
            subscriber,
            spin: options.spin,
            can_publish: options.role != HubRole::Subscriber,
            published: 0,
            published_bytes: 0,
            dropped: 0,
            never_cancelled: AtomicBool::new(false),
        })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.link.node.local_addr().ok()
    }

    /// The receive ring (the Node binding reads it in place).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.inbox.segment
    }

    /// Publishes on `channel` (reliable, ordered per channel) or, in datagram mode, as
    /// one datagram tagged with it.
    pub fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        if !self.can_publish {
            return Err(Error::new(ErrorCode::InvalidState, "this hub was opened with role 'subscriber'"));
        }
        let delivery = self.link.publish(channel, payload)?;
        self.published += 1;
        self.published_bytes += payload.len() as u64;
        if delivery == Delivery::Dropped {
            self.dropped += 1;
        }
        Ok(delivery)
    }

    /// A handle on the publish and poll paths that can be shared (the Node binding calls
    /// them through it, once per message).
    pub fn link(&self) -> QuicLink {
        self.link.clone()
    }

    /// Sends a request on a stream of its own (connecting hubs); its reply arrives like
    /// a message, with envelope kind 2 (or 3 if it failed) and the key returned here.
    pub fn request(&self, body: &[u8]) -> Result<u64> {
        self.link.node.request(body).map_err(publish_error)
    }

    /// Gives up on request `key` (the server sees it cancelled); false if it had ended.
    pub fn cancel(&self, key: u64) -> bool {
        self.link.node.cancel(key)
    }

    /// Answers request `key` (received with envelope kind 1); false if it is gone.
    pub fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        self.link.node.respond(key, ok, body)
    }

    /// The bytes of a message that did not fit its slot (its envelope gives the key).
    pub fn take_spilled(&self, key: u64) -> Option<Vec<u8>> {
        self.inbox.take_spilled(key)
    }

    /// The status now: of the connection (connecting hub) or of the hub (listening).
    pub fn status(&self) -> Status {
        lock(&self.inbox.status).current
    }

    /// Status events since the last call (at most the last 256).
    pub fn take_status_events(&self) -> Vec<StatusEvent> {
        lock(&self.inbox.status).log.drain(..).collect()
    }

    /// Calls `listener` with every status event from now on (on the thread that drives the node).
    pub fn set_status_listener(&self, listener: Option<StatusListener>) {
        lock(&self.inbox.status).listener = listener;
    }

    /// Sets what runs (on the node's I/O thread, mostly) after messages arrive while armed.
    pub fn set_on_receive(&self, callback: Option<OnReceive>) {
        *lock(&self.inbox.on_receive) = callback;
    }

    /// Asks for one `on_receive` call once a message arrives; `readable_now` says whether
    /// the caller's cursor is already behind the ring's tail, in which case it fires now.
    pub fn arm(&self, readable_now: impl FnOnce() -> bool) {
        self.inbox.armed.store(true, Ordering::SeqCst);
        // The reader stops polling the socket: the I/O thread takes it back.
        self.link.node.reader_parks();
        std::sync::atomic::fence(Ordering::SeqCst); // see `RingInbox::delivered`
        if readable_now() {
            self.inbox.delivered();
        }
    }

    /// Cancels an `arm`.
    pub fn disarm(&self) {
        self.inbox.armed.store(false, Ordering::SeqCst);
    }

    /// The node's counters (RTT, congestion window, 0-RTT, reconnects, …).
    pub fn quic_metrics(&self) -> NodeMetrics {
        self.link.node.metrics()
    }

    /// Waits up to `linger` until peers have read everything published; true if they have.
    pub fn drain(&self, linger: Duration) -> bool {
        self.link.node.drain(linger)
    }

    /// The node, for callers that drain or read metrics from another thread.
    pub fn node(&self) -> Arc<QuicNode> {
        self.link.node.clone()
    }

    /// Closes every connection. Idempotent.
    pub fn close(&self) {
        self.link.node.close();
    }

    /// Gives up the transport's own receive cursor (the Node binding reads with its own).
    pub fn release_subscriber(&mut self) {
        self.subscriber = None;
    }

    /// The next message into `out` (payload only) and its envelope; `None` if none waits.
    pub fn try_recv_with(&mut self, out: &mut Vec<u8>) -> Result<Option<Envelope>> {
        let sub = self
            .subscriber
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))?;
        // An empty ring: read the socket on this thread rather than wait for the I/O thread.
        if sub.try_recv(out).is_none() && (self.link.node.pump() == 0 || sub.try_recv(out).is_none()) {
            return Ok(None);
        }
        let env =
            Envelope::read(out).ok_or_else(|| Error::new(ErrorCode::Io, "a received message without its envelope"))?;
        match env.placement {
            Placement::Inline => {
                out.drain(..envelope::LEN);
            }
            Placement::Spilled { key, .. } => {
                *out = self
                    .inbox
                    .take_spilled(key)
                    .ok_or_else(|| Error::new(ErrorCode::Io, "a spilled message was taken twice"))?;
            }
        }
        Ok(Some(env))
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.link.node.close();
    }
}

impl Transport for QuicTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn max_message_size(&self) -> usize {
        self.link.node.config().max_message
    }

    fn publish(&mut self, payload: &[u8]) -> Result<Delivery> {
        self.publish_on(0, payload)
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        Ok(self.try_recv_with(out)?.is_some())
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let sub = self
            .subscriber
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))?;
        Ok(sub.wait(self.spin, timeout, &self.never_cancelled))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new(TransportKind::Quic, false);
        m.published = self.published;
        m.published_bytes = self.published_bytes;
        m.dropped = self.dropped;
        m.with_subscriber(self.subscriber.as_ref())
    }

    fn quic(&self) -> Option<&QuicTransport> {
        Some(self)
    }

    fn quic_mut(&mut self) -> Option<&mut QuicTransport> {
        Some(self)
    }

    fn drain(&mut self, linger: Duration) -> bool {
        QuicTransport::drain(self, linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hub;

    fn listen_opts() -> HubOptions {
        HubOptions {
            backpressure: Backpressure::Block,
            quic: QuicOptions { listen: true, ..QuicOptions::default() },
            ..HubOptions::default()
        }
    }

    fn connect_opts() -> HubOptions {
        HubOptions {
            backpressure: Backpressure::Block,
            quic: QuicOptions { dangerously_accept_any_server: true, ..QuicOptions::default() },
            ..HubOptions::default()
        }
    }

    #[test]
    fn hubs_exchange_small_and_spilled_messages_with_their_envelopes() {
        let mut server = Hub::open("quic://127.0.0.1:0", listen_opts()).unwrap();
        let port = server.quic().unwrap().local_addr().unwrap().port();
        let mut client = Hub::open(&format!("quic://127.0.0.1:{port}"), connect_opts()).unwrap();
        let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
        client.publish(b"hello").unwrap();
        client.quic_mut().unwrap().publish_on(3, &big).unwrap();
        let mut out = Vec::new();
        let q = server.quic_mut().unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(env) = q.try_recv_with(&mut out).unwrap() {
                got.push((env, out.clone()));
            } else {
                q.wait_readable(Some(Duration::from_secs(10))).unwrap();
            }
        }
        assert_eq!(got[0].1, b"hello");
        assert_eq!(
            (got[0].0.channel, got[0].0.from.unwrap().port()),
            (0, client.quic().unwrap().local_addr().unwrap().port())
        );
        assert_eq!(got[1].0.channel, 3);
        assert!(matches!(got[1].0.placement, Placement::Spilled { len, .. } if len as usize == big.len()));
        assert!(got[1].1 == big, "the spilled message arrives whole");
        // And back.
        server.publish(b"welcome").unwrap();
        assert!(client.recv(&mut out, Some(Duration::from_secs(10))).unwrap());
        assert_eq!(out, b"welcome");
        assert_eq!(client.quic().unwrap().status(), Status::Connected);
        assert_eq!(server.quic().unwrap().status(), Status::Connected);
        assert!(client.close(Duration::from_secs(5)), "the server read everything");
        let m = server.metrics();
        assert_eq!((m.received, m.published, m.transport), (2, 1, TransportKind::Quic));
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        let code = |url: &str, o: HubOptions| Hub::open(url, o).unwrap_err().code();
        let no_trust = HubOptions { backpressure: Backpressure::Block, ..HubOptions::default() };
        assert_eq!(code("quic://127.0.0.1:4433", no_trust), ErrorCode::BadOption, "no way to verify the server");
        let drop_old = HubOptions { backpressure: Backpressure::DropOld, ..listen_opts() };
        assert_eq!(code("quic://127.0.0.1:0", drop_old), ErrorCode::BadOption);
        assert_eq!(code("quic://127.0.0.1:0", connect_opts()), ErrorCode::BadUrl, "connect to port 0");
        let half =
            HubOptions { quic: QuicOptions { cert: Some("/x.pem".into()), ..listen_opts().quic }, ..listen_opts() };
        assert_eq!(code("quic://127.0.0.1:0", half), ErrorCode::BadOption);
        let missing = HubOptions {
            quic: QuicOptions {
                cert: Some("/nonexistent.pem".into()),
                key: Some("/nonexistent.key".into()),
                ..listen_opts().quic
            },
            ..listen_opts()
        };
        assert_eq!(code("quic://127.0.0.1:0", missing), ErrorCode::BadOption);
    }

    #[test]
    fn an_untrusted_server_fails_with_a_tls_code_and_no_retry() {
        let server = Hub::open("quic://127.0.0.1:0", listen_opts()).unwrap();
        let port = server.quic().unwrap().local_addr().unwrap().port();
        let ca = std::env::temp_dir().join(format!("zerohop-quic-ca-{}.pem", std::process::id()));
        let other = rcgen_ca_pem();
        std::fs::write(&ca, other).unwrap();
        let opts =
            HubOptions { quic: QuicOptions { ca: Some(ca.clone()), ..QuicOptions::default() }, ..connect_opts() };
        let client = Hub::open(&format!("quic://127.0.0.1:{port}"), opts).unwrap();
        let q = client.quic().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.status() != Status::Disconnected {
            assert!(std::time::Instant::now() < deadline, "status {:?}", q.status());
            std::thread::sleep(Duration::from_millis(5));
        }
        let events = q.take_status_events();
        let failure = events.iter().find_map(|e| e.error.clone()).unwrap();
        assert_eq!(failure_code(&failure), ErrorCode::TlsUntrusted, "{failure:?}");
        let _ = std::fs::remove_file(ca);
    }

    /// A CA certificate nobody signed the server with.
    fn rcgen_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["zerohop test CA".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }
}
