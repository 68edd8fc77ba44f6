//! zerohop: low-latency messaging with one [`Hub`] API over every transport.
//!
//! - [`Hub`]: publish and receive over the transport a URL names.
//! - [`transports`]: which transport serves which scheme (shared memory, UDP, QUIC).
//! - [`shm`]: the `shm://` transport.
//!
//! The contract between the hub and its transports (the [`Transport`] trait and its
//! capabilities, endpoints, options, errors, metrics) is [`zerohop_transport`],
//! re-exported here; what every network transport shares is [`zerohop_net`]; the
//! transports are [`zerohop_udp`] and [`zerohop_quic`]. The other schemes parse and
//! report [`ErrorCode::UnsupportedTransport`].

pub mod hub;
pub mod shm;
pub mod shm_events;
pub mod transports;

pub use hub::Hub;
pub use shm::{ShmOptions, WaterMarks};
pub use zerohop_kcp::KcpOptions;
pub use zerohop_net::envelope;
pub use zerohop_quic::QuicOptions;
pub use zerohop_stream::{ReliableOptions, StreamOptions};
pub use zerohop_tls::TlsOptions;
pub use zerohop_transport::*;
pub use zerohop_udp::{UdpOptions, UringMode, UringOperation, probe_operations as probe_uring_operations};
