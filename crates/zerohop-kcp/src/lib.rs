//! zerohop's `kcp://` transport: reliable channels over KCP (`zerohop_proto::kcp`, wire
//! compatible with `ikcp.c`), one conversation per peer on one UDP socket.
//!
//! ```text
//!   publish ──► SendQueue per peer and channel ──► RecordWriter ──► Kcp::send
//!        ──► (at the end of the round) Kcp::flush ──► SendBatch ──sendmmsg──► socket
//!
//!   socket ──recvmmsg──► by (sender, conversation id) ──► Kcp::input ──► Kcp::recv
//!        ──► RecordReader ──► ReceiveWindow (duplicates) ──► receive ring
//! ```
//!
//! Everything above KCP is the records engine `tcp://` and `uds://` run on
//! ([`zerohop_stream`]): hellos, channels, acknowledgements by the receiving
//! application, replay after a reconnect, requests, heartbeats, slow consumers. This
//! crate brings the wire ([`KcpWire`]): sorting datagrams to conversations, one timer
//! for all of them, and what KCP sends leaving in batches. KCP's interval is its
//! retransmission clock, not a send delay: a publish and an arriving datagram are
//! flushed at once.
//!
//! A multicast URL (`kcp://239.x.y.z:port`) is a group instead ([`GroupEngine`]): one
//! sender, many members, repaired by NAKs (`zerohop_proto::multicast`).

mod group;
mod options;
mod transport;
mod wire;

pub use group::{GroupConfig, GroupEngine};
pub use options::KcpOptions;
pub use transport::{GroupProtocol, open, open_group, open_kcp};
pub use wire::{KcpWire, KcpWireConfig};
