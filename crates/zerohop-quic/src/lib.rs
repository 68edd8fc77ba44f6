//! zerohop over QUIC (quinn-proto, on our own I/O): what a `quic://` hub stands on.
//!
//! - [`node`]: [`QuicNode`], one side of a hub: it listens for any number of peers or
//!   connects to one, and carries reliable channels (a stream each, kept until the
//!   peer's application has read them, replayed after a reconnect), datagrams, and
//!   requests (a stream each); it reconnects with backoff and reports status events.
//! - [`tls`]: server identities (self-signed for development, PEM files for production),
//!   client trust (a CA bundle, or a loudly named accept-anything for development),
//!   mutual TLS, TLS 1.3 with 0-RTT.
//!
//! The protocol logic without I/O (framing, sequence numbers, acknowledgements, the
//! duplicate filter, the connection lifecycle) is in [`zerohop_proto::stream`],
//! [`zerohop_proto::session`] and [`zerohop_proto::lifecycle`].

pub mod node;
pub mod tls;

pub use node::{Inbound, Inbox, NodeConfig, NodeMetrics, Overflow, QuicNode, Role, StatusEvent};
pub use tls::{ALPN, HandshakeFailure, Identity, TlsError, Trust};
