//! The broadcast ring: any number of publishers at once, without a lock, and any
//! number of subscribers, each with its own cursor. Every subscriber sees every
//! message unless it falls a whole ring behind.
//!
//! # Protocol
//!
//! Messages are numbered `0, 1, 2, …`; message `seq` lives in slot `seq % capacity`.
//! The header's 64-bit `tail` is the next number to claim. Each slot starts with a
//! `stamp`:
//!
//! * `2·(seq+1)` (mod 2³²): message `seq` is committed in this slot;
//! * `2·(seq+1) − 1`: message `seq` is being written.
//!
//! **Publishing** (`publish`, `publish_packed`, or `loan` + `commit`), lock-free:
//! 1. apply the backpressure policy for the tail (before claiming, so that a claim is
//!    never given back for want of room);
//! 2. announce the claim in the publisher's claim line (its publisher-table entry's),
//!    then **claim** one or more numbers with a compare-and-swap of the tail;
//! 3. **take** each slot: a compare-and-swap of its stamp from the previous lap's
//!    committed stamp (0 in the first lap) to the odd one. If that lap's writer is
//!    still writing (a whole ring of claims overtook it), wait for it;
//! 4. write length, origin and payload, store the even stamp, and wake parked
//!    subscribers if the header's `waiters` count is non-zero.
//!
//! A loan dropped uncommitted, or an exception while writing, commits its slot with
//! the length [`SKIP_LEN`]: readers pass over it (and count it as `passed`). A
//! publisher that dies between claim and commit leaves a **hole**; a reader that waits
//! at one repairs it ([`repair_hole`]) once no live claim line covers it, under the
//! repair lock. A publisher with no claim line (more than 32 publish at once) holds the
//! repair lock from its claim to its commit, so no repair runs while it writes.
//!
//! **The payload pool** (a segment made with a `pool_size`): a message longer than a
//! slot lies in the pool, a ring of 64-byte units after the slots; its slot holds its
//! first unit and its length. Its number and its units are claimed together under the
//! repair lock, so pooled messages lie in the pool in the order of their numbers, and
//! each reader's **pool cursor** (the unit after the last pooled message it read)
//! bounds what it has yet to read: a publisher that holds back (all but `DropOld`)
//! hands out units only up to a whole pool past the pool cursor of every reader not
//! yet past the tail. A reader checks, after copying, that the pool's head has not gone
//! a whole pool past its message's first unit (the head moves before anything is
//! written there): else it was lapped.
//!
//! **The side path** ([`crate::side`]): a message longer than the pool (or than a slot,
//! in a segment without one), up to the publisher's [largest
//! message](Publisher::max_message_size), goes into a sealed memfd of the publisher's;
//! its slot holds the publisher's side token and its length (more than the pool holds:
//! that says so). A reader fetches the memfd over the publisher's Unix socket, in turn.
//!
//! A [sole](Publisher::sole) publisher (a network hub's private receive ring) claims
//! nothing: it writes at the tail and moves the tail once the message is whole.
//!
//! **Receiving** is a seqlock read of slot `cursor`: load the stamp; if it is the
//! committed stamp of `cursor`, copy the payload and load the stamp again. Equal
//! stamps mean the copy is intact. A stamp of an *older* message means nothing new
//! yet. A stamp of a *later* message means the publisher lapped this subscriber:
//! it skips ahead to a quarter ring past the oldest message still in the ring and
//! adds what it skipped to its `lapped` count, so `received + lapped + passed` always
//! equals the sequence numbers claimed since it joined.
//!
//! **Backpressure** is the publisher's choice ([`Backpressure`]): `DropOld` (lap slow
//! subscribers, never wait), `DropNew` (discard the new message), `FailFast` (return
//! [`ShmError::RingFull`]), or `Block` (wait until the slowest live subscriber has
//! room). Subscribers publish the low 32 bits of their cursor in their table entry so
//! that a publisher can compute how far behind they are.
//!
//! **Credits**: a subscriber may also hold publishers to what it grants
//! ([`table::grant`]): its entry says up to which sequence number it takes messages,
//! and every publisher but a `DropOld` one (which never holds back for anyone) treats
//! reaching it as a full ring, by its policy. A subscriber's first grant bumps
//! `credit_gen`, so that publishers which remembered where their room ends look again.
//!
//! **Wake-ups**: a waiting subscriber spins briefly, then counts itself in `waiters`
//! (and marks `parked` in its table entry), re-checks, and parks on the `notify` futex;
//! a publisher that sees `waiters > 0` bumps `notify` and wakes everyone parked. A
//! subscriber that dies parked leaves its count behind; the first wake that reaches
//! nobody takes back the counts of dead parked entries. A blocked publisher parks the
//! same way on `space`, counted in `space_waiters`; a count left by a publisher that
//! died blocked is reset once wakes on `space` have reached nobody for 200 ms.
//!
//! The TypeScript package implements the same protocol over the same memory (see
//! `packages/zerohop/src/shm-ring.ts`); the two interoperate message for message.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::{Result, ShmError};
use crate::futex;
use crate::layout::{GROUP_ENTRY, Layout, MAX_LISTED_PUBLISHERS, POOL_UNIT, SKIP_LEN, claim_offset, offsets};
use crate::registry::PublisherEntry;
use crate::segment::Segment;
use crate::side::{self, SideServer};

pub mod bell;
mod group;
mod same_cpu;

/// What a publisher does when the slowest subscriber is a full ring behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backpressure {
    /// Overwrite: slow subscribers are lapped and count what they missed. Never waits.
    #[default]
    DropOld,
    /// Discard the new message and count it as dropped.
    DropNew,
    /// Refuse the message with [`ShmError::RingFull`].
    FailFast,
    /// Wait until every live subscriber has room (up to the publish timeout).
    Block,
}

/// How long a publisher waits for space (or the repair lock, or a slot's previous lap)
/// before giving up.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest message a publisher takes unless told otherwise
/// ([`Publisher::set_max_message_size`]): 16 MiB, or a slot or the pool if larger.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
/// The most that can be set: 1 GiB.
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;

/// The largest message a publisher on a segment of `layout` takes unless told
/// otherwise: [`DEFAULT_MAX_MESSAGE`], or a slot or the pool if larger.
pub fn default_max_message(layout: &Layout) -> usize {
    DEFAULT_MAX_MESSAGE.max(layout.slot_size as usize).max(layout.pool_size as usize)
}
/// Longest single futex sleep: bounds how late a dead peer is noticed.
const PARK_SLICE: Duration = Duration::from_millis(50);

/// The committed stamp of message `seq`.
#[inline]
pub fn committed_stamp(seq: u64) -> u32 {
    (seq.wrapping_add(1) as u32).wrapping_mul(2)
}

/// What a slot's stamp says about message `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Message `seq` is committed and readable.
    Ready,
    /// Message `seq` is not (completely) written yet.
    NotYet,
    /// The slot holds or is being overwritten by a later message: `seq` is lost.
    Lapped,
}

/// Classifies `stamp` for a reader that wants message `seq`. Pure; the heart of the
/// reader side, shared by every reader implementation and property-tested.
#[inline]
pub fn classify(stamp: u32, seq: u64) -> SlotState {
    let want = committed_stamp(seq);
    if stamp == want {
        return SlotState::Ready;
    }
    // An odd stamp is the committed stamp of the message being written, minus one.
    let becoming = stamp.wrapping_add(stamp & 1);
    if (becoming.wrapping_sub(want) as i32) > 0 { SlotState::Lapped } else { SlotState::NotYet }
}

/// Where a lapped reader at `cursor` resumes, given the tail: a quarter ring past the
/// oldest message still in the ring, so it does not get lapped again at once.
#[inline]
pub fn resync_cursor(cursor: u64, tail: u64, capacity: u32) -> u64 {
    let keep = capacity as u64 - capacity as u64 / 4;
    (cursor + 1).max(tail.saturating_sub(keep))
}

/// Views of the shared words every ring party uses.
#[derive(Debug, Clone)]
struct RingMemory {
    seg: Arc<Segment>,
    layout: Layout,
}

impl RingMemory {
    fn new(seg: Arc<Segment>) -> Self {
        let layout = *seg.layout();
        Self { seg, layout }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        self.seg.word(off)
    }

    /// The tail: the next sequence number to claim (every number below it is claimed,
    /// not necessarily committed yet).
    fn tail(&self) -> u64 {
        self.tail_word().load(Ordering::Acquire)
    }

    fn tail_word(&self) -> &AtomicU64 {
        self.seg.word64(offsets::TAIL_LO)
    }

    /// Called by a sole publisher only (nobody else moves the tail).
    fn set_tail(&self, tail: u64) {
        self.tail_word().store(tail, Ordering::Release);
    }

    /// The stamp slot `seq` holds before message `seq` may be written into it: the
    /// previous lap's committed stamp, or 0 in the first lap.
    fn prior_stamp(&self, seq: u64) -> u32 {
        let cap = self.layout.capacity as u64;
        if seq < cap { 0 } else { committed_stamp(seq - cap) }
    }

    /// The pool unit the next pooled message may start at.
    fn pool_head(&self) -> &AtomicU32 {
        self.word(offsets::POOL_HEAD)
    }

    fn sub_pool_cursor(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_POOL_CURSOR)
    }

    /// Where pool unit `unit` (wrapping) lies.
    fn pool_ptr(&self, unit: u32) -> *mut u8 {
        // SAFETY: `pool_unit_offset` is inside the pool, which `Layout::segment_len`
        // (checked when the segment was made or opened) keeps inside the mapping.
        unsafe { self.seg.as_ptr().add(self.layout.pool_unit_offset(unit)) }
    }

    fn claim_first(&self, line: u32) -> &AtomicU32 {
        self.word(claim_offset(line) + offsets::CLAIM_FIRST)
    }

    fn claim_count(&self, line: u32) -> &AtomicU32 {
        self.word(claim_offset(line) + offsets::CLAIM_COUNT)
    }

    fn stamp(&self, seq: u64) -> &AtomicU32 {
        self.stamp_at(self.layout.slot_offset(seq))
    }

    /// The stamp of the slot at byte offset `slot` (a `Layout::slot_offset`).
    fn stamp_at(&self, slot: usize) -> &AtomicU32 {
        self.word(slot + offsets::SLOT_STAMP)
    }

    fn payload_ptr(&self, seq: u64) -> *mut u8 {
        self.payload_at(self.layout.slot_offset(seq))
    }

    /// The payload of the slot at byte offset `slot` (a `Layout::slot_offset`).
    fn payload_at(&self, slot: usize) -> *mut u8 {
        // SAFETY: slot_offset + SLOT_PAYLOAD + slot_size is within the segment
        // (Layout::segment_len bounds every slot, checked when the segment was opened).
        unsafe { self.seg.as_ptr().add(slot + offsets::SLOT_PAYLOAD) }
    }

    fn sub_pid(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_PID)
    }

    fn sub_cursor(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_CURSOR_LO)
    }

    fn sub_credited(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_CREDITED)
    }

    fn sub_credit_limit(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_CREDIT_LIMIT_LO)
    }

    fn credit_gen(&self) -> u32 {
        self.word(offsets::CREDIT_GEN).load(Ordering::Acquire)
    }

    fn sub_parked(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_PARKED)
    }

    fn sub_cpu(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_CPU)
    }
}

/// Whether process `pid` exists (signal 0 probes without sending anything).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Counters of one publisher handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    pub published: u64,
    pub published_bytes: u64,
    /// Messages discarded by `DropNew`.
    pub dropped: u64,
    /// Times `Block` had to wait for space.
    pub blocked: u64,
}

/// What happened to a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Committed as message `seq`.
    Sent(u64),
    /// `DropNew` discarded it.
    Dropped,
}

/// The publishing side of a ring.
#[derive(Debug)]
pub struct Publisher {
    mem: RingMemory,
    pid: u32,
    policy: Backpressure,
    timeout: Duration,
    stats: PublisherStats,
    /// A subscriber entry of the same hub, which a `Block` publisher does not wait for.
    own_entry: Option<u32>,
    /// What each message's origin word says: the own entry plus one (0: none), so that
    /// the hub's own subscriber skips what it published.
    origin: u32,
    /// What each message's expiry word says (`offsets::SLOT_EXPIRY`; 0: none): set
    /// around a publish with a time to live ([`Publisher::set_expiry`]); else, with a
    /// time to live for every message (`ttl_ms`, 0: none), from it.
    expiry: u32,
    ttl_ms: u32,
    /// Sequence number below which the last scan of the subscriber table proved there
    /// is room, so that most publishes skip the scan (while `credit_gen` is the same).
    room_until: u64,
    /// The segment's `credit_gen` when `room_until` was found.
    credit_gen: u32,
    /// No other publisher will ever write this ring (see [`Publisher::sole`]): it claims
    /// nothing, and moves the tail only once a message is whole.
    sole: bool,
    /// The claim line this publisher announces its claims in (its publisher table
    /// index). Without one it publishes under the repair lock.
    line: Option<u32>,
    /// What the line's count word says (written only when it changes).
    line_count: u32,
    /// Its own table entry, when this publisher joined the table itself.
    _entry: Option<PublisherEntry>,
    /// An unlisted publisher holds the repair lock (from a claim until its commit).
    locked: bool,
    /// Publishes leave waking parked subscribers to [`announce`](Self::announce)
    /// ([`set_announce_later`](Self::set_announce_later)).
    announce_later: bool,
    /// The run of sequence numbers this publisher claimed last, one after another with
    /// nobody else's between them: `run_start..run_end`. A slot whose previous lap lies
    /// in the run was written by this publisher, and committed (it claims again only
    /// once it committed, or passed over, what it claimed before), so nobody else can
    /// be writing it: taking it needs no compare-and-swap (the one-publisher path).
    run_start: u64,
    run_end: u64,
    /// The largest message it takes (see [`Publisher::max_message_size`]).
    max_message: usize,
    /// Its side-path server, started by the first message that needs it.
    side: Option<SideServer>,
    /// How many side-path messages, and bytes of them, it holds at most.
    side_limits: (usize, usize),
}

/// The wall clock's milliseconds since the Unix epoch, modulo 2^32: what a slot's
/// expiry word holds ([`offsets::SLOT_EXPIRY`]).
pub fn now_ms32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u32)
}

/// The expiry word for `expiry_ns` (ns since the Unix epoch): in ms modulo 2^32, one
/// already past a ms ago (never 0, which means none). [`expiry_word_ns`] reads it back.
pub fn expiry_word_at(expiry_ns: u64) -> u32 {
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    if expiry_ns <= now_ns { now_ms32().wrapping_sub(1).max(1) } else { (expiry_ns.div_ceil(1_000_000) as u32).max(1) }
}

/// The time an expiry word stands for (ms modulo 2^32), in ns since the Unix epoch: the
/// one of its times nearest now (a word is written at most 2^31 ms ahead).
pub fn expiry_word_ns(word: u32) -> Option<u64> {
    if word == 0 {
        return None;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let ms = (now & !0xffff_ffff) | u64::from(word);
    let nearest = [ms.wrapping_sub(1 << 32), ms, ms + (1 << 32)]
        .into_iter()
        .min_by_key(|t| t.abs_diff(now))
        .expect("three candidates");
    Some(nearest * 1_000_000)
}

/// An expiry word for `ttl_ms` from now (never 0, which means none).
pub fn expiry_in(ttl_ms: u32) -> u32 {
    now_ms32().wrapping_add(ttl_ms).max(1)
}

/// Whether expiry word `expiry` (0: none) has passed at `now` ([`now_ms32`]).
pub fn expired(expiry: u32, now: u32) -> bool {
    expiry != 0 && (now.wrapping_sub(expiry) as i32) > 0
}

impl Publisher {
    /// The expiry word of the messages published from now on ([`expiry_in`]; 0: none).
    pub fn set_expiry(&mut self, expiry: u32) {
        self.expiry = expiry;
    }

    /// A time to live for every message published without an expiry of its own
    /// (`ttlMs`; under 2^31 ms; `None`: none).
    pub fn set_ttl(&mut self, ttl: Option<Duration>) {
        self.ttl_ms = ttl.map_or(0, |t| t.as_millis().clamp(1, i32::MAX as u128) as u32);
    }

    /// What the next message's expiry word says.
    fn expiry_word(&self) -> u32 {
        match (self.expiry, self.ttl_ms) {
            (0, 0) => 0,
            (0, ttl) => expiry_in(ttl),
            (e, _) => e,
        }
    }

    /// A publisher on `seg` with `policy`, entered in the segment's publisher table
    /// (where `Hub.list()` finds it and where it announces its claims; past
    /// [`MAX_LISTED_PUBLISHERS`] it publishes unlisted, under the repair lock).
    pub fn new(seg: Arc<Segment>, policy: Backpressure) -> Self {
        let entry = PublisherEntry::join(seg.clone());
        Self { line: entry.index(), _entry: Some(entry), ..Self::with_line(seg, policy, None) }
    }

    /// A publisher that announces its claims in claim `line`, the table entry another
    /// handle of this process holds (a Node hub's, whose JavaScript publisher shares it:
    /// the two never publish at once), or none (it publishes under the repair lock).
    pub fn with_line(seg: Arc<Segment>, policy: Backpressure, line: Option<u32>) -> Self {
        Self {
            mem: RingMemory::new(seg),
            pid: std::process::id(),
            policy,
            timeout: DEFAULT_PUBLISH_TIMEOUT,
            stats: PublisherStats::default(),
            own_entry: None,
            origin: 0,
            expiry: 0,
            ttl_ms: 0,
            room_until: 0,
            credit_gen: 0,
            sole: false,
            line,
            line_count: 0,
            _entry: None,
            locked: false,
            announce_later: false,
            run_start: 0,
            run_end: 0,
            max_message: 0,
            side: None,
            side_limits: (side::HELD, side::HELD_BYTES),
        }
        .with_default_max_message()
    }

    fn with_default_max_message(mut self) -> Self {
        self.max_message = default_max_message(&self.mem.layout);
        self
    }

    /// The only publisher `seg` will ever have: a [private](Segment::private) segment
    /// whose other users only read it (a network hub's receive ring, written by its
    /// transport alone). It claims nothing: its messages take no compare-and-swap, and
    /// the tail moves once each is whole. `&mut self` on every write already keeps two
    /// writes through this handle apart.
    ///
    /// # Panics
    /// If `seg` is not private (another process could open it and publish).
    pub fn sole(seg: Arc<Segment>, policy: Backpressure) -> Self {
        assert!(seg.is_private(), "only a private segment can have a sole publisher");
        let slot = seg.layout().slot_size as usize;
        Self { sole: true, max_message: slot, ..Self::with_line(seg, policy, None) }
    }

    /// Lets the repair lock go, if this (unlisted) publisher holds it.
    fn unlock_unlisted(&mut self) {
        if self.locked {
            self.locked = false;
            release_repair_lock(&self.mem);
        }
    }

    /// Wakes parked subscribers after [`Loan::commit_unannounced`] (once for a batch).
    pub fn announce(&self) {
        announce_but(&self.mem, self.own_entry);
    }

    /// `later`: [`publish`](Self::publish) commits without waking parked subscribers, as
    /// [`Loan::commit_unannounced`] does, and the caller [`announce`](Self::announce)s
    /// once a batch. (A bridge's forwarding thread: one wake-up per batch, and none while
    /// it holds the lock of the connection it reads.)
    pub fn set_announce_later(&mut self, later: bool) {
        self.announce_later = later;
    }

    /// A `Block` publisher about to wait for readers to make room: what it committed
    /// unannounced is announced first, or readers parked since would never make it.
    fn announce_before_waiting(&self) {
        if self.announce_later {
            self.announce();
        }
    }

    /// Tells the publisher which subscriber entry belongs to its own hub: backpressure
    /// ignores it (a hub does not wait for itself), and that subscriber skips what this
    /// publisher publishes (a hub does not receive its own messages).
    pub fn set_own_entry(&mut self, entry: Option<u32>) {
        self.own_entry = entry;
        self.origin = entry.map_or(0, |e| e + 1) | (self.origin & offsets::BRIDGED);
    }

    /// What this publisher publishes came from elsewhere through a bridge: its origin
    /// word says so ([`offsets::BRIDGED`]), and readers that forward
    /// ([`Subscriber::pass_over_bridged`]) pass over it.
    pub fn set_bridged(&mut self, bridged: bool) {
        self.origin = (self.origin & !offsets::BRIDGED) | if bridged { offsets::BRIDGED } else { 0 };
    }

    /// Sets how long `publish` and `loan` wait for space (or the repair lock, or a
    /// slot's previous lap).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// This handle's counters.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// How many messages the slowest live subscriber (other than this hub's own) has
    /// not read yet.
    pub fn slowest_lag(&self) -> u64 {
        slowest_lag(&self.mem, self.mem.tail(), self.own_entry)
    }

    /// Bytes of a slot's payload: the longest message a [`Loan`] holds.
    pub fn slot_size(&self) -> usize {
        self.mem.layout.slot_size as usize
    }

    /// The largest message [`publish`](Self::publish) takes: longer than a slot, it goes
    /// through the payload pool, and longer than that, the side path (a sole publisher
    /// has neither).
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Sets the largest message it takes, at most [`MAX_MESSAGE_LIMIT`] (a sole
    /// publisher's stays a slot).
    pub fn set_max_message_size(&mut self, max: usize) {
        if !self.sole {
            self.max_message = max.min(MAX_MESSAGE_LIMIT);
        }
    }

    /// Sets how many side-path messages, and bytes of them, it holds at most until
    /// subscribers have read them (default [`side::HELD`], [`side::HELD_BYTES`]; it may
    /// always hold one): past that, the backpressure policy decides.
    pub fn set_side_limits(&mut self, messages: usize, bytes: usize) {
        self.side_limits = (messages.max(1), bytes);
    }

    /// Copies `payload` into the ring as one message.
    pub fn publish(&mut self, payload: &[u8]) -> Result<Published> {
        let len = payload.len();
        if len > self.slot_size() || len > self.max_message {
            if len > self.max_message {
                return Err(ShmError::MessageTooLarge { len, max: self.max_message });
            }
            if len <= self.max_pooled_size() {
                return self.publish_pooled(payload);
            }
            return self.publish_side(payload);
        }
        let announce = !self.announce_later;
        match self.loan()? {
            None => Ok(Published::Dropped),
            Some(mut loan) => {
                loan.as_mut_slice()[..payload.len()].copy_from_slice(payload);
                Ok(Published::Sent(loan.finish(payload.len(), announce)))
            }
        }
    }

    /// Publishes a message longer than a slot into the payload pool (see
    /// [`claim_pooled`](Self::claim_pooled)); its slot says where it lies.
    fn publish_pooled(&mut self, payload: &[u8]) -> Result<Published> {
        let Some((seq, unit)) = self.begin_pooled(payload.len())? else {
            return Ok(Published::Dropped);
        };
        self.pooled_slice(unit, payload.len()).copy_from_slice(payload);
        self.commit_pooled(seq, unit, payload.len());
        Ok(Published::Sent(seq))
    }

    /// Publishes a message too long for the pool (and a slot) on the side path: in a
    /// sealed memfd this publisher serves, its slot saying whose and how long.
    fn publish_side(&mut self, payload: &[u8]) -> Result<Published> {
        if self.side.is_none() {
            let Some(dir) = self.mem.seg.dir() else {
                return Err(ShmError::MessageTooLarge { len: payload.len(), max: self.slot_size() });
            };
            let (mem, own) = (self.mem.clone(), self.own_entry);
            self.side = Some(SideServer::start(dir, move |seq| passed_by_all(&mem, seq, own))?);
        }
        if !self.side_room(payload.len())? {
            self.stats.dropped += 1;
            return Ok(Published::Dropped);
        }
        let file = side::message_file(payload)?;
        match self.loan()? {
            None => Ok(Published::Dropped),
            Some(loan) => Ok(Published::Sent(loan.commit_side(payload.len(), file))),
        }
    }

    /// Applies the backpressure policy to the side path's messages held (see
    /// [`side::HELD`]) before one of `len` bytes: true to go on, false to drop it.
    fn side_room(&mut self, len: usize) -> Result<bool> {
        let side = self.side.as_ref().expect("started");
        let limits = self.side_limits;
        if side.has_room(len, limits) {
            return Ok(true);
        }
        match self.policy {
            Backpressure::DropOld => {
                while !side.has_room(len, limits) {
                    side.let_go_oldest();
                }
            }
            Backpressure::DropNew => return Ok(false),
            Backpressure::FailFast => return Err(ShmError::SideFull { held: side.held() }),
            Backpressure::Block => {
                self.announce_before_waiting();
                wait_until(
                    &self.mem,
                    Instant::now() + self.timeout,
                    "subscribers to read the side path's messages",
                    || side.has_room(len, limits),
                )?;
                self.stats.blocked += 1;
            }
        }
        Ok(true)
    }

    /// Waits up to `timeout` until every subscriber has read what this publisher sent on
    /// the side path (which goes when it does); whether they have.
    pub fn linger(&self, timeout: Duration) -> bool {
        let Some(side) = &self.side else { return true };
        let deadline = Instant::now() + timeout;
        loop {
            if side.release_passed() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Largest message the payload pool takes (0: the segment has none).
    pub fn max_pooled_size(&self) -> usize {
        if self.sole { 0 } else { self.mem.layout.pool_size as usize }
    }

    /// Starts a message of `len` bytes (more than a slot, at most the pool) in the
    /// payload pool: claims its number and pool units and takes its slot. Returns
    /// `(seq, unit)`: write it through [`pooled_slice`](Self::pooled_slice), then
    /// [`commit_pooled`](Self::commit_pooled) or [`abandon_pooled`](Self::abandon_pooled)
    /// (nothing else may be published through this handle meanwhile). `None` when
    /// `DropNew` dropped it.
    pub fn begin_pooled(&mut self, len: usize) -> Result<Option<(u64, u32)>> {
        if len > self.max_pooled_size() || len <= self.slot_size() {
            return Err(ShmError::MessageTooLarge { len, max: self.max_pooled_size().max(self.slot_size()) });
        }
        let Some((seq, unit)) = self.claim_pooled(len.div_ceil(POOL_UNIT as usize) as u32)? else {
            self.stats.dropped += 1;
            return Ok(None);
        };
        if let Err(e) = self.take_slot(seq) {
            self.give_up();
            return Err(e);
        }
        Ok(Some((seq, unit)))
    }

    /// The `len` bytes of the pool from `unit`, a range [`begin_pooled`](Self::begin_pooled)
    /// handed out.
    ///
    /// # Panics
    /// If the range is not inside the pool.
    pub fn pooled_slice(&mut self, unit: u32, len: usize) -> &mut [u8] {
        let layout = self.mem.layout;
        assert!(
            layout.pool_size > 0
                && (unit % layout.pool_units()) as usize * POOL_UNIT as usize + len <= layout.pool_size as usize,
            "{len} bytes from pool unit {unit} are not inside the pool"
        );
        // SAFETY: inside the pool (asserted), which lies inside the mapping; the range is
        // this message's alone: handed out under the repair lock past every reader's pool
        // cursor (`drop_old`: readers check the head after copying, so an overwrite is a
        // lap, never a torn message), and `&mut self` keeps this handle's writes apart.
        unsafe { std::slice::from_raw_parts_mut(self.mem.pool_ptr(unit), len) }
    }

    /// Commits pooled message `seq` of `len` bytes from `unit` (see
    /// [`begin_pooled`](Self::begin_pooled)) and wakes parked subscribers. A message
    /// that turned out to fit a slot is moved into it (the pool units stay unused).
    pub fn commit_pooled(&mut self, seq: u64, unit: u32, len: usize) {
        let slot = self.mem.layout.slot_offset(seq);
        if len <= self.slot_size() {
            // SAFETY: both ranges lie inside the mapping (a slot's payload holds
            // `slot_size` bytes; the pool range was handed out for more), and
            // both are this message's alone (its slot is taken, its units handed out).
            unsafe { std::ptr::copy_nonoverlapping(self.mem.pool_ptr(unit), self.mem.payload_at(slot), len) };
        } else {
            self.mem.word(slot + offsets::SLOT_PAYLOAD).store(unit, Ordering::Relaxed);
        }
        self.mem.word(slot + offsets::SLOT_LEN).store(len as u32, Ordering::Relaxed);
        self.mem.word(slot + offsets::SLOT_ORIGIN).store(self.origin, Ordering::Relaxed);
        self.mem.word(slot + offsets::SLOT_EXPIRY).store(self.expiry_word(), Ordering::Relaxed);
        self.mem.stamp_at(slot).store(committed_stamp(seq), Ordering::SeqCst);
        self.stats.published += 1;
        self.stats.published_bytes += len as u64;
        self.unlock_unlisted();
        if !self.announce_later {
            notify_subscribers(&self.mem, self.own_entry);
        }
    }

    /// Gives pooled message `seq` up: its slot is passed over.
    pub fn abandon_pooled(&mut self, seq: u64) {
        skip_slot(&self.mem, seq);
        self.unlock_unlisted();
        notify_subscribers(&self.mem, self.own_entry);
    }

    /// Claims a sequence number and `units` pool units for it, together under the repair
    /// lock, so that pooled messages lie in the pool in the order of their numbers (what
    /// a reader's pool cursor relies on). `None` when `DropNew` drops. Room in the ring
    /// and in the pool is waited for with the lock let go (readers may need it to repair
    /// the hole they wait at); the lock is held only while both are known.
    fn claim_pooled(&mut self, units: u32) -> Result<Option<(u64, u32)>> {
        let pool_units = self.mem.layout.pool_units();
        let deadline = Instant::now() + self.timeout;
        loop {
            let tail = self.mem.tail();
            if self.policy != Backpressure::DropOld && !self.room_known(tail) {
                self.unlock_unlisted();
                if !self.make_room(tail)? {
                    return Ok(None);
                }
            }
            if !self.locked {
                acquire_repair_lock(&self.mem, self.pid, self.timeout)?;
                self.locked = true;
            }
            let head = self.mem.pool_head().load(Ordering::Acquire);
            // Never across the pool's end: what is left of it there is skipped.
            let at = head % pool_units;
            let start = if at + units > pool_units { head.wrapping_add(pool_units - at) } else { head };
            let end = start.wrapping_add(units);
            let tail = self.mem.tail();
            if self.policy != Backpressure::DropOld {
                if !self.room_known(tail) {
                    continue; // (the ring's room first, with the lock let go)
                }
                if !pool_room(&self.mem, end, tail, self.own_entry) {
                    self.unlock_unlisted();
                    match self.policy {
                        Backpressure::DropNew => return Ok(None),
                        Backpressure::FailFast => return Err(ShmError::RingFull),
                        _ => {
                            self.announce_before_waiting();
                            let mem = &self.mem;
                            let own = self.own_entry;
                            wait_until(
                                mem,
                                deadline,
                                "room in the payload pool (a subscriber is not reading)",
                                || pool_room(mem, end, mem.tail(), own),
                            )?;
                            self.stats.blocked += 1;
                            continue;
                        }
                    }
                }
            }
            if !self.try_claim(tail, 1) {
                continue; // a publisher of a short message claimed first
            }
            self.mem.pool_head().store(end, Ordering::Release);
            // The head moves before any byte of the range is written (the reader's check).
            fence(Ordering::Release);
            if self.line.is_some() {
                // A listed publisher's claim line covers the rest; an unlisted one keeps
                // the lock to its commit.
                self.unlock_unlisted();
            }
            return Ok(Some((tail, start)));
        }
    }

    /// Publishes `packed.len() / size` messages of `size` bytes each, laid end to end in
    /// `packed`, claiming as many at once as there is room for, with one wake-up.
    /// Returns how many were accepted: all of them, or (`DropNew`, `FailFast`) the ones
    /// before the ring filled up.
    pub fn publish_packed(&mut self, packed: &[u8], size: usize) -> Result<usize> {
        if size == 0 || !packed.len().is_multiple_of(size) {
            return Err(ShmError::MessageTooLarge { len: packed.len(), max: size });
        }
        if size > self.slot_size() {
            return Err(ShmError::MessageTooLarge { len: size, max: self.slot_size() });
        }
        let total = (packed.len() / size) as u64;
        let mut sent = 0u64;
        let mut outcome = Ok(());
        'claims: while sent < total {
            let (first, count) = match self.claim(total - sent) {
                Ok(Some(claimed)) => claimed,
                Ok(None) => {
                    self.stats.dropped += total - sent;
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            for seq in first..first + count {
                if let Err(e) = self.take_slot(seq) {
                    // The rest of the claim is left to repair (see `give_up`).
                    self.give_up();
                    outcome = Err(e);
                    break 'claims;
                }
                let at = (sent + seq - first) as usize * size;
                let slot = self.mem.layout.slot_offset(seq);
                // SAFETY: the payload area of `seq`'s slot is `slot_size >= size` bytes
                // inside the mapping, and `take_slot` made it ours: its stamp is odd
                // and no other publisher writes it (the seqlock contract described on
                // `Loan::as_mut_slice`).
                unsafe { std::ptr::copy_nonoverlapping(packed[at..].as_ptr(), self.mem.payload_at(slot), size) };
                self.mem.word(slot + offsets::SLOT_LEN).store(size as u32, Ordering::Relaxed);
                self.mem.word(slot + offsets::SLOT_ORIGIN).store(self.origin, Ordering::Relaxed);
                self.mem.word(slot + offsets::SLOT_EXPIRY).store(self.expiry_word(), Ordering::Relaxed);
                self.mem.stamp_at(slot).store(committed_stamp(seq), Ordering::Release);
            }
            if self.sole {
                self.mem.set_tail(first + count);
            }
            sent += count;
        }
        self.stats.published += sent;
        self.stats.published_bytes += sent * size as u64;
        self.unlock_unlisted();
        if sent > 0 {
            self.announce();
        }
        match outcome {
            Ok(()) | Err(ShmError::RingFull) => Ok(sent as usize),
            Err(e) => Err(e),
        }
    }

    /// Reserves the next slot for writing in place. `None` when `DropNew` discarded it.
    /// The message's sequence number is taken at once: later publishes go on, but
    /// readers wait at this one until the loan is committed or dropped, so keep it short.
    pub fn loan(&mut self) -> Result<Option<Loan<'_>>> {
        let seq = match self.claim(1) {
            Ok(Some((seq, _))) => seq,
            Ok(None) => {
                self.unlock_unlisted();
                self.stats.dropped += 1;
                return Ok(None);
            }
            Err(e) => {
                self.unlock_unlisted();
                return Err(e);
            }
        };
        if let Err(e) = self.take_slot(seq) {
            self.give_up();
            return Err(e);
        }
        Ok(Some(Loan { publisher: self, seq }))
    }

    /// Writes the next message in place: `fill` writes its `len` bytes, the first of
    /// the slot it is given. What [`loan`](Self::loan) then
    /// [`commit_unannounced`](Loan::commit_unannounced) do, the quick way a
    /// [sole](Self::sole) publisher of many small messages can take (a network hub's
    /// receive ring: 38 → 30 ns a 64-byte message with its envelope, 2026-12-05): no
    /// claim, the slot's words written without a bounds check each. `None` when the
    /// ring has no room.
    ///
    /// # Panics
    /// If this is not a sole `DropNew` publisher, or `len` exceeds the slot size.
    pub fn put(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Option<u64> {
        assert!(self.sole && self.policy == Backpressure::DropNew, "put is for a sole DropNew publisher");
        assert!(len <= self.slot_size(), "a message of {len} bytes exceeds the slot");
        // Only this publisher moves the tail, so it cannot change under us.
        let tail = self.mem.tail_word().load(Ordering::Relaxed);
        if !self.room_known(tail) && !self.make_room(tail).ok()? {
            self.stats.dropped += 1;
            return None;
        }
        let mem = &self.mem;
        let slot = mem.layout.slot_offset(tail);
        // SAFETY: `slot_offset` lies inside the mapping with the whole slot after it
        // (`Layout::segment_len` bounds every slot, checked when the segment was made),
        // and slots are 4-aligned (their stride is a multiple of a cache line), so these
        // are three aligned words of the slot's header.
        let word = |at: usize| unsafe { &*(mem.seg.as_ptr().add(slot + at) as *const AtomicU32) };
        let stamp = word(offsets::SLOT_STAMP);
        stamp.store(committed_stamp(tail).wrapping_sub(1), Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: the slot's payload area is `slot_size >= len` bytes inside the mapping;
        // no other publisher writes it (sole) and readers only copy it optimistically
        // while its stamp is odd (the seqlock contract of `Loan::as_mut_slice`).
        fill(unsafe { std::slice::from_raw_parts_mut(mem.payload_at(slot), len) });
        word(offsets::SLOT_LEN).store(len as u32, Ordering::Relaxed);
        word(offsets::SLOT_ORIGIN).store(self.origin, Ordering::Relaxed);
        word(offsets::SLOT_EXPIRY).store(self.expiry_word(), Ordering::Relaxed);
        stamp.store(committed_stamp(tail), Ordering::Release);
        mem.set_tail(tail + 1);
        self.stats.published += 1;
        self.stats.published_bytes += len as u64;
        Some(tail)
    }

    /// Claims up to `n` sequence numbers from the tail, as many as the backpressure
    /// policy leaves room for (at least one): `(first, count)`, or `None` when
    /// `DropNew` drops. The room is checked before the claim, so a claim is never
    /// given back for want of room. A listed publisher announces the claim in its
    /// line first (see [`repair_hole`]); the compare-and-swap of the tail makes it.
    /// An unlisted one takes the repair lock instead, once there is room: waiting for
    /// room with it would keep readers from repairing the hole they may be stuck at.
    fn claim(&mut self, n: u64) -> Result<Option<(u64, u64)>> {
        loop {
            let tail = if self.sole { self.mem.tail_word().load(Ordering::Relaxed) } else { self.mem.tail() };
            let count = if self.policy == Backpressure::DropOld {
                n
            } else {
                if !self.room_known(tail) {
                    self.unlock_unlisted();
                    if !self.make_room(tail)? {
                        return Ok(None);
                    }
                }
                n.min(self.room_until.saturating_sub(tail)).max(1)
            };
            if self.sole {
                return Ok(Some((tail, count)));
            }
            if self.line.is_none() && !self.locked {
                acquire_repair_lock(&self.mem, self.pid, self.timeout)?;
                self.locked = true;
                continue; // the tail, and the room, under the lock
            }
            if self.try_claim(tail, count) {
                return Ok(Some((tail, count)));
            }
            std::hint::spin_loop();
        }
    }

    /// Claims `count` numbers from `tail` if the tail is still there: announces them in
    /// the claim line, then moves the tail with one compare-and-swap, and keeps the run
    /// (see `run_start`). False if another publisher claimed first: the announcement is
    /// withdrawn then, since this publisher may go on to wait for room, and a reader at
    /// the winner's hole would take the announcement for a live claim and wait for it.
    fn try_claim(&mut self, tail: u64, count: u64) -> bool {
        if let Some(line) = self.line {
            if self.line_count != count as u32 {
                self.line_count = count as u32;
                self.mem.claim_count(line).store(count as u32, Ordering::Relaxed);
            }
            // Release: a repairer that sees this first sees its count.
            self.mem.claim_first(line).store(committed_stamp(tail).wrapping_sub(1), Ordering::Release);
        }
        // AcqRel: the claim line above is visible to whoever sees the new tail.
        if self.mem.tail_word().compare_exchange(tail, tail + count, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            if let Some(line) = self.line {
                self.mem.claim_first(line).store(0, Ordering::Release);
            }
            return false;
        }
        if tail != self.run_end {
            self.run_start = tail;
        }
        self.run_end = tail + count;
        true
    }

    /// Makes slot `seq`, claimed, ours to write: its stamp goes from the previous
    /// lap's committed one to `seq`'s odd one, after waiting for that lap's writer if
    /// it has not finished (see [`wait_for_slot`]).
    fn take_slot(&self, seq: u64) -> Result<()> {
        let stamp = self.mem.stamp(seq);
        let odd = committed_stamp(seq).wrapping_sub(1);
        // A ring that never had another publisher (its run starts at 0), or a previous
        // lap in this publisher's own run: see `run_start`.
        let own_lap = self.run_start == 0 || seq >= self.run_start + self.mem.layout.capacity as u64;
        if self.sole || own_lap {
            stamp.store(odd, Ordering::Relaxed);
        } else if stamp.compare_exchange(self.mem.prior_stamp(seq), odd, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            wait_for_slot(&self.mem, seq, Instant::now() + self.timeout)?;
        }
        // No payload store may pass the odd stamp.
        fence(Ordering::Release);
        Ok(())
    }

    /// A claim that could not be written (its slot never freed up): the claim line
    /// stops announcing it, so that readers repair its holes as a dead publisher's.
    fn give_up(&mut self) {
        // What it leaves is not committed: no later lap of it is known free.
        self.run_start = self.run_end;
        if let Some(line) = self.line {
            self.mem.claim_first(line).store(0, Ordering::Release);
        }
        self.unlock_unlisted();
    }

    /// Whether the last scan proved room for message `tail`.
    #[inline]
    fn room_known(&self, tail: u64) -> bool {
        tail < self.room_until && self.credit_gen == self.mem.credit_gen()
    }

    /// Applies the backpressure policy for message `tail`: Ok(true) to write it,
    /// Ok(false) to drop it. Remembers how far the room it found reaches.
    fn make_room(&mut self, tail: u64) -> Result<bool> {
        let credits = self.policy != Backpressure::DropOld;
        self.credit_gen = self.mem.credit_gen();
        let mut room = room_for(&self.mem, tail, self.own_entry, credits);
        self.room_until = tail + room;
        if room == 0 {
            match self.policy {
                Backpressure::DropOld => {}
                Backpressure::DropNew => return Ok(false),
                Backpressure::FailFast => {
                    return Err(if has_room(&self.mem, tail, self.own_entry, false) {
                        ShmError::NoCredits
                    } else {
                        ShmError::RingFull
                    });
                }
                Backpressure::Block => {
                    self.announce_before_waiting();
                    wait_for_space(&self.mem, tail, Instant::now() + self.timeout, self.own_entry)?;
                    self.stats.blocked += 1;
                    self.credit_gen = self.mem.credit_gen();
                    room = room_for(&self.mem, tail, self.own_entry, credits);
                }
            }
        }
        self.room_until = tail + room;
        Ok(true)
    }
}

/// A slot reserved for the next message; write it through [`Loan::as_mut_slice`],
/// then [`Loan::commit`]. Dropping it without committing publishes nothing (its
/// sequence number becomes a slot readers pass over).
#[derive(Debug)]
pub struct Loan<'a> {
    publisher: &'a mut Publisher,
    seq: u64,
}

impl Loan<'_> {
    /// The slot's payload area (`slot_size` bytes).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.publisher.slot_size();
        // SAFETY: the payload area is `slot_size` bytes inside the mapping. The slot
        // is ours (claimed, and its stamp made odd by us: `take_slot`), so no other
        // publisher writes it, and readers only copy it optimistically (they discard
        // what they read if the stamp changed), which is the seqlock contract.
        unsafe { std::slice::from_raw_parts_mut(self.publisher.mem.payload_ptr(self.seq), len) }
    }

    /// The sequence number this message will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Publishes the first `len` bytes of the slot; returns the message's sequence number.
    ///
    /// # Panics
    /// If `len` exceeds the slot size.
    pub fn commit(self, len: usize) -> u64 {
        self.finish(len, true)
    }

    /// [`commit`](Self::commit) without waking parked subscribers: a reader that polls
    /// sees the message at once, one that is parked once [`Publisher::announce`] is
    /// called. For a batch of messages, which then costs one wake-up check.
    pub fn commit_unannounced(self, len: usize) -> u64 {
        self.finish(len, false)
    }

    /// Writes the slot's length and origin, then its committed stamp; moves the tail
    /// (a sole publisher), lets the repair lock go (an unlisted one) and, to
    /// `announce`, wakes parked subscribers.
    fn finish(self, len: usize, announce: bool) -> u64 {
        assert!(len <= self.publisher.slot_size(), "commit of {len} bytes exceeds the slot");
        self.seal(len, announce)
    }

    /// Commits a side-path message of `len` bytes (more than the pool holds) in `file`:
    /// the publisher's side server holds it, the slot says whose it is.
    fn commit_side(self, len: usize, file: File) -> u64 {
        let side = self.publisher.side.as_ref().expect("started");
        side.hold(self.seq, file, len);
        let token = side.token();
        let mem = &self.publisher.mem;
        let slot = mem.layout.slot_offset(self.seq);
        // (The token fits whatever the slot size: a slot's payload area is at least 48 bytes.)
        mem.word(slot + offsets::SLOT_PAYLOAD).store(token as u32, Ordering::Relaxed);
        mem.word(slot + offsets::SLOT_PAYLOAD + 4).store((token >> 32) as u32, Ordering::Relaxed);
        self.seal(len, true)
    }

    fn seal(self, len: usize, announce: bool) -> u64 {
        let mem = &self.publisher.mem;
        let seq = self.seq;
        let slot = mem.layout.slot_offset(seq);
        mem.word(slot + offsets::SLOT_LEN).store(len as u32, Ordering::Relaxed);
        mem.word(slot + offsets::SLOT_ORIGIN).store(self.publisher.origin, Ordering::Relaxed);
        mem.word(slot + offsets::SLOT_EXPIRY).store(self.publisher.expiry_word(), Ordering::Relaxed);
        // Announced, SeqCst (not just Release): it must be ordered before the `waiters`
        // load below, the publisher half of the Dekker handshake with parking
        // subscribers (`announce` has a fence for that).
        mem.stamp(seq).store(committed_stamp(seq), if announce { Ordering::SeqCst } else { Ordering::Release });
        if self.publisher.sole {
            mem.set_tail(seq + 1);
        }
        self.publisher.stats.published += 1;
        self.publisher.stats.published_bytes += len as u64;
        // (Unlocked first: the wake may yield the CPU, see `same_cpu`.)
        self.publisher.unlock_unlisted();
        if announce {
            notify_subscribers(&self.publisher.mem, self.publisher.own_entry);
        }
        std::mem::forget(self);
        seq
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        let publisher = &mut self.publisher;
        // Abandoned. A sole publisher's tail did not move: its next publish rewrites
        // this sequence number. A claimed one is gone: it becomes a slot to pass over.
        if !publisher.sole {
            skip_slot(&publisher.mem, self.seq);
        }
        publisher.unlock_unlisted();
        if !publisher.sole {
            notify_subscribers(&publisher.mem, publisher.own_entry);
        }
    }
}

/// Commits slot `seq`, whose stamp is `seq`'s odd one and which the caller may write,
/// as holding no message: readers pass over it.
fn skip_slot(mem: &RingMemory, seq: u64) {
    let slot = mem.layout.slot_offset(seq);
    mem.word(slot + offsets::SLOT_LEN).store(SKIP_LEN, Ordering::Relaxed);
    mem.word(slot + offsets::SLOT_ORIGIN).store(0, Ordering::Relaxed);
    mem.word(slot + offsets::SLOT_EXPIRY).store(0, Ordering::Relaxed);
    mem.stamp_at(slot).store(committed_stamp(seq), Ordering::SeqCst);
}

/// Waits until slot `seq` (claimed by the caller) is free to write, and takes it: its
/// previous lap's writer, which a whole ring of publishes overtook, commits; or it
/// died, and is repaired here. Gives up at `deadline`.
fn wait_for_slot(mem: &RingMemory, seq: u64, deadline: Instant) -> Result<()> {
    let stamp = mem.stamp(seq);
    let prior = mem.prior_stamp(seq);
    let odd = committed_stamp(seq).wrapping_sub(1);
    let cap = mem.layout.capacity as u64;
    let mut spins = 0u32;
    let mut last_repair = Instant::now();
    loop {
        match stamp.compare_exchange(prior, odd, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            // Only a repair writes a claimed slot, and only once its claimer is dead.
            Err(seen) if seen == odd || classify(seen, seq) != SlotState::NotYet => {
                return Err(ShmError::Timeout("a claimed slot (it was repaired as a dead publisher's)"));
            }
            Err(_) => {}
        }
        spins += 1;
        if spins < 1000 {
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        if now > deadline {
            return Err(ShmError::Timeout(
                "a slot whose previous message is still being written (a loan held a whole lap?)",
            ));
        }
        if now.duration_since(last_repair) > REPAIR_EVERY && seq >= cap {
            repair_hole(mem, seq - cap);
            last_repair = now;
        }
        std::thread::yield_now();
    }
}

/// How often a party stuck behind an unwritten slot looks whether its writer died.
const REPAIR_EVERY: Duration = Duration::from_millis(10);

/// Repairs the hole at `seq` if whoever claimed it died before committing it: commits
/// it as a slot to pass over ([`skip_slot`]). Returns true when `seq` is readable
/// (committed, or repaired now).
///
/// A hole is claimed (below the tail) but not committed. Its claimer is alive if a
/// live listed publisher's claim line covers it (lines are written before the tail's
/// compare-and-swap, so whoever sees the tail past `seq` sees the line), or if it is an
/// unlisted publisher, which holds the repair lock for its whole publish. So under the
/// repair lock, with no live line covering `seq`, nobody will write it: it is taken
/// (its stamp made odd, unless the dead claimer got that far) and skipped. The next
/// lap's writer of the slot waits for a committed stamp, so the repair writes alone.
/// A hole whose slot still holds an unfinished older lap is that lap's writer's: that
/// one (a few laps back at most) is looked at instead.
fn repair_hole(mem: &RingMemory, seq: u64) -> bool {
    let cap = mem.layout.capacity as u64;
    let mut at = seq;
    for _ in 0..4 {
        if mem.tail() <= at {
            return false;
        }
        let stamp = mem.stamp(at).load(Ordering::Acquire);
        if classify(stamp, at) != SlotState::NotYet {
            return at == seq;
        }
        let odd = committed_stamp(at).wrapping_sub(1);
        if stamp == odd || stamp == mem.prior_stamp(at) {
            break;
        }
        if at < cap {
            return false;
        }
        at -= cap;
    }
    if !try_repair_lock(mem) {
        return false;
    }
    let repaired = !live_claimer(mem, at) && {
        let stamp = mem.stamp(at);
        let odd = committed_stamp(at).wrapping_sub(1);
        let seen = stamp.load(Ordering::Acquire);
        (seen == odd
            || (seen == mem.prior_stamp(at)
                && stamp.compare_exchange(seen, odd, Ordering::AcqRel, Ordering::Acquire).is_ok()))
            && {
                fence(Ordering::Release);
                skip_slot(mem, at);
                true
            }
    };
    release_repair_lock(mem);
    if repaired {
        notify_subscribers(mem, None);
    }
    at == seq && classify(mem.stamp(seq).load(Ordering::Acquire), seq) != SlotState::NotYet
}

/// Whether a live listed publisher's claim line covers `seq`.
fn live_claimer(mem: &RingMemory, seq: u64) -> bool {
    let odd = committed_stamp(seq).wrapping_sub(1);
    (0..MAX_LISTED_PUBLISHERS).any(|line| {
        let pid = mem.word(offsets::PUBLISHERS + 4 * line as usize).load(Ordering::Acquire);
        let first = mem.claim_first(line).load(Ordering::Acquire);
        pid != 0
            && first != 0
            && odd.wrapping_sub(first) / 2 < mem.claim_count(line).load(Ordering::Acquire)
            && process_alive(pid)
    })
}

/// Wakes parked subscribers ([`wake_parked`]), then, if one parked on this thread's CPU,
/// yields to it ([`same_cpu`]).
fn notify_subscribers(mem: &RingMemory, own: Option<u32>) {
    if wake_parked(mem, own) {
        same_cpu::woke_here();
    }
}

/// Wakes parked subscribers if `waiters` or `bells` counts any; whether one of them
/// parked on this thread's CPU. If a futex wake reached nobody, a subscriber may have
/// died while parked and left its count behind (which would cost every later publish a
/// syscall): take back the counts of dead parked entries, at most every 100 ms.
///
/// `own`: the publishing hub's own reader, which never reads what the hub publishes:
/// its bell is not rung for it. (The futex wakes every reader parked on it.)
fn wake_parked(mem: &RingMemory, own: Option<u32>) -> bool {
    let waiters = mem.word(offsets::WAITERS).load(Ordering::SeqCst) != 0;
    let bells = mem.word(offsets::BELLS).load(Ordering::SeqCst) != 0;
    if !waiters && !bells {
        return false;
    }
    let cpu = same_cpu::current_cpu();
    let mut woke_here = false;
    if waiters {
        woke_here = (0..mem.layout.max_subscribers).any(|e| {
            Some(e) != own && mem.sub_parked(e).load(Ordering::Relaxed) == 1 && same_cpu::parked_on(mem, e, cpu)
        });
        mem.word(offsets::NOTIFY).fetch_add(1, Ordering::SeqCst);
        if futex::wake_all(mem.word(offsets::NOTIFY)) == 0 {
            reap_dead_parked(mem);
        }
    }
    if bells {
        woke_here |= bell::ring_waiting(mem, own, cpu);
    }
    woke_here
}

/// Wakes parked subscribers after commits that did not ([`Loan::commit_unannounced`]):
/// a fence that orders the stamps stored before it before the `waiters` load
/// (Dekker), then a wake-up if anyone is parked (see [`notify_subscribers`] for `own`).
fn announce_but(mem: &RingMemory, own: Option<u32>) {
    fence(Ordering::SeqCst);
    if mem.word(offsets::WAITERS).load(Ordering::SeqCst) != 0 || mem.word(offsets::BELLS).load(Ordering::SeqCst) != 0 {
        notify_subscribers(mem, own);
    }
}

fn reap_dead_parked(mem: &RingMemory) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = process_millis();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 100 || LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    for i in 0..mem.layout.max_subscribers {
        let pid = mem.sub_pid(i).load(Ordering::Acquire);
        if pid != 0 && mem.sub_parked(i).load(Ordering::Acquire) != 0 && !process_alive(pid) {
            // (A count in `bells` is taken back with the wait: see `bell`.)
            let count = match mem.sub_parked(i).swap(0, Ordering::AcqRel) {
                1 => Some(offsets::WAITERS),
                bell::WAITING => Some(offsets::BELLS),
                _ => None,
            };
            if let Some(count) = count {
                let _ = mem.word(count).fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
            let _ = mem.sub_pid(i).compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Wakes blocked publishers if `space_waiters` counts any. Publishers have no table
/// entry to reap, so a count left by a publisher that died blocked is recognised by its
/// effect: wakes that reach nobody for 200 ms. Then it is reset; a live publisher caught
/// between counting itself and parking at that instant loses one wake-up and resumes
/// after its park slice (50 ms).
fn notify_publishers(mem: &RingMemory) {
    static FIRST_MISS_MS: AtomicU64 = AtomicU64::new(0);
    let count = mem.word(offsets::SPACE_WAITERS);
    if count.load(Ordering::SeqCst) == 0 {
        return;
    }
    mem.word(offsets::SPACE).fetch_add(1, Ordering::SeqCst);
    if futex::wake_all(mem.word(offsets::SPACE)) > 0 {
        FIRST_MISS_MS.store(0, Ordering::Relaxed);
        return;
    }
    let now = process_millis();
    match FIRST_MISS_MS.load(Ordering::Relaxed) {
        0 => FIRST_MISS_MS.store(now, Ordering::Relaxed),
        first if now.saturating_sub(first) > 200 => {
            count.store(0, Ordering::SeqCst);
            FIRST_MISS_MS.store(0, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Milliseconds since this process first asked (never 0).
fn process_millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Takes the repair lock for `pid`, stealing it from a dead holder (whose repair, or
/// unlisted publish, was cut short: what it left is a hole like any other).
fn acquire_repair_lock(mem: &RingMemory, pid: u32, timeout: Duration) -> Result<()> {
    let mut spins = 0u32;
    let mut deadline = None;
    loop {
        if try_repair_lock_as(mem, pid, spins >= 256) {
            return Ok(());
        }
        spins += 1;
        if spins < 256 {
            std::hint::spin_loop();
            continue;
        }
        let d = *deadline.get_or_insert_with(|| Instant::now() + timeout);
        if Instant::now() > d {
            return Err(ShmError::Timeout("the repair lock (held by another process's unlisted publisher)"));
        }
        std::thread::yield_now();
    }
}

/// Takes the repair lock if it is free or its holder is dead.
fn try_repair_lock(mem: &RingMemory) -> bool {
    try_repair_lock_as(mem, std::process::id(), true)
}

fn try_repair_lock_as(mem: &RingMemory, pid: u32, steal: bool) -> bool {
    let lock = mem.word(offsets::REPAIR_LOCK);
    match lock.compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => true,
        Err(holder) => {
            steal
                && holder != pid
                && !process_alive(holder)
                && lock.compare_exchange(holder, pid, Ordering::Acquire, Ordering::Relaxed).is_ok()
        }
    }
}

fn release_repair_lock(mem: &RingMemory) {
    mem.word(offsets::REPAIR_LOCK).store(0, Ordering::Release);
}

/// How far a subscriber at `cursor` (its low 32 bits) is behind `tail`: none if it is
/// past it, as it is when other publishers moved the tail on since `tail` was read.
fn lag_behind(tail: u64, cursor: u32) -> u64 {
    ((tail as u32).wrapping_sub(cursor) as i32).max(0) as u64
}

/// Whether publishers (but those of hub entry `exclude`) hold back for entry `i`: it is
/// taken, and no work group's member (they hold back for its group's entry instead).
fn holds_back(mem: &RingMemory, i: u32, exclude: Option<u32>) -> bool {
    Some(i) != exclude && mem.sub_pid(i).load(Ordering::Acquire) != 0 && !mem.is_member(i)
}

/// How many messages the slowest live subscriber has not read yet.
fn slowest_lag(mem: &RingMemory, tail: u64, exclude: Option<u32>) -> u64 {
    (0..mem.layout.max_subscribers)
        .filter(|&i| holds_back(mem, i, exclude))
        .map(|i| lag_behind(tail, mem.sub_cursor(i).load(Ordering::Acquire)))
        .max()
        .unwrap_or(0)
}

/// How many messages from `tail` on every live subscriber (but `exclude`) has room for:
/// what is left of the ring before the slowest is a whole ring behind and, with
/// `credits`, of what the subscribers holding publishers to credits granted.
fn room_for(mem: &RingMemory, tail: u64, exclude: Option<u32>, credits: bool) -> u64 {
    let cap = mem.layout.capacity as u64;
    let mut room = cap;
    for i in 0..mem.layout.max_subscribers {
        if !holds_back(mem, i, exclude) {
            continue;
        }
        let lag = lag_behind(tail, mem.sub_cursor(i).load(Ordering::Acquire));
        room = room.min(cap - lag.min(cap));
        if credits && mem.sub_credited(i).load(Ordering::Acquire) != 0 {
            // Granted up to `limit`: what is left of it (none once passed, in 32 bits).
            let left = mem.sub_credit_limit(i).load(Ordering::Acquire).wrapping_sub(tail as u32) as i32;
            room = room.min(left.max(0) as u64);
        }
    }
    room
}

/// Whether the next message, `tail`, has room (see [`room_for`]).
fn has_room(mem: &RingMemory, tail: u64, exclude: Option<u32>, credits: bool) -> bool {
    room_for(mem, tail, exclude, credits) > 0
}

/// Frees table entries whose process is gone, so that they stop holding a `Block`
/// publisher back. Returns how many were freed.
fn reap_dead_subscribers(mem: &RingMemory) -> usize {
    (0..mem.layout.max_subscribers).filter(|&i| reap_if_dead(mem, i, mem.sub_pid(i).load(Ordering::Acquire))).count()
}

/// Frees subscriber entry `i`, held by `pid`, if that process is gone; whether it did.
/// A work group's entry goes only with its last member (see [`group::reap`]).
fn reap_if_dead(mem: &RingMemory, i: u32, pid: u32) -> bool {
    if pid == 0 || process_alive(pid) {
        return false;
    }
    if mem.sub_group(i).load(Ordering::Acquire) == GROUP_ENTRY {
        return group::reap(mem, i, pid);
    }
    mem.sub_pid(i).compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// `Block`: waits until the slowest live subscriber is less than a ring behind `tail`
/// and every subscriber holding publishers to credits granted `tail` (see [`room_for`]).
/// Ok(false) if there was room at once, Ok(true) if it had to wait.
fn wait_for_space(mem: &RingMemory, tail: u64, deadline: Instant, exclude: Option<u32>) -> Result<bool> {
    wait_until(mem, deadline, "space in the ring (a subscriber is not reading, or not granting credits)", || {
        has_room(mem, tail, exclude, true)
    })
}

/// Waits until `ready` (room a publisher needs, which subscribers make by reading):
/// spins for [`SPACE_SPIN`], then parks on the `space` futex, which subscribers ring as
/// they move on; dead subscribers' entries are freed on the way. Ok(false) if it was
/// ready at once.
fn wait_until(mem: &RingMemory, deadline: Instant, what: &'static str, ready: impl Fn() -> bool) -> Result<bool> {
    if ready() {
        return Ok(false);
    }
    let start = Instant::now();
    let mut spins = 0u32;
    let mut last_reap = start;
    loop {
        if ready() {
            return Ok(true);
        }
        let now = Instant::now();
        if now > deadline {
            return Err(ShmError::Timeout(what));
        }
        if now.duration_since(last_reap) > Duration::from_millis(20) {
            reap_dead_subscribers(mem);
            last_reap = now;
            continue;
        }
        if now.duration_since(start) < SPACE_SPIN {
            spins = spins.wrapping_add(1);
            // The reader that makes the room may be waiting for this CPU (as in
            // `spin_until_readable`).
            if spins.is_multiple_of(16) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        let space = mem.word(offsets::SPACE);
        let count = mem.word(offsets::SPACE_WAITERS);
        count.fetch_add(1, Ordering::SeqCst);
        let seen = space.load(Ordering::SeqCst);
        if !ready() {
            futex::wait(space, seen, PARK_SLICE.min(deadline.saturating_duration_since(now)));
        }
        let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// How long a publisher spins for room before it parks: a reader on another CPU makes
/// room within it when it is keeping up. (Woken on each slot read rather than once a
/// batch was: a publisher left asleep for a batch halved the rate of a stream between
/// two CPUs.)
const SPACE_SPIN: Duration = Duration::from_micros(20);

/// Whether pool units up to `end` can be handed out: every live subscriber (but
/// `exclude`) that has not read everything below `tail` is less than a whole pool
/// behind `end` from its pool cursor (what it has yet to read lies past that cursor).
fn pool_room(mem: &RingMemory, end: u32, tail: u64, exclude: Option<u32>) -> bool {
    let pool_units = mem.layout.pool_units();
    (0..mem.layout.max_subscribers).all(|i| {
        !holds_back(mem, i, exclude)
            || mem.sub_cursor(i).load(Ordering::Acquire) == tail as u32
            || end.wrapping_sub(mem.sub_pool_cursor(i).load(Ordering::Acquire)) <= pool_units
    })
}

/// Whether every live subscriber (but `exclude`) is past message `seq`, or the ring
/// a whole lap past it (whoever reaches its slot now finds a later message): the side
/// path lets go of it then. An entry whose process is gone is freed on the way.
fn passed_by_all(mem: &RingMemory, seq: u64, exclude: Option<u32>) -> bool {
    if mem.tail().saturating_sub(seq) > mem.layout.capacity as u64 {
        return true;
    }
    let past = seq.wrapping_add(1) as u32;
    (0..mem.layout.max_subscribers).all(|i| {
        let pid = mem.sub_pid(i).load(Ordering::Acquire);
        !holds_back(mem, i, exclude)
            || (mem.sub_cursor(i).load(Ordering::Acquire).wrapping_sub(past) as i32) >= 0
            || reap_if_dead(mem, i, pid)
    })
}

/// Counters of one subscriber handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    pub received: u64,
    pub received_bytes: u64,
    /// Messages this subscriber missed because the publisher lapped it.
    pub lapped: u64,
    /// Times it skipped ahead.
    pub lap_events: u64,
    /// Slots it passed over: sequence numbers that carry no message (a loan dropped,
    /// or a hole a dead publisher left, repaired).
    pub passed: u64,
    /// Messages it passed over unread because their time to live had run out.
    pub expired: u64,
}

/// One receiving cursor over a ring, registered in the segment's subscriber table.
#[derive(Debug)]
pub struct Subscriber {
    mem: RingMemory,
    index: u32,
    cursor: u64,
    stats: SubscriberStats,
    /// Messages read since the tail was last compared with the cursor (see `try_recv`).
    since_tail_check: u32,
    /// The entry went to another reader ([`hand_over`](Self::hand_over)): dropping
    /// this one keeps it.
    handed_over: bool,
    /// The work group's entry, for a member of one ([`join`](Self::join)): its cursor
    /// is the one read, and moved by a compare-and-swap.
    group: Option<u32>,
    /// The pool cursor past the pooled message read last, stored once it is claimed.
    pool_after: Option<u32>,
    /// Whether spinning has paid lately (see [`SpinHistory`]).
    spins: SpinHistory,
    /// The expiry word of the message delivered last (0: none).
    last_expiry: u32,
    /// Passes over what bridges brought ([`pass_over_bridged`](Self::pass_over_bridged)).
    pass_over_bridged: bool,
    /// What it waits on once spinning is over (made at the first wait; `None` for a
    /// segment without a directory, where it parks on the futex).
    bell: std::sync::OnceLock<Option<bell::Bell>>,
}

impl Subscriber {
    /// Registers a subscriber that starts at the current tail (late joiners see only
    /// what is published after they join).
    pub fn new(seg: Arc<Segment>) -> Result<Self> {
        let mem = RingMemory::new(seg);
        let index = claim_subscriber_entry(&mem)?;
        let cursor = mem.tail();
        mem.sub_cursor(index).store(cursor as u32, Ordering::Release);
        Ok(Self {
            mem,
            index,
            cursor,
            stats: SubscriberStats::default(),
            since_tail_check: 0,
            handed_over: false,
            group: None,
            pool_after: None,
            spins: SpinHistory::default(),
            last_expiry: 0,
            pass_over_bridged: false,
            bell: std::sync::OnceLock::new(),
        })
    }

    /// Registers a member of the work group `name` (1 to 32 bytes; made if it is not
    /// there yet, at the tail): the group's members share its messages, each read by
    /// one of them (see [`group`]). What a member publishes itself on this ring is
    /// shared too, so it may come back to it.
    pub fn join(seg: Arc<Segment>, name: &str) -> Result<Self> {
        group::check_name(name)?;
        let mut sub = Self::new(seg)?;
        let (group, cursor) = group::join(&sub.mem, sub.index, name)?;
        sub.group = Some(group);
        sub.cursor = cursor;
        Ok(sub)
    }

    /// The work group's entry, for a member of one.
    pub fn group(&self) -> Option<u32> {
        self.group
    }

    /// Gives this subscriber's entry, with its cursor, to a reader whose cursor lives
    /// elsewhere (the Node binding's): `(index, cursor)`. Nothing published meanwhile
    /// is skipped or counted read, as it would be between releasing this entry and
    /// claiming another at the tail.
    pub fn hand_over(mut self) -> (u32, u64) {
        debug_assert!(self.group.is_none(), "a work group's member reads at its group's cursor");
        self.mem.sub_cursor(self.index).store(self.cursor as u32, Ordering::Release);
        self.handed_over = true;
        drop(self.bell.take()); // (the entry's next reader makes its own)
        (self.index, self.cursor)
    }

    /// This subscriber's table entry.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The next sequence number it will read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Holds publishers to credits: `n` more messages (see [`table::grant`]); returns
    /// what is left.
    pub fn grant_credits(&self, n: u32) -> u64 {
        table::grant(&self.mem.seg, self.index, n)
    }

    /// The credits left, `None` if this subscriber never granted any.
    pub fn credits(&self) -> Option<u64> {
        table::credits(&self.mem.seg, self.index)
    }

    /// This handle's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// Copies the next message into `out` (replacing its contents); its sequence
    /// number, or `None` if nothing new has been published.
    pub fn try_recv(&mut self, out: &mut Vec<u8>) -> Option<u64> {
        self.try_recv_then(out, |_| {})
    }

    /// [`try_recv`](Self::try_recv), calling `then` with the copied message before the
    /// cursor moves past it: while a sole, flow-controlled publisher waits for the
    /// cursor, what the message refers to (bytes it keeps elsewhere in the segment)
    /// is still there.
    pub fn try_recv_then(&mut self, out: &mut Vec<u8>, then: impl FnOnce(&mut Vec<u8>)) -> Option<u64> {
        let mut then = Some(then);
        loop {
            self.look_at_group();
            let seq = self.cursor;
            let stamp = self.mem.stamp(seq).load(Ordering::Acquire);
            match classify(stamp, seq) {
                SlotState::NotYet => {
                    // (The tail once a ring's worth of polls too, not on each: its line
                    // is the publishers' to claim from, and a load here would make
                    // every claim fetch it back.)
                    self.since_tail_check += 1;
                    if self.since_tail_check >= self.mem.layout.capacity
                        && self.mem.tail() > seq + self.mem.layout.capacity as u64
                    {
                        // So far behind that the 32-bit stamp wrapped: lapped.
                        self.skip_ahead();
                        continue;
                    }
                    return None;
                }
                SlotState::Lapped => {
                    self.skip_ahead();
                    continue;
                }
                SlotState::Ready => {
                    // Stamps hold 31 bits of the sequence number: a reader stopped for a
                    // multiple of 2^31 messages would see a matching stamp on a newer
                    // message. Once a ring's worth of reads, compare with the tail.
                    self.since_tail_check += 1;
                    if self.since_tail_check >= self.mem.layout.capacity {
                        self.since_tail_check = 0;
                        if self.mem.tail() > seq + self.mem.layout.capacity as u64 {
                            self.skip_ahead();
                            continue;
                        }
                    }
                    let slot = self.mem.layout.slot_offset(seq);
                    let origin = self.mem.word(slot + offsets::SLOT_ORIGIN).load(Ordering::Relaxed);
                    if (self.group.is_none() && origin & !offsets::BRIDGED == self.index + 1)
                        || (self.pass_over_bridged && origin & offsets::BRIDGED != 0)
                    {
                        // Our own hub published it, or a bridge brought it and this
                        // reader forwards: not ours to receive (unless the slot was
                        // overwritten meanwhile, then we were lapped).
                        fence(Ordering::Acquire);
                        if self.mem.stamp(seq).load(Ordering::Relaxed) != stamp {
                            self.skip_ahead();
                        } else {
                            self.advance(seq + 1);
                        }
                        continue;
                    }
                    let len_word = self.mem.word(slot + offsets::SLOT_LEN).load(Ordering::Relaxed);
                    // (Read before the stamp's re-check, as the payload is.)
                    let expiry = self.mem.word(slot + offsets::SLOT_EXPIRY).load(Ordering::Relaxed);
                    if len_word == SKIP_LEN {
                        // No message (a claim given up or repaired).
                        self.pass_over(seq, stamp);
                        continue;
                    }
                    if len_word > self.mem.layout.slot_size {
                        let taken = if len_word > self.mem.layout.pool_size {
                            self.take_side(seq, stamp, slot, len_word, out)
                        } else {
                            self.take_pooled(seq, stamp, slot, len_word, out)
                        };
                        if !taken || !self.deliver(seq, expiry, out, &mut then) {
                            continue;
                        }
                        return Some(seq);
                    }
                    let len = len_word as usize;
                    out.clear();
                    out.reserve(len);
                    // SAFETY: the source is `len <= slot_size` bytes of this slot's
                    // payload inside the mapping; `out` has capacity for `len` bytes.
                    // A concurrent overwrite can only make the bytes stale, which the
                    // stamp re-check below detects (the copy is of plain bytes, so a
                    // torn copy is harmless once discarded).
                    unsafe {
                        std::ptr::copy_nonoverlapping(self.mem.payload_ptr(seq), out.as_mut_ptr(), len);
                        out.set_len(len);
                    }
                    fence(Ordering::Acquire);
                    if self.mem.stamp(seq).load(Ordering::Relaxed) != stamp {
                        self.skip_ahead();
                        continue;
                    }
                    if !self.deliver(seq, expiry, out, &mut then) {
                        continue;
                    }
                    return Some(seq);
                }
            }
        }
    }

    /// Counts message `seq`, now in `out`, as received, hands it to `then`, and moves
    /// on; or, if its time to live ran out (`expiry`), counts it expired and moves on
    /// (false).
    fn deliver<F: FnOnce(&mut Vec<u8>)>(
        &mut self,
        seq: u64,
        expiry: u32,
        out: &mut Vec<u8>,
        then: &mut Option<F>,
    ) -> bool {
        if expiry != 0 && expired(expiry, now_ms32()) {
            if self.advance(seq + 1) {
                self.stats.expired += 1;
            }
            return false;
        }
        self.last_expiry = expiry;
        if self.group.is_some() {
            // Claimed before `then` (which may let the slot go), or another member has it.
            if !self.advance(seq + 1) {
                return false;
            }
            self.count_received(out, then);
            return true;
        }
        self.count_received(out, then);
        self.advance(seq + 1);
        true
    }

    fn count_received<F: FnOnce(&mut Vec<u8>)>(&mut self, out: &mut Vec<u8>, then: &mut Option<F>) {
        self.stats.received += 1;
        self.stats.received_bytes += out.len() as u64;
        if let Some(then) = then.take() {
            then(out);
        }
    }

    /// Copies pooled message `seq` (`len` bytes; its slot at byte `slot`, whose stamp was
    /// `stamp`) into `out`, checks that neither its slot nor its pool units were
    /// overwritten meanwhile (a lap), and moves its pool cursor past it. True when
    /// copied (for [`deliver`](Self::deliver)); false when lapped (skipped ahead) or when
    /// the slot names no range of the pool (passed over).
    fn take_pooled(&mut self, seq: u64, stamp: u32, slot: usize, len: u32, out: &mut Vec<u8>) -> bool {
        let layout = self.mem.layout;
        let unit = self.mem.word(slot + offsets::SLOT_PAYLOAD).load(Ordering::Relaxed);
        let units = len.div_ceil(POOL_UNIT);
        if unit % layout.pool_units() + units > layout.pool_units() {
            self.pass_over(seq, stamp);
            return false;
        }
        out.clear();
        out.reserve(len as usize);
        // SAFETY: `len` bytes from pool unit `unit` lie inside the pool (checked above:
        // a range never wraps the pool's end), and `out` has capacity for them. A
        // concurrent overwrite can only make them stale, which the checks below detect
        // (a copy of plain bytes, harmless once discarded).
        unsafe {
            std::ptr::copy_nonoverlapping(self.mem.pool_ptr(unit), out.as_mut_ptr(), len as usize);
            out.set_len(len as usize);
        }
        fence(Ordering::Acquire);
        // Overwritten if the slot was, or if pool units were handed out a whole pool
        // past this message's first (the head moves before anything is written there).
        let head = self.mem.pool_head().load(Ordering::Relaxed);
        if self.mem.stamp(seq).load(Ordering::Relaxed) != stamp || head.wrapping_sub(unit) > layout.pool_units() {
            self.skip_ahead();
            return false;
        }
        self.pool_after = Some(unit.wrapping_add(units));
        true
    }

    /// Fetches side-path message `seq` (`len` bytes; its slot at byte `slot`, whose stamp
    /// was `stamp`) into `out`: reads the publisher's token from the slot, checks that the
    /// slot was not overwritten meanwhile, and asks the publisher. True when copied;
    /// false when lapped: the slot was overwritten (skipped ahead), or the publisher no
    /// longer holds the message (it let it go under `DropOld`, or it is gone: counted
    /// and moved past).
    fn take_side(&mut self, seq: u64, stamp: u32, slot: usize, len: u32, out: &mut Vec<u8>) -> bool {
        let lo = self.mem.word(slot + offsets::SLOT_PAYLOAD).load(Ordering::Relaxed);
        let hi = self.mem.word(slot + offsets::SLOT_PAYLOAD + 4).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.mem.stamp(seq).load(Ordering::Relaxed) != stamp {
            self.skip_ahead();
            return false;
        }
        let token = u64::from(lo) | u64::from(hi) << 32;
        let message = self.mem.seg.dir().and_then(|dir| side::fetch(dir, token, seq, len as usize));
        if message.and_then(|m| m.read_into(out).ok()).is_none() {
            if self.advance(seq + 1) {
                self.stats.lapped += 1;
                self.stats.lap_events += 1;
            }
            return false;
        }
        true
    }

    /// Moves past slot `seq`, which holds no message (its stamp was `stamp`), counting it
    /// as passed over; or, if it was overwritten meanwhile, skips ahead (lapped).
    fn pass_over(&mut self, seq: u64, stamp: u32) {
        fence(Ordering::Acquire);
        if self.mem.stamp(seq).load(Ordering::Relaxed) != stamp {
            self.skip_ahead();
        } else if self.advance(seq + 1) {
            self.stats.passed += 1;
        }
    }

    /// Whether `try_recv` would return something (or skip ahead) right now.
    pub fn readable(&self) -> bool {
        readable_at(&self.mem, self.reading_at())
    }

    /// Where it reads next: its cursor, or a member's group's now (which only ever
    /// moves forward, by less than 2^32 between looks: its low word is all there is).
    fn reading_at(&self) -> u64 {
        match self.group {
            None => self.cursor,
            Some(g) => {
                self.cursor + u64::from(self.mem.sub_cursor(g).load(Ordering::Acquire).wrapping_sub(self.cursor as u32))
            }
        }
    }

    fn look_at_group(&mut self) {
        self.cursor = self.reading_at();
    }

    /// Waits until a message is readable: spins for `spin` (while spinning pays, see
    /// [`SpinHistory`]), then waits on its bell ([`bell`]: only a publish past its
    /// cursor rings it, and not one of its own hub's), or parks on the futex where the
    /// segment has no directory. Returns false on timeout, or once `cancel` is true
    /// (looked at least every 50 ms).
    pub fn wait(&self, spin: Duration, timeout: Option<Duration>, cancel: &AtomicBool) -> bool {
        let (cursor, spin) = (self.reading_at(), self.spins.budget(spin));
        let bell = self.bell.get_or_init(|| bell::Bell::new(self.mem.seg.clone(), self.index).ok().flatten());
        let Some(bell) = bell else {
            return wait_readable(&self.mem, Some(self.index), cursor, spin, timeout, cancel, &self.spins);
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        if let Some(done) = spin_until_readable(&self.mem, cursor, spin, cancel, &self.spins) {
            return done;
        }
        loop {
            let now = Instant::now();
            let Some(slice) = park_slice(deadline, now) else { return false };
            match bell.arm(cursor) {
                bell::Armed::Readable => return true,
                // (The futex path waits at holes, and repairs them.)
                bell::Armed::AtHole => {
                    let left = deadline.map(|d| d.saturating_duration_since(now));
                    return wait_readable(
                        &self.mem,
                        Some(self.index),
                        cursor,
                        Duration::ZERO,
                        left,
                        cancel,
                        &self.spins,
                    );
                }
                bell::Armed::Waiting => {}
            }
            bell.wait(slice);
            bell.settle();
            if readable_at(&self.mem, cursor) {
                return true;
            }
            if cancel.load(Ordering::SeqCst) {
                return false;
            }
        }
    }

    /// When the message delivered last stops being worth reading (its publisher's
    /// `ttlMs`), in ns since the Unix epoch; `None` if it has no time to live.
    pub fn last_expiry_ns(&self) -> Option<u64> {
        expiry_word_ns(self.last_expiry)
    }

    /// This reader forwards what it reads (a bridge's): it passes over what a bridge
    /// brought into the segment ([`Publisher::set_bridged`]), so that no message goes
    /// round a cycle of bridges. (As NATS routes do not pass on what came from a route:
    /// a message crosses at most one bridge into a segment and one out.)
    pub fn pass_over_bridged(&mut self, pass: bool) {
        self.pass_over_bridged = pass;
    }

    /// A handle that can wait for this subscriber's next message from another thread.
    pub fn waiter(&self) -> RingWaiter {
        RingWaiter { mem: self.mem.clone(), entry: Some(self.index), spins: SpinHistory::default() }
    }

    fn skip_ahead(&mut self) {
        let (from, next) = (self.cursor, resync_cursor(self.cursor, self.mem.tail(), self.mem.layout.capacity));
        if self.advance(next) {
            self.stats.lapped += next - from;
            self.stats.lap_events += 1;
        }
    }

    /// Moves the cursor to `next` (and the pool cursor past the pooled message read, if
    /// any). A member claims with a compare-and-swap of its group's cursor: false when
    /// another member moved it first (then what was read is that one's).
    fn advance(&mut self, next: u64) -> bool {
        let pool_after = self.pool_after.take();
        let entry = match self.group {
            None => {
                self.mem.sub_cursor(self.index).store(next as u32, Ordering::SeqCst);
                self.index
            }
            Some(g) => {
                let moved = self.mem.sub_cursor(g).compare_exchange(
                    self.cursor as u32,
                    next as u32,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                if moved.is_err() {
                    return false;
                }
                g
            }
        };
        self.cursor = next;
        if let Some(unit) = pool_after {
            // (Members may store theirs out of order: one behind only holds publishers
            // back a little longer.)
            self.mem.sub_pool_cursor(entry).store(unit, Ordering::Release);
        }
        notify_publishers(&self.mem);
        true
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        drop(self.bell.take()); // (before the entry goes to another reader: the bell is the entry's)
        release_subscriber_entry(&self.mem, self.index);
    }
}

/// Waits for readability of a cursor owned elsewhere (the Node binding's waiter thread
/// waits on behalf of a subscriber whose cursor lives in JavaScript).
#[derive(Debug, Clone)]
pub struct RingWaiter {
    mem: RingMemory,
    entry: Option<u32>,
    spins: SpinHistory,
}

impl RingWaiter {
    /// A waiter over `seg` for the subscriber holding table `entry`.
    pub fn new(seg: Arc<Segment>, entry: Option<u32>) -> Self {
        Self { mem: RingMemory::new(seg), entry, spins: SpinHistory::default() }
    }

    /// As [`Subscriber::wait`], for the reader at `cursor`.
    pub fn wait(&self, cursor: u64, spin: Duration, timeout: Option<Duration>, cancel: &AtomicBool) -> bool {
        wait_readable(&self.mem, self.entry, cursor, self.spins.budget(spin), timeout, cancel, &self.spins)
    }

    /// Wakes everything parked on this ring's notify word (used to cancel a wait).
    pub fn wake_all(&self) {
        self.mem.word(offsets::NOTIFY).fetch_add(1, Ordering::SeqCst);
        futex::wake_all(self.mem.word(offsets::NOTIFY));
    }
}

fn readable_at(mem: &RingMemory, cursor: u64) -> bool {
    // SeqCst: on the parking path this is the subscriber half of the Dekker handshake.
    classify(mem.stamp(cursor).load(Ordering::SeqCst), cursor) != SlotState::NotYet
        || mem.tail() > cursor + mem.layout.capacity as u64
}

/// How long a wait may sleep at a time now: until `deadline`, at most [`PARK_SLICE`];
/// `None` once the deadline passed.
fn park_slice(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    match deadline {
        Some(d) if now >= d => None,
        Some(d) => Some((d - now).min(PARK_SLICE)),
        None => Some(PARK_SLICE),
    }
}

/// Spins for `spin` until the message at `cursor` is readable (`Some(true)`) or `cancel`
/// (`Some(false)`); `None` once the spin ran out.
fn spin_until_readable(
    mem: &RingMemory,
    cursor: u64,
    spin: Duration,
    cancel: &AtomicBool,
    spins: &SpinHistory,
) -> Option<bool> {
    let start = Instant::now();
    // Spin: cheap while messages are flowing, and no syscall on either side.
    let mut i = 0u32;
    loop {
        if readable_at(mem, cursor) {
            if i > 0 {
                spins.record(true);
            }
            return Some(true);
        }
        if cancel.load(Ordering::Relaxed) {
            return Some(false);
        }
        if spin.is_zero() {
            return None;
        }
        i = i.wrapping_add(1);
        if i.is_multiple_of(64) {
            if start.elapsed() >= spin {
                spins.record(false);
                return None;
            }
            // The publisher may be waiting for this CPU (a thread of this process, a
            // process pinned beside this one): a spin that kept it would only delay
            // the message it waits for. With nothing else runnable, this returns at once.
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

fn wait_readable(
    mem: &RingMemory,
    entry: Option<u32>,
    cursor: u64,
    spin: Duration,
    timeout: Option<Duration>,
    cancel: &AtomicBool,
    spins: &SpinHistory,
) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Some(done) = spin_until_readable(mem, cursor, spin, cancel, spins) {
        return done;
    }
    // Park. Counting ourselves in `waiters` before the re-check pairs with the
    // publisher's SeqCst stamp store + `waiters` load: one of the two sees the other.
    // `parked` in our entry lets a waker take the count back if we die parked.
    let notify = mem.word(offsets::NOTIFY);
    let waiters = mem.word(offsets::WAITERS);
    let mut hole_since = None;
    let mut last_repair = Instant::now();
    loop {
        let now = Instant::now();
        let Some(slice) = park_slice(deadline, now) else { return false };
        // Published past the cursor but not at it: a hole, whose publisher is writing
        // it (preempted, perhaps, or holding a loan) or died. For its first
        // HOLE_UNCOUNTED, wait without a count in `waiters`: counted, every publish of
        // the other publishers meanwhile would pay a wake-up syscall (a third of three
        // publishers' rate, measured), and the hole's own commit comes in turn.
        if mem.tail() > cursor {
            let since = *hole_since.get_or_insert(now);
            if now.duration_since(last_repair) >= REPAIR_EVERY {
                last_repair = now;
                if repair_hole(mem, cursor) {
                    return true;
                }
            }
            if now.duration_since(since) < HOLE_UNCOUNTED {
                std::thread::sleep(HOLE_POLL.min(slice));
                if readable_at(mem, cursor) {
                    return true;
                }
                if cancel.load(Ordering::SeqCst) {
                    return false;
                }
                continue;
            }
        } else {
            hole_since = None;
        }
        if let Some(e) = entry {
            same_cpu::note_parking(mem, e);
            mem.sub_parked(e).store(1, Ordering::SeqCst);
        }
        waiters.fetch_add(1, Ordering::SeqCst);
        let seen = notify.load(Ordering::SeqCst);
        let ready = readable_at(mem, cursor);
        let cancelled = cancel.load(Ordering::SeqCst);
        if !ready && !cancelled {
            futex::wait(notify, seen, slice);
        }
        let _ = waiters.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if let Some(e) = entry {
            mem.sub_parked(e).store(0, Ordering::SeqCst);
        }
        if ready || readable_at(mem, cursor) {
            return true;
        }
        if cancelled || cancel.load(Ordering::SeqCst) {
            return false;
        }
    }
}

/// Whether a reader's spin has paid lately. A spin pays when the next message comes
/// within it (a publisher on another CPU, a fast ping-pong); when it comes later (a
/// round trip through a server, a slow stream) the spin only takes a CPU from whoever
/// is producing that message. So a reader whose spins missed [`SPIN_MISSES`] times in
/// a row parks at once, spinning again one wait in [`SPIN_PROBE_EVERY`] to see whether
/// messages come sooner now. (Per reader, not shared: a clone starts afresh.)
#[derive(Debug, Default)]
struct SpinHistory {
    misses: AtomicU32,
    waits: AtomicU32,
}

const SPIN_MISSES: u32 = 4;
const SPIN_PROBE_EVERY: u32 = 32;

impl SpinHistory {
    /// How long the next wait spins, of `spin`.
    fn budget(&self, spin: Duration) -> Duration {
        let wait = self.waits.fetch_add(1, Ordering::Relaxed);
        if self.misses.load(Ordering::Relaxed) >= SPIN_MISSES && !wait.is_multiple_of(SPIN_PROBE_EVERY) {
            Duration::ZERO
        } else {
            spin
        }
    }

    /// A spin found the message (`true`), or ran out before it.
    fn record(&self, caught: bool) {
        let misses = if caught { 0 } else { self.misses.load(Ordering::Relaxed).saturating_add(1) };
        self.misses.store(misses, Ordering::Relaxed);
    }
}

impl Clone for SpinHistory {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// How long a reader waits at a hole without being counted in `waiters` (then it
/// parks as for anything else), and how often it looks meanwhile.
const HOLE_UNCOUNTED: Duration = Duration::from_millis(5);
const HOLE_POLL: Duration = Duration::from_micros(20);

/// Claims a free (or dead) entry in the subscriber table.
fn claim_subscriber_entry(mem: &RingMemory) -> Result<u32> {
    let pid = std::process::id();
    for reap in [false, true] {
        if reap {
            reap_dead_subscribers(mem);
        }
        for i in 0..mem.layout.max_subscribers {
            // Win the entry first, then set its cursor: until then a publisher sees the
            // previous occupant's cursor, which can only overstate the lag (safe).
            if mem.sub_pid(i).load(Ordering::Relaxed) == 0
                && mem.sub_pid(i).compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                // (An occupant that died holding publishers to credits left them set,
                // one that died in a work group its membership.)
                mem.sub_credited(i).store(0, Ordering::SeqCst);
                mem.sub_group(i).store(0, Ordering::SeqCst);
                // The pool head before the tail: what this reader will read lies past it.
                mem.sub_pool_cursor(i).store(mem.pool_head().load(Ordering::SeqCst), Ordering::SeqCst);
                mem.sub_cursor(i).store(mem.tail() as u32, Ordering::SeqCst);
                return Ok(i);
            }
        }
    }
    Err(ShmError::NoSubscriberSlot { max: mem.layout.max_subscribers })
}

fn release_subscriber_entry(mem: &RingMemory, index: u32) {
    let group = mem.sub_group(index).load(Ordering::Acquire);
    if group::is_member_word(group) {
        return group::leave(mem, index, group - 1);
    }
    mem.sub_credited(index).store(0, Ordering::Release);
    mem.sub_pid(index).store(0, Ordering::Release);
    // A Block publisher may be waiting on this subscriber.
    notify_publishers(mem);
}

/// The most credits a subscriber can have left at once.
pub const MAX_CREDITS: u32 = 1 << 30;

/// Subscriber-table operations for readers whose cursor lives outside Rust (the Node
/// binding): claim an entry at the current tail, and release it.
pub mod table {
    use super::*;

    /// Claims an entry; returns `(index, tail)`: the entry's cursor starts at `tail`.
    pub fn claim(seg: &Arc<Segment>) -> Result<(u32, u64)> {
        let mem = RingMemory::new(seg.clone());
        let index = claim_subscriber_entry(&mem)?;
        let tail = mem.tail();
        mem.sub_cursor(index).store(tail as u32, Ordering::SeqCst);
        Ok((index, tail))
    }

    /// Claims an entry for a member of the work group `name` (see [`Subscriber::join`]);
    /// returns `(index, group entry, cursor)`: it reads at the group entry's cursor,
    /// which is at `cursor` now. [`release`] ends its membership.
    pub fn claim_member(seg: &Arc<Segment>, name: &str) -> Result<(u32, u32, u64)> {
        group::check_name(name)?;
        let (index, _) = claim(seg)?;
        match group::join(&RingMemory::new(seg.clone()), index, name) {
            Ok((group, cursor)) => Ok((index, group, cursor)),
            Err(e) => {
                release(seg, index);
                Err(e)
            }
        }
    }

    /// Entry `index` grants `n` more credits: publishers that hold back for
    /// subscribers publish up to `n` more messages past what it granted before (the
    /// first grant: past the tail). Returns what it has left.
    /// What is left is at most [`MAX_CREDITS`] (limits are compared in 32 bits).
    pub fn grant(seg: &Arc<Segment>, index: u32, n: u32) -> u64 {
        let mem = RingMemory::new(seg.clone());
        let limit = mem.sub_credit_limit(index);
        let tail = mem.tail() as u32;
        let raised = |from: u32| {
            let left = (from.wrapping_sub(tail) as i32).max(0) as u32;
            tail.wrapping_add(left.saturating_add(n).min(MAX_CREDITS))
        };
        if mem.sub_credited(index).load(Ordering::Acquire) == 0 {
            limit.store(raised(tail), Ordering::Release);
            mem.sub_credited(index).store(1, Ordering::Release);
            // Publishers that remembered their room (without these credits) look again.
            mem.word(offsets::CREDIT_GEN).fetch_add(1, Ordering::AcqRel);
        } else {
            // Only this entry's reader grants; publishers only read the limit.
            limit.store(raised(limit.load(Ordering::Acquire)), Ordering::Release);
        }
        // (What is left as granted: once woken, a publisher may take it all at once.)
        let left = credits(seg, index).unwrap_or(0);
        notify_publishers(&mem);
        left
    }

    /// The credits entry `index` has left, `None` if it never granted any.
    pub fn credits(seg: &Arc<Segment>, index: u32) -> Option<u64> {
        let mem = RingMemory::new(seg.clone());
        if mem.sub_credited(index).load(Ordering::Acquire) == 0 {
            return None;
        }
        let left = mem.sub_credit_limit(index).load(Ordering::Acquire).wrapping_sub(mem.tail() as u32) as i32;
        Some(left.max(0) as u64)
    }

    /// Releases an entry claimed with [`claim`].
    pub fn release(seg: &Arc<Segment>, index: u32) {
        release_subscriber_entry(&RingMemory::new(seg.clone()), index);
    }

    /// The current tail (next sequence number to publish).
    pub fn tail(seg: &Arc<Segment>) -> u64 {
        RingMemory::new(seg.clone()).tail()
    }

    /// Wakes parked subscribers (a JavaScript publisher calls this when `waiters` is
    /// non-zero).
    pub fn notify(seg: &Arc<Segment>) {
        notify_subscribers(&RingMemory::new(seg.clone()), None);
    }

    /// Wakes parked subscribers after [`Loan::commit_unannounced`], for a writer that
    /// holds only the segment: a fence that orders the stamps stored before it before
    /// the `waiters` load (Dekker), then a wake-up if anyone is parked.
    pub fn announce(seg: &Arc<Segment>) {
        announce_but(&RingMemory::new(seg.clone()), None);
    }

    /// Wakes blocked publishers (a JavaScript subscriber calls this when
    /// `space_waiters` is non-zero).
    pub fn notify_space(seg: &Arc<Segment>) {
        notify_publishers(&RingMemory::new(seg.clone()));
    }

    /// A JavaScript publisher without a claim line takes the repair lock for `pid`
    /// (stealing it from a dead holder) within `timeout`, for the whole of a publish.
    pub fn lock_repair(seg: &Arc<Segment>, pid: u32, timeout: Duration) -> Result<()> {
        acquire_repair_lock(&RingMemory::new(seg.clone()), pid, timeout)
    }

    /// Claims sequence number `tail` with a compare-and-swap of the whole 64-bit tail:
    /// what a JavaScript publisher, which claims with a 32-bit compare-and-swap of the
    /// tail's low word, does when that word would wrap. False if the tail moved.
    pub fn claim_wrapping(seg: &Arc<Segment>, tail: u64) -> bool {
        RingMemory::new(seg.clone())
            .tail_word()
            .compare_exchange(tail, tail + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The slow path of a JavaScript publisher whose slot `seq` (claimed) still holds an
    /// unfinished earlier lap: waits for it (see `wait_for_slot`) within `timeout`, and
    /// takes the slot. On failure its claim `line`, if any, stops announcing the claim.
    pub fn take_slot(seg: &Arc<Segment>, seq: u64, timeout: Duration, line: Option<u32>) -> Result<()> {
        let mem = RingMemory::new(seg.clone());
        let taken = wait_for_slot(&mem, seq, Instant::now() + timeout);
        if taken.is_err()
            && let Some(line) = line
        {
            mem.claim_first(line).store(0, Ordering::Release);
        }
        taken
    }

    /// Repairs the hole at `seq` if its claimer died (see `repair_hole`): true when
    /// `seq` is readable.
    pub fn repair(seg: &Arc<Segment>, seq: u64) -> bool {
        repair_hole(&RingMemory::new(seg.clone()), seq)
    }

    /// The slow path of a JavaScript `Block` publisher: waits until
    /// message `tail` can be written. Ok(true) if it had to wait.
    pub fn wait_for_space(seg: &Arc<Segment>, tail: u64, timeout: Duration, exclude: Option<u32>) -> Result<bool> {
        super::wait_for_space(&RingMemory::new(seg.clone()), tail, Instant::now() + timeout, exclude)
    }

    /// How many subscribers there are: entries taken, but work groups' own (their
    /// members count).
    pub fn subscriber_count(seg: &Arc<Segment>) -> u32 {
        let mem = RingMemory::new(seg.clone());
        (0..mem.layout.max_subscribers)
            .filter(|&i| {
                mem.sub_pid(i).load(Ordering::Acquire) != 0 && mem.sub_group(i).load(Ordering::Acquire) != GROUP_ENTRY
            })
            .count() as u32
    }

    /// How many messages the slowest live subscriber (other than `exclude`) is behind `tail`.
    pub fn slowest_lag(seg: &Arc<Segment>, tail: u64, exclude: Option<u32>) -> u64 {
        super::slowest_lag(&RingMemory::new(seg.clone()), tail, exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentOptions;
    use proptest::prelude::*;

    fn segment(name: &str, capacity: u32) -> Arc<Segment> {
        pooled_segment(name, capacity, 0)
    }

    fn pooled_segment(name: &str, capacity: u32, pool_size: u32) -> Arc<Segment> {
        let dir = std::env::temp_dir().join(format!("zerohop-ring-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout { slot_size: 64, capacity, max_subscribers: 4, pool_size };
        Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: Some(dir) }).unwrap())
    }

    /// A message of `len` bytes that says which it is (`n`) all through.
    fn big(n: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| n ^ (i % 251) as u8).collect()
    }

    #[test]
    fn messages_past_their_expiry_are_passed_over_and_counted_in_a_slot_the_pool_or_aside() {
        for pool in [0, 4096] {
            let seg = pooled_segment(&format!("expiry{pool}"), 16, pool);
            let mut p = Publisher::new(seg.clone(), Backpressure::Block);
            let mut s = Subscriber::new(seg).unwrap();
            let past = now_ms32().wrapping_sub(1000);
            let mut n = 0;
            for len in [10, 1000, 5000] {
                p.set_expiry(past);
                p.publish(&big(n, len)).unwrap();
                p.set_expiry(expiry_in(60_000));
                p.publish(&big(n + 1, len)).unwrap();
                p.set_expiry(0);
                p.publish(&big(n + 2, len)).unwrap();
                n += 3;
            }
            let mut out = Vec::new();
            let mut got = Vec::new();
            while s.try_recv(&mut out).is_some() {
                got.push(out.clone());
            }
            let want: Vec<Vec<u8>> = [(1, 10), (2, 10), (4, 1000), (5, 1000), (7, 5000), (8, 5000)]
                .iter()
                .map(|&(n, len)| big(n, len))
                .collect();
            assert!(got == want, "pool {pool}: the unexpired ones, in order");
            assert_eq!((s.stats().expired, s.stats().received), (3, 6));
            // What was passed over in the pool is let go of too.
            p.set_expiry(0);
            for m in 0..20u8 {
                p.publish(&big(m, 1000)).unwrap();
                assert_eq!(s.try_recv(&mut out).map(|_| out == big(m, 1000)), Some(true));
            }
        }
        assert!(expired(now_ms32().wrapping_sub(1), now_ms32()) && !expired(0, now_ms32()));
        assert!(!expired(expiry_in(1000), now_ms32()) && expiry_in(0) != 0);
    }

    #[test]
    fn messages_longer_than_a_slot_go_through_the_pool_in_order_and_whole() {
        let seg = pooled_segment("pool", 16, 4096);
        let mut p = Publisher::new(seg.clone(), Backpressure::Block);
        let mut s = Subscriber::new(seg).unwrap();
        let mut out = Vec::new();
        // Around the 4 KB pool many times, with lengths that leave its end unused.
        for n in 0..100u8 {
            let len = [65, 1000, 1500, 4096, 7][n as usize % 5];
            assert_eq!(p.publish(&big(n, len)).unwrap(), Published::Sent(n as u64));
            assert_eq!(s.try_recv(&mut out), Some(n as u64));
            assert_eq!(out, big(n, len), "message {n} of {len} bytes");
        }
        p.set_max_message_size(4096);
        assert!(matches!(p.publish(&[0; 4097]), Err(ShmError::MessageTooLarge { len: 4097, max: 4096 })));
        assert_eq!(s.stats().lapped, 0);
    }

    /// Messages too long for a slot and the pool take the side path, in order with the
    /// others, whole, up to the publisher's largest message; with several publishers.
    #[test]
    fn messages_longer_than_the_pool_take_the_side_path_in_order() {
        for pool in [0, 4096] {
            let seg = pooled_segment(&format!("side{pool}"), 16, pool);
            let mut a = Publisher::new(seg.clone(), Backpressure::Block);
            let mut b = Publisher::new(seg.clone(), Backpressure::Block);
            let mut s = Subscriber::new(seg.clone()).unwrap();
            let mut out = Vec::new();
            for n in 0..60u8 {
                let len = [10, 5000, 64, 100_000, 3000, 65][n as usize % 6];
                let p = if n % 4 < 2 { &mut a } else { &mut b };
                assert_eq!(p.publish(&big(n, len)).unwrap(), Published::Sent(n as u64));
                assert_eq!(s.try_recv(&mut out), Some(n as u64));
                assert_eq!(out, big(n, len), "message {n} of {len} bytes, pool {pool}");
            }
            assert_eq!(s.stats().lapped, 0);
            assert_eq!(s.stats().received, 60);
            // Once read, the publishers let go of them (their server looks every POLL).
            assert!(a.linger(Duration::from_secs(5)) && b.linger(Duration::from_secs(5)));
            assert_eq!(a.side.as_ref().unwrap().held(), 0);
            a.set_max_message_size(6000);
            assert!(matches!(a.publish(&[0; 6001]), Err(ShmError::MessageTooLarge { len: 6001, max: 6000 })));
            // A private segment (a sole publisher's) has no side path.
            let private = Arc::new(Segment::private(*seg.layout(), 0).unwrap());
            let mut sole = Publisher::sole(private, Backpressure::DropNew);
            assert!(matches!(sole.publish(&[0; 65]), Err(ShmError::MessageTooLarge { len: 65, max: 64 })));
        }
    }

    /// A publisher holds at most so many unread side-path messages: past that,
    /// `block` waits for the reader, `drop_new` drops, `fail_fast` refuses, and `drop_old`
    /// lets the oldest go, which the reader counts as lapped. So do the messages of a
    /// publisher that is gone.
    #[test]
    fn the_side_path_holds_publishers_back_by_their_policy() {
        let seg = pooled_segment("sideroom", 128, 0);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        let mut out = Vec::new();
        let held = 16;
        let limited = |policy| {
            let mut p = Publisher::new(seg.clone(), policy);
            p.set_side_limits(held, usize::MAX);
            p
        };
        let mut block = limited(Backpressure::Block);
        block.set_timeout(Duration::from_millis(100));
        for n in 0..held as u8 {
            assert_eq!(block.publish(&big(n, 1000)).unwrap(), Published::Sent(n as u64));
        }
        assert!(matches!(block.publish(&big(0, 1000)), Err(ShmError::Timeout(_))));
        assert_eq!(block.publish(b"short").unwrap(), Published::Sent(held as u64), "the ring has room");
        assert_eq!(s.try_recv(&mut out), Some(0));
        assert_eq!(out, big(0, 1000));
        block.set_timeout(Duration::from_secs(5));
        assert!(block.publish(&big(99, 1000)).is_ok(), "room once the reader passed one");
        let mut old = limited(Backpressure::DropOld);
        let mut drop_new = limited(Backpressure::DropNew);
        let mut fail_fast = limited(Backpressure::FailFast);
        for n in 0..held as u8 {
            old.publish(&big(n, 2000)).unwrap();
            drop_new.publish(&big(n, 2000)).unwrap();
            fail_fast.publish(&big(n, 2000)).unwrap();
        }
        assert_eq!(drop_new.publish(&big(0, 2000)).unwrap(), Published::Dropped);
        assert_eq!(drop_new.stats().dropped, 1);
        assert!(matches!(fail_fast.publish(&big(0, 2000)), Err(ShmError::SideFull { .. })));
        // drop_old lets its oldest go for its 17th and 18th.
        old.publish(&big(200, 2000)).unwrap();
        old.publish(&big(201, 2000)).unwrap();
        drop(drop_new); // gone: its messages with it
        let (mut received, mut lapped) = (0, 0);
        while s.try_recv(&mut out).is_some() {
            received += 1;
        }
        lapped += s.stats().lapped;
        // Of 3 × 16 + 2 after the first: 2 let go by drop_old, 16 gone with drop_new.
        assert_eq!(lapped, 2 + held as u64, "received {received}");
        assert_eq!(s.stats().received + s.stats().lapped, s.cursor(), "every number counted once");
    }

    #[test]
    fn the_pool_holds_publishers_back_by_their_policy_and_laps_only_under_drop_old() {
        let seg = pooled_segment("poolroom", 64, 4096);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        let mut out = Vec::new();
        let mut block = Publisher::new(seg.clone(), Backpressure::Block);
        block.set_timeout(Duration::from_millis(100));
        // Two 2 KB messages fill the pool; the third waits for the reader, in vain.
        for n in 0..2 {
            assert_eq!(block.publish(&big(n, 2048)).unwrap(), Published::Sent(n as u64));
        }
        assert!(matches!(block.publish(&big(2, 2048)), Err(ShmError::Timeout(_))));
        let mut drop_new = Publisher::new(seg.clone(), Backpressure::DropNew);
        assert_eq!(drop_new.publish(&big(2, 2048)).unwrap(), Published::Dropped);
        assert!(matches!(
            Publisher::new(seg.clone(), Backpressure::FailFast).publish(&big(2, 2048)),
            Err(ShmError::RingFull)
        ));
        // Small messages still go: the ring has room.
        assert_eq!(block.publish(b"small").unwrap(), Published::Sent(2));
        assert_eq!(s.try_recv(&mut out), Some(0));
        assert_eq!(out, big(0, 2048));
        assert_eq!(block.publish(&big(3, 2048)).unwrap(), Published::Sent(3), "room once the first was read");
        for (seq, want) in [(1, big(1, 2048)), (2, b"small".to_vec()), (3, big(3, 2048))] {
            assert_eq!(s.try_recv(&mut out), Some(seq));
            assert_eq!(out, want);
        }
        // drop_old never waits: a reader that falls a pool behind is lapped, and gets
        // nothing torn.
        let mut old = Publisher::new(seg, Backpressure::DropOld);
        for n in 0..10u8 {
            old.publish(&big(n, 1500)).unwrap();
        }
        let mut got = 0;
        while s.try_recv(&mut out).is_some() {
            assert!((0..10).any(|n| out == big(n, 1500)), "a torn pooled message");
            got += 1;
        }
        assert!(s.stats().lapped > 0 && got < 10, "lapped {} got {got}", s.stats().lapped);
    }

    #[test]
    fn classify_basics() {
        assert_eq!(classify(0, 0), SlotState::NotYet);
        assert_eq!(classify(committed_stamp(5), 5), SlotState::Ready);
        assert_eq!(classify(committed_stamp(5) - 1, 5), SlotState::NotYet);
        assert_eq!(classify(committed_stamp(1), 5), SlotState::NotYet);
        assert_eq!(classify(committed_stamp(9), 5), SlotState::Lapped);
        assert_eq!(classify(committed_stamp(9) - 1, 5), SlotState::Lapped);
    }

    proptest! {
        #[test]
        fn classify_matches_sequence_order(seq in any::<u64>(), delta in -(1i64 << 29)..(1i64 << 29), writing in any::<bool>()) {
            let other = seq.wrapping_add(delta as u64);
            let stamp = committed_stamp(other).wrapping_sub(writing as u32);
            let expected = if delta > 0 { SlotState::Lapped }
                else if delta == 0 && !writing { SlotState::Ready }
                else { SlotState::NotYet };
            prop_assert_eq!(classify(stamp, seq), expected);
        }

        #[test]
        fn resync_moves_forward_and_keeps_most_of_the_ring(cursor in 0u64..1_000_000, ahead in 0u64..100_000, cap_log in 1u32..16) {
            let cap = 1u32 << cap_log;
            let tail = cursor + ahead;
            let next = resync_cursor(cursor, tail, cap);
            prop_assert!(next > cursor);
            prop_assert!(next >= tail.saturating_sub(cap as u64));
        }

        /// Grants, publishes (`DropNew`) and reads in any order: a publish goes out
        /// exactly when the subscriber has credits left and the ring has room, and the
        /// credits left are what was granted less what went out.
        #[test]
        fn credit_accounting(ops in proptest::collection::vec((0u8..3, 0u32..6), 1..200), cap_log in 2u32..5) {
            let seg = segment(&format!("prop-credits-{}-{cap_log}", std::process::id()), 1 << cap_log);
            let mut publisher = Publisher::new(seg.clone(), Backpressure::DropNew);
            let mut sub = Subscriber::new(seg).unwrap();
            let (mut left, mut unread, mut out) = (None::<u64>, 0u64, Vec::new());
            for (op, n) in ops {
                match op {
                    0 => {
                        let now = left.unwrap_or(0) + u64::from(n);
                        left = Some(now);
                        prop_assert_eq!(sub.grant_credits(n), now);
                    }
                    1 => {
                        let room = unread < 1 << cap_log && left.is_none_or(|l| l > 0);
                        let sent = matches!(publisher.publish(b"m").unwrap(), Published::Sent(_));
                        prop_assert_eq!(sent, room);
                        if sent {
                            unread += 1;
                            left = left.map(|l| l - 1);
                        }
                    }
                    _ => {
                        for _ in 0..n.min(unread as u32) {
                            prop_assert!(sub.try_recv(&mut out).is_some());
                            unread -= 1;
                        }
                    }
                }
                prop_assert_eq!(sub.credits(), left);
            }
        }

        #[test]
        fn single_thread_roundtrip(messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..40)) {
            let seg = segment(&format!("prop-{}", std::process::id()), 64);
            let mut publisher = Publisher::new(seg.clone(), Backpressure::DropOld);
            let mut sub = Subscriber::new(seg).unwrap();
            let mut out = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                prop_assert_eq!(publisher.publish(m).unwrap(), Published::Sent(i as u64));
                prop_assert_eq!(sub.try_recv(&mut out), Some(i as u64));
                prop_assert_eq!(&out, m);
            }
            prop_assert_eq!(sub.try_recv(&mut out), None);
        }
    }

    #[test]
    fn fan_out_and_late_join() {
        let seg = segment("fanout", 8);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        let mut a = Subscriber::new(seg.clone()).unwrap();
        p.publish(b"one").unwrap();
        let mut b = Subscriber::new(seg.clone()).unwrap();
        p.publish(b"two").unwrap();
        let mut out = Vec::new();
        assert_eq!(a.try_recv(&mut out), Some(0));
        assert_eq!(out, b"one");
        assert_eq!(a.try_recv(&mut out), Some(1));
        assert_eq!(b.try_recv(&mut out), Some(1), "late joiner starts at the tail");
        assert_eq!(out, b"two");
        assert_eq!(b.try_recv(&mut out), None);
    }

    /// A work group's members share its messages, each read once; the group holds a
    /// `Block` publisher back, its members do not; a member that stops reading holds
    /// nothing back; the group's entry goes with its last member.
    #[test]
    fn a_work_groups_members_share_its_messages_each_read_once() {
        let seg = pooled_segment("group-share", 16, 4096);
        let mut a = Subscriber::join(seg.clone(), "w").unwrap();
        let mut b = Subscriber::join(seg.clone(), "w").unwrap();
        let stopped = Subscriber::join(seg.clone(), "w").unwrap();
        assert_eq!(a.group(), b.group());
        assert_eq!(table::subscriber_count(&seg), 3, "members count, their group's entry not");
        let mut p = Publisher::new(seg.clone(), Backpressure::FailFast);
        for i in 0..16u32 {
            p.publish(&i.to_le_bytes()).unwrap();
        }
        assert!(matches!(p.publish(b"x"), Err(ShmError::RingFull)), "the group holds publishers back");
        let (mut out, mut got) = (Vec::new(), Vec::new());
        for turn in 0..16 {
            let s = if turn % 3 == 0 { &mut b } else { &mut a };
            assert!(s.try_recv(&mut out).is_some());
            got.push(u32::from_le_bytes(out[..4].try_into().unwrap()));
        }
        assert_eq!(got, (0..16).collect::<Vec<_>>());
        assert_eq!((a.stats().received, b.stats().received), (10, 6));
        // Long messages (the pool) and one a member copied but another claimed first.
        p.publish(&big(1, 1500)).unwrap();
        p.publish(&big(2, 1500)).unwrap();
        let mut a2 = Vec::new();
        assert!(a.try_recv(&mut a2).is_some());
        assert!(b.try_recv(&mut out).is_some());
        assert_eq!((a2, out.clone()), (big(1, 1500), big(2, 1500)));
        assert_eq!(a.try_recv(&mut out), None);
        drop(stopped);
        drop(a);
        assert_eq!(table::subscriber_count(&seg), 1);
        drop(b);
        assert_eq!(table::subscriber_count(&seg), 0);
        assert_eq!(table::slowest_lag(&seg, table::tail(&seg), None), 0, "the group's entry went with it");
    }

    /// Members on threads, a `Block` publisher: every message read once, by someone.
    #[test]
    fn members_on_threads_read_every_message_once() {
        let seg = segment("group-threads", 64);
        const N: u32 = 200_000;
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let mut s = Subscriber::join(seg.clone(), "w").unwrap();
                std::thread::spawn(move || {
                    let (mut out, mut got) = (Vec::new(), Vec::new());
                    let cancel = AtomicBool::new(false);
                    loop {
                        if s.try_recv(&mut out).is_none() {
                            assert!(
                                s.wait(Duration::from_micros(50), Some(Duration::from_secs(10)), &cancel),
                                "stalled"
                            );
                            continue;
                        }
                        let v = u32::from_le_bytes(out[..4].try_into().unwrap());
                        if v == u32::MAX {
                            return got;
                        }
                        got.push(v);
                    }
                })
            })
            .collect();
        let mut p = Publisher::new(seg.clone(), Backpressure::Block);
        p.set_timeout(Duration::from_secs(10));
        for i in 0..N {
            p.publish(&i.to_le_bytes()).unwrap();
        }
        for _ in 0..3 {
            p.publish(&u32::MAX.to_le_bytes()).unwrap();
        }
        let mut all: Vec<u32> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all.len(), N as usize);
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as u32));
    }

    /// Credits hold back every publisher but a `DropOld` one: `DropNew` drops past them,
    /// `FailFast` refuses with `NoCredits`, and a grant lets each go on; a publisher that
    /// knew its room before the first grant looks again.
    #[test]
    fn credits_hold_publishers_back_by_their_policy() {
        let seg = segment("credits", 64);
        let s = Subscriber::new(seg.clone()).unwrap();
        let mut new = Publisher::new(seg.clone(), Backpressure::DropNew);
        assert!(matches!(new.publish(b"before").unwrap(), Published::Sent(0)), "room remembered: 64");
        assert_eq!(s.credits(), None);
        assert_eq!(s.grant_credits(2), 2);
        for _ in 0..2 {
            assert!(matches!(new.publish(b"x").unwrap(), Published::Sent(_)));
        }
        assert_eq!(new.publish(b"x").unwrap(), Published::Dropped, "past the credits");
        assert_eq!(s.credits(), Some(0));
        let mut fail = Publisher::new(seg.clone(), Backpressure::FailFast);
        assert!(matches!(fail.publish(b"x"), Err(ShmError::NoCredits)));
        let mut old = Publisher::new(seg.clone(), Backpressure::DropOld);
        assert!(matches!(old.publish(b"x").unwrap(), Published::Sent(3)), "drop_old never holds back");
        // Past the limit (the lapping publisher) counts as none left, not as a debt.
        assert_eq!(s.credits(), Some(0));
        assert_eq!(s.grant_credits(2), 2);
        assert!(matches!(new.publish(b"x").unwrap(), Published::Sent(4)));
        assert!(matches!(fail.publish(b"x").unwrap(), Published::Sent(5)));
        assert!(matches!(fail.publish(b"x"), Err(ShmError::NoCredits)));
        assert_eq!(s.grant_credits(u32::MAX), u64::from(MAX_CREDITS), "at most MAX_CREDITS left");
        drop(s);
        let _other = Subscriber::new(seg.clone()).unwrap();
        assert!(matches!(fail.publish(b"x").unwrap(), Published::Sent(6)), "a reclaimed entry starts without credits");
    }

    /// A `Block` publisher with no credits left waits for a grant, parked, and goes on
    /// when it comes.
    #[test]
    fn a_block_publisher_waits_for_a_grant() {
        let seg = segment("credit-block", 64);
        let s = Subscriber::new(seg.clone()).unwrap();
        s.grant_credits(1);
        let mut p = Publisher::new(seg.clone(), Backpressure::Block);
        p.set_timeout(Duration::from_secs(10));
        p.publish(b"one").unwrap();
        let blocked = std::thread::spawn(move || {
            p.publish(b"two").unwrap();
            p.stats().blocked
        });
        // Parked: counted among the publishers waiting for space.
        let waiting = RingMemory::new(seg.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while waiting.word(offsets::SPACE_WAITERS).load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline && !blocked.is_finished(), "published with no credits");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(table::tail(&seg), 1, "nothing past the credit");
        s.grant_credits(1);
        assert_eq!(blocked.join().unwrap(), 1, "it waited, once");
        assert_eq!(table::tail(&seg), 2);
        let mut timing_out = Publisher::new(seg, Backpressure::Block);
        timing_out.set_timeout(Duration::from_millis(30));
        assert!(matches!(timing_out.publish(b"three"), Err(ShmError::Timeout(_))));
    }

    /// A subscriber handed over keeps its entry: what was published meanwhile is still
    /// unread by the ring's flow control, and the new reader starts where it was.
    #[test]
    fn a_subscriber_handed_over_keeps_its_place() {
        let seg = segment("handover", 4);
        let s = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::new(seg.clone(), Backpressure::DropNew);
        p.publish(b"one").unwrap();
        let (entry, cursor) = s.hand_over();
        assert_eq!((entry, cursor), (0, 0));
        p.publish(b"two").unwrap();
        assert_eq!(table::slowest_lag(&seg, 2, None), 2, "both unread by the entry handed over");
        let (other, _) = table::claim(&seg).unwrap();
        assert_ne!(other, entry, "the entry is still taken");
        table::release(&seg, entry);
        assert_eq!(table::slowest_lag(&seg, 2, None), 0, "released by its new reader, when done");
    }

    #[test]
    fn lapped_subscriber_counts_exactly_what_it_missed() {
        let seg = segment("lapped", 8);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        let mut s = Subscriber::new(seg).unwrap();
        for i in 0..100u32 {
            p.publish(&i.to_le_bytes()).unwrap();
        }
        let mut out = Vec::new();
        let mut got = Vec::new();
        while let Some(seq) = s.try_recv(&mut out) {
            assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()) as u64, seq);
            got.push(seq);
        }
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*got.last().unwrap(), 99);
        assert_eq!(s.stats().received + s.stats().lapped, 100);
        assert!(s.stats().lapped >= 100 - 8);
    }

    #[test]
    fn drop_new_and_fail_fast_respect_the_slowest_subscriber() {
        let seg = segment("policies", 4);
        let _slow = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::new(seg.clone(), Backpressure::DropNew);
        for _ in 0..4 {
            assert!(matches!(p.publish(b"x").unwrap(), Published::Sent(_)));
        }
        assert_eq!(p.publish(b"x").unwrap(), Published::Dropped);
        assert_eq!(p.stats().dropped, 1);
        let mut f = Publisher::new(seg, Backpressure::FailFast);
        assert!(matches!(f.publish(b"x"), Err(ShmError::RingFull)));
    }

    #[test]
    fn block_waits_for_the_subscriber_and_times_out() {
        let seg = segment("block", 4);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::new(seg.clone(), Backpressure::Block);
        p.set_timeout(Duration::from_millis(50));
        for _ in 0..4 {
            p.publish(b"x").unwrap();
        }
        assert!(matches!(p.publish(b"x"), Err(ShmError::Timeout(_))));
        let mut out = Vec::new();
        assert_eq!(s.try_recv(&mut out), Some(0));
        assert_eq!(p.publish(b"y").unwrap(), Published::Sent(4));
        // Threaded: the publisher blocks until the reader catches up.
        p.set_timeout(Duration::from_secs(10));
        let reader = std::thread::spawn(move || {
            let cancel = AtomicBool::new(false);
            let mut n = 0;
            let mut out = Vec::new();
            while n < 1000 {
                if s.try_recv(&mut out).is_some() {
                    n += 1;
                } else {
                    s.wait(Duration::from_micros(10), Some(Duration::from_secs(10)), &cancel);
                }
            }
            s.stats()
        });
        for _ in 0..996 {
            p.publish(b"z").unwrap();
        }
        let stats = reader.join().unwrap();
        assert_eq!(stats.lapped, 0);
        assert_eq!(stats.received, 1001, "1 before the thread, 1000 in it");
    }

    #[test]
    fn packed_batches_arrive_as_separate_messages() {
        let seg = segment("packed", 8);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropNew);
        let mut s = Subscriber::new(seg).unwrap();
        let packed: Vec<u8> = (0..6u8).flat_map(|i| [i; 4]).collect();
        assert_eq!(p.publish_packed(&packed, 4).unwrap(), 6);
        // Only 2 more fit before the subscriber is a full ring behind.
        assert_eq!(p.publish_packed(&packed, 4).unwrap(), 2);
        assert_eq!(p.stats().dropped, 4);
        let mut out = Vec::new();
        for i in 0..8u64 {
            assert_eq!(s.try_recv(&mut out), Some(i));
            assert_eq!(out, [(i % 6) as u8; 4]);
        }
        assert!(matches!(p.publish_packed(&packed[..5], 4), Err(ShmError::MessageTooLarge { .. })));
        assert!(matches!(p.publish_packed(&[0; 130], 65), Err(ShmError::MessageTooLarge { .. })));
    }

    #[test]
    fn oversize_and_abandoned_loans() {
        let seg = segment("loans", 4);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        let mut s = Subscriber::new(seg).unwrap();
        p.set_max_message_size(64);
        assert!(matches!(p.publish(&[0u8; 65]), Err(ShmError::MessageTooLarge { len: 65, max: 64 })));
        {
            let mut loan = p.loan().unwrap().unwrap();
            loan.as_mut_slice()[0] = 7;
            // dropped without commit
        }
        let mut out = Vec::new();
        assert_eq!(s.try_recv(&mut out), None, "an abandoned loan is passed over");
        assert_eq!(s.cursor(), 1);
        let mut loan = p.loan().unwrap().unwrap();
        assert_eq!(loan.seq(), 1, "the abandoned sequence number stays taken");
        loan.as_mut_slice()[..2].copy_from_slice(b"ok");
        loan.commit(2);
        assert_eq!(s.try_recv(&mut out), Some(1));
        assert_eq!(out, b"ok");
        assert_eq!(s.stats().received, 1);
        assert_eq!(s.stats().lapped, 0, "a slot passed over is not a lost message");
    }

    /// Moves a fresh ring's tail to `start`, its slots committed as the lap before it.
    fn fast_forward(seg: &Arc<Segment>, start: u64) {
        let mem = RingMemory::new(seg.clone());
        for seq in start - mem.layout.capacity as u64..start {
            mem.stamp(seq).store(committed_stamp(seq).wrapping_sub(1), Ordering::SeqCst);
            skip_slot(&mem, seq);
        }
        mem.set_tail(start);
    }

    #[test]
    fn tail_and_sequence_numbers_cross_2_pow_32() {
        let seg = segment("wrap", 8);
        let start = (1u64 << 32) - 3;
        fast_forward(&seg, start);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        assert_eq!(s.cursor(), start);
        let mut out = Vec::new();
        for i in 0..6u64 {
            assert_eq!(p.publish(&i.to_le_bytes()).unwrap(), Published::Sent(start + i));
            assert_eq!(s.try_recv(&mut out), Some(start + i));
            assert_eq!(out, i.to_le_bytes());
        }
        assert_eq!(table::tail(&seg), start + 6);
        assert!(table::claim_wrapping(&seg, start + 6), "the whole tail moves in one step");
        assert_eq!(table::tail(&seg), start + 7);
        assert_eq!(s.stats().lapped, 0);
    }

    /// A listed publisher, as the tables say, whose process is `pid`, claiming `first`.
    fn pretend_claim(seg: &Arc<Segment>, line: u32, pid: u32, first: u64, count: u32) {
        let mem = RingMemory::new(seg.clone());
        mem.word(offsets::PUBLISHERS + 4 * line as usize).store(pid, Ordering::SeqCst);
        mem.claim_count(line).store(count, Ordering::SeqCst);
        mem.claim_first(line).store(committed_stamp(first).wrapping_sub(1), Ordering::SeqCst);
        mem.tail_word().fetch_add(count as u64, Ordering::SeqCst);
    }

    /// A pid that cannot exist (above pid_max): a crashed process.
    const DEAD: u32 = i32::MAX as u32 - 1;

    /// A claim that lost the race for the tail is withdrawn from the claim line: else a
    /// publisher that goes on to wait for room would keep announcing the number the
    /// winner holds, and readers at the winner's hole (were it to die) would wait for a
    /// live claim that never commits, while the publisher waits for them (the stress
    /// test's SIGKILL case wedged so, 3 runs in 28, before this).
    #[test]
    fn a_claim_that_lost_the_race_is_not_announced() {
        let seg = segment("lostclaim", 16);
        let mut loser = Publisher::new(seg.clone(), Backpressure::Block);
        let line = loser.line.expect("listed");
        let mut winner = Publisher::new(seg.clone(), Backpressure::Block);
        winner.publish(b"first").unwrap();
        assert!(!loser.try_claim(0, 1), "the tail moved on");
        assert_eq!(loser.mem.claim_first(line).load(Ordering::Acquire), 0);
        assert!(loser.try_claim(1, 1));
        assert_eq!(loser.mem.claim_first(line).load(Ordering::Acquire), committed_stamp(1) - 1);
    }

    #[test]
    fn a_dead_claimers_holes_are_passed_over_and_a_live_ones_are_waited_for() {
        let seg = segment("holes", 8);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        let mut out = Vec::new();
        let cancel = AtomicBool::new(false);
        let short = Some(Duration::from_millis(150));
        // A claim of 0 and 1 by a live process that has not written them yet.
        pretend_claim(&seg, 30, std::process::id(), 0, 2);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        assert_eq!(p.publish(b"two").unwrap(), Published::Sent(2));
        assert!(!s.wait(Duration::ZERO, short, &cancel), "a live claimer's slot is waited for");
        assert_eq!(s.try_recv(&mut out), None);
        // The claimer dies: one slot untouched, the other half written (odd stamp).
        RingMemory::new(seg.clone()).stamp(1).store(committed_stamp(1) - 1, Ordering::SeqCst);
        pretend_claim(&seg, 30, DEAD, 0, 0);
        seg.word(claim_offset(30) + offsets::CLAIM_COUNT).store(2, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(seq) = s.try_recv(&mut out) {
                break seq;
            }
            assert!(Instant::now() < deadline, "the holes were never repaired");
            s.wait(Duration::ZERO, Some(Duration::from_secs(1)), &cancel);
        };
        assert_eq!(got, 2);
        assert_eq!(out, b"two");
        assert_eq!((s.stats().received, s.stats().lapped), (1, 0));
        // The next lap's writers find the repaired slots free.
        for i in 3..20u64 {
            assert_eq!(p.publish(b"x").unwrap(), Published::Sent(i));
        }
    }

    #[test]
    fn a_writer_waits_for_the_slot_an_unfinished_lap_holds_and_gives_up_in_time() {
        let seg = segment("lapwait", 4);
        let mut a = Publisher::new(seg.clone(), Backpressure::DropOld);
        let mut b = Publisher::new(seg.clone(), Backpressure::DropOld);
        b.set_timeout(Duration::from_millis(100));
        let mut loan = a.loan().unwrap().unwrap();
        for i in 1..4u64 {
            assert_eq!(b.publish(b"b").unwrap(), Published::Sent(i));
        }
        // Sequence 4 needs slot 0, which the loan of 0 still holds.
        assert!(matches!(b.publish(b"b"), Err(ShmError::Timeout(_))));
        loan.as_mut_slice()[0] = b'a';
        loan.commit(1);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        assert_eq!(s.cursor(), 5);
        // Sequence 4, given up, is a hole nobody announces: the next lap repairs it.
        for i in 5..9u64 {
            assert_eq!(b.publish(b"b").unwrap(), Published::Sent(i));
        }
        let mut out = Vec::new();
        for i in 5..9u64 {
            assert_eq!(s.try_recv(&mut out), Some(i));
        }
    }

    #[test]
    fn a_subscriber_that_died_parked_stops_costing_wakes() {
        let seg = segment("deadpark", 8);
        let mem = RingMemory::new(seg.clone());
        // Entry 0: a process that cannot exist, counted in `waiters` and marked parked.
        mem.sub_pid(0).store(i32::MAX as u32 - 1, Ordering::SeqCst);
        mem.sub_parked(0).store(1, Ordering::SeqCst);
        seg.word(offsets::WAITERS).store(1, Ordering::SeqCst);
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seg.word(offsets::WAITERS).load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "the dead waiter's count was never taken back");
            p.publish(b"x").unwrap(); // wakes reach nobody; a reap runs within 100 ms
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(mem.sub_pid(0).load(Ordering::SeqCst), 0, "the dead entry was freed");
    }

    #[test]
    fn a_publisher_that_died_blocked_stops_costing_wakes() {
        let seg = segment("deadblock", 8);
        let mut s = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        // A blocked publisher that counted itself and died.
        seg.word(offsets::SPACE_WAITERS).store(1, Ordering::SeqCst);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seg.word(offsets::SPACE_WAITERS).load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "the dead publisher's count was never reset");
            p.publish(b"x").unwrap();
            s.try_recv(&mut out).unwrap(); // each advance wakes nobody
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn parked_subscriber_is_woken() {
        let seg = segment("wake", 8);
        let s = Subscriber::new(seg.clone()).unwrap();
        let waiter = s.waiter();
        let cursor = s.cursor();
        let t = std::thread::spawn(move || {
            let cancel = AtomicBool::new(false);
            waiter.wait(cursor, Duration::ZERO, Some(Duration::from_secs(10)), &cancel)
        });
        std::thread::sleep(Duration::from_millis(30));
        let mut p = Publisher::new(seg, Backpressure::DropOld);
        let start = Instant::now();
        p.publish(b"wake").unwrap();
        assert!(t.join().unwrap());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_sole_publishers_batch_is_read_at_once_and_wakes_a_parked_reader_once_announced() {
        let layout = Layout { slot_size: 64, capacity: 8, max_subscribers: 2, pool_size: 0 };
        let seg = Arc::new(Segment::private(layout, 0).unwrap());
        let mut polling = Subscriber::new(seg.clone()).unwrap();
        let parked = Subscriber::new(seg.clone()).unwrap();
        let (waiter, cursor) = (parked.waiter(), parked.cursor());
        let t = std::thread::spawn(move || {
            let cancel = AtomicBool::new(false);
            waiter.wait(cursor, Duration::ZERO, Some(Duration::from_secs(10)), &cancel)
        });
        std::thread::sleep(Duration::from_millis(30));
        let mut p = Publisher::sole(seg, Backpressure::DropNew);
        for m in [b"a", b"b"] {
            let mut loan = p.loan().unwrap().unwrap();
            loan.as_mut_slice()[0] = m[0];
            loan.commit_unannounced(1);
        }
        let mut out = Vec::new();
        assert_eq!(polling.try_recv(&mut out), Some(0));
        assert_eq!(out, b"a");
        p.announce();
        assert!(t.join().unwrap(), "the parked reader woke");
        assert_eq!(p.mem.word(offsets::REPAIR_LOCK).load(Ordering::SeqCst), 0, "no lock taken");
    }

    #[test]
    fn a_publisher_that_announces_later_wakes_a_parked_reader_only_when_it_announces() {
        let layout = Layout { slot_size: 64, capacity: 8, max_subscribers: 2, pool_size: 64 * 8 };
        let seg = Arc::new(Segment::private(layout, 0).unwrap());
        let parked = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::new(seg.clone(), Backpressure::DropNew);
        p.set_announce_later(true);
        let (waiter, cursor) = (parked.waiter(), parked.cursor());
        let t = std::thread::spawn(move || {
            waiter.wait(cursor, Duration::ZERO, Some(Duration::from_secs(10)), &AtomicBool::new(false))
        });
        // Parked for sure: counted in `waiters`.
        while seg.word(offsets::WAITERS).load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // A slot's message and a pooled one: neither rings (a wake bumps `notify`).
        let notify = seg.word(offsets::NOTIFY);
        let before = notify.load(Ordering::SeqCst);
        p.publish(b"a").unwrap();
        p.publish(&[7u8; 100]).unwrap();
        assert_eq!(notify.load(Ordering::SeqCst), before, "a publish rang");
        p.announce();
        assert_ne!(notify.load(Ordering::SeqCst), before, "the announcement did not ring");
        assert!(t.join().unwrap(), "the parked reader woke");
    }

    #[test]
    fn an_expiry_word_stands_for_the_time_nearest_now_that_it_can() {
        let now_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
        assert_eq!(expiry_word_ns(0), None, "no time to live");
        for (word, ahead_ms) in [(expiry_in(1000), 1000i64), (now_ms32().wrapping_sub(1000), -1000)] {
            let at = expiry_word_ns(word).unwrap() as i64;
            let off_ms = (at - now_ns()) / 1_000_000 - ahead_ms;
            assert!(off_ms.abs() < 50, "{word}: {off_ms} ms off");
        }
    }

    #[test]
    fn a_reader_stops_spinning_after_spins_that_missed_and_tries_again_now_and_then() {
        let spins = SpinHistory::default();
        let spin = Duration::from_micros(20);
        for _ in 0..SPIN_MISSES {
            assert_eq!(spins.budget(spin), spin);
            spins.record(false);
        }
        let budgets: Vec<Duration> = (0..2 * SPIN_PROBE_EVERY).map(|_| spins.budget(spin)).collect();
        let probes = budgets.iter().filter(|b| !b.is_zero()).count();
        assert_eq!(probes, 2, "one wait in {SPIN_PROBE_EVERY} spins: {budgets:?}");
        // A probe that caught its message: spinning pays again.
        spins.record(true);
        assert!((0..8).all(|_| spins.budget(spin) == spin));
    }

    #[test]
    fn put_writes_what_a_loan_writes_and_stops_at_a_full_ring() {
        let layout = Layout { slot_size: 64, capacity: 4, max_subscribers: 2, pool_size: 0 };
        let seg = Arc::new(Segment::private(layout, 0).unwrap());
        let mut sub = Subscriber::new(seg.clone()).unwrap();
        let mut p = Publisher::sole(seg, Backpressure::DropNew);
        let mut out = Vec::new();
        // Around the ring several times, put and loan taking turns: one tail between them.
        for seq in 0..10u64 {
            let byte = seq as u8;
            let written = if seq % 2 == 0 {
                p.put(3, |b| b.fill(byte))
            } else {
                let mut loan = p.loan().unwrap().unwrap();
                loan.as_mut_slice()[..3].fill(byte);
                Some(loan.commit_unannounced(3))
            };
            assert_eq!(written, Some(seq));
            assert_eq!(sub.try_recv(&mut out), Some(seq));
            assert_eq!(out, [byte; 3]);
        }
        for seq in 10..14u64 {
            assert_eq!(p.put(64, |b| b.fill(1)), Some(seq));
        }
        assert_eq!(p.put(1, |b| b.fill(2)), None, "no room: a reader has not read the ring");
        assert_eq!(p.stats().dropped, 1);
        assert_eq!(sub.try_recv(&mut out), Some(10));
        assert_eq!(out.len(), 64);
        assert_eq!(p.put(1, |b| b.fill(2)), Some(14), "room again");
    }

    #[test]
    #[should_panic(expected = "private")]
    fn only_a_private_segment_has_a_sole_publisher() {
        let _ = Publisher::sole(segment("sole", 4), Backpressure::DropNew);
    }

    #[test]
    fn an_unlisted_publisher_steals_the_repair_lock_from_a_dead_holder() {
        let seg = segment("steal", 4);
        seg.word(offsets::REPAIR_LOCK).store(DEAD, Ordering::SeqCst);
        let mut p = Publisher::with_line(seg.clone(), Backpressure::DropOld, None);
        p.set_timeout(Duration::from_secs(2));
        assert_eq!(p.publish(b"x").unwrap(), Published::Sent(0));
        assert_eq!(seg.word(offsets::REPAIR_LOCK).load(Ordering::SeqCst), 0, "let go after the publish");
    }
}
