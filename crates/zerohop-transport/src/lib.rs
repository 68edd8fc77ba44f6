//! The contract between a hub and its transports: what every transport implements and
//! every hub calls, with nothing in it that names one transport.
//!
//! - [`chaos`]: fault injection asked for in a hub's options, and what it did.
//! - [`error`]: [`Error`] with a stable [`ErrorCode`] shared with TypeScript.
//! - [`endpoint`]: URLs (`shm://name`, `udp://host:port`, …) parsed into an [`Endpoint`].
//! - [`metrics`]: the counters every hub reports, and each transport's own details.
//! - [`options`]: [`HubOptions`], and a transport's own options, typed or by name.
//! - [`rate`]: rate limits, and their token buckets.
//! - [`status`]: connection status and its events.
//! - [`transport`]: the [`Transport`] trait and its capabilities.
//!
//! Dependencies point one way: this crate ← the network-transport core
//! (`zerohop-net`) ← the transports ← the hub (`zerohop`).

pub mod chaos;
pub mod endpoint;
pub mod error;
pub mod metrics;
pub mod options;
pub mod rate;
pub mod status;
pub mod transport;

pub use endpoint::{Endpoint, Target, TransportKind};
pub use error::{Error, ErrorCode, Result};
pub use metrics::Metrics;
pub use options::{Backpressure, FromOptions, HubOptions, Options, Role, Settings, TransportOptions, Value};
pub use status::{Status, StatusEvent};
pub use transport::{
    Batching, Connection, Credentials, Delivery, Doorbell, ForwardCounts, Kind, Link, Loans, MessageInfo, Peers,
    ReadInPlace, Requests, RingPlace, StatusListener, Transport,
};
