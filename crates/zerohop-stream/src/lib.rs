//! zerohop's `tcp://` and `uds://` transports: reliable channels over byte streams, on
//! the network-transport core ([`zerohop_net`]).
//!
//! ```text
//!   publish ──► SendQueue per peer and channel ──► RecordWriter ──writev──► socket
//!
//!   epoll (listener, connections) ──► engine (I/O thread, or the reader's event loop)
//!        ──read──► RecordReader ──► ReceiveWindow (duplicates) ──► receive ring
//!                                └─► acknowledgements, requests, heartbeats
//! ```
//!
//! A hub listens (`listen: true`: any number of peers connect) or connects to one. Both
//! sides say hello first (their session); everything a connection carries then takes
//! turns on its one byte stream as records ([`zerohop_proto::records`]): the messages
//! of each channel, framed and kept in a [`SendQueue`](zerohop_proto::session::SendQueue)
//! until the peer's *application* has read them, and control records
//! (acknowledgements, requests and their answers, heartbeats). After a reconnect what
//! is unacknowledged goes again and the receiver drops what it already delivered, so no
//! accepted message is lost while the sender lives: the same guarantee as `quic://`'s
//! channels, so switching the URL keeps the semantics.
//!
//! One epoll set watches the listener and every connection, and its descriptor is what
//! the core's [`Driver`](zerohop_net::Driver) (or the reader's event loop) waits on: one
//! wake-up whatever the number of peers. A publish writes at once on the caller's
//! thread (a burst shares one `writev`); a socket the kernel has no room in is watched
//! for writability. A peer that breaks the protocol is closed alone and counted; one
//! that stays silent for three heartbeats is lost (and a connecting hub reconnects with
//! exponential backoff).
//!
//! With `tls` options, `tcp://` is TLS 1.3 (rustls, [`zerohop_tls`]: the options, the
//! certificates and the error codes of `quic://`), between the socket and the records.

mod engine;
mod faults;
mod socket;
mod sockets;
mod tls;
mod transport;
pub mod wire;

pub use engine::Config;
pub use socket::Address;
pub use sockets::{SocketConfig, SocketWire};
pub use tls::{TlsContext, TlsSession, tls_lost};
pub use transport::{ReliableOptions, StreamOptions, StreamProtocol, open, open_stream, settings, start};
