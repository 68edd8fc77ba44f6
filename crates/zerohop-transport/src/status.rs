//! What a hub's status is, and the events that change it.

pub use zerohop_proto::lifecycle::Status;

use crate::error::Error;

/// A change of status: of the hub's connection (connecting side: `peer` is the
/// server), or of one peer (listening side).
#[derive(Clone, Debug)]
pub struct StatusEvent {
    pub status: Status,
    /// The peer it is about: its address (`host:port`), or for Unix sockets, which have
    /// none worth naming, `peer:<n>`, its number on the hub.
    pub peer: Option<String>,
    /// Why, when it is a loss or a failure.
    pub error: Option<Error>,
}

/// The name users see (`connected`, `reconnecting`, …) and, while reconnecting, the attempt.
pub fn status_name(s: Status) -> (&'static str, Option<u32>) {
    match s {
        Status::Connecting => ("connecting", None),
        Status::Connected => ("connected", None),
        Status::Reconnecting { attempt } => ("reconnecting", Some(attempt)),
        Status::Disconnected => ("disconnected", None),
        Status::Closed => ("closed", None),
    }
}
