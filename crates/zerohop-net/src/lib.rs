//! The network-transport core: what every network transport needs, written once.
//!
//! ```text
//!            publish ──► Protocol (the transport's own: framing, sockets) ──► peers
//!                              ▲
//!   I/O thread / reader ──► Driver ──► engine ──deliver──► ReceiveRing ──► reader
//!                                                             └─ doorbell, status
//! ```
//!
//! - [`driver`]: [`Driver`], one protocol engine under one lock, moved on by the thread
//!   that publishes, the reader that polls, or its own I/O thread (generic over the
//!   small [`Drive`] trait: a descriptor, a deadline, a turn).
//! - [`ring`]: [`ReceiveRing`], where received messages land (a private ring with the
//!   shared-memory layout, so every reader reads it like `shm://`), flow controlled,
//!   with large messages spilled, the doorbell that wakes a waiting reader, and the
//!   status board.
//! - [`envelope`]: what precedes each message in the ring (sender, time, channel,
//!   sequence, expiry, priority, request key, spill).
//! - [`transport`]: [`NetTransport`], the one [`zerohop_transport::Transport`] of every
//!   network transport, over a [`Protocol`].
//! - [`address`]: host names and peers to socket addresses.
//!
//! A transport adds its protocol and socket code: an engine that implements [`Drive`]
//! and delivers into the [`ReceiveRing`] (or any [`Sink`]), and a [`Protocol`] for
//! publishing and its extras.

pub mod address;
pub mod driver;
pub mod envelope;
pub mod ring;
pub mod transport;

pub use driver::{Drive, Driver, Ready};
pub use ring::{Inbound, ReceiveRing, RingOptions, Sink};
pub use transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, Reader};
