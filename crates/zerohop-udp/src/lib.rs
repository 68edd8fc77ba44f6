//! The `udp://` transport: sockets tuned for latency, batches of datagrams moved with one
//! `sendmmsg`/`recvmmsg` call each (or io_uring), on the network-transport core.
//!
//! - [`transport`]: [`open`] and [`UdpOptions`]: the pipeline below as an engine the
//!   core's driver moves on ([`transport::UdpEngine`]), and the protocol publishing
//!   and offering peers and flushing ([`UdpProtocol`]).
//! - [`socket`]: binding with the options the transport wants (large buffers, reporting
//!   what the kernel granted; low-delay TOS; `SO_BUSY_POLL` when permitted;
//!   `SO_REUSEPORT`), each applied best-effort and reported.
//! - [`batch`]: [`RecvBatch`] receives up to N datagrams into buffers it owns and reuses,
//!   so the receive path allocates nothing; [`SendBatch`] queues datagrams and sends them
//!   in one call.
//! - [`uring`]: [`UringReceiver`], multishot `recvmsg` into a provided-buffer ring.
//! - [`pipeline`]: [`UdpPipeline`], a socket joined to `zerohop-proto`'s datagram
//!   packing and unpacking (fragments, loss accounting per peer), receiving through
//!   io_uring when the kernel allows it and `recvmmsg` otherwise ([`UringMode`]), with
//!   metrics that say which.
//! - [`group`]: [`ReceiverGroup`], several receive threads on one port (`SO_REUSEPORT`),
//!   one per core and pinned when asked.
//!
//! Framing (packing, fragments, checksums) is `zerohop-proto`'s business; the receive
//! ring, waking readers and the I/O thread are the core's (`zerohop-net`); this crate
//! moves datagrams.
//!
//! ```
//! use zerohop_udp::{bind, RecvBatch, SendBatch, SocketOptions};
//!
//! let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
//! let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
//! let to = rx.local_addr().unwrap();
//! let mut out = SendBatch::new();
//! out.push(b"one", Some(to));
//! out.push(b"two", Some(to));
//! assert_eq!(out.send(&tx).unwrap(), 2);
//! let mut batch = RecvBatch::new(8, 1500);
//! let mut got = Vec::new();
//! while got.len() < 2 {
//!     batch.recv(&rx).unwrap();
//!     got.extend(batch.iter().map(|d| d.bytes.to_vec()));
//! }
//! assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
//! ```

pub mod batch;
pub mod group;
pub mod pipeline;
pub mod socket;
pub mod transport;
pub mod uring;

pub use batch::{Datagram, RecvBatch, SendBatch};
pub use group::{Deliver, Gate, ReceiverGroup, available_cores, pin_to};
pub use pipeline::{PipelineConfig, PublishError, Received, UdpMetrics, UdpPipeline, UringMode};
pub use socket::{Granted, Multicast, SocketOptions, bind};
pub use transport::{UdpOptions, UdpProtocol, open};
pub use uring::{UringOperation, UringReceiver, UringSender, probe_operations};
