//! Which transport serves which scheme: the one list a new transport joins.

use zerohop_transport::{Endpoint, HubOptions, Result, Transport, TransportKind};

/// Opens a transport for an endpoint with the options given.
pub type Open = fn(&Endpoint, HubOptions) -> Result<Box<dyn Transport>>;

/// Every transport built into this version, by the scheme it serves.
pub const TRANSPORTS: &[(TransportKind, Open)] = &[
    (TransportKind::Shm, crate::shm::open),
    (TransportKind::Udp, zerohop_udp::open),
    (TransportKind::Quic, zerohop_quic::open),
    (TransportKind::Tcp, zerohop_stream::open),
    (TransportKind::Uds, zerohop_stream::open),
    (TransportKind::Kcp, zerohop_kcp::open),
    (TransportKind::Nats, zerohop_nats::open),
];

/// The transport for `kind`, if this version has it.
pub fn find(kind: TransportKind) -> Option<Open> {
    TRANSPORTS.iter().find(|(k, _)| *k == kind).map(|(_, open)| *open)
}

/// The schemes this version opens, for messages (`shm://, udp://, quic://, tcp://, uds://, kcp:// and nats://`).
pub fn available() -> String {
    let names: Vec<String> = TRANSPORTS.iter().map(|(k, _)| format!("{}://", k.scheme())).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}
