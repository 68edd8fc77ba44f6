//! zerohop: low-latency messaging with one [`Hub`] API over every transport.
//!
//! - [`endpoint`]: URLs (`shm://name`, `udp://host:port`, …) and smart selection.
//! - [`transport`]: the [`Transport`] trait each transport implements.
//! - [`Hub`]: publish and receive over the transport a URL names.
//! - [`error`]: [`Error`] with a stable [`ErrorCode`] shared with TypeScript.
//! - [`metrics`]: counters every hub reports.
//!
//! This version ships shared memory ([`shm`]), UDP ([`udp`]) and QUIC ([`quic`]); the
//! other schemes parse and report [`ErrorCode::UnsupportedTransport`].

pub mod endpoint;
pub mod envelope;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod quic;
pub mod shm;
pub mod transport;
pub mod udp;

pub use endpoint::{Endpoint, Target, TransportKind};
pub use error::{Error, ErrorCode, Result};
pub use hub::{Backpressure, Hub, HubOptions, Role};
pub use metrics::Metrics;
pub use quic::{QuicLink, QuicOptions, QuicTransport};
pub use transport::{Delivery, Transport};
pub use udp::{UdpLink, UdpOptions, UdpTransport};
pub use zerohop_udp::UringMode;
