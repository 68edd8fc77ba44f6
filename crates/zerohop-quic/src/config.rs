//! What a QUIC hub is told (its configuration) and what it tells (why a connection
//! failed, why a publish failed, its counters).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quinn_proto::{ConnectionError, VarInt};
use zerohop_proto::lifecycle::Backoff;
use zerohop_transport::{Error, ErrorCode};

use zerohop_tls::{HandshakeFailure, Identity, Trust};

/// Which side of its connections a hub is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Accept any number of peers on the address.
    Listen,
    /// Connect to the server at the address, verifying it as `server_name`.
    Connect { server_name: String },
}

/// What `publish` does when a peer's send queue is full. Under `Block`, a QUIC listener
/// disconnects a peer still full after the timeout as a slow consumer (the others go on);
/// a connecting hub fails the publish.
pub use zerohop_net::sending::Overflow;

/// How a QUIC hub runs.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    pub side: Side,
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
    /// Reconnect schedule of a connecting hub.
    pub backoff: Backoff,
    /// Largest message, both ways; a peer sending more is disconnected.
    pub max_message: usize,
    /// Channels per peer (reliable streams), numbered from 0.
    pub max_channels: u16,
    /// Bytes kept per peer and channel until the peer has read them.
    pub send_queue_bytes: usize,
    /// Messages kept per peer and channel, at most.
    pub send_queue_messages: usize,
    pub overflow: Overflow,
    /// How long a listener keeps a disconnected peer's unacknowledged messages for its
    /// reconnect.
    pub peer_linger: Duration,
    /// The hub publishes unreliable datagrams instead of channel messages.
    pub datagrams: bool,
    /// Faults injected into every datagram sent and received (`?chaos=`).
    pub chaos: Option<zerohop_transport::chaos::ChaosConfig>,
    /// LZ4 on each channel message published that it shrinks.
    pub compression: bool,
    /// Each channel's priority class (0 first; see `zerohop_proto::qos::ChannelClasses`).
    pub priorities: Vec<u8>,
    /// `receiveQueueBytes`: also bounds the flow-control windows (what quinn holds).
    pub receive_queue_bytes: Option<usize>,
    /// Connecting: the work group this hub receives in (said in its hello).
    pub group: Option<String>,
}

impl QuicConfig {
    /// Defaults for `side` at `addr`.
    pub fn new(side: Side, addr: SocketAddr) -> Self {
        Self {
            side,
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
            send_queue_messages: usize::MAX,
            overflow: Overflow::Block(Duration::from_secs(5)),
            peer_linger: Duration::from_secs(30),
            datagrams: false,
            chaos: None,
            compression: false,
            priorities: Vec::new(),
            receive_queue_bytes: None,
            group: None,
        }
    }
}

/// Application error codes a hub closes a connection with.
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
    /// Dropped as a lost connection is (chaos: `disconnect`): the peer keeps what it
    /// would keep for a reconnect, as after any loss.
    Reset = 4,
}

impl CloseCode {
    pub(crate) fn of(code: u64) -> Option<CloseCode> {
        Some(match code {
            0 => CloseCode::Closed,
            1 => CloseCode::Protocol,
            2 => CloseCode::TooLarge,
            3 => CloseCode::SlowConsumer,
            4 => CloseCode::Reset,
            _ => return None,
        })
    }

    pub(crate) fn varint(self) -> VarInt {
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
    pub(crate) fn of(e: &ConnectionError) -> Failure {
        let kind = if let Some(h) = handshake_failure(e) {
            FailureKind::Tls(h)
        } else {
            match e {
                ConnectionError::TimedOut => FailureKind::TimedOut,
                ConnectionError::ApplicationClosed(c) => match CloseCode::of(c.error_code.into_inner()) {
                    Some(CloseCode::Protocol) => FailureKind::Protocol { by_peer: true },
                    Some(CloseCode::TooLarge) => FailureKind::TooLarge { by_peer: true },
                    Some(CloseCode::SlowConsumer) => FailureKind::SlowConsumer { by_peer: true },
                    Some(CloseCode::Reset) => FailureKind::Lost,
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

    /// The stable error code users see for it.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            FailureKind::Tls(h) => h.code(),
            FailureKind::TimedOut => ErrorCode::Timeout,
            FailureKind::Lost | FailureKind::ClosedByPeer => ErrorCode::ConnectionLost,
            FailureKind::Protocol { .. } => ErrorCode::Protocol,
            FailureKind::TooLarge { .. } => ErrorCode::MessageTooLarge,
            FailureKind::SlowConsumer { .. } => ErrorCode::SlowConsumer,
        }
    }
}

/// Reads a TLS failure out of a connection error; `None` if it is not one. QUIC carries
/// TLS alerts as transport error codes 0x100 + alert (RFC 9001): sent by the peer when
/// it closed the connection, by us when we did.
pub fn handshake_failure(error: &ConnectionError) -> Option<HandshakeFailure> {
    let (code, text, by_peer) = match error {
        ConnectionError::TransportError(e) => (u64::from(e.code), e.reason.clone(), false),
        ConnectionError::ConnectionClosed(c) => {
            (u64::from(c.error_code), String::from_utf8_lossy(&c.reason).into_owned(), true)
        }
        _ => return None,
    };
    let alert = code.checked_sub(0x100).filter(|a| *a < 0x100)?;
    Some(HandshakeFailure::of_alert(alert as u8, by_peer, &text))
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
    /// The hub is closed.
    Closed,
    /// A request needs a connection, and there is none now.
    NotConnected,
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Error {
        match e {
            PublishError::TooLarge { len, max } => Error::too_large("message", len, max),
            PublishError::BadChannel { channel, max } => {
                Error::bad_option(format!("channel {channel} is out of range: this hub has channels 0..{max}"))
            }
            PublishError::Full => Error::new(ErrorCode::Backpressure, "a peer's send queue is full"),
            PublishError::Timeout => {
                Error::new(ErrorCode::Timeout, "the server did not read in time (send queue full)")
            }
            PublishError::Closed => Error::closed(),
            PublishError::NotConnected => {
                Error::new(ErrorCode::ConnectionLost, "not connected to the server now (it reconnects by itself)")
            }
        }
    }
}

/// What became of a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued for every peer (or sent, for a datagram).
    Accepted,
    /// `DropNew`, or a datagram with nowhere to go: some peer did not get it.
    Dropped,
}

/// Counters of a QUIC hub.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QuicMetrics {
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
    /// Bytes LZ4 saved of the messages published (`compression: 'lz4'`).
    pub bytes_saved: u64,
}
