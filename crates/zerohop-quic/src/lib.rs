//! The `quic://` transport: quinn-proto on the network-transport core's I/O.
//!
//! - [`transport`]: [`open`] and [`QuicOptions`], the hub's side of it.
//! - [`protocol`]: [`QuicProtocol`], one side of a hub: it listens for any number of
//!   peers or connects to one, and carries reliable channels (a stream each, kept until
//!   the peer's application has read them, replayed after a reconnect), datagrams, and
//!   requests (a stream each); it reconnects with backoff and reports status events.
//! - `engine`: the state machine behind the driver's lock (connections, peers,
//!   channels, requests, timers, the socket).
//! - [`config`]: what a hub is told, and what it tells (failures, counters).
//! - TLS ([`zerohop_tls`], shared with `tcp://`): server identities, client trust,
//!   mutual TLS; QUIC adds 0-RTT.
//!
//! The protocol logic without I/O (framing, sequence numbers, acknowledgements, the
//! duplicate filter, the connection lifecycle) is in [`zerohop_proto::stream`],
//! [`zerohop_proto::session`] and [`zerohop_proto::lifecycle`].

pub mod config;
mod datagram;
mod engine;
pub mod protocol;
pub mod transport;

pub use config::{
    Failure, FailureKind, Overflow, PublishError, QuicConfig, QuicMetrics, Sent, Side, handshake_failure,
};
pub use protocol::{QuicProtocol, StartError};
pub use transport::{QuicOptions, open, open_quic};
pub use zerohop_tls::{self as tls, ALPN, HandshakeFailure, Identity, TlsError, Trust};
