//! zerohop: low-latency messaging with one [`Hub`] API over every transport.
//!
//! - [`Hub`]: publish and receive over the transport a URL names.
//! - [`Bridge`]: forward what one hub receives to another (local hubs to NATS and back).
//! - [`transports`]: which transport serves which scheme.
//! - [`shm`]: the `shm://` transport.
//!
//! The contract between the hub and its transports (the [`Transport`] trait and its
//! capabilities, endpoints, options, errors, metrics) is [`zerohop_transport`],
//! re-exported here; what every network transport shares is [`zerohop_net`]; the
//! network transports are [`zerohop_udp`], [`zerohop_quic`], [`zerohop_stream`]
//! (`tcp://`, `uds://`), [`zerohop_kcp`] and [`zerohop_nats`].

pub mod bridge;
pub mod hub;
pub mod shm;
pub mod shm_events;
pub mod transports;

pub use bridge::{Bridge, BridgeMetrics, Direction, DirectionMetrics};
pub use hub::Hub;
pub use shm::{ShmOptions, WaterMarks};
pub use zerohop_kcp::KcpOptions;
pub use zerohop_nats::NatsOptions;
pub use zerohop_net::envelope;
pub use zerohop_quic::QuicOptions;
pub use zerohop_stream::{ReliableOptions, StreamOptions};
pub use zerohop_tls::TlsOptions;
pub use zerohop_transport::*;
pub use zerohop_udp::{UdpOptions, UringMode, UringOperation, probe_operations as probe_uring_operations};
