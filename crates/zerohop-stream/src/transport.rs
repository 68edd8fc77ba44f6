//! Hubs that carry records on the network-transport core: [`StreamProtocol`] over any
//! [`Wire`], [`start`] for a transport that brings its own, and `open` for `tcp://`
//! and `uds://` (the socket wire).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::address::resolve;
use zerohop_net::driver::{Driver, Guard};
use zerohop_net::ring::{ReceiveRing, RingOptions};
use zerohop_net::session_id;
use zerohop_net::transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, PublishTally, Reader};
use zerohop_proto::lifecycle::Backoff;
use zerohop_transport::chaos::Injects;
use zerohop_transport::{
    Backpressure, Batching, Delivery, Endpoint, Error, ErrorCode, FromOptions, HubOptions, Options, Requests, Result,
    Settings, Target, Transport, TransportKind, TransportOptions, Value,
};

use crate::engine::{Config, Engine};
use crate::socket::Address;
use crate::sockets::{SocketConfig, SocketWire};
use crate::tls::TlsContext;
use crate::wire::Wire;
use zerohop_net::sending::Overflow;
use zerohop_proto::workgroup::Recipient;
use zerohop_tls::TlsOptions;
use zerohop_transport::metrics::GroupMetrics;

/// The options of every hub that carries records (`tcp://`, `uds://`, `kcp://`).
#[derive(Clone, Debug)]
pub struct ReliableOptions {
    /// Accept peers on the URL's address instead of connecting to it.
    pub listen: bool,
    /// A listener passes what each peer publishes on to every other peer (a broker,
    /// as `zmq_proxy` or a NATS server is), besides receiving it itself. A peer whose
    /// send queue is full is a slow consumer, disconnected (`ERR_SLOW_CONSUMER`).
    pub relay: bool,
    /// Channels (ordered, reliable streams of messages within a peer).
    pub channels: u16,
    /// Bytes kept per peer and channel until the peer's application has read them.
    pub send_queue_bytes: usize,
    /// Messages kept per peer and channel, at most (default: bounded by bytes only).
    pub send_queue_messages: usize,
    /// Largest message (default 16 MiB).
    pub max_message: usize,
    /// How long a listener keeps a disconnected peer's unacknowledged messages.
    pub peer_linger: Duration,
    /// The reconnect schedule of a connecting hub.
    pub reconnect: Backoff,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Heartbeats when idle; a peer silent for three is lost (`None`: off).
    pub heartbeat: Option<Duration>,
    /// LZ4 on each message published that it shrinks (`compression: 'lz4'`).
    pub compression: bool,
    /// Each channel's priority class (0 first; channels past the list: 0); empty: every
    /// channel alike (see `zerohop_proto::records::RecordWriter::with_priorities`).
    pub priorities: Vec<u8>,
    /// Bytes of received messages larger than a slot held for the reader at most
    /// (`receiveQueueBytes`; `None`: the ring's default, 8 MiB aside and 64 MiB spilled).
    pub receive_queue_bytes: Option<usize>,
    /// A connecting hub's work group (`group`): the listener sends each message to one
    /// of the hubs that name the same group, rather than to each.
    pub group: Option<String>,
}

impl Default for ReliableOptions {
    fn default() -> Self {
        Self {
            listen: false,
            relay: false,
            channels: 16,
            send_queue_bytes: 64 << 20,
            send_queue_messages: usize::MAX,
            max_message: 16 << 20,
            peer_linger: Duration::from_secs(30),
            reconnect: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_secs(1)),
            compression: false,
            priorities: Vec::new(),
            receive_queue_bytes: None,
            group: None,
        }
    }
}

impl ReliableOptions {
    /// Takes them from `o` (each by its user-facing name), for `scheme`.
    pub fn take(o: &mut Options, scheme: &str) -> Result<Self> {
        let d = ReliableOptions::default();
        let listen = o.take_bool("listen")?.unwrap_or(false);
        let mut s = ReliableOptions {
            listen,
            relay: o.take_bool("relay")?.unwrap_or(false),
            channels: o.take_u32("channels", 1..=65535)?.map_or(d.channels, |c| c as u16),
            send_queue_bytes: o.take_usize("sendQueueBytes", 1..=1 << 40)?.unwrap_or(d.send_queue_bytes),
            send_queue_messages: o.take_usize("sendQueueMessages", 1..=1 << 40)?.unwrap_or(d.send_queue_messages),
            max_message: o.take_usize("maxMessageSize", 1..=1 << 30)?.unwrap_or(d.max_message),
            peer_linger: o.take_ms("peerLingerMs")?.unwrap_or(d.peer_linger),
            connect_timeout: o.take_ms("connectTimeoutMs")?.unwrap_or(d.connect_timeout),
            heartbeat: o.take_interval_ms("heartbeatMs", d.heartbeat)?,
            compression: o.take_choice("compression", &["lz4", "none"])? == Some("lz4"),
            priorities: o.take_priorities()?,
            receive_queue_bytes: o.take_usize("receiveQueueBytes", 1..=1 << 40)?,
            group: o.take_work_group(listen)?,
            ..d
        };
        if s.relay && !s.listen {
            return Err(Error::bad_option(
                "relay: true passes messages between a listener's peers: it needs listen: true",
            ));
        }
        s.reconnect = o.take_reconnect(scheme, s.reconnect)?;
        Ok(s)
    }
}

/// The options only stream hubs (`tcp://`, `uds://`) have, besides the reliable ones.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub reliable: ReliableOptions,
    /// A listening Unix socket file's permissions.
    pub socket_mode: u32,
    /// Unix sockets, listening: admit only processes of these users (`SO_PEERCRED`);
    /// the others are closed at once and counted (`refused`). `None`: anyone who may
    /// open the socket file.
    pub allow_uids: Option<Vec<u32>>,
    /// `tcp://` only: TLS 1.3 on every connection, with the same options as `quic://`
    /// (`None`: plain TCP).
    pub tls: Option<TlsOptions>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { reliable: ReliableOptions::default(), socket_mode: 0o600, allow_uids: None, tls: None }
    }
}

impl From<ReliableOptions> for StreamOptions {
    fn from(reliable: ReliableOptions) -> Self {
        Self { reliable, ..Self::default() }
    }
}

impl TransportOptions for StreamOptions {
    fn scheme(&self) -> &'static str {
        // One type for both schemes; messages name the first.
        "tcp"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for StreamOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        Ok(StreamOptions {
            reliable: ReliableOptions::take(o, "tcp")?,
            allow_uids: o.take_u32s("allowUids", 0..=u32::MAX)?,
            tls: TlsOptions::take(o, "tcp")?,
            ..StreamOptions::default()
        })
    }
}

/// The protocol of a hub that carries records, as the core sees it: publishing (with
/// the backpressure policy), requests, and its engine over wire `W` behind the driver.
pub struct StreamProtocol<W: Wire = SocketWire> {
    driver: Arc<Driver<Engine<W>>>,
    kind: TransportKind,
    local: Option<SocketAddr>,
    max_message: usize,
    channels: u16,
    overflow: Overflow,
    listen: bool,
    /// What was published, counted under the engine's lock (see [`PublishTally`]).
    tally: Arc<PublishTally>,
}

impl<W: Wire> StreamProtocol<W> {
    /// Publishes `message` on `channel`, with its expiry if it has one (`ttlMs`), as
    /// the hub's `backpressure` says when a peer's queue is full.
    fn publish_at(&self, channel: u16, message: &[u8], expiry_ns: Option<u64>) -> Result<Delivery> {
        if message.len() > self.max_message {
            return Err(Error::too_large("message", message.len(), self.max_message));
        }
        if channel >= self.channels {
            return Err(Error::bad_option(format!(
                "channel {channel} is out of range: this hub has channels 0..{}",
                self.channels
            )));
        }
        let mut g = self.engine()?;
        let full = {
            let e = g.as_mut().expect("checked by lock");
            if e.closing {
                return Err(Error::closed());
            }
            // The usual case, without allocating: every peer has room.
            if e.all_have_room(channel, message.len()) {
                e.publish(channel, message, expiry_ns, &[], Instant::now);
                self.tally.count_locked(message.len(), false);
                self.driver.after(g);
                return Ok(Delivery::Accepted);
            }
            e.full_targets(channel, message.len())
        };
        // Some peer is a queue behind: apply the policy to it.
        let mut skipped = Vec::new();
        for target in full {
            let len = message.len();
            let has_room = |g: &Guard<'_, Engine<W>>| g.as_ref().is_none_or(|e| e.has_room(target, channel, len));
            let closing = |g: &Guard<'_, Engine<W>>| g.as_ref().is_none_or(|e| e.closing);
            match self.overflow {
                Overflow::FailFast => return Err(Error::new(ErrorCode::Backpressure, "a peer's send queue is full")),
                Overflow::DropNew => {
                    if let Some(e) = g.as_mut() {
                        e.count_dropped();
                    }
                    skipped.push(target);
                }
                // A listener broadcasts: waiting for one slow peer would hold up every
                // other, so a peer that let its whole send queue pile up is a slow
                // consumer, disconnected now (`ERR_SLOW_CONSUMER`); the rest go on. (A
                // work group whose every member is a queue behind is waited for.)
                Overflow::Block(_) if self.listen && matches!(target, Recipient::Peer(_)) => {
                    let Recipient::Peer(peer) = target else { unreachable!() };
                    g.as_mut().expect("not closing").disconnect_slow(peer);
                }
                Overflow::Block(timeout) => {
                    // What waits in a burst goes first: the server can only read what it got.
                    if let Some(e) = g.as_mut() {
                        e.flush_pending();
                    }
                    let deadline = Instant::now() + timeout;
                    while !has_room(&g) && !closing(&g) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        g = self.driver.wait(g, left.min(Duration::from_millis(10)));
                    }
                    if closing(&g) {
                        return Err(Error::closed());
                    }
                    if !has_room(&g) {
                        return Err(Error::new(
                            ErrorCode::Timeout,
                            if self.listen {
                                "the work group's members did not read in time (send queues full)"
                            } else {
                                "the server did not read in time (send queue full)"
                            },
                        ));
                    }
                }
            }
        }
        let e = g.as_mut().expect("not closing");
        e.publish(channel, message, expiry_ns, &skipped, Instant::now);
        self.tally.count_locked(message.len(), !skipped.is_empty());
        self.driver.after(g);
        Ok(if skipped.is_empty() { Delivery::Accepted } else { Delivery::Dropped })
    }

    fn engine(&self) -> Result<Guard<'_, Engine<W>>> {
        self.driver.lock()
    }
}

impl<W: Wire> Protocol for StreamProtocol<W> {
    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn max_message_size(&self) -> usize {
        self.max_message
    }

    fn publish_tally(&self) -> Option<Arc<PublishTally>> {
        Some(self.tally.clone())
    }

    fn publish(&self, channel: u16, message: &[u8]) -> Result<Delivery> {
        self.publish_at(channel, message, None)
    }

    fn publish_expiring(&self, channel: u16, message: &[u8], expiry_ns: u64) -> Result<Delivery> {
        self.publish_at(channel, message, Some(expiry_ns))
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    fn has_room(&self, channel: u16, len: usize) -> bool {
        self.driver.with(|e| e.all_have_room(channel, len)).unwrap_or(true)
    }

    fn chaos(&self) -> Option<zerohop_transport::chaos::ChaosReport> {
        self.driver.with(|e| e.wire_chaos()).ok().flatten()
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let Ok(((c, peers, unacked, requests, answers), connected, groups, wire)) =
            self.driver.with(|e| (e.snapshot(), e.connected_peers(), e.groups(), e.wire_details()))
        else {
            return Vec::new();
        };
        // Each connected peer: its name, what waits for it, and for Unix sockets its
        // process and user.
        let unsent = connected.iter().map(|p| p.unsent).sum();
        let connected = connected
            .into_iter()
            .map(|p| {
                let n = |v: u64| Value::Number(v as f64);
                let mut entries = vec![
                    ("peer".to_owned(), Value::Text(p.name)),
                    ("queuedBytes".into(), n(p.queued_bytes)),
                    ("queuedMessages".into(), n(p.queued_messages)),
                    (W::UNSENT.into(), n(p.unsent)),
                ];
                if let Some(c) = p.credentials {
                    let n = |v: u32| Value::Number(f64::from(v));
                    entries.extend([("pid".into(), n(c.pid)), ("uid".into(), n(c.uid)), ("gid".into(), n(c.gid))]);
                }
                if let Some(g) = p.group {
                    entries.push(("group".into(), Value::Text(g)));
                }
                Value::Map(Options::new(entries))
            })
            .collect();
        let n = |v: u64| Value::Number(v as f64);
        let mut details = vec![
            ("peers", n(peers)),
            ("reconnects", n(c.reconnects)),
            ("protocolViolations", n(c.protocol_violations)),
            ("slowConsumers", n(c.slow_consumers)),
            ("heartbeatTimeouts", n(c.heartbeat_timeouts)),
            ("dropped", n(c.dropped)),
            ("handshakeFailures", n(c.handshake_failures)),
            ("truncatedRecords", n(c.truncated_records)),
            ("bytesSaved", n(c.bytes_saved)),
            ("unackedBytes", n(unacked)),
            (W::UNSENT, n(unsent)),
            ("requestsPending", n(requests)),
            ("answersPending", n(answers)),
            ("bytesSent", n(c.bytes_sent)),
            ("bytesReceived", n(c.bytes_received)),
            ("connectedPeers", Value::List(connected)),
        ];
        details.extend(GroupMetrics::details(groups));
        details.extend(wire);
        details
    }

    fn linger(&self, linger: Duration) -> bool {
        let _ = self.driver.with(|e| e.flush_pending());
        self.driver.wait_until(linger, Engine::<W>::drained, |e| e.closing)
    }

    fn close(&self) {
        self.driver.shutdown(|e| {
            if !e.closing {
                e.close();
            }
        });
    }

    fn requests(&self) -> Option<&dyn Requests> {
        Some(self)
    }

    fn batching(&self) -> Option<&dyn Batching> {
        Some(self)
    }
}

impl<W: Wire> Batching for StreamProtocol<W> {
    fn flush(&self) -> Result<()> {
        self.driver.with(|e| e.flush_pending())
    }

    fn flushes_at_end_of_turn(&self) -> bool {
        true
    }

    fn set_caller_flushes(&self) {
        let _ = self.driver.with(Engine::<W>::flush_by_caller);
    }
}

impl<W: Wire> Requests for StreamProtocol<W> {
    fn request(&self, body: &[u8]) -> Result<u64> {
        if body.len() > self.max_message {
            return Err(Error::too_large("request", body.len(), self.max_message));
        }
        let mut g = self.engine()?;
        let e = g.as_mut().expect("checked by lock");
        if e.closing {
            return Err(Error::closed());
        }
        let key = e.request(body);
        self.driver.after(g);
        key
    }

    fn cancel(&self, key: u64) -> bool {
        self.driver.with(|e| e.cancel(key)).unwrap_or(false)
    }

    fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        self.driver.with(|e| e.respond(key, ok, body)).unwrap_or(false)
    }
}

/// Where `endpoint` points.
fn address_of(endpoint: &Endpoint, listen: bool) -> Result<Address> {
    match (endpoint.kind(), endpoint.target()) {
        (TransportKind::Tcp, Target::Host { host, port }) => {
            if !listen && *port == 0 {
                return Err(Error::new(ErrorCode::BadUrl, "cannot connect to port 0; listen: true to accept peers"));
            }
            Ok(Address::Tcp(resolve(host, *port, None)?))
        }
        (TransportKind::Uds, Target::Path(p)) => match p.strip_prefix('@') {
            Some(name) if !name.is_empty() => Ok(Address::Abstract(name.as_bytes().to_vec())),
            _ if p.starts_with('/') => Ok(Address::Path(PathBuf::from(p))),
            _ => Err(Error::new(ErrorCode::BadUrl, "uds:// needs an absolute path (uds:///run/app.sock) or @name")),
        },
        (TransportKind::Tcp, _) => Err(Error::new(ErrorCode::BadUrl, "tcp:// needs host:port")),
        _ => Err(Error::new(ErrorCode::BadUrl, "uds:// needs an absolute path (uds:///run/app.sock) or @name")),
    }
}

/// Opens `tcp://host:port` or `uds:///path`: listens on it or connects to it.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    Ok(Box::new(open_stream(endpoint, &mut options)?))
}

/// [`open`], typed (for tests and tools that want the protocol's own calls).
pub fn open_stream(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<StreamProtocol>> {
    let scheme = endpoint.kind().scheme();
    let chaos = options.take_chaos(scheme, Injects { datagrams: true, disconnects: true }, "")?;
    let s: StreamOptions = options.take_specific(scheme)?;
    let settings = settings(options, scheme)?;
    let listen = s.reliable.listen;
    let addr = address_of(endpoint, listen)?;
    if s.allow_uids.is_some() && !(listen && addr.is_unix()) {
        return Err(Error::bad_option("allowUids applies to a listening uds:// hub (a Unix socket says who connects)"));
    }
    let tls = match (&s.tls, endpoint.target()) {
        (None, _) => None,
        (Some(t), Target::Host { host, .. }) if !addr.is_unix() => {
            let setup = t.setup(listen, host, scheme)?;
            Some(TlsContext::new(&setup).map_err(|e| Error::bad_option(format!("tls: {e}")))?)
        }
        (Some(_), _) => {
            return Err(Error::bad_option("tls applies to tcp:// (a Unix socket stays on this host; see allowUids)"));
        }
    };
    let wire = SocketWire::new(SocketConfig {
        addr: addr.clone(),
        listen,
        socket_mode: s.socket_mode,
        allow_uids: s.allow_uids.clone(),
        chaos,
    })
    .map_err(|e| Error::io(&format!("{scheme}://{addr}"), e))?;
    start(endpoint.kind(), options, settings, Config { options: s.reliable, tls }, wire)
}

/// The settings of a hub that carries records, its backpressure policy checked.
pub fn settings(options: &HubOptions, scheme: &str) -> Result<Settings> {
    options.settings(
        scheme,
        DEFAULT_SPIN,
        Backpressure::Block,
        &[Backpressure::Block, Backpressure::DropNew, Backpressure::FailFast],
        "a reliable stream cannot overwrite what it sent; use 'block' (the default), 'drop_new' or 'fail_fast'",
    )
}

/// Starts a hub that carries records over `wire` (bound already, if it listens), with
/// `config` and `settings` (from [`settings`]), for a transport of `kind`: its engine
/// on a driver, its receive ring.
pub fn start<W: Wire>(
    kind: TransportKind,
    options: &HubOptions,
    settings: Settings,
    mut config: Config,
    wire: W,
) -> Result<NetTransport<StreamProtocol<W>>> {
    if config.options.group.is_some() && settings.role == zerohop_transport::options::Role::Publisher {
        return Err(Error::bad_option(
            "group shares what a group receives: a hub of role 'publisher' receives nothing",
        ));
    }
    let overflow = Overflow::of(&settings);
    config.options.send_queue_bytes = config.options.send_queue_bytes.max(1);
    let o = config.options.clone();
    let ring_options =
        RingOptions::for_messages(options.slot_size, options.capacity, o.max_message, o.receive_queue_bytes);
    let ring = Arc::new(ReceiveRing::new(ring_options, !o.listen)?);
    let engine = Engine::start(config, wire, ring.clone(), session_id());
    let local = engine.local_addr();
    let driver = Arc::new(Driver::start(&format!("zerohop-{}-io", kind.scheme()), engine, || {})?);
    let protocol = Arc::new(StreamProtocol {
        driver: driver.clone(),
        kind,
        local,
        max_message: o.max_message,
        channels: o.channels,
        overflow,
        listen: o.listen,
        tally: Arc::default(),
    });
    let reader: Arc<dyn Reader> = driver;
    NetTransport::new(Parts { protocol, reader, ring, settings, connections: true })
}

impl<W: Wire> Drop for StreamProtocol<W> {
    fn drop(&mut self) {
        Protocol::close(self);
    }
}
