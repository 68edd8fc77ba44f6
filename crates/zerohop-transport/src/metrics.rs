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

/// A listener's work group, as `metrics().<transport>.groups` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetrics {
    pub name: String,
    /// Its members, connected or kept for their return.
    pub members: u64,
    /// Messages moved from a member that went away to another.
    pub rerouted: u64,
    /// Messages of a member given up on that no other member could take.
    pub lost: u64,
}

impl GroupMetrics {
    /// Each of `groups`, its members among the peers whose groups `group_of` gives.
    pub fn of(
        groups: &zerohop_proto::workgroup::WorkGroups,
        group_of: impl Iterator<Item = Option<usize>> + Clone,
    ) -> Vec<GroupMetrics> {
        (groups.iter().enumerate())
            .map(|(g, w)| GroupMetrics {
                name: String::from_utf8_lossy(&w.name).into_owned(),
                members: group_of.clone().filter(|&m| m == Some(g)).count() as u64,
                rerouted: w.rerouted,
                lost: w.lost,
            })
            .collect()
    }

    /// The `groups` entry of a transport's details (none without groups).
    pub fn details(groups: Vec<GroupMetrics>) -> Option<(&'static str, Value)> {
        if groups.is_empty() {
            return None;
        }
        let n = |v: u64| Value::Number(v as f64);
        let list = groups
            .into_iter()
            .map(|g| {
                Value::Map(crate::options::Options::new(vec![
                    ("name".to_owned(), Value::Text(g.name)),
                    ("members".into(), n(g.members)),
                    ("rerouted".into(), n(g.rerouted)),
                    ("lost".into(), n(g.lost)),
                ]))
            })
            .collect();
        Some(("groups", Value::List(list)))
    }
}
