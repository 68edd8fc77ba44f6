//! Errors of the shared-memory layer. `zerohop-transport` maps each to a stable error code.

use crate::layout::{Layout, LayoutError};

/// Everything that can go wrong opening or using a segment.
#[derive(Debug)]
pub enum ShmError {
    /// The segment name has characters outside `[A-Za-z0-9._-]` or a bad length.
    BadName(String),
    /// The requested layout is out of bounds.
    BadLayout(LayoutError),
    /// The segment exists, is in use, and was created with another layout.
    LayoutMismatch { requested: Layout, found: Layout },
    /// The segment is in use but its header is not one this build understands.
    Incompatible(String),
    /// A message larger than the publisher takes (or, where that is what counts, a slot).
    MessageTooLarge { len: usize, max: usize },
    /// `fail_fast`: the slowest subscriber is a full ring behind.
    RingFull,
    /// `fail_fast`: a subscriber that holds publishers to credits has none left.
    NoCredits,
    /// `fail_fast`: the publisher holds as many side-path messages as it may, unread.
    SideFull { held: usize },
    /// Waiting (for space, a slot, the repair lock, initialisation) took too long.
    Timeout(&'static str),
    /// Every subscriber entry is taken by a live process.
    NoSubscriberSlot { max: u32 },
    /// An operating-system call failed.
    Io { op: &'static str, source: std::io::Error },
}

impl ShmError {
    pub(crate) fn last_os(op: &'static str) -> Self {
        ShmError::Io { op, source: std::io::Error::last_os_error() }
    }
}

impl core::fmt::Display for ShmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadName(why) => write!(f, "bad segment name: {why}"),
            Self::BadLayout(e) => write!(f, "bad layout: {e}"),
            Self::LayoutMismatch { requested, found } => write!(
                f,
                "segment is in use with slotSize {} capacity {} maxSubscribers {}, but slotSize {} capacity {} \
                 maxSubscribers {} was requested",
                found.slot_size,
                found.capacity,
                found.max_subscribers,
                requested.slot_size,
                requested.capacity,
                requested.max_subscribers
            ),
            Self::Incompatible(why) => write!(f, "segment is incompatible: {why}"),
            Self::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::RingFull => write!(f, "ring is full: the slowest subscriber is a whole ring behind"),
            Self::NoCredits => write!(f, "a subscriber has no credits left (it grants more with grantCredits)"),
            Self::SideFull { held } => {
                write!(f, "the publisher holds {held} messages sent on the side path that a subscriber has not read")
            }
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Self::NoSubscriberSlot { max } => {
                write!(f, "all {max} subscriber entries are taken by live processes")
            }
            Self::Io { op, source } => write!(f, "{op} failed: {source}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::BadLayout(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ShmError> = std::result::Result<T, E>;
