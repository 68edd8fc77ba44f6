//! Counters every hub reports, and the ones only its transport has.

use crate::chaos::ChaosReport;
use crate::endpoint::TransportKind;
use crate::options::Value;

/// A snapshot of a hub's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// The transport in use.
    pub transport: TransportKind,
    /// True when smart selection chose the transport (a bare name).
    pub selected_automatically: bool,
    pub published: u64,
    pub published_bytes: u64,
    /// Messages discarded by `drop_new` (for some receiver).
    pub dropped: u64,
    /// Times a `block` publisher had to wait for space.
    pub blocked: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Messages this hub missed because a publisher lapped it (`drop_old`).
    pub lapped: u64,
    /// Publishes discarded or refused for the hub's rate limit.
    pub rate_limited: u64,
    /// Messages passed over unread because their time to live (`ttlMs`) ran out.
    pub expired: u64,
    /// The transport's own counters and settings, by the names users see
    /// (`metrics().udp.lost`, `metrics().quic.rttUs`).
    pub details: Vec<(&'static str, Value)>,
    /// What `?chaos=` did, when it was asked for (`metrics().chaos`).
    pub chaos: Option<ChaosReport>,
}

impl Metrics {
    /// Fills the receive side from a ring subscriber's counters (every transport reads
    /// through one).
    pub fn with_subscriber(mut self, subscriber: Option<&zerohop_shm::Subscriber>) -> Self {
        if let Some(sub) = subscriber {
            let s = sub.stats();
            self.received = s.received;
            self.received_bytes = s.received_bytes;
            self.lapped = s.lapped;
            self.expired += s.expired;
        }
        self
    }

    /// Zeroed counters for `transport`.
    pub fn new(transport: TransportKind, selected_automatically: bool) -> Self {
        Self {
            transport,
            selected_automatically,
            published: 0,
            published_bytes: 0,
            dropped: 0,
            blocked: 0,
            received: 0,
            received_bytes: 0,
            lapped: 0,
            rate_limited: 0,
            expired: 0,
            details: Vec::new(),
            chaos: None,
        }
    }

    /// The detail `name`, if the transport reports it.
    pub fn detail(&self, name: &str) -> Option<&Value> {
        self.details.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}
