//! The contract every transport fulfils, so that [`crate::Hub`] looks the same over
//! shared memory, UDP, KCP, QUIC, TCP and Unix sockets.
//!
//! A transport moves opaque byte messages; codecs, typing and the async API live
//! above it (in the TypeScript package, or in the caller's Rust code).

use std::time::Duration;

use crate::endpoint::TransportKind;
use crate::error::Result;
use crate::metrics::Metrics;

/// What became of a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted: it will reach the receivers the transport's guarantees cover.
    Accepted,
    /// Discarded by the `drop_new` backpressure policy (and counted).
    Dropped,
}

/// A message transport behind a [`crate::Hub`].
pub trait Transport: Send {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Largest message in bytes.
    fn max_message_size(&self) -> usize;

    /// Sends one message to every receiver.
    fn publish(&mut self, payload: &[u8]) -> Result<Delivery>;

    /// Moves the next message into `out`; `Ok(false)` when none is waiting.
    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool>;

    /// Blocks until `try_recv` would return a message, or `timeout` passes (`Ok(false)`).
    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool>;

    /// Counters and the state of the transport.
    fn metrics(&self) -> Metrics;

    /// The UDP transport's own controls (peers, flush), if this is it.
    fn udp(&self) -> Option<&crate::udp::UdpTransport> {
        None
    }

    /// The same, mutable (to receive with the sender's address).
    fn udp_mut(&mut self) -> Option<&mut crate::udp::UdpTransport> {
        None
    }

    /// The QUIC transport's own controls (status, channels, spilled messages), if this is it.
    fn quic(&self) -> Option<&crate::quic::QuicTransport> {
        None
    }

    /// The same, mutable.
    fn quic_mut(&mut self) -> Option<&mut crate::quic::QuicTransport> {
        None
    }

    /// Waits up to `linger` until what was published has reached its receivers; true if
    /// it has. Transports that hand messages over at once have nothing to wait for.
    fn drain(&mut self, _linger: Duration) -> bool {
        true
    }
}
