//! The receive ring: where a network hub's received messages land, and everything a
//! reader needs around it.
//!
//! ```text
//!   protocol ──deliver──▶ ReceiveRing ──▶ private segment (shm layout): envelope + message per slot
//!                           │  ├─ spill: messages larger than a slot, held aside
//!                           │  ├─ held: messages that found no room (unreliable sources)
//!                           │  └─ doorbell: rung when an armed reader may read
//!                           └─ status board: the hub's status and its events
//! ```
//!
//! The ring is a private [`Segment`] with exactly the `shm://` layout, written by one
//! `drop_new` publisher, so readers read it as they read shared memory (in Rust with a
//! [`zerohop_shm::Subscriber`], in JavaScript in place). It is flow controlled, never
//! lapped: a message is written only while there is room for it.
//!
//! - A *reliable* source (QUIC channels) [delivers](ReceiveRing::deliver) and, when
//!   there is no room, keeps the message itself and tries again later (its stream
//!   waits, and the protocol's flow control pushes back on the sender).
//! - An *unreliable* source (UDP) cannot keep datagrams, so it
//!   [delivers or holds](ReceiveRing::deliver_or_hold): without room the message waits
//!   here, in order, and the source stops reading its socket while
//!   [`has_room_for_a_batch`](ReceiveRing::has_room_for_a_batch) is false, so that a
//!   burst waits in the kernel's socket buffer instead of overwriting unread messages.
//!
//! A message larger than a slot goes *aside*: its bytes go to the aside area, memory
//! after the slots used as a ring of bytes, and its slot holds only the envelope, which
//! says where. Slots stay small, so a ring of small messages spans few pages (each page
//! a message touches costs a TLB entry, dear in a virtual machine: eight rings of 4 KiB
//! slots on one core received 6-10 % fewer 64-byte messages than these, 2026-12-05),
//! while a 4 KiB message is still one copy into memory the reader reads in place. A
//! byte stream (TCP, Unix sockets) saves that copy too: it reads its socket straight
//! into free bytes of the aside area (a [`ReadWindow`]), and a large message that lies
//! whole in them stays where it is. A message larger than half the aside area is
//! *spilled*: its bytes are held here, in memory of their own, until the reader takes
//! them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zerohop_shm::{Backpressure, Layout, Publisher, Segment};
use zerohop_transport::status::{Status, StatusEvent};
use zerohop_transport::{Credentials, Doorbell, Kind, Result, StatusListener};

use crate::envelope::{self, Placement};

/// A message on its way into the ring.
#[derive(Clone, Copy, Debug)]
pub struct Inbound<'a> {
    /// The sender's number on this hub (connection-oriented transports; 0 otherwise).
    pub peer: u32,
    /// The sender's address (ignored when `credentials` say who it is instead).
    pub from: SocketAddr,
    /// Unix sockets: the sender's credentials (it has no address).
    pub credentials: Option<Credentials>,
    /// Transports whose receivers subscribe by pattern: the number of the subject it
    /// came on (0: none; see [`envelope::Sender::Subject`]).
    pub subject: u32,
    pub timestamp_ns: Option<u64>,
    /// When it stops being worth reading, ns since the Unix epoch (`ttlMs`): a reader
    /// passes over it after that, and counts it.
    pub expiry_ns: Option<u64>,
    pub channel: u16,
    pub seq: u64,
    pub kind: Kind,
    /// Requests: the key pairing a request, its answer and its cancellation.
    pub request: u64,
    pub body: &'a [u8],
}

impl<'a> Inbound<'a> {
    /// A published message from `from` (no request, no timestamp, not numbered).
    pub fn message(peer: u32, from: SocketAddr, channel: u16, body: &'a [u8]) -> Self {
        Inbound {
            peer,
            from,
            credentials: None,
            subject: 0,
            timestamp_ns: None,
            expiry_ns: None,
            channel,
            seq: 0,
            kind: Kind::Message,
            request: 0,
            body,
        }
    }

    /// Writes its envelope (the bytes in the slot) into `out`, from its fields where
    /// they are.
    fn write_envelope(&self, out: &mut [u8]) {
        let head = envelope::Head {
            timestamp_ns: self.timestamp_ns.unwrap_or(0),
            expiry_ns: self.expiry_ns.unwrap_or(0),
            seq: self.seq,
            request: self.request,
            channel: self.channel,
            peer: self.peer,
            kind: self.kind,
        };
        envelope::write_head(out, envelope::Sender::of(Some(self.from), self.credentials, self.subject), head);
    }
}

/// What goes before a message's bytes in its slot: its envelope, written from the
/// message as it arrives, or copied as it was written when it was held.
#[derive(Clone, Copy)]
enum Head<'a> {
    Of(&'a Inbound<'a>),
    Written(&'a [u8]),
}

impl Head<'_> {
    fn write(self, out: &mut [u8]) {
        match self {
            Head::Of(m) => m.write_envelope(out),
            Head::Written(env) => out[..envelope::LEN].copy_from_slice(&env[..envelope::LEN]),
        }
    }
}

/// Where a protocol puts what it receives (the [`ReceiveRing`], or a test's own).
pub trait Sink: Send + Sync + 'static {
    /// Puts `message` where the application reads it and returns its position in the
    /// application's order, or `None` when there is no room now (offer it again later).
    fn deliver(&self, message: &Inbound<'_>) -> Option<u64>;
    /// The receive ring this sink is, if it is one: its deliveries are batched (see
    /// `deliveries` on `dyn Sink`).
    fn ring(&self) -> Option<&ReceiveRing> {
        None
    }
    /// Positions below this have been read by the application.
    fn consumed(&self) -> u64;
    /// The status changed.
    fn status(&self, event: StatusEvent);
}

impl dyn Sink {
    /// Opens deliveries: the messages of one read of a socket, say. The sink stays
    /// theirs until they are dropped, and waiting readers wake once, then (they cost
    /// one lock and one wake-up instead of one of each per message). Nothing else may
    /// be asked of the sink while they are open. Nothing is allocated: a read that
    /// delivers one message (a round trip's) opens them every time.
    pub fn deliveries(&self) -> SinkDeliveries<'_> {
        match self.ring() {
            Some(ring) => SinkDeliveries::Ring(ring.deliveries()),
            None => SinkDeliveries::OneByOne(self),
        }
    }
}

/// Messages delivered together; see `deliveries` on `dyn Sink`.
pub trait Deliveries {
    /// [`Sink::deliver`], one of these deliveries.
    fn deliver(&mut self, message: &Inbound<'_>) -> Option<u64>;

    /// A [`ReadWindow`] of `len` bytes for a byte stream to read into, after room for
    /// a message of `lead` bytes it had begun (0: none), in place of the window opened
    /// before; `None` where the sink has no such memory or no room now (then it reads
    /// into its own buffer).
    fn window(&mut self, lead: usize, len: usize) -> Option<ReadWindow> {
        let _ = (lead, len);
        None
    }

    /// Whether messages are held for want of room (one that comes now must wait behind
    /// them, to keep the order).
    fn holding(&self) -> bool {
        false
    }

    /// Holds `m` after what is held already until there is room, if what is held stays
    /// within `limit` bytes (envelopes included); whether it did. Sinks that cannot hold
    /// say no.
    fn hold(&mut self, m: &Inbound<'_>, limit: usize) -> bool {
        let _ = (m, limit);
        false
    }

    /// Delivers `m`, or, with no room or messages held already (they go first), holds
    /// it within `limit` bytes: whether it was delivered or held.
    fn deliver_or_hold(&mut self, m: &Inbound<'_>, limit: usize) -> bool {
        (!self.holding() && self.deliver(m).is_some()) || self.hold(m, limit)
    }
}

/// What a sink's deliveries are: a receive ring's, batched, or (a sink that has none
/// of its own) each message on its own.
pub enum SinkDeliveries<'a> {
    Ring(RingDeliveries<'a>),
    OneByOne(&'a dyn Sink),
}

impl Deliveries for SinkDeliveries<'_> {
    #[inline]
    fn deliver(&mut self, message: &Inbound<'_>) -> Option<u64> {
        match self {
            Self::Ring(d) => d.deliver(message),
            Self::OneByOne(sink) => sink.deliver(message),
        }
    }

    fn window(&mut self, lead: usize, len: usize) -> Option<ReadWindow> {
        match self {
            Self::Ring(d) => d.window(lead, len),
            Self::OneByOne(_) => None,
        }
    }

    fn holding(&self) -> bool {
        match self {
            Self::Ring(d) => d.holding(),
            Self::OneByOne(_) => false,
        }
    }

    fn hold(&mut self, m: &Inbound<'_>, limit: usize) -> bool {
        match self {
            Self::Ring(d) => d.hold(m, limit),
            Self::OneByOne(_) => false,
        }
    }
}

/// Status events kept for callers that poll ([`ReceiveRing::take_status_events`]).
const STATUS_LOG: usize = 256;

/// The hub's status, its recent events, and who listens to them.
struct StatusBoard {
    /// Whose status the hub's is: a connecting hub's own events are about its server
    /// (they carry it as the peer); a listening hub's own carry no peer, the others are
    /// its peers coming and going.
    connecting: bool,
    current: Status,
    log: VecDeque<StatusEvent>,
    listener: Option<StatusListener>,
}

/// What the ring's writer owns, under one lock.
struct Inlet {
    ring: Publisher,
    aside: Aside,
    spill: Spill,
    /// Messages that found no room (from [`ReceiveRing::deliver_or_hold`]): envelope and
    /// bytes end to end in `data`, oldest first.
    held: VecDeque<(usize, usize)>,
    data: Vec<u8>,
}

impl Inlet {
    /// Bytes of the messages held now (envelopes included).
    fn held_bytes(&self) -> usize {
        self.held.front().map_or(0, |&(start, _)| self.data.len() - start)
    }

    /// Gives back what held messages that went into the ring took: all of it once none
    /// is held, else the front once it is most of the buffer (so that steady overload
    /// does not grow it).
    fn compact(&mut self) {
        match self.held.front() {
            None => self.data.clear(),
            Some(&(start, _)) if start > self.data.len() / 2 => {
                self.data.drain(..start);
                for h in &mut self.held {
                    h.0 -= start;
                }
            }
            Some(_) => {}
        }
    }

    /// Keeps `m` after what is held already, until the ring has room.
    fn hold(&mut self, m: &Inbound<'_>) {
        let start = self.data.len();
        self.data.resize(start + envelope::LEN, 0);
        m.write_envelope(&mut self.data[start..]);
        self.data.extend_from_slice(m.body);
        self.held.push_back((start, envelope::LEN + m.body.len()));
    }
}

/// The aside area: bytes of messages larger than a slot, end to end, each kept until
/// the readers have moved past its slot (they read in order, so it is freed in order).
struct Aside {
    /// Where the area starts in the segment, and its length.
    start: usize,
    len: usize,
    /// Bytes ever taken from the area and ever given back: `taken % len` is where the
    /// next message goes, `taken - freed` how much is in use.
    taken: u64,
    freed: u64,
    /// The messages in the area, oldest first: their position in the ring, and `taken`
    /// just after them.
    placed: VecDeque<(u64, u64)>,
    /// Past [`ASIDE_HOT`], when to look next whether the readers took everything (and
    /// the next message can go back to the start).
    look_at: u64,
    /// Free bytes lent to a byte stream's reader, if any: see [`ReadWindow`].
    window: Option<WindowSpan>,
}

/// Where a [`ReadWindow`] lies: `at` in the area's running count of bytes (as `taken`),
/// `offset` in the segment.
#[derive(Clone, Copy, Debug)]
struct WindowSpan {
    at: u64,
    offset: usize,
    len: usize,
}

/// Free bytes of the aside area that a byte stream reads its socket straight into: a
/// message larger than a slot that then lies whole in them is delivered where it is
/// ([`Placement::Aside`] pointing at it) instead of being copied aside. At 4 KB per
/// message that is one copy of every byte fewer on the receiving side.
///
/// Opened by [`Deliveries::window`]; it lasts until the next window opens or the
/// deliveries end. Meanwhile other messages larger than a slot go before it (the one
/// the stream had begun, `lead`) or are spilled.
#[derive(Clone, Copy, Debug)]
pub struct ReadWindow {
    ptr: *mut u8,
    len: usize,
}

impl ReadWindow {
    /// The window's bytes, to read into and then parse.
    ///
    /// # Safety
    /// Only until the window ends (the next one opens, or the deliveries that opened it
    /// are dropped), and not beside another reference to these bytes.
    pub unsafe fn bytes<'b>(self) -> &'b mut [u8] {
        // SAFETY: the span lies in the ring's mapping (checked when it was opened), which
        // outlives the deliveries; no reader reads it (it is free: no unread message
        // lies there) and the writer writes no other message there while it is open.
        // Being open as long as the caller uses it is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// How far into the aside area messages go before it looks whether it can start over.
/// A reader that keeps up leaves the area empty most of the time: starting over then
/// writes where the CPU's cache likely still holds the lines, instead of going through
/// the whole area (8 MiB by default, this machine's whole last-level cache).
const ASIDE_HOT: u64 = 256 << 10;
/// How often it looks, in bytes placed, while the readers have not taken everything.
const ASIDE_LOOK_EVERY: u64 = 64 << 10;

/// What writing a message takes of the [`Inlet`].
type Writer<'a> = (&'a mut Publisher, &'a mut Aside, &'a mut Spill);

/// Messages in the aside area start on a cache line.
const ASIDE_ALIGN: usize = 64;

impl Aside {
    fn new(start: usize, len: usize) -> Aside {
        Aside { start, len, taken: 0, freed: 0, placed: VecDeque::new(), look_at: 0, window: None }
    }

    /// Where `n` bytes go from `from` in the running count: there, or at the area's
    /// start when they would run past its end.
    fn spot(&self, from: u64, n: u64) -> u64 {
        let len = self.len as u64;
        let at = from % len;
        if at + n > len { from + len - at } else { from }
    }

    /// Past [`ASIDE_HOT`] (now and then): once the readers took everything, the next
    /// bytes go to the area's start.
    fn start_over_if_empty(&mut self, consumed: &mut Option<impl FnOnce() -> u64>) {
        let len = self.len as u64;
        let at = self.taken % len;
        if at < ASIDE_HOT.min(len / 2) || self.taken < self.look_at {
            return;
        }
        if let Some(consumed) = consumed.take() {
            self.free(consumed());
        }
        if self.placed.is_empty() {
            self.taken += len - at;
            self.freed = self.taken;
        }
        self.look_at = self.taken + ASIDE_LOOK_EVERY;
    }

    /// Forgets the messages the readers are past (`consumed`).
    fn free(&mut self, consumed: u64) {
        while let Some(&(p, end)) = self.placed.front() {
            if p >= consumed {
                break;
            }
            self.freed = end;
            self.placed.pop_front();
        }
    }

    /// Whether the area has room up to `end` in the running count, once what the
    /// readers are past (`consumed`, asked only when room is short) is freed.
    fn room_to(&mut self, end: u64, consumed: &mut Option<impl FnOnce() -> u64>) -> bool {
        if end - self.freed > self.len as u64
            && let Some(consumed) = consumed.take()
        {
            self.free(consumed());
        }
        end - self.freed <= self.len as u64
    }

    /// Whether a message of `n` bytes goes here (rather than being spilled).
    fn takes(&self, n: usize) -> bool {
        n <= self.len / 2
    }

    /// Where in the segment the `n` bytes of the message at `position` go, or `None`
    /// while the area has no room; `consumed` (asked only when room is short) says
    /// which positions the readers are past. A message never wraps around the end:
    /// what is left there is skipped.
    fn place(&mut self, n: usize, position: u64, consumed: impl FnOnce() -> u64) -> Option<usize> {
        let len = self.len as u64;
        let need = n.next_multiple_of(ASIDE_ALIGN) as u64;
        let mut consumed = Some(consumed);
        if self.window.is_none() {
            // (With a window open the next message's place was worked out with it.)
            self.start_over_if_empty(&mut consumed);
        }
        let at = self.spot(self.taken, need);
        if !self.room_to(at + need, &mut consumed) {
            return None;
        }
        self.taken = at + need;
        self.placed.push_back((position, self.taken));
        Some(self.start + (at % len) as usize)
    }

    /// Whether a message of `n` bytes placed now would end before the open window (if
    /// one is open); else it is spilled.
    fn fits_before_window(&self, n: usize) -> bool {
        let need = n.next_multiple_of(ASIDE_ALIGN) as u64;
        self.window.is_none_or(|w| self.spot(self.taken, need) + need <= w.at)
    }

    /// Opens a window of `n` free bytes (ending the one open), after room for a message
    /// of `lead` bytes that goes aside first (0: none); where it is in the segment, or
    /// `None` without room.
    fn open_window(&mut self, lead: usize, n: usize, consumed: impl FnOnce() -> u64) -> Option<usize> {
        let len = self.len as u64;
        self.window = None;
        if !self.takes(n) || !self.takes(lead) {
            return None;
        }
        let mut consumed = Some(consumed);
        self.start_over_if_empty(&mut consumed);
        let lead_need = lead.next_multiple_of(ASIDE_ALIGN) as u64;
        let after_lead = self.spot(self.taken, lead_need) + lead_need;
        let at = self.spot(after_lead, n as u64);
        if !self.room_to(at + n as u64, &mut consumed) {
            return None;
        }
        let offset = self.start + (at % len) as usize;
        self.window = Some(WindowSpan { at, offset, len: n });
        Some(offset)
    }

    /// Where in the open window `body` lies (an offset into it), if it lies whole in it.
    fn in_window(&self, base: *const u8, body: &[u8]) -> Option<usize> {
        let w = self.window?;
        let at = (body.as_ptr() as usize).checked_sub(base as usize)?.checked_sub(w.offset)?;
        (at + body.len() <= w.len).then_some(at)
    }

    /// The message at `position` is the `n` bytes at `at` in the open window: they are
    /// its place, kept until the readers move past it.
    fn claim(&mut self, at: usize, n: usize, position: u64) -> usize {
        let w = self.window.expect("claimed in an open window");
        let end = w.at + (at + n) as u64;
        debug_assert!(end >= self.taken, "claims go forward");
        self.taken = end;
        self.placed.push_back((position, end));
        w.offset + at
    }
}

/// Messages larger than half the aside area, until the reader takes them.
#[derive(Default)]
struct Spill {
    held: HashMap<u64, Vec<u8>>,
    bytes: usize,
    next_key: u64,
}

/// How a ring is made.
#[derive(Clone, Copy, Debug)]
pub struct RingOptions {
    /// Bytes a slot holds, envelope included.
    pub slot_size: u32,
    /// Slots, a power of two.
    pub capacity: u32,
    /// Bytes of the aside area (0: none, every message larger than a slot is spilled).
    pub aside_bytes: usize,
    /// Bytes of spilled messages held at most (at least one is always accepted).
    pub spill_limit: usize,
}

impl RingOptions {
    /// Slots of 256 bytes with their envelope: a message up to 184 bytes goes in its
    /// slot, a larger one aside.
    pub const DEFAULT_SLOT: u32 = 256 - envelope::LEN as u32;
    pub const DEFAULT_CAPACITY: u32 = 4096;
    /// Messages up to 4 MiB go aside, larger ones are spilled.
    pub const DEFAULT_ASIDE: usize = 8 << 20;

    /// The ring of a transport whose messages go up to `max_message` bytes, with the
    /// hub's `slotSize` (the message bytes a slot holds) and `capacity` if given, and
    /// `receive_bytes` (`receiveQueueBytes`): the bytes of messages larger than a slot
    /// it holds for its reader at most, aside and spilled (one message is always taken).
    pub fn for_messages(
        slot_size: Option<u32>,
        capacity: Option<u32>,
        max_message: usize,
        receive_bytes: Option<usize>,
    ) -> RingOptions {
        let (aside_bytes, spill_limit) = match receive_bytes {
            Some(b) => (b.min(Self::DEFAULT_ASIDE), b.saturating_sub(Self::DEFAULT_ASIDE)),
            None => (Self::DEFAULT_ASIDE, max_message.saturating_mul(2).max(64 << 20)),
        };
        RingOptions {
            slot_size: slot_size.unwrap_or(Self::DEFAULT_SLOT) + envelope::LEN as u32,
            capacity: capacity.unwrap_or(Self::DEFAULT_CAPACITY),
            aside_bytes,
            spill_limit,
        }
    }
}

/// The receive ring; see the module docs.
pub struct ReceiveRing {
    segment: Arc<Segment>,
    inlet: Mutex<Inlet>,
    /// Half the ring: unreliable sources read their socket only while the slowest
    /// reader is less behind.
    half: u64,
    spill_limit: usize,
    /// Where the aside area starts in the segment (it runs to the segment's end).
    aside_start: usize,
    /// Set by [`arm`](Self::arm), taken by whoever delivers next.
    armed: AtomicBool,
    doorbell: Mutex<Option<Doorbell>>,
    status: Mutex<StatusBoard>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReceiveRing {
    /// A ring for a hub that is `connecting` (its status starts so, and follows its
    /// server's) or not (it is `connected` from the start).
    pub fn new(options: RingOptions, connecting: bool) -> Result<ReceiveRing> {
        // Two readers at most: the transport's own, and one elsewhere (JavaScript).
        let layout =
            Layout { slot_size: options.slot_size, capacity: options.capacity, max_subscribers: 2, pool_size: 0 };
        let aside_bytes = options.aside_bytes.next_multiple_of(ASIDE_ALIGN);
        let segment = Arc::new(Segment::private(layout, aside_bytes)?);
        let aside_start = segment.len() - aside_bytes;
        Ok(ReceiveRing {
            inlet: Mutex::new(Inlet {
                ring: Publisher::sole(segment.clone(), Backpressure::DropNew),
                aside: Aside::new(aside_start, aside_bytes),
                spill: Spill::default(),
                held: VecDeque::new(),
                data: Vec::new(),
            }),
            half: u64::from(options.capacity / 2),
            spill_limit: options.spill_limit,
            aside_start,
            segment,
            armed: AtomicBool::new(false),
            doorbell: Mutex::new(None),
            status: Mutex::new(StatusBoard {
                connecting,
                current: if connecting { Status::Connecting } else { Status::Connected },
                log: VecDeque::new(),
                listener: None,
            }),
        })
    }

    /// The ring's memory.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Writes the message with envelope `head` and bytes `body` into the next slot
    /// (putting its bytes aside or spilling them when larger); its position, or `None`
    /// without room. Readers that wait are not woken: [`delivered`](Self::delivered)
    /// does that.
    fn write(&self, (ring, aside, spill): Writer<'_>, head: Head<'_>, body: &[u8]) -> Option<u64> {
        let len = envelope::LEN + body.len();
        if len <= ring.slot_size() {
            return ring.put(len, |out| {
                head.write(out);
                out[envelope::LEN..].copy_from_slice(body);
            });
        }
        let in_window = aside.in_window(self.segment.as_ptr(), body);
        let spills = in_window.is_none() && (!aside.takes(body.len()) || !aside.fits_before_window(body.len()));
        if spills && spill.bytes + body.len() > self.spill_limit && spill.bytes > 0 {
            return None;
        }
        let mut loan = ring.loan().ok().flatten()?;
        let position = loan.seq();
        let placement = if let Some(at) = in_window {
            // Read there by the stream: it stays where it is.
            let offset = aside.claim(at, body.len(), position);
            Placement::Aside { offset: offset as u64, len: body.len() as u32 }
        } else if spills {
            let key = spill.next_key;
            spill.next_key += 1;
            // A ring nobody reads (a hub that only publishes, as a relay may) keeps
            // nothing: it would only pile up.
            if zerohop_shm::ring::table::subscriber_count(&self.segment) > 0 {
                spill.bytes += body.len();
                spill.held.insert(key, body.to_vec());
            }
            Placement::Spilled { key, len: body.len() as u32 }
        } else {
            // Without room aside the loan is dropped unused: the slot is written by the
            // next message instead.
            let consumed = || position - zerohop_shm::ring::table::slowest_lag(&self.segment, position, None);
            let offset = aside.place(body.len(), position, consumed)?;
            // SAFETY: `offset..offset + body.len()` lies in the aside area, inside the
            // segment's mapping, which lives as long as `self`. Only this writer (under
            // the inlet's lock) writes there, and no reader reads these bytes: the
            // message they belonged to before is one every reader has moved past.
            unsafe {
                std::ptr::copy_nonoverlapping(body.as_ptr(), self.segment.as_ptr().add(offset), body.len());
            }
            Placement::Aside { offset: offset as u64, len: body.len() as u32 }
        };
        let out = loan.as_mut_slice();
        head.write(out);
        envelope::set_placement(out, placement);
        Some(loan.commit_unannounced(envelope::LEN))
    }

    /// The bytes at `offset` of the ring's memory, of a message in the aside area
    /// that the caller has not moved past (so they stay put).
    pub fn aside(&self, offset: u64, len: u32) -> Option<&[u8]> {
        let (offset, len) = (usize::try_from(offset).ok()?, len as usize);
        if offset < self.aside_start || offset.checked_add(len)? > self.segment.len() {
            return None;
        }
        // SAFETY: checked to lie in the aside area of the mapping, which lives as long
        // as `self`; the writer does not touch the bytes of a message a reader has not
        // moved past (the caller's promise).
        Some(unsafe { std::slice::from_raw_parts(self.segment.as_ptr().add(offset), len) })
    }

    /// Delivers `m` if there is room now; its position in reading order.
    pub fn deliver(&self, m: &Inbound<'_>) -> Option<u64> {
        self.deliveries().deliver(m)
    }

    /// A [`RingDeliveries`]: the ring's writer, held for several deliveries.
    pub fn deliveries(&self) -> RingDeliveries<'_> {
        RingDeliveries { ring: self, inlet: Some(lock(&self.inlet)), delivered: false }
    }

    /// Delivers `m`, or holds it (in order, after what is held already) until there is
    /// room: for sources that cannot keep what they received.
    pub fn deliver_or_hold(&self, m: &Inbound<'_>) {
        let mut inlet = lock(&self.inlet);
        let Inlet { ring, aside, spill, held, .. } = &mut *inlet;
        if held.is_empty() && self.write((ring, aside, spill), Head::Of(m), m.body).is_some() {
            drop(inlet);
            self.delivered();
            return;
        }
        inlet.hold(m);
    }

    /// Messages held for want of room, and their bytes (envelopes included).
    pub fn held(&self) -> (usize, usize) {
        let inlet = lock(&self.inlet);
        (inlet.held.len(), inlet.held_bytes())
    }

    /// Moves what is held into the ring while there is room; whether anything moved.
    pub fn deliver_held(&self) -> bool {
        let mut inlet = lock(&self.inlet);
        let mut moved = false;
        let Inlet { ring, aside, spill, held, data } = &mut *inlet;
        while let Some(&(start, len)) = held.front() {
            let (head, body) = data[start..start + len].split_at(envelope::LEN);
            if self.write((ring, aside, spill), Head::Written(head), body).is_none() {
                break;
            }
            held.pop_front();
            moved = true;
        }
        inlet.compact();
        drop(inlet);
        if moved {
            self.delivered();
        }
        moved
    }

    /// Whether nothing is held and the slowest reader is less than half a ring behind:
    /// an unreliable source may read another batch. Reading only then keeps holding for
    /// real overload.
    pub fn has_room_for_a_batch(&self) -> bool {
        let inlet = lock(&self.inlet);
        inlet.held.is_empty() && inlet.ring.slowest_lag() < self.half
    }

    /// Positions below this have been read by every reader.
    pub fn consumed(&self) -> u64 {
        let inlet = lock(&self.inlet);
        zerohop_shm::ring::table::tail(&self.segment) - inlet.ring.slowest_lag()
    }

    /// The bytes of a spilled message (its envelope gives the key); once.
    pub fn take_spilled(&self, key: u64) -> Option<Vec<u8>> {
        let mut inlet = lock(&self.inlet);
        let bytes = inlet.spill.held.remove(&key)?;
        inlet.spill.bytes -= bytes.len();
        Some(bytes)
    }

    // ---- the doorbell ------------------------------------------------------------

    /// Sets what runs (on the delivering thread) when an armed reader may read.
    pub fn set_doorbell(&self, doorbell: Option<Doorbell>) {
        *lock(&self.doorbell) = doorbell;
    }

    /// Asks for one ring of the doorbell once the tail passes `cursor` (now, if it has).
    pub fn arm(&self, cursor: u64) {
        self.armed.store(true, Ordering::SeqCst);
        // Pairs with the fence in `delivered`: either that sees `armed`, or this sees the
        // new tail (a store followed by a load on each side needs SeqCst between them).
        std::sync::atomic::fence(Ordering::SeqCst);
        if zerohop_shm::ring::table::tail(&self.segment) > cursor {
            self.delivered();
        }
    }

    /// Cancels an [`arm`](Self::arm); true if it was still armed.
    pub fn disarm(&self) -> bool {
        self.armed.swap(false, Ordering::SeqCst)
    }

    /// Wakes the readers that wait: Rust subscribers parked on the ring, and the
    /// doorbell if armed. Called after the ring's tail moved.
    pub fn delivered(&self) {
        // Its fence also orders the tail before the `armed` load below (see `arm`).
        zerohop_shm::ring::table::announce(&self.segment);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            let doorbell = lock(&self.doorbell).clone();
            if let Some(ring) = doorbell {
                ring();
            }
        }
    }

    // ---- the status board --------------------------------------------------------

    /// Records a status event and tells the listener.
    pub fn report(&self, event: StatusEvent) {
        let mut board = lock(&self.status);
        if board.connecting || event.peer.is_none() {
            board.current = event.status;
        }
        if board.log.len() == STATUS_LOG {
            board.log.pop_front();
        }
        board.log.push_back(event.clone());
        let listener = board.listener.clone();
        drop(board);
        if let Some(l) = listener {
            l(&event);
        }
    }

    /// The hub's status now.
    pub fn status(&self) -> Status {
        lock(&self.status).current
    }

    /// Whether the hub connects to one server (see [`ReceiveRing::new`]).
    pub fn connecting(&self) -> bool {
        lock(&self.status).connecting
    }

    /// Status events since the last call (at most the last 256).
    pub fn take_status_events(&self) -> Vec<StatusEvent> {
        lock(&self.status).log.drain(..).collect()
    }

    /// Calls `listener` with the events not taken yet, then with every one from now on.
    /// Both under the board's lock, so an event reported meanwhile is in one or the
    /// other, never lost between them.
    pub fn set_status_listener(&self, listener: Option<StatusListener>) {
        let mut board = lock(&self.status);
        if let Some(l) = &listener {
            for e in board.log.drain(..) {
                l(&e);
            }
        }
        board.listener = listener;
    }
}

/// Deliveries into a [`ReceiveRing`] under one hold of its writer; readers that wait
/// wake when it is dropped.
pub struct RingDeliveries<'a> {
    ring: &'a ReceiveRing,
    inlet: Option<MutexGuard<'a, Inlet>>,
    delivered: bool,
}

impl Deliveries for RingDeliveries<'_> {
    fn deliver(&mut self, m: &Inbound<'_>) -> Option<u64> {
        let Inlet { ring, aside, spill, .. } = &mut **self.inlet.as_mut().expect("held until dropped");
        let position = self.ring.write((ring, aside, spill), Head::Of(m), m.body);
        self.delivered |= position.is_some();
        position
    }

    fn holding(&self) -> bool {
        !self.inlet.as_ref().expect("held until dropped").held.is_empty()
    }

    fn hold(&mut self, m: &Inbound<'_>, limit: usize) -> bool {
        let inlet = &mut **self.inlet.as_mut().expect("held until dropped");
        if inlet.held_bytes() + envelope::LEN + m.body.len() > limit {
            return false;
        }
        inlet.hold(m);
        true
    }

    fn window(&mut self, lead: usize, len: usize) -> Option<ReadWindow> {
        let segment = &self.ring.segment;
        let inlet = &mut **self.inlet.as_mut().expect("held until dropped");
        let consumed = || zerohop_shm::ring::table::tail(segment) - inlet.ring.slowest_lag();
        let offset = inlet.aside.open_window(lead, len, consumed)?;
        assert!(offset + len <= segment.len(), "a window lies in the aside area");
        // SAFETY: `offset + len` is inside the mapping (asserted); the pointer is only
        // dereferenced through `ReadWindow::bytes`, whose contract keeps it in bounds
        // and in time.
        Some(ReadWindow { ptr: unsafe { segment.as_ptr().add(offset) }, len })
    }
}

impl Drop for RingDeliveries<'_> {
    fn drop(&mut self) {
        if let Some(inlet) = self.inlet.as_mut() {
            inlet.aside.window = None;
        }
        drop(self.inlet.take());
        if self.delivered {
            self.ring.delivered();
        }
    }
}

impl Sink for ReceiveRing {
    fn deliver(&self, message: &Inbound<'_>) -> Option<u64> {
        ReceiveRing::deliver(self, message)
    }

    fn ring(&self) -> Option<&ReceiveRing> {
        Some(self)
    }

    fn consumed(&self) -> u64 {
        ReceiveRing::consumed(self)
    }

    fn status(&self, event: StatusEvent) {
        self.report(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use zerohop_shm::Subscriber;

    #[test]
    fn a_message_writes_the_envelope_its_fields_make() {
        let body = b"x";
        let m = Inbound {
            timestamp_ns: Some(5),
            seq: 9,
            request: 1 << 40,
            kind: Kind::Request,
            ..Inbound::message(7, "[fe80::1]:4".parse().unwrap(), 3, body)
        };
        let unix = Inbound { credentials: Some(Credentials { pid: 1, uid: 2, gid: 3 }), ..m };
        let subject = Inbound { subject: 77, ..m };
        for m in [m, unix, subject] {
            let mut written = [0xAAu8; envelope::LEN];
            m.write_envelope(&mut written);
            let expected = Envelope {
                from: if m.credentials.is_some() || m.subject != 0 { None } else { Some(m.from) },
                credentials: m.credentials,
                subject: m.subject,
                timestamp_ns: m.timestamp_ns,
                seq: m.seq,
                channel: m.channel,
                peer: m.peer,
                kind: m.kind,
                request: m.request,
                ..Envelope::default()
            };
            assert_eq!(Envelope::read(&written), Some(expected));
            let mut by_envelope = [0x55u8; envelope::LEN];
            expected.write(&mut by_envelope);
            assert_eq!(written, by_envelope);
        }
    }

    fn ring(capacity: u32) -> ReceiveRing {
        ReceiveRing::new(RingOptions { slot_size: 256, capacity, aside_bytes: 0, spill_limit: 1 << 20 }, false).unwrap()
    }

    fn from() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn read(sub: &mut Subscriber, ring: &ReceiveRing) -> Option<(Envelope, Vec<u8>)> {
        let mut out = Vec::new();
        let mut aside = None;
        // Aside bytes are read before the cursor moves on, as readers must.
        sub.try_recv_then(&mut out, |out| {
            if let Some(Envelope { placement: Placement::Aside { offset, len }, .. }) = Envelope::read(out) {
                aside = Some(ring.aside(offset, len).expect("inside the aside area").to_vec());
            }
        })?;
        let env = Envelope::read(&out).unwrap();
        let body = match env.placement {
            Placement::Inline => out[envelope::LEN..].to_vec(),
            Placement::Spilled { key, .. } => ring.take_spilled(key).unwrap(),
            Placement::Aside { .. } => aside.unwrap(),
        };
        Some((env, body))
    }

    fn ring_with_aside(capacity: u32, aside_bytes: usize) -> ReceiveRing {
        ReceiveRing::new(RingOptions { slot_size: 128, capacity, aside_bytes, spill_limit: 1 << 20 }, false).unwrap()
    }

    #[test]
    fn messages_larger_than_a_slot_go_aside_up_to_half_of_it_and_spill_beyond() {
        let r = ring_with_aside(8, 4096);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        for (i, len) in [1000usize, 2048, 2049, 40].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
            assert!(r.deliver(&Inbound::message(1, from(), 0, &body)).is_some());
            let (env, got) = read(&mut sub, &r).unwrap();
            assert_eq!(got, body, "message {i} of {len} bytes");
            let placed = match env.placement {
                Placement::Inline => "inline",
                Placement::Aside { len: l, .. } if l as usize == len => "aside",
                Placement::Spilled { .. } => "spilled",
                other => panic!("{other:?}"),
            };
            assert_eq!(placed, ["aside", "aside", "spilled", "inline"][i], "message {i} of {len} bytes");
        }
        // Out of the area, or past its end: not the ring's bytes to give.
        assert!(r.aside(0, 16).is_none());
        assert!(r.aside((r.segment().len() - 8) as u64, 16).is_none());
    }

    #[test]
    fn the_aside_area_wraps_and_waits_for_the_reader_without_overwriting_unread_bytes() {
        // 4 KiB aside, messages of 1000 bytes (1024 placed): four fit at once.
        let r = ring_with_aside(64, 4096);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let body = |n: u32| vec![n as u8; 1000];
        let (mut sent, mut got) = (0u32, 0u32);
        while got < 50 {
            // Write until the area is full, then read some, unevenly.
            while r.deliver(&Inbound { seq: u64::from(sent), ..Inbound::message(1, from(), 0, &body(sent)) }).is_some()
            {
                sent += 1;
            }
            assert!(sent - got <= 4, "{} messages in a 4 KiB area", sent - got);
            for _ in 0..1 + got % 3 {
                let Some((env, b)) = read(&mut sub, &r) else { break };
                assert_eq!((env.seq, b), (u64::from(got), body(got)));
                got += 1;
            }
        }
        // A message that does not fit at the end of the area skips to its start.
        let r = ring_with_aside(64, 4096);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        for n in 0..20u32 {
            let len = 300 + 200 * (n as usize % 5);
            assert!(r.deliver(&Inbound::message(1, from(), 0, &vec![n as u8; len])).is_some(), "message {n}");
            assert_eq!(read(&mut sub, &r).unwrap().1, vec![n as u8; len]);
        }
    }

    #[test]
    fn a_reader_that_keeps_up_keeps_the_aside_area_near_its_start() {
        // 8 MiB aside, 4 KB messages: a reader one message behind leaves the area empty
        // at every look, so the writer never goes far past `ASIDE_HOT`.
        let r = ring_with_aside(4096, 8 << 20);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let start = r.segment().len() - (8 << 20);
        let mut furthest = 0;
        for n in 0..10_000u32 {
            assert!(r.deliver(&Inbound::message(1, from(), 0, &vec![n as u8; 4096])).is_some());
            if n % 2 == 1 {
                for k in [n - 1, n] {
                    let (env, b) = read(&mut sub, &r).unwrap();
                    assert_eq!(b, vec![k as u8; 4096]);
                    if let Placement::Aside { offset, .. } = env.placement {
                        furthest = furthest.max(offset as usize - start);
                    }
                }
            }
        }
        let bound = (ASIDE_HOT + ASIDE_LOOK_EVERY) as usize + 2 * 4096;
        assert!(furthest < bound, "went {furthest} bytes in, bound {bound}");
        // A reader that falls behind: the writer goes on past the start (and waits for
        // room at the end as before), and no unread message is overwritten.
        let mut held = Vec::new();
        for n in 0..1500u32 {
            if r.deliver(&Inbound::message(1, from(), 0, &vec![n as u8; 4096])).is_none() {
                break;
            }
            held.push(n);
        }
        assert!(held.len() > 1000, "{} of 4 KB fit in 8 MiB", held.len());
        for n in held {
            assert_eq!(read(&mut sub, &r).unwrap().1, vec![n as u8; 4096]);
        }
    }

    #[test]
    fn a_stream_read_into_windows_delivers_every_message_intact() {
        // A byte stream of messages, small (inline) and large (aside), read in pieces
        // of random sizes into windows where there are (into a buffer of its own where
        // not), a message cut by a read finished from a copy (`lead`), while the reader
        // reads at its own pace: every message arrives whole, in order.
        let r = ring_with_aside(4096, 64 << 10);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let sizes: Vec<usize> =
            (0..4000).map(|_| if next(3) == 0 { 20 + next(80) } else { 200 + next(6000) } as usize).collect();
        let body = |i: usize| -> Vec<u8> { (0..sizes[i]).map(|k| (i * 31 + k * 7) as u8).collect() };
        let wire: Vec<u8> = (0..sizes.len()).flat_map(body).collect();
        let (mut at, mut i, mut partial) = (0usize, 0usize, Vec::new());
        let (mut got, mut in_place, mut own_buffer) = (0usize, 0, 0);
        let mut buf = vec![0u8; 16 << 10];
        // Messages without room, waiting (the stream is not read meanwhile), as the
        // engine holds them.
        let mut held: VecDeque<Vec<u8>> = VecDeque::new();
        let sink: &dyn Sink = &r;
        while got < sizes.len() {
            let mut d = sink.deliveries();
            while let Some(m) = held.front() {
                if d.deliver(&Inbound::message(1, from(), 0, m)).is_none() {
                    break;
                }
                held.pop_front();
            }
            for _ in 0..3 {
                if !held.is_empty() {
                    break;
                }
                let lead = if partial.is_empty() { 0 } else { sizes[i] };
                let window = d.window(lead, 16 << 10);
                let into: &mut [u8] = match window {
                    // SAFETY: used only until the next window opens, below in this loop.
                    Some(w) => unsafe { w.bytes() },
                    None => {
                        own_buffer += 1;
                        &mut buf
                    }
                };
                let n = (1 + next(16 << 10) as usize).min(wire.len() - at);
                into[..n].copy_from_slice(&wire[at..at + n]);
                at += n;
                // Parse what came: finish the message begun, then whole ones, then begin one.
                let mut p = 0;
                while i < sizes.len() && p < n {
                    if !partial.is_empty() || n - p < sizes[i] {
                        let take = (sizes[i] - partial.len()).min(n - p);
                        partial.extend_from_slice(&into[p..p + take]);
                        p += take;
                        if partial.len() < sizes[i] {
                            break;
                        }
                        if !held.is_empty() || d.deliver(&Inbound::message(1, from(), 0, &partial)).is_none() {
                            held.push_back(partial.clone());
                        }
                        partial.clear();
                    } else {
                        let m = &into[p..p + sizes[i]];
                        if !held.is_empty() || d.deliver(&Inbound::message(1, from(), 0, m)).is_none() {
                            held.push_back(m.to_vec());
                        } else {
                            in_place += usize::from(window.is_some() && sizes[i] > 128);
                        }
                        p += sizes[i];
                    }
                    i += 1;
                }
            }
            drop(d);
            // The reader reads some of what is there, often nothing (all of it at the end).
            let ready = i - held.len() - got;
            let reads = match next(4) {
                _ if i == sizes.len() => ready,
                0 | 1 => 0,
                _ => next(ready as u64 + 1) as usize,
            };
            for _ in 0..reads {
                let (_, b) = read(&mut sub, &r).expect("delivered");
                assert!(b == body(got), "message {got} of {} bytes intact", sizes[got]);
                got += 1;
            }
        }
        assert!(in_place > 500 && own_buffer > 10, "{in_place} read in place, {own_buffer} reads without a window");
    }

    #[test]
    fn a_window_never_lies_over_unread_messages() {
        // Windows filled with 4 KB messages delivered in place, a reader that falls
        // behind by more than the area holds and then catches up: no window opens over
        // a message not read yet, and every message reads as it was written.
        let r = ring_with_aside(4096, 64 << 10);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let base = r.segment().as_ptr() as usize;
        let sink: &dyn Sink = &r;
        let (mut live, mut written, mut got, mut windows) = (VecDeque::new(), 0u32, 0u32, 0);
        for round in 0..300 {
            let mut d = sink.deliveries();
            if let Some(w) = d.window(0, 16 << 10) {
                windows += 1;
                // SAFETY: used only in this block, before the deliveries end.
                let bytes = unsafe { w.bytes() };
                let start = bytes.as_ptr() as usize - base;
                for &(o, l) in &live {
                    assert!(o + l <= start || start + bytes.len() <= o, "a window over an unread message");
                }
                for k in 0..3 {
                    let m = &mut bytes[k * 5000..k * 5000 + 4096];
                    m.fill(written as u8);
                    assert!(d.deliver(&Inbound::message(1, from(), 0, m)).is_some());
                    live.push_back((start + k * 5000, 4096));
                    written += 1;
                }
            }
            drop(d);
            if round % 7 == 6 {
                while live.len() > 1 {
                    let (env, b) = read(&mut sub, &r).unwrap();
                    assert!(matches!(env.placement, Placement::Aside { .. }));
                    assert_eq!(b, vec![got as u8; 4096], "message {got}");
                    live.pop_front();
                    got += 1;
                }
            }
        }
        assert!(got > 300 && windows < 300, "{got} read, {windows} windows in 300 rounds");
    }

    #[test]
    fn a_message_not_in_the_window_goes_before_it_or_is_spilled() {
        let r = ring_with_aside(64, 64 << 10);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let base = r.segment().as_ptr() as usize;
        let sink: &dyn Sink = &r;
        let mut d = sink.deliveries();
        // Room for a 3000-byte message it had begun, then the window.
        let w = d.window(3000, 16 << 10).unwrap();
        // SAFETY: used only here, before the deliveries end.
        let window = unsafe { w.bytes() };
        let start = window.as_ptr() as usize - base;
        window[..4000].fill(9);
        let before = vec![1u8; 3000];
        let after = vec![2u8; 3000];
        for m in [&before, &after] {
            assert!(d.deliver(&Inbound::message(1, from(), 0, m)).is_some());
        }
        assert!(d.deliver(&Inbound::message(1, from(), 0, &window[..4000])).is_some());
        drop(d);
        let (e1, b1) = read(&mut sub, &r).unwrap();
        let (e2, b2) = read(&mut sub, &r).unwrap();
        let (e3, b3) = read(&mut sub, &r).unwrap();
        assert!(matches!(e1.placement, Placement::Aside { offset, len: 3000 } if offset as usize + 3000 <= start));
        assert!(matches!(e2.placement, Placement::Spilled { .. }), "no room before the window: {:?}", e2.placement);
        assert!(matches!(e3.placement, Placement::Aside { offset, .. } if offset as usize == start));
        assert_eq!((b1, b2, b3), (before, after, vec![9u8; 4000]));
    }

    #[test]
    fn held_messages_keep_their_order_and_wait_for_room() {
        let r = ring(4);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        for i in 0..10u8 {
            r.deliver_or_hold(&Inbound { seq: u64::from(i), ..Inbound::message(0, from(), 0, &[i]) });
        }
        assert!(!r.has_room_for_a_batch());
        let mut got = Vec::new();
        while got.len() < 10 {
            while let Some((env, body)) = read(&mut sub, &r) {
                assert_eq!(env.seq, u64::from(body[0]));
                got.push(body[0]);
            }
            r.deliver_held();
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(r.has_room_for_a_batch());
    }

    /// Under steady overload (held messages going into the ring as others are held),
    /// what is held counts only the messages still held, and its buffer stays small.
    #[test]
    fn what_is_held_counts_only_the_messages_still_held() {
        let r = ring(4);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let one = envelope::LEN + 1;
        let mut next = 0u64;
        let mut offer = |r: &ReceiveRing| {
            let body = [next as u8];
            let m = Inbound { seq: next, ..Inbound::message(0, from(), 0, &body) };
            let mut d = r.deliveries();
            assert!(d.deliver_or_hold(&m, 8 * one), "within the bound");
            next += 1;
        };
        for _ in 0..10 {
            offer(&r);
        }
        assert_eq!(r.held(), (6, 6 * one), "4 in the ring, 6 held");
        for got in 0..1000u64 {
            let (env, _) = read(&mut sub, &r).unwrap();
            assert_eq!(env.seq, got, "in order");
            r.deliver_held();
            offer(&r);
            assert_eq!(r.held().1, 6 * one, "one in, one out: the same held");
        }
        assert!(lock(&r.inlet).data.len() <= 2 * 7 * one, "compacted: {}", lock(&r.inlet).data.len());
    }

    #[test]
    fn large_messages_spill_and_a_full_ring_refuses() {
        let r = ring(2);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let big = vec![7u8; 10_000];
        assert!(r.deliver(&Inbound::message(3, from(), 1, &big)).is_some());
        assert!(r.deliver(&Inbound::message(3, from(), 1, b"small")).is_some());
        assert!(r.deliver(&Inbound::message(3, from(), 1, b"no room")).is_none());
        let (env, body) = read(&mut sub, &r).unwrap();
        assert_eq!((env.peer, env.channel, body), (3, 1, big));
        assert_eq!(read(&mut sub, &r).unwrap().1, b"small");
        assert_eq!(r.take_spilled(0), None, "taken once");
    }

    /// A ring nobody reads keeps no spilled bytes, so that large messages never fill it.
    #[test]
    fn a_ring_without_readers_keeps_nothing_spilled() {
        let r =
            ReceiveRing::new(RingOptions { slot_size: 256, capacity: 4, aside_bytes: 0, spill_limit: 20_000 }, false)
                .unwrap();
        let big = vec![7u8; 10_000];
        for _ in 0..100 {
            assert!(r.deliver(&Inbound::message(3, from(), 1, &big)).is_some());
        }
        assert_eq!(r.take_spilled(0), None);
    }

    #[test]
    fn the_doorbell_rings_once_per_arm() {
        let r = ring(8);
        let rings = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = rings.clone();
        r.set_doorbell(Some(Arc::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })));
        r.deliver(&Inbound::message(0, from(), 0, b"a"));
        assert_eq!(rings.load(Ordering::SeqCst), 0, "not armed");
        r.arm(0); // the tail is past 0 already: rings now
        assert_eq!(rings.load(Ordering::SeqCst), 1);
        r.arm(1);
        r.deliver(&Inbound::message(0, from(), 0, b"b"));
        r.deliver(&Inbound::message(0, from(), 0, b"c"));
        assert_eq!(rings.load(Ordering::SeqCst), 2, "one ring for a burst");
    }

    #[test]
    fn deliveries_ring_the_doorbell_once_at_their_end() {
        let r = ring(8);
        let mut sub = Subscriber::new(r.segment().clone()).unwrap();
        let rings = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = rings.clone();
        r.set_doorbell(Some(Arc::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })));
        r.arm(0);
        let sink: &dyn Sink = &r;
        let mut deliveries = sink.deliveries();
        assert_eq!(deliveries.deliver(&Inbound::message(0, from(), 0, b"a")), Some(0));
        assert_eq!(deliveries.deliver(&Inbound::message(0, from(), 0, b"b")), Some(1));
        assert_eq!(read(&mut sub, &r).unwrap().1, b"a", "readable before the deliveries end");
        assert_eq!(rings.load(Ordering::SeqCst), 0);
        drop(deliveries);
        assert_eq!(rings.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_status_listener_gets_every_event_however_late_it_comes() {
        // Events reported while the listener is being set are in the backlog it is
        // handed or reach it live: none is lost between the two.
        for round in 0..200 {
            let r = Arc::new(
                ReceiveRing::new(RingOptions { slot_size: 128, capacity: 2, aside_bytes: 0, spill_limit: 0 }, false)
                    .unwrap(),
            );
            let reporter = {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        r.report(StatusEvent {
                            status: Status::Connecting,
                            peer: Some(from().to_string()),
                            error: None,
                        });
                    }
                })
            };
            for _ in 0..round % 20 {
                std::hint::spin_loop();
            }
            let got = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let g = got.clone();
            r.set_status_listener(Some(Arc::new(move |_: &StatusEvent| {
                g.fetch_add(1, Ordering::SeqCst);
            })));
            reporter.join().unwrap();
            assert_eq!(got.load(Ordering::SeqCst), 50, "round {round}");
        }
    }

    #[test]
    fn the_status_is_the_hubs_own_not_its_peers() {
        let r = ReceiveRing::new(RingOptions { slot_size: 128, capacity: 2, aside_bytes: 0, spill_limit: 0 }, false)
            .unwrap();
        assert_eq!(r.status(), Status::Connected);
        r.report(StatusEvent { status: Status::Disconnected, peer: Some(from().to_string()), error: None });
        assert_eq!(r.status(), Status::Connected, "a listener's peer left");
        r.report(StatusEvent { status: Status::Closed, peer: None, error: None });
        assert_eq!(r.status(), Status::Closed);
        assert_eq!(r.take_status_events().len(), 2);
    }
}
