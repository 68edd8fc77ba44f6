//! Where everything lives inside a segment: pure arithmetic, no I/O.
//!
//! A segment is one header followed by `capacity` slots. Every field that another
//! process (or JavaScript, through `Atomics`) touches is a little-endian `u32`, so the
//! TypeScript side can mirror the protocol with an `Int32Array` over the same memory.
//! Fields written by different parties sit on different 128-byte lines (x86 prefetches
//! pairs of 64-byte lines) so that a publisher and its subscribers do not false-share.
//!
//! ```text
//! 0     identity line: magic, layout version, state, header_len, slot_size, capacity,
//!                      slot_stride, max_subscribers, creator pid, pool_size
//! 128   tail line:     tail (u64)             next sequence number to claim
//! 256   repair line:   repair lock, pool head pid of whoever repairs a hole (or publishes
//!                                             without a claim line, or claims pool
//!                                             space), 0 when free; the payload pool's
//!                                             next free unit
//! 384   notify line:   notify, waiters,       futex word subscribers park on, and how
//!                      bells                  many are parked there; how many wait
//!                                             on their bells, not rung yet
//! 512   space line:    space, space_waiters,  futex word blocked publishers park on, a
//!                      credit_gen             flag they raise, and a count bumped when a
//!                                             subscriber first grants credits
//! 640   publisher table: MAX_LISTED_PUBLISHERS pids, 0 where free (who publishes, for
//!                        `Hub.list()`; written only when a publisher comes or goes)
//! 768   claim lines, MAX_LISTED_PUBLISHERS × 64 bytes: claim_first, claim_count (what
//!       the listed publisher of the same index is claiming or last claimed)
//! 2816  subscriber table, max_subscribers × 128 bytes: pid, cursor_lo, parked,
//!       credited, credit_limit_lo, pool_cursor, group, name_len, name[32]
//! ...   slots, each slot_stride bytes: stamp u32, len u32, origin u32, 4 spare,
//!       payload[slot_size]
//! ...   payload pool, pool_size bytes (none by default): messages longer than a slot
//! ```
//!
//! A message longer than `slot_size` lies in the **payload pool**: its slot's `len` is
//! its length (more than a slot: that says so) and its payload starts with the pool
//! unit (64 bytes each, a `u32` that wraps) where it begins. The pool is a ring of
//! units, handed out in sequence-number order under the repair lock (see
//! [`crate::ring`]); a message never wraps around the pool's end.
//!
//! A message longer than the pool (or than a slot, without one) takes the **side
//! path** ([`crate::side`]): its slot's `len` is its length (more than the pool holds:
//! that says so) and its payload starts with the publisher's side token (a `u64`, two
//! words: every slot's payload area has room for it, whatever the slot size).
//!
//! A slot's `stamp` says which message it holds: `2 * (seq + 1)` (mod 2^32) once
//! message `seq` is committed, one less while it is being written. See [`crate::ring`].
//! Its `origin` is the publishing hub's own subscriber entry plus one (0: a hub that
//! does not receive), so that a hub skips what it published itself. A committed slot
//! whose `len` is [`SKIP_LEN`] holds no message (a claim given up or repaired): readers
//! pass over it.
//!
//! A **work group** (subscribers that share the messages, each to one of them) is one
//! subscriber entry of its own, the **group entry** (`group` = [`GROUP_ENTRY`], its name
//! after it): its cursor is the group's, moved by its members with a compare-and-swap,
//! and publishers hold back for it as for any subscriber. Each member has an entry too
//! (`group` = the group entry's index plus one): for its pid and its parking, never for
//! room. See [`crate::ring`].

/// "ZEROHOP1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ZEROHOP1");
/// Bumped whenever anything in this module changes meaning.
pub const LAYOUT_VERSION: u32 = 12;

/// Size of one isolation line.
pub const LINE: usize = 128;

/// Byte offsets of the header fields.
pub mod offsets {
    use super::LINE;
    pub const MAGIC_LO: usize = 0;
    pub const MAGIC_HI: usize = 4;
    pub const LAYOUT_VERSION: usize = 8;
    /// 0 while the creator initialises the segment, [`super::STATE_READY`] after.
    pub const STATE: usize = 12;
    pub const HEADER_LEN: usize = 16;
    pub const SLOT_SIZE: usize = 20;
    pub const CAPACITY: usize = 24;
    pub const SLOT_STRIDE: usize = 28;
    pub const MAX_SUBSCRIBERS: usize = 32;
    pub const CREATOR_PID: usize = 36;
    /// Bytes of the payload pool (a multiple of [`super::POOL_UNIT`]; 0: none).
    pub const POOL_SIZE: usize = 40;
    /// The tail, a `u64` (claimed with one compare-and-swap): its low and high words.
    pub const TAIL_LO: usize = LINE;
    pub const TAIL_HI: usize = LINE + 4;
    /// Held (a pid) by whoever repairs a hole left by a dead publisher, and by a
    /// publisher without a claim line for the whole of each publish.
    pub const REPAIR_LOCK: usize = 2 * LINE;
    /// The pool unit the next pooled message may start at (wrapping `u32`; moved only
    /// under the repair lock).
    pub const POOL_HEAD: usize = 2 * LINE + 4;
    pub const NOTIFY: usize = 3 * LINE;
    pub const WAITERS: usize = 3 * LINE + 4;
    /// Readers waiting on their bells whose bell nobody rang yet (see `ring::bell`).
    pub const BELLS: usize = 3 * LINE + 8;
    pub const SPACE: usize = 4 * LINE;
    pub const SPACE_WAITERS: usize = 4 * LINE + 4;
    /// Bumped when a subscriber starts holding publishers to credits (its first
    /// grant): a publisher that remembered where its room ends looks again.
    pub const CREDIT_GEN: usize = 4 * LINE + 8;
    /// [`super::MAX_LISTED_PUBLISHERS`] pid words.
    pub const PUBLISHERS: usize = 5 * LINE;
    /// [`super::MAX_LISTED_PUBLISHERS`] claim lines, one per publisher table entry, each
    /// on a cache line of its own (its publisher writes it on every claim).
    pub const CLAIMS: usize = 6 * LINE;
    pub const CLAIM_ENTRY: usize = 64;
    /// Within a claim line: the odd stamp of the first sequence number claimed (0: none)...
    pub const CLAIM_FIRST: usize = 0;
    /// ...and how many were claimed from it.
    pub const CLAIM_COUNT: usize = 4;
    pub const SUBSCRIBERS: usize = CLAIMS + super::MAX_LISTED_PUBLISHERS as usize * CLAIM_ENTRY;
    /// Within a subscriber entry.
    pub const SUB_PID: usize = 0;
    pub const SUB_CURSOR_LO: usize = 4;
    /// 1 while this subscriber is counted in `waiters` (parked or about to park); 2
    /// while it waits on its bell, counted in `bells`; 3 once its bell was rung.
    pub const SUB_PARKED: usize = 8;
    /// 1 once this subscriber granted credits: publishers that hold back for
    /// subscribers (all but `drop_old`) publish only below its `SUB_CREDIT_LIMIT_LO`.
    pub const SUB_CREDITED: usize = 12;
    /// Low 32 bits of the sequence number up to which this subscriber granted credits.
    pub const SUB_CREDIT_LIMIT_LO: usize = 16;
    /// The pool unit after the last pooled message this subscriber read (at first, the
    /// pool head when it joined): what it has yet to read lies from there on.
    pub const SUB_POOL_CURSOR: usize = 20;
    /// 0: a subscriber of its own; [`super::GROUP_ENTRY`]: a work group's entry (its
    /// cursor is the group's); otherwise a member of the work group whose entry is this
    /// value minus one (publishers do not wait for a member: they wait for its group).
    pub const SUB_GROUP: usize = 24;
    /// A group entry's name: its length (1 to [`super::MAX_GROUP_NAME`]), then its bytes.
    pub const SUB_NAME_LEN: usize = 28;
    pub const SUB_NAME: usize = 32;
    /// The CPU this subscriber last parked on, plus one (0: not known): a publisher
    /// that wakes it from that CPU yields to it (see `ring::same_cpu`).
    pub const SUB_CPU: usize = 64;
    pub const SUB_ENTRY: usize = LINE;
    /// Within a slot.
    pub const SLOT_STAMP: usize = 0;
    pub const SLOT_LEN: usize = 4;
    /// Who published the message: the publishing hub's subscriber entry plus one, or 0.
    pub const SLOT_ORIGIN: usize = 8;
    /// In a slot's origin word: the message came into the segment through a bridge
    /// (see `ring::Publisher::set_bridged`).
    pub const BRIDGED: u32 = 1 << 31;
    /// When the message stops being worth reading (`ttlMs`): the wall clock's
    /// milliseconds since the Unix epoch, modulo 2^32 (compared with wrapping
    /// arithmetic, so a time to live under 24 days); 0: never.
    pub const SLOT_EXPIRY: usize = 12;
    pub const SLOT_PAYLOAD: usize = 16;
}

// The identity fields must fit in the first line, the publisher table in its own.
const _: () = assert!(offsets::POOL_SIZE + 4 <= offsets::TAIL_LO);
const _: () = assert!(offsets::PUBLISHERS + 4 * MAX_LISTED_PUBLISHERS as usize <= offsets::CLAIMS);
const _: () = assert!(offsets::SUBSCRIBERS.is_multiple_of(LINE));

/// How many publishers of a segment are listed by pid at once, each with a claim line.
/// More may publish: they are counted as unlisted, and publish under the repair lock.
pub const MAX_LISTED_PUBLISHERS: u32 = 32;

/// Byte offset of claim line `line` (a publisher table index).
pub const fn claim_offset(line: u32) -> usize {
    offsets::CLAIMS + line as usize * offsets::CLAIM_ENTRY
}

/// What a group entry's `group` word holds (see [`offsets::SUB_GROUP`]).
pub const GROUP_ENTRY: u32 = u32::MAX;
/// The longest work group name, in bytes.
pub const MAX_GROUP_NAME: usize = 32;
const _: () = assert!(offsets::SUB_NAME + MAX_GROUP_NAME <= offsets::SUB_CPU);
const _: () = assert!(offsets::SUB_CPU + 4 <= offsets::SUB_ENTRY);

/// What a slot's `len` says when it holds no message: readers pass over it.
pub const SKIP_LEN: u32 = u32::MAX;

/// Value of the state field once the segment is initialised.
pub const STATE_READY: u32 = 1;

/// Largest payload a slot may hold.
pub const MAX_SLOT_SIZE: u32 = 16 << 20;
/// Bytes of one pool unit: where a pooled message may start, and what its length is
/// rounded up to.
pub const POOL_UNIT: u32 = 64;
/// Largest payload pool.
pub const MAX_POOL_SIZE: u32 = 1 << 30;
/// Largest number of slots.
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Largest number of subscriber entries.
pub const MAX_SUBSCRIBERS: u32 = 1024;
/// Largest segment this crate creates.
pub const MAX_SEGMENT_LEN: u64 = 4 << 30;

/// The shape of a segment: what creator and openers must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Largest payload of one message, in bytes.
    pub slot_size: u32,
    /// Number of slots; a power of two.
    pub capacity: u32,
    /// Number of subscriber entries (concurrent subscribers).
    pub max_subscribers: u32,
    /// Bytes of the payload pool, for messages longer than a slot (0: none).
    pub pool_size: u32,
}

/// Why a [`Layout`] is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutError {}

impl Default for Layout {
    fn default() -> Self {
        Self { slot_size: 1024, capacity: 4096, max_subscribers: 64, pool_size: 0 }
    }
}

impl Layout {
    /// The layout a caller asks for with optional fields: `None` when it set none (so
    /// that an existing segment's layout is adopted), otherwise the defaults with the
    /// given fields replaced.
    pub fn requested(
        slot_size: Option<u32>,
        capacity: Option<u32>,
        max_subscribers: Option<u32>,
        pool_size: Option<u32>,
    ) -> Option<Layout> {
        if slot_size.is_none() && capacity.is_none() && max_subscribers.is_none() && pool_size.is_none() {
            return None;
        }
        let d = Layout::default();
        Some(Layout {
            slot_size: slot_size.unwrap_or(d.slot_size),
            capacity: capacity.unwrap_or(d.capacity),
            max_subscribers: max_subscribers.unwrap_or(d.max_subscribers),
            pool_size: pool_size.unwrap_or(d.pool_size),
        })
    }

    /// Checks the bounds documented on each constant.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.slot_size == 0 || self.slot_size > MAX_SLOT_SIZE {
            return Err(LayoutError(format!("slotSize must be 1..={MAX_SLOT_SIZE}, got {}", self.slot_size)));
        }
        if !self.capacity.is_power_of_two() || self.capacity < 2 || self.capacity > MAX_CAPACITY {
            return Err(LayoutError(format!(
                "capacity must be a power of two in 2..={MAX_CAPACITY}, got {}",
                self.capacity
            )));
        }
        if self.max_subscribers == 0 || self.max_subscribers > MAX_SUBSCRIBERS {
            return Err(LayoutError(format!(
                "maxSubscribers must be 1..={MAX_SUBSCRIBERS}, got {}",
                self.max_subscribers
            )));
        }
        if !self.pool_size.is_multiple_of(POOL_UNIT) || self.pool_size > MAX_POOL_SIZE {
            return Err(LayoutError(format!(
                "poolSize must be a multiple of {POOL_UNIT} up to {MAX_POOL_SIZE}, got {}",
                self.pool_size
            )));
        }
        if self.segment_len() > MAX_SEGMENT_LEN {
            return Err(LayoutError(format!(
                "slotSize × capacity needs {} bytes, more than the {MAX_SEGMENT_LEN}-byte limit",
                self.segment_len()
            )));
        }
        Ok(())
    }

    /// Bytes before slot 0: header plus subscriber table, rounded to a line.
    pub fn header_len(&self) -> usize {
        offsets::SUBSCRIBERS + self.max_subscribers as usize * offsets::SUB_ENTRY
    }

    /// Bytes per slot: stamp, length, origin and payload, rounded up to 64 so that a slot
    /// starts on a cache line and 8-byte fields in the payload are aligned.
    pub fn slot_stride(&self) -> usize {
        (offsets::SLOT_PAYLOAD + self.slot_size as usize).next_multiple_of(64)
    }

    /// Total bytes of the segment.
    pub fn segment_len(&self) -> u64 {
        self.pool_offset() as u64 + self.pool_size as u64
    }

    /// Byte offset of the payload pool (after the last slot).
    pub fn pool_offset(&self) -> usize {
        self.header_len() + self.capacity as usize * self.slot_stride()
    }

    /// Units in the pool.
    pub fn pool_units(&self) -> u32 {
        self.pool_size / POOL_UNIT
    }

    /// Byte offset of pool unit `unit` (which wraps around the pool).
    pub fn pool_unit_offset(&self, unit: u32) -> usize {
        self.pool_offset() + (unit % self.pool_units()) as usize * POOL_UNIT as usize
    }

    /// Byte offset of the slot that holds sequence number `seq`.
    pub fn slot_offset(&self, seq: u64) -> usize {
        self.header_len() + (seq & (self.capacity as u64 - 1)) as usize * self.slot_stride()
    }

    /// Byte offset of subscriber entry `index`.
    pub fn subscriber_offset(&self, index: u32) -> usize {
        offsets::SUBSCRIBERS + index as usize * offsets::SUB_ENTRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_valid_and_lines_do_not_overlap() {
        let l = Layout::default();
        l.validate().unwrap();
        assert_eq!(l.slot_stride(), 1088);
        assert_eq!(l.header_len() % LINE, 0);
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            Layout { capacity: 1000, ..Layout::default() },
            Layout { capacity: 1, ..Layout::default() },
            Layout { slot_size: 0, ..Layout::default() },
            Layout { slot_size: MAX_SLOT_SIZE + 1, ..Layout::default() },
            Layout { max_subscribers: 0, ..Layout::default() },
            Layout { slot_size: MAX_SLOT_SIZE, capacity: MAX_CAPACITY, max_subscribers: 1, pool_size: 0 },
            Layout { pool_size: 100, ..Layout::default() },
            Layout { pool_size: MAX_POOL_SIZE + POOL_UNIT, ..Layout::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn slots_are_aligned_disjoint_and_inside(slot_size in 1u32..70_000, cap_log in 1u32..12, subs in 1u32..100, seq in any::<u64>()) {
            let l = Layout { slot_size, capacity: 1 << cap_log, max_subscribers: subs, pool_size: 0 };
            prop_assert!(l.validate().is_ok());
            let off = l.slot_offset(seq);
            prop_assert_eq!(off % 64, 0);
            prop_assert!(off >= l.header_len());
            prop_assert!((off + l.slot_stride()) as u64 <= l.segment_len());
            prop_assert!(l.slot_stride() >= offsets::SLOT_PAYLOAD + slot_size as usize);
            prop_assert_eq!(l.slot_offset(seq), l.slot_offset(seq.wrapping_add(l.capacity as u64)));
            prop_assert!(l.subscriber_offset(subs - 1) + offsets::SUB_ENTRY <= l.header_len());
        }
    }
}
