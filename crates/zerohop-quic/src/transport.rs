//! The `quic://` transport: a [`QuicProtocol`] on the network-transport core.
//!
//! A hub either listens (`listen: true`: any number of peers connect to it) or connects
//! to one server; publishing reaches every connected peer, receiving yields messages
//! from all of them with the sender in the envelope. The receive ring is the core's
//! default for message transports ([`RingOptions::for_messages`]): small slots, larger
//! messages aside or spilled, up to `maxMessageSize` (16 MiB by default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::address::resolve;
use zerohop_net::ring::{ReceiveRing, RingOptions};
use zerohop_net::transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, PublishTally, Reader};
use zerohop_proto::lifecycle::Backoff;
use zerohop_transport::chaos::{ChaosReport, Injects};
use zerohop_transport::metrics::GroupMetrics;
use zerohop_transport::{
    Backpressure, Batching, Delivery, Endpoint, Error, ErrorCode, FromOptions, HubOptions, Options, Requests, Result,
    Target, Transport, TransportKind, TransportOptions, Value,
};

use crate::config::{Overflow, QuicConfig, Sent, Side};
use crate::protocol::{QuicProtocol, StartError};
use zerohop_tls::{TlsOptions, TlsSetup};

/// The options only `quic://` hubs have.
#[derive(Clone, Debug)]
pub struct QuicOptions {
    /// Accept peers on the URL's address instead of connecting to it.
    pub listen: bool,
    /// TLS, always on: without a certificate a listener makes a self-signed one
    /// (development only); a connecting hub must say whom it trusts.
    pub tls: TlsOptions,
    pub keep_alive: Option<Duration>,
    pub idle_timeout: Duration,
    /// The reconnect schedule of a connecting hub.
    pub reconnect: Backoff,
    /// Channels (one reliable stream each per peer).
    pub channels: u16,
    /// Bytes kept per peer and channel until the peer's application has read them.
    pub send_queue_bytes: usize,
    /// Messages kept per peer and channel, at most (default: bounded by bytes only).
    pub send_queue_messages: usize,
    /// Publish unreliable datagrams instead of stream messages.
    pub datagrams: bool,
    /// LZ4 on each channel message published that it shrinks (`compression: 'lz4'`).
    pub compression: bool,
    /// Each channel's priority class (`priorities`, 0 first; empty: every channel alike).
    pub priorities: Vec<u8>,
    /// Bytes of received messages larger than a slot held for the reader at most
    /// (`receiveQueueBytes`; `None`: the ring's default).
    pub receive_queue_bytes: Option<usize>,
    /// Largest message (default 16 MiB).
    pub max_message: usize,
    /// How long a listener keeps a disconnected peer's unacknowledged messages.
    pub peer_linger: Duration,
    /// A connecting hub's work group (`group`; see `zerohop_proto::workgroup`).
    pub group: Option<String>,
}

impl Default for QuicOptions {
    fn default() -> Self {
        let d = QuicConfig::new(Side::Listen, ([127, 0, 0, 1], 0).into());
        Self {
            listen: false,
            tls: TlsOptions::default(),
            keep_alive: d.keep_alive,
            idle_timeout: d.idle_timeout,
            reconnect: d.backoff,
            channels: d.max_channels,
            send_queue_bytes: d.send_queue_bytes,
            send_queue_messages: d.send_queue_messages,
            datagrams: false,
            compression: false,
            priorities: Vec::new(),
            receive_queue_bytes: None,
            max_message: d.max_message,
            peer_linger: d.peer_linger,
            group: None,
        }
    }
}

impl TransportOptions for QuicOptions {
    fn scheme(&self) -> &'static str {
        "quic"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for QuicOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        let d = QuicOptions::default();
        let listen = o.take_bool("listen")?.unwrap_or(false);
        let mut q = QuicOptions {
            listen,
            keep_alive: o.take_interval_ms("keepAliveMs", d.keep_alive)?,
            idle_timeout: o.take_ms("idleTimeoutMs")?.unwrap_or(d.idle_timeout),
            channels: o.take_u32("channels", 1..=65535)?.map_or(d.channels, |c| c as u16),
            send_queue_bytes: o.take_usize("sendQueueBytes", 1..=1 << 40)?.unwrap_or(d.send_queue_bytes),
            send_queue_messages: o.take_usize("sendQueueMessages", 1..=1 << 40)?.unwrap_or(d.send_queue_messages),
            datagrams: o.take_bool("datagrams")?.unwrap_or(false),
            compression: o.take_choice("compression", &["lz4", "none"])? == Some("lz4"),
            priorities: o.take_priorities()?,
            receive_queue_bytes: o.take_usize("receiveQueueBytes", 1..=1 << 40)?,
            max_message: o.take_usize("maxMessageSize", 1..=1 << 30)?.unwrap_or(d.max_message),
            peer_linger: o.take_ms("peerLingerMs")?.unwrap_or(d.peer_linger),
            group: o.take_work_group(listen)?,
            ..d
        };
        q.tls = TlsOptions::take(o, "quic")?.unwrap_or_default();
        q.reconnect = o.take_reconnect("quic", q.reconnect)?;
        Ok(q)
    }
}

/// A `quic://` hub's protocol, as the core sees it.
impl Protocol for QuicProtocol {
    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn max_message_size(&self) -> usize {
        self.config().max_message
    }

    fn publish_tally(&self) -> Option<Arc<PublishTally>> {
        Some(QuicProtocol::publish_tally(self).clone())
    }

    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        let sent = if self.config().datagrams {
            self.publish_datagram(channel, payload, None)
        } else {
            QuicProtocol::publish(self, channel, payload)
        };
        Ok(match sent? {
            Sent::Accepted => Delivery::Accepted,
            Sent::Dropped => Delivery::Dropped,
        })
    }

    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery> {
        let sent = if self.config().datagrams {
            // (Sent at once, but it may wait in the receiver's ring: the expiry goes along.)
            self.publish_datagram(channel, payload, Some(expiry_ns))
        } else {
            QuicProtocol::publish_expiring(self, channel, payload, Some(expiry_ns))
        };
        Ok(match sent? {
            Sent::Accepted => Delivery::Accepted,
            Sent::Dropped => Delivery::Dropped,
        })
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(QuicProtocol::local_addr(self))
    }

    fn chaos(&self) -> Option<ChaosReport> {
        QuicProtocol::chaos(self)
    }

    fn has_room(&self, channel: u16, len: usize) -> bool {
        self.config().datagrams || QuicProtocol::has_room(self, channel, len)
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let m = self.metrics();
        let n = |v: u64| Value::Number(v as f64);
        vec![
            ("peers", n(u64::from(m.peers))),
            ("reconnects", n(m.reconnects)),
            ("zeroRttConnections", n(m.zero_rtt_connections)),
            ("lastZeroRtt", Value::Bool(m.last_zero_rtt)),
            ("handshakeFailures", n(m.handshake_failures)),
            ("protocolViolations", n(m.protocol_violations)),
            ("slowConsumers", n(m.slow_consumers)),
            ("dropped", n(m.dropped)),
            ("datagramsSent", n(m.datagrams_sent)),
            ("datagramsReceived", n(m.datagrams_received)),
            ("datagramsLost", n(m.datagrams_lost)),
            ("streamsOpened", n(m.streams_opened)),
            ("streamsAccepted", n(m.streams_accepted)),
            ("unackedBytes", n(m.unacked_bytes)),
            ("requestsPending", n(m.requests_pending)),
            ("answersPending", n(m.answers_pending)),
            ("bytesSent", n(m.bytes_sent)),
            ("bytesSaved", n(m.bytes_saved)),
            ("bytesReceived", n(m.bytes_received)),
            ("packetsLost", n(m.packets_lost)),
            ("rttUs", Value::Number(m.rtt.as_secs_f64() * 1e6)),
            ("cwnd", n(m.cwnd)),
            ("mtu", n(u64::from(m.mtu))),
        ]
        .into_iter()
        .chain(self.driver().with(|e| GroupMetrics::details(e.groups())).ok().flatten())
        .collect()
    }

    fn linger(&self, linger: Duration) -> bool {
        QuicProtocol::linger(self, linger)
    }

    fn close(&self) {
        QuicProtocol::close(self);
    }

    fn requests(&self) -> Option<&dyn Requests> {
        Some(self)
    }

    fn batching(&self) -> Option<&dyn Batching> {
        Some(self)
    }
}

/// A burst of publishes waits for the caller's flush at the end of its turn (or for its
/// size), as a stream's does, rather than for a timer that wakes the I/O thread about
/// every burst: 16,000 wake-ups a second of a 64-byte stream, each taking the
/// publisher's CPU for a moment (2026-12-07).
impl Batching for QuicProtocol {
    /// Then reads the acknowledgements of what was sent (see `Driver::flush_then_pump`).
    fn flush(&self) -> Result<()> {
        self.driver().flush_then_pump(|e| e.flush_pending(Instant::now()))
    }

    fn flushes_at_end_of_turn(&self) -> bool {
        true
    }

    fn set_caller_flushes(&self) {
        let _ = self.driver().with(|e| e.burst.flush_by_caller());
    }
}

impl Requests for QuicProtocol {
    fn request(&self, body: &[u8]) -> Result<u64> {
        QuicProtocol::request(self, body).map_err(Error::from)
    }

    fn cancel(&self, key: u64) -> bool {
        QuicProtocol::cancel(self, key)
    }

    fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        QuicProtocol::respond(self, key, ok, body)
    }
}

fn start_error(e: StartError, url: &str) -> Error {
    match e {
        StartError::Tls(e) => Error::bad_option(format!("tls: {e}")),
        StartError::Io(e) => Error::io(url, e),
        StartError::Config(e) => Error::bad_option(e),
    }
}

/// The protocol's configuration for `quic://host:port` with `options`.
fn quic_config(host: &str, port: u16, q: &QuicOptions, overflow: Overflow) -> Result<QuicConfig> {
    let addr = resolve(host, port, None)?;
    if !q.listen && port == 0 {
        return Err(Error::new(ErrorCode::BadUrl, "cannot connect to port 0; listen: true to accept peers"));
    }
    let mut config = match q.tls.setup(q.listen, host, "quic")? {
        TlsSetup::Listen { identity, client_ca } => {
            let mut c = QuicConfig::new(Side::Listen, addr);
            c.identity = Some(identity);
            c.client_ca = client_ca;
            c
        }
        TlsSetup::Connect { trust, identity, server_name } => {
            let mut c = QuicConfig::new(Side::Connect { server_name }, addr);
            c.trust = trust;
            c.identity = identity;
            c
        }
    };
    config.keep_alive = q.keep_alive;
    config.idle_timeout = q.idle_timeout;
    config.backoff = q.reconnect;
    if q.channels == 0 {
        return Err(Error::bad_option("channels must be at least 1"));
    }
    config.max_channels = q.channels;
    config.max_message = q.max_message;
    config.send_queue_bytes = q.send_queue_bytes.max(1);
    config.send_queue_messages = q.send_queue_messages;
    config.peer_linger = q.peer_linger;
    config.group = q.group.clone();
    config.datagrams = q.datagrams;
    config.compression = q.compression;
    config.priorities = q.priorities.clone();
    config.receive_queue_bytes = q.receive_queue_bytes;
    config.overflow = overflow;
    Ok(config)
}

/// Opens `quic://host:port`: listens on it or connects to it.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    Ok(Box::new(open_quic(endpoint, &mut options)?))
}

/// [`open`], typed (for tests and tools that want the protocol's own calls).
pub fn open_quic(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<QuicProtocol>> {
    let Target::Host { host, port } = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "quic:// needs host:port"));
    };
    let chaos = options.take_chaos("quic", Injects { datagrams: true, disconnects: true }, "")?;
    let q: QuicOptions = options.take_specific("quic")?;
    let settings = options.settings(
        "quic",
        DEFAULT_SPIN,
        Backpressure::Block,
        &[Backpressure::Block, Backpressure::DropNew, Backpressure::FailFast],
        "a reliable stream cannot overwrite what it sent; use 'block' (the default), 'drop_new' or 'fail_fast'",
    )?;
    if q.group.is_some() && settings.role == zerohop_transport::options::Role::Publisher {
        return Err(Error::bad_option(
            "group shares what a group receives: a hub of role 'publisher' receives nothing",
        ));
    }
    let overflow = Overflow::of(&settings);
    let mut config = quic_config(host, *port, &q, overflow)?;
    config.chaos = chaos;
    let ring_options =
        RingOptions::for_messages(options.slot_size, options.capacity, q.max_message, q.receive_queue_bytes);
    let ring = Arc::new(ReceiveRing::new(ring_options, !q.listen)?);
    let url = format!("quic://{host}:{port}");
    let protocol = Arc::new(QuicProtocol::start(config, ring.clone()).map_err(|e| start_error(e, &url))?);
    let reader: Arc<dyn Reader> = protocol.driver().clone();
    NetTransport::new(Parts { protocol, reader, ring, settings, connections: true })
}
