//! [`Hub`]: publish and receive byte messages over the transport a URL names.

use std::time::{Duration, Instant};

pub use zerohop_shm::Backpressure;

use crate::endpoint::{Endpoint, Target, TransportKind};
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::quic::{QuicOptions, QuicTransport};
use crate::shm::ShmTransport;
use crate::transport::{Delivery, Transport};
use crate::udp::{UdpOptions, UdpTransport};

/// Which ports a hub opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Publish and receive (the default).
    #[default]
    PubSub,
    /// Publish only: holds no subscriber entry, so `block` publishers never wait for it.
    Publisher,
    /// Receive only.
    Subscriber,
}

/// Options of [`Hub::open`].
#[derive(Clone, Debug)]
pub struct HubOptions {
    pub role: Role,
    /// What publishing does when receivers are a full ring behind.
    pub backpressure: Backpressure,
    /// How long `publish` may wait (`block`, or a publisher lock held by another process).
    pub publish_timeout: Duration,
    /// How long a waiting receiver spins before it parks.
    pub spin: Duration,
    /// Shared memory: largest message in bytes (default 1024).
    pub slot_size: Option<u32>,
    /// Shared memory: number of slots, a power of two (default 4096).
    pub capacity: Option<u32>,
    /// Shared memory: concurrent subscribers (default 64).
    pub max_subscribers: Option<u32>,
    /// UDP: peers, batching, sockets and threads.
    pub udp: UdpOptions,
    /// QUIC: listen or connect, TLS, reconnects, channels.
    pub quic: QuicOptions,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            role: Role::PubSub,
            backpressure: Backpressure::DropOld,
            publish_timeout: zerohop_shm::ring::DEFAULT_PUBLISH_TIMEOUT,
            spin: Duration::from_micros(20),
            slot_size: None,
            capacity: None,
            max_subscribers: None,
            udp: UdpOptions::default(),
            quic: QuicOptions::default(),
        }
    }
}

/// A hub: publish to and receive from everyone on the same endpoint.
///
/// ```
/// use zerohop::{Hub, HubOptions};
///
/// let name = format!("shm://doc-hub-{}", std::process::id());
/// let mut a = Hub::open(&name, HubOptions::default()).unwrap();
/// let mut b = Hub::open(&name, HubOptions::default()).unwrap();
/// a.publish(b"hello").unwrap();
/// let mut msg = Vec::new();
/// assert!(b.recv(&mut msg, Some(std::time::Duration::from_secs(1))).unwrap());
/// assert_eq!(msg, b"hello");
/// ```
pub struct Hub {
    endpoint: Endpoint,
    transport: Box<dyn Transport>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens a hub on `url` (see [`crate::endpoint`] for the forms).
    pub fn open(url: &str, options: HubOptions) -> Result<Hub> {
        let endpoint = Endpoint::parse(url)?;
        let transport: Box<dyn Transport> = match (endpoint.kind(), endpoint.target()) {
            (TransportKind::Shm, Target::Name(name)) => {
                Box::new(ShmTransport::open(name, &options, endpoint.selected_automatically())?)
            }
            (TransportKind::Udp, _) => Box::new(UdpTransport::open(&endpoint, &options)?),
            (TransportKind::Quic, _) => Box::new(QuicTransport::open(&endpoint, &options)?),
            (kind, _) => return Err(unsupported(kind)),
        };
        Ok(Hub { endpoint, transport })
    }

    /// The parsed endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.transport.max_message_size()
    }

    /// Publishes one message.
    pub fn publish(&mut self, payload: &[u8]) -> Result<Delivery> {
        self.transport.publish(payload)
    }

    /// The next message into `out`, if one is waiting.
    pub fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        self.transport.try_recv(out)
    }

    /// Waits up to `timeout` (forever with `None`) for the next message.
    pub fn recv(&mut self, out: &mut Vec<u8>, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.transport.try_recv(out)? {
                return Ok(true);
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) => Some(r),
                    None => return Ok(false),
                },
                None => None,
            };
            self.transport.wait_readable(remaining)?;
        }
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        self.transport.metrics()
    }

    /// The UDP transport's own controls (peers, flush, local address), for `udp://` hubs.
    pub fn udp(&self) -> Option<&UdpTransport> {
        self.transport.udp()
    }

    /// The same, mutable: [`UdpTransport::try_recv_from`] gives the sender of each message.
    pub fn udp_mut(&mut self) -> Option<&mut UdpTransport> {
        self.transport.udp_mut()
    }

    /// The QUIC transport's own controls (status, channels), for `quic://` hubs.
    pub fn quic(&self) -> Option<&QuicTransport> {
        self.transport.quic()
    }

    /// The same, mutable: [`QuicTransport::try_recv_with`] gives each message's envelope.
    pub fn quic_mut(&mut self) -> Option<&mut QuicTransport> {
        self.transport.quic_mut()
    }

    /// Closes the hub after waiting up to `linger` for what it published to reach its
    /// receivers (over QUIC: to be read by their applications); true if it did.
    pub fn close(mut self, linger: Duration) -> bool {
        self.transport.drain(linger)
    }
}

/// The error for a transport that parses but is not built yet.
pub fn unsupported(kind: TransportKind) -> Error {
    Error::new(
        ErrorCode::UnsupportedTransport,
        format!(
            "the {}:// transport is not available in this version of zerohop (shm://, udp:// and quic:// are)",
            kind.scheme()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("shm://hub-test-{tag}-{}", std::process::id())
    }

    #[test]
    fn unsupported_transports_say_so() {
        for url in ["kcp://h:1", "tcp://h:1", "uds:///tmp/x"] {
            let err = Hub::open(url, HubOptions::default()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::UnsupportedTransport, "{url}");
        }
    }

    #[test]
    fn roles_and_metrics() {
        let url = name("roles");
        let mut p = Hub::open(&url, HubOptions { role: Role::Publisher, ..Default::default() }).unwrap();
        let mut s = Hub::open(&url, HubOptions { role: Role::Subscriber, ..Default::default() }).unwrap();
        let mut out = Vec::new();
        assert_eq!(p.try_recv(&mut out).unwrap_err().code(), ErrorCode::InvalidState);
        assert_eq!(s.publish(b"x").unwrap_err().code(), ErrorCode::InvalidState);
        p.publish(b"abc").unwrap();
        assert!(s.recv(&mut out, Some(Duration::from_secs(1))).unwrap());
        assert!(!s.recv(&mut out, Some(Duration::from_millis(5))).unwrap());
        let (pm, sm) = (p.metrics(), s.metrics());
        assert_eq!((pm.published, pm.published_bytes), (1, 3));
        assert_eq!((sm.received, sm.received_bytes, sm.lapped), (1, 3, 0));
        assert_eq!(pm.transport, TransportKind::Shm);
    }

    #[test]
    fn block_pubsub_hub_does_not_wait_for_itself() {
        let opts = HubOptions { backpressure: Backpressure::Block, capacity: Some(4), ..Default::default() };
        let mut h = Hub::open(&name("self"), opts).unwrap();
        for _ in 0..20 {
            assert_eq!(h.publish(b"x").unwrap(), Delivery::Accepted);
        }
    }

    #[test]
    fn layout_mismatch_and_oversize() {
        let url = name("layout");
        let mut a = Hub::open(&url, HubOptions { slot_size: Some(16), ..Default::default() }).unwrap();
        let err = Hub::open(&url, HubOptions { slot_size: Some(32), ..Default::default() }).unwrap_err();
        assert_eq!(err.code(), ErrorCode::LayoutMismatch);
        assert_eq!(a.publish(&[0; 17]).unwrap_err().code(), ErrorCode::MessageTooLarge);
        assert_eq!(a.max_message_size(), 16);
    }
}
