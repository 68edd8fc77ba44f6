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
//! - [`chaos`]: [`Faults`], the faults `?chaos=` injects into what a transport sends
//!   and receives, on the engine's clock.
//! - [`waker`]: a readiness descriptor that also wakes when a timer is due.
//! - [`fastmap`]: a hash map for small integer keys, for per-message lookups.
//! - [`sending`]: what a full send queue does to a publish, and when a burst goes out.
//!
//! A transport adds its protocol and socket code: an engine that implements [`Drive`]
//! and delivers into the [`ReceiveRing`] (or any [`Sink`]), and a [`Protocol`] for
//! publishing and its extras.

pub mod address;
pub mod chaos;
pub mod driver;
pub mod envelope;
pub mod fastmap;
pub mod ring;
pub mod sending;
pub mod transport;
pub mod waker;

pub use chaos::Faults;
pub use driver::{Drive, Driver, Ready};

/// A new session number: a hub's identity for as long as it is open, which its peers
/// tell apart from an earlier run of the same program (a restarted peer knows nothing
/// of what it was sent; one that reconnects does). Unique enough across restarts: the
/// time, the process and a counter, mixed.
pub fn session_id() -> u64 {
    let mut x = envelope::now_ns() ^ (u64::from(std::process::id()) << 32);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    x ^= COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x.max(1)
}
pub use ring::{Inbound, ReceiveRing, RingOptions, Sink};
pub use transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, PublishTally, Reader};
