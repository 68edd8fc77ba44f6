//! Reliable delivery across reconnects on stream transports (QUIC now; TCP and Unix
//! sockets later), without I/O.
//!
//! A byte stream is reliable only while its connection lives: what was written before
//! the connection broke may or may not have reached the peer's application. So the
//! sender keeps every message until the receiver acknowledges that its application has
//! *read* it, and after a reconnect sends everything unacknowledged again; the receiver
//! numbers messages (the stream header carries the first one's sequence number) and
//! drops the ones it has already delivered. A receiver that restarted knows nothing
//! and takes the stream from where it starts.
//!
//! - [`SendQueue`]: the sender's messages, framed for the stream, from the oldest
//!   unacknowledged one; bounded in bytes.
//! - [`ReceiveWindow`]: the receiver's duplicate filter and acknowledgements.
//! - [`StreamHeader`]: the first bytes of every stream: kind, the sender's session,
//!   the channel and the first sequence number.
//!
//! ```
//! use zerohop_proto::session::{ReceiveWindow, SendQueue};
//!
//! let mut q = SendQueue::new(1 << 20);
//! q.push(b"a");
//! q.push(b"b");
//! let wire = q.unsent().to_vec(); // written to the stream…
//! q.mark_sent(wire.len());
//! // …the connection breaks before an ack: on the next one, both go again.
//! assert_eq!(q.rewind(), 0);
//! assert_eq!(q.unsent(), &wire[..]);
//! q.mark_sent(wire.len()); // the new stream carries both again
//!
//! // The receiver had delivered "a" (position 10 in its application's queue) but
//! // nothing was read: both are unacknowledged, "a" is a duplicate.
//! let mut w = ReceiveWindow::default();
//! w.start_stream(0);
//! assert_eq!(w.accept(), Some(0));
//! w.delivered(10, 0);
//! w.start_stream(0);
//! assert_eq!(w.accept(), None, "already delivered");
//! assert_eq!(w.accept(), Some(1));
//! w.delivered(11, 1);
//! assert_eq!(w.consumed(12), Some(2), "the application read both: ack up to 2");
//! q.ack(2).unwrap();
//! assert!(q.is_empty());
//! ```

use std::collections::VecDeque;

pub use crate::stream::put_varint;
use crate::stream::{MAX_PREFIX_LEN, write_prefix, write_tagged_prefix};

/// The smallest ring a [`SendQueue`] makes (it grows by doubling). The unit tests
/// start tiny, so that their messages wrap around the ring's end and make it grow.
#[cfg(not(test))]
const MIN_RING: usize = 64 << 10;
#[cfg(test)]
const MIN_RING: usize = 16;

/// An acknowledgement that the sender cannot make sense of: the peer is broken or hostile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAck {
    pub ack: u64,
    /// One past the last message sent.
    pub sent_until: u64,
}

impl core::fmt::Display for BadAck {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "acknowledgement {} is beyond the last message sent ({})", self.ack, self.sent_until)
    }
}

impl std::error::Error for BadAck {}

/// Per channel, the messages a sender queued so far, each counted once whoever it went
/// to: where a queue made now starts numbering (see [`SendQueue::starting_at`]), past
/// every number an earlier queue of the channel used.
#[derive(Debug, Default)]
pub struct Numbering(Vec<u64>);

impl Numbering {
    /// The number of the next message on `channel`, which is counted.
    #[inline]
    pub fn next(&mut self, channel: u16) -> u64 {
        let i = usize::from(channel);
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
        self.0[i] - 1
    }
}

/// The sender's side of one reliable channel: messages framed (length prefix and
/// payload, as [`crate::stream::StreamDecoder`] reads them), kept from the oldest
/// unacknowledged one.
#[derive(Debug)]
pub struct SendQueue {
    /// Framed messages, in a ring: the `queued` live bytes start at `head` and wrap
    /// around the end of `buf` (whose length is the ring's capacity). A ring, not a
    /// buffer whose live part is moved down now and then: no byte is moved twice, and
    /// new messages go where acknowledged ones were instead of through up to five times
    /// the bytes in flight.
    buf: Vec<u8>,
    head: usize,
    queued: usize,
    /// Framed length of each live message, oldest first.
    lens: VecDeque<usize>,
    /// Sequence number of the message at `head`.
    base_seq: u64,
    /// Bytes after `head` handed to the current connection's stream.
    sent: usize,
    /// Messages among those written whole, and their framed bytes.
    sent_messages: usize,
    sent_whole: usize,
    /// Highest acknowledgement, and one past the last message any connection carried.
    acked: u64,
    ever_sent: u64,
    limit: usize,
    /// Messages kept, at most (one is always taken into an empty queue).
    message_limit: usize,
    /// Prefixes for a tagged stream ([`crate::stream::write_tagged_prefix`]).
    tagged: bool,
}

impl SendQueue {
    /// An empty queue that refuses to grow past `limit` framed bytes (one message larger
    /// than that is still taken into an empty queue).
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            queued: 0,
            lens: VecDeque::new(),
            base_seq: 0,
            sent: 0,
            sent_messages: 0,
            sent_whole: 0,
            acked: 0,
            ever_sent: 0,
            limit,
            message_limit: usize::MAX,
            tagged: false,
        }
    }

    /// [`new`](Self::new) for a tagged stream, which carries control records beside the
    /// messages (TCP and Unix sockets: see [`crate::records`]).
    pub fn tagged(limit: usize) -> Self {
        Self { tagged: true, ..Self::new(limit) }
    }

    /// This queue, refusing to keep more than `max` messages as well.
    pub fn with_message_limit(self, max: usize) -> Self {
        Self { message_limit: max, ..self }
    }

    /// This (empty) queue, numbering its messages from `first_seq`. A sender that made a
    /// queue for a receiver before (and forgot it) starts the new one past every number
    /// the old one used: the receiver, which may remember the old one's, takes the new
    /// messages for new rather than for ones it had.
    pub fn starting_at(self, first_seq: u64) -> Self {
        debug_assert!(self.lens.is_empty(), "numbered before its first message");
        Self { base_seq: first_seq, acked: first_seq, ever_sent: first_seq, ..self }
    }

    /// Framed bytes kept (sent or not, until acknowledged).
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether every message was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Whether a `len`-byte message fits under the limits now.
    pub fn has_room(&self, len: usize) -> bool {
        self.is_empty()
            || (self.queued_bytes() + len + MAX_PREFIX_LEN <= self.limit && self.lens.len() < self.message_limit)
    }

    /// Appends a message (whether it fits is the caller's policy: see [`has_room`](Self::has_room));
    /// returns its sequence number.
    pub fn push(&mut self, payload: &[u8]) -> u64 {
        let mut prefix = [0u8; MAX_PREFIX_LEN];
        let n = if self.tagged {
            write_tagged_prefix(payload.len(), false, &mut prefix)
        } else {
            write_prefix(payload.len(), &mut prefix)
        };
        self.reserve(n + payload.len());
        self.put(&prefix[..n]);
        self.put(payload);
        self.lens.push_back(n + payload.len());
        self.base_seq + self.lens.len() as u64 - 1
    }

    /// Queues a message compressed ([`crate::compress`]'s `body`), as the control
    /// record that carries it (a tagged queue's: [`crate::records::COMPRESSED_KIND`]);
    /// its sequence number. It counts as the message it carries.
    pub fn push_compressed(&mut self, body: &[u8]) -> u64 {
        debug_assert!(self.tagged, "only a tagged stream carries control records");
        let mut prefix = [0u8; MAX_PREFIX_LEN];
        let n = write_tagged_prefix(1 + body.len(), true, &mut prefix);
        self.reserve(n + 1 + body.len());
        self.put(&prefix[..n]);
        self.put(&[crate::records::COMPRESSED_KIND]);
        self.put(body);
        self.lens.push_back(n + 1 + body.len());
        self.base_seq + self.lens.len() as u64 - 1
    }

    /// Queues a message in the record it needs: as it is, compressed (`compressed`: its
    /// [`crate::compress`] body), with its expiry, or both; its sequence number.
    pub fn push_message(&mut self, message: &[u8], compressed: Option<&[u8]>, expiry_ns: Option<u64>) -> u64 {
        match (expiry_ns, compressed) {
            (Some(e), Some(body)) => self.push_expiring(e, true, body),
            (Some(e), None) => self.push_expiring(e, false, message),
            (None, Some(body)) => self.push_compressed(body),
            (None, None) => self.push(message),
        }
    }

    /// Queues a message with the time after which it is not worth reading (`expiry_ns`,
    /// ns since the Unix epoch), as the control record that carries it (a tagged
    /// queue's: [`crate::records::EXPIRING_KIND`]); `body` is the message, or
    /// [`crate::compress`]'s body if `compressed`. Its sequence number; it counts as the
    /// message it carries.
    pub fn push_expiring(&mut self, expiry_ns: u64, compressed: bool, body: &[u8]) -> u64 {
        debug_assert!(self.tagged, "only a tagged stream carries control records");
        let flags = if compressed { crate::records::EXPIRING_COMPRESSED } else { 0 };
        let mut head = [0u8; 10];
        head[0] = crate::records::EXPIRING_KIND;
        head[1..9].copy_from_slice(&expiry_ns.to_le_bytes());
        head[9] = flags;
        let mut prefix = [0u8; MAX_PREFIX_LEN];
        let n = write_tagged_prefix(head.len() + body.len(), true, &mut prefix);
        self.reserve(n + head.len() + body.len());
        self.put(&prefix[..n]);
        self.put(&head);
        self.put(body);
        self.lens.push_back(n + head.len() + body.len());
        self.base_seq + self.lens.len() as u64 - 1
    }

    /// Appends a message as another queue of this kind framed it (see
    /// [`take_never_sent`](Self::take_never_sent)): one moved here from a receiver that
    /// cannot take it any more. Its sequence number.
    pub fn push_framed(&mut self, framed: &[u8]) -> u64 {
        self.reserve(framed.len());
        self.put(framed);
        self.lens.push_back(framed.len());
        self.base_seq + self.lens.len() as u64 - 1
    }

    /// For a receiver whose connection is gone: takes out the messages no connection
    /// carried whole, oldest first, handing each to `each` as framed here (for
    /// [`push_framed`](Self::push_framed) into another receiver's queue): what it never
    /// saw (a message cut short is dropped by its reader). Their numbers are used again
    /// by what is queued next (no receiver heard of them). How many it took.
    pub fn take_never_sent(&mut self, each: impl FnMut(&[u8])) -> usize {
        let carried = self.ever_sent.max(self.sent_until()).saturating_sub(self.base_seq) as usize;
        self.take_from(self.sent_messages.max(carried), each)
    }

    /// Takes out every message not acknowledged, oldest first, as
    /// [`take_never_sent`](Self::take_never_sent) does: what a receiver given up on may
    /// not have read. The queue is for nobody afterwards (it holds nothing, and its
    /// receiver is gone).
    pub fn take_unacknowledged(&mut self, each: impl FnMut(&[u8])) -> usize {
        // (Acknowledged messages go; what stays is unsent again.)
        self.rewind();
        let from = self.acked.saturating_sub(self.base_seq) as usize;
        self.take_from(from, each)
    }

    /// Takes out the messages from the `first`-th live one on (see `take_never_sent`).
    fn take_from(&mut self, first: usize, mut each: impl FnMut(&[u8])) -> usize {
        let n = self.lens.len().saturating_sub(first);
        if n == 0 {
            return 0;
        }
        let mask = self.buf.len() - 1;
        let mut at = (self.head + self.lens.iter().take(first).sum::<usize>()) & mask;
        let mut message = Vec::new();
        let mut taken = 0;
        for &len in self.lens.iter().skip(first) {
            message.clear();
            let first_part = len.min(self.buf.len() - at);
            message.extend_from_slice(&self.buf[at..at + first_part]);
            message.extend_from_slice(&self.buf[..len - first_part]);
            each(&message);
            at = (at + len) & mask;
            taken += len;
        }
        self.lens.truncate(first);
        self.queued -= taken;
        self.sent = self.sent.min(self.queued);
        n
    }

    /// Makes room in the ring for `n` more bytes: a larger ring, the live bytes moved to
    /// its start, when they do not fit. Its capacity is a power of two (positions wrap
    /// with a mask, not a division).
    fn reserve(&mut self, n: usize) {
        let need = self.queued + n;
        if need <= self.buf.len() {
            return;
        }
        let capacity = need.next_power_of_two().max(MIN_RING).max(self.buf.len() * 2);
        debug_assert!(capacity.is_power_of_two());
        let mut bigger = vec![0; capacity];
        let (a, b) = self.live();
        bigger[..a.len()].copy_from_slice(a);
        bigger[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = bigger;
        self.head = 0;
    }

    /// The live bytes: up to the ring's end, and from its start.
    fn live(&self) -> (&[u8], &[u8]) {
        let first = self.queued.min(self.buf.len() - self.head);
        (&self.buf[self.head..self.head + first], &self.buf[..self.queued - first])
    }

    /// Appends `bytes` to the ring (which has room: [`reserve`](Self::reserve)).
    fn put(&mut self, bytes: &[u8]) {
        let capacity = self.buf.len();
        let tail = (self.head + self.queued) & (capacity - 1);
        if let Some(to) = self.buf.get_mut(tail..tail + bytes.len()) {
            to.copy_from_slice(bytes);
        } else {
            let (first, rest) = bytes.split_at(capacity - tail);
            self.buf[tail..].copy_from_slice(first);
            self.buf[..rest.len()].copy_from_slice(rest);
        }
        self.queued += bytes.len();
    }

    /// The bytes not yet handed to this connection's stream, up to the ring's end: what
    /// follows, from its start, comes once these are written.
    pub fn unsent(&self) -> &[u8] {
        if self.sent == self.queued {
            return &[];
        }
        let at = (self.head + self.sent) & (self.buf.len() - 1);
        let len = (self.queued - self.sent).min(self.buf.len() - at);
        &self.buf[at..at + len]
    }

    /// Records that the first `n` bytes of [`unsent`](Self::unsent) were written.
    pub fn mark_sent(&mut self, n: usize) {
        debug_assert!(n <= self.unsent().len());
        self.sent += n;
        while self.sent_messages < self.lens.len() && self.sent_whole + self.lens[self.sent_messages] <= self.sent {
            self.sent_whole += self.lens[self.sent_messages];
            self.sent_messages += 1;
        }
        self.release();
    }

    /// Whether the stream holds part of a message: the last write ended inside one, and
    /// the next must go on with it.
    pub fn cut(&self) -> bool {
        self.sent != self.sent_whole
    }

    /// Bytes left of the message the last write ended inside (0 if it ended between two).
    pub fn cut_rest(&self) -> usize {
        if !self.cut() {
            return 0;
        }
        self.sent_whole + self.lens[self.sent_messages] - self.sent
    }

    /// One past the last message written whole to this connection's stream.
    pub fn sent_until(&self) -> u64 {
        self.base_seq + self.sent_messages as u64
    }

    /// The receiver has read every message below `ack`: forget them. Acks that go
    /// backwards are stale (a reordered or replayed one) and change nothing. An ack may
    /// cover messages an earlier connection carried that this one has not sent again
    /// yet; those are forgotten once written (a stream cannot skip a message it has
    /// started) or at the next [`rewind`](Self::rewind).
    pub fn ack(&mut self, ack: u64) -> Result<(), BadAck> {
        let ever = self.ever_sent.max(self.sent_until());
        if ack > ever {
            return Err(BadAck { ack, sent_until: ever });
        }
        self.acked = self.acked.max(ack);
        self.release();
        Ok(())
    }

    /// Forgets acknowledged messages that the current stream has written whole.
    fn release(&mut self) {
        while self.base_seq < self.acked && self.sent_messages > 0 {
            let len = self.lens.pop_front().expect("sent messages are kept");
            self.head = (self.head + len) & (self.buf.len() - 1);
            self.queued -= len;
            self.sent -= len;
            self.sent_whole -= len;
            self.sent_messages -= 1;
            self.base_seq += 1;
        }
        if self.queued == 0 {
            // Empty: the next message goes to the ring's start, so that a sender whose
            // messages are acknowledged as fast as they go reuses the same bytes.
            self.head = 0;
        }
    }

    /// A new connection: everything unacknowledged is unsent again. Returns the
    /// sequence number of the first message the new stream will carry.
    pub fn rewind(&mut self) -> u64 {
        self.ever_sent = self.ever_sent.max(self.sent_until());
        // Acknowledged messages go now; the rest are unsent again.
        self.sent = self.lens.iter().take((self.acked.saturating_sub(self.base_seq)) as usize).sum();
        self.sent_messages = (self.acked.saturating_sub(self.base_seq)) as usize;
        self.sent_whole = self.sent;
        self.release();
        self.base_seq
    }
}

/// The receiver's side of one reliable channel from one peer session: which messages
/// are duplicates, and how far to acknowledge.
///
/// A message is *accepted* ([`accept`](Self::accept) gives its sequence number) when it
/// is new, and *delivered* ([`delivered`](Self::delivered)) when it is in the
/// application's queue. A receiver whose queue is full holds accepted messages and
/// delivers them later, each with the number `accept` gave it: acknowledgements follow
/// what the application read of what was delivered, never what was only accepted (held
/// messages die with their connection, so a new stream takes them again).
#[derive(Debug, Default)]
pub struct ReceiveWindow {
    /// The sequence number after the last message delivered.
    next: u64,
    /// The sequence number after the last message accepted (delivered or held).
    accepted: u64,
    /// Sequence number of the next message on the current stream.
    on_stream: u64,
    /// Delivered but not yet read, in runs: (position in the application's queue of the
    /// first, its sequence number, how many). Messages that follow each other in both,
    /// as most do, extend one run instead of taking an entry each.
    unread: VecDeque<(u64, u64, u64)>,
    /// What was last acknowledged.
    acked: u64,
}

impl ReceiveWindow {
    /// A stream starts (a new connection) with message `first_seq`. What was accepted
    /// but not delivered is taken again from it: whoever held those messages (the old
    /// connection) drops them.
    pub fn start_stream(&mut self, first_seq: u64) {
        self.on_stream = first_seq;
        if first_seq > self.next {
            // The sender dropped nothing it kept; a later start means our state is
            // older than its (it was acknowledged by an earlier incarnation of us).
            self.next = first_seq;
            self.acked = self.acked.max(first_seq);
        }
        self.accepted = self.next;
    }

    /// The next message of the stream arrived: its sequence number if it is to be
    /// delivered, `None` for a message delivered (or accepted) before.
    #[inline]
    pub fn accept(&mut self) -> Option<u64> {
        let seq = self.on_stream;
        self.on_stream += 1;
        if seq < self.accepted {
            return None;
        }
        self.accepted = seq + 1;
        Some(seq)
    }

    /// Whether message `seq` (accepted, then held) was delivered meanwhile from another
    /// stream: then it is dropped, not delivered again.
    #[inline]
    pub fn is_stale(&self, seq: u64) -> bool {
        seq < self.next
    }

    /// Message `seq` (as [`accept`](Self::accept) gave it) went into the application's
    /// queue at `position`. Messages are delivered in the order they were accepted.
    #[inline]
    pub fn delivered(&mut self, position: u64, seq: u64) {
        debug_assert!(seq >= self.next, "message {seq} delivered after {}", self.next);
        self.next = seq + 1;
        self.accepted = self.accepted.max(self.next);
        if let Some((pos, first, n)) = self.unread.back_mut()
            && *pos + *n == position
            && *first + *n == seq
        {
            *n += 1;
            return;
        }
        self.unread.push_back((position, seq, 1));
    }

    /// The application has read everything below `position`; returns a new
    /// acknowledgement to send, if it moved.
    pub fn consumed(&mut self, position: u64) -> Option<u64> {
        let mut ack = None;
        while let Some(run) = self.unread.front_mut() {
            let (pos, seq, n) = *run;
            if pos >= position {
                break;
            }
            let read = (position - pos).min(n);
            ack = Some(seq + read);
            if read < n {
                *run = (pos + read, seq + read, n - read);
                break;
            }
            self.unread.pop_front();
        }
        let ack = ack.filter(|a| *a > self.acked)?;
        self.acked = ack;
        Some(ack)
    }

    /// Whether delivered messages wait to be read (and acknowledged).
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }
}

/// What a stream carries, its first byte after the magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// A reliable channel: framed messages one way, acknowledgements (LEB128) back.
    Channel = 1,
    /// One request and its reply.
    Request = 2,
    /// The first stream a connecting side opens: who it is (its session), so that the
    /// listener finds what it kept for a reconnecting peer.
    Hello = 3,
}

/// The first bytes of every stream zerohop opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    pub kind: StreamKind,
    /// The sender's session: random per hub, so a receiver can tell a reconnect of the
    /// same hub from a new one.
    pub session: u64,
    pub channel: u16,
    /// Sequence number of the stream's first message.
    pub first_seq: u64,
    /// The channel's priority class at its sender (0 first, up to 7; 0 for streams that
    /// are not channels): what a receiver reads first when it cannot read everything.
    pub class: u8,
}

/// Why a stream header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a zerohop stream, or another version.
    BadMagic,
    BadKind(u8),
    /// A varint longer than 10 bytes.
    BadVarint,
    /// A priority class above 7.
    BadClass(u8),
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a zerohop/1 stream"),
            Self::BadKind(k) => write!(f, "unknown stream kind {k}"),
            Self::BadVarint => f.write_str("malformed varint"),
            Self::BadClass(c) => write!(f, "priority class {c} (at most 7)"),
        }
    }
}

impl std::error::Error for HeaderError {}

const MAGIC: [u8; 3] = *b"ZH1";

/// Reads a LEB128 varint from the start of `bytes`: `Ok(None)` if more bytes are needed.
pub fn get_varint(bytes: &[u8]) -> Result<Option<(u64, usize)>, HeaderError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        if i == 10 || (i == 9 && b > 1) {
            return Err(HeaderError::BadVarint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if bytes.len() >= 10 { Err(HeaderError::BadVarint) } else { Ok(None) }
}

impl StreamHeader {
    /// The longest encoding.
    pub const MAX_LEN: usize = 3 + 1 + 8 + 3 + 10 + 1;

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.session.to_le_bytes());
        put_varint(u64::from(self.channel), out);
        put_varint(self.first_seq, out);
        out.push(self.class);
    }

    /// Reads a header from the start of `bytes`: `Ok(None)` if more bytes are needed,
    /// otherwise the header and its length.
    pub fn decode(bytes: &[u8]) -> Result<Option<(StreamHeader, usize)>, HeaderError> {
        let n = bytes.len().min(3);
        if bytes[..n] != MAGIC[..n] {
            return Err(HeaderError::BadMagic);
        }
        if bytes.len() < 12 {
            return Ok(None);
        }
        let kind = match bytes[3] {
            1 => StreamKind::Channel,
            2 => StreamKind::Request,
            3 => StreamKind::Hello,
            k => return Err(HeaderError::BadKind(k)),
        };
        let session = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let Some((channel, a)) = get_varint(&bytes[12..])? else { return Ok(None) };
        let channel = u16::try_from(channel).map_err(|_| HeaderError::BadVarint)?;
        let Some((first_seq, b)) = get_varint(&bytes[12 + a..])? else { return Ok(None) };
        let Some(&class) = bytes.get(12 + a + b) else { return Ok(None) };
        if usize::from(class) >= crate::qos::CLASSES {
            return Err(HeaderError::BadClass(class));
        }
        Ok(Some((StreamHeader { kind, session, channel, first_seq, class }, 12 + a + b + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamDecoder;
    use proptest::prelude::*;

    fn decode_all(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut d = StreamDecoder::new(1 << 20);
        let mut got = Vec::new();
        d.push(wire, |m| got.push(m.to_vec())).unwrap();
        got
    }

    #[test]
    fn partial_writes_count_whole_messages_only() {
        let mut q = SendQueue::new(1 << 20);
        for m in [&[1u8; 10][..], &[2; 200], &[3; 5]] {
            q.push(m);
        }
        let total = q.unsent().len();
        q.mark_sent(11); // the first message whole (1 + 10)
        assert_eq!(q.sent_until(), 1);
        q.mark_sent(100);
        assert_eq!(q.sent_until(), 1, "the second is half written");
        assert_eq!(q.ack(2), Err(BadAck { ack: 2, sent_until: 1 }));
        q.mark_sent(total - 111);
        assert_eq!(q.sent_until(), 3);
        assert_eq!(q.ack(2), Ok(()));
        assert_eq!(q.len(), 1);
        assert_eq!(q.ack(1), Ok(()), "stale acks change nothing");
        assert_eq!(q.len(), 1);
        assert_eq!(q.rewind(), 2);
        assert_eq!(decode_all(q.unsent()), vec![vec![3u8; 5]]);
        assert_eq!(q.ack(3), Ok(()), "an earlier connection carried it");
        assert_eq!(q.len(), 1, "kept until this stream writes it or the next rewind");
        assert_eq!(q.rewind(), 3);
        assert!(q.is_empty() && q.unsent().is_empty());
        assert_eq!(q.ack(4), Err(BadAck { ack: 4, sent_until: 3 }));
    }

    /// What a receiver that kept its window for the sender's session takes from a queue
    /// of 3 messages that starts at `first_seq`.
    fn taken_by_a_receiver_that_had(had: u64, first_seq: u64) -> usize {
        let mut w = ReceiveWindow::default();
        w.start_stream(0);
        for i in 0..had {
            let seq = w.accept().expect("new");
            w.delivered(i, seq);
        }
        w.consumed(had);
        let mut q = SendQueue::new(1 << 16).starting_at(first_seq);
        for m in [b"a", b"b", b"c"] {
            q.push(m);
        }
        w.start_stream(q.rewind());
        (0..3).filter(|_| w.accept().is_some()).count()
    }

    #[test]
    fn a_queue_made_again_numbers_past_the_old_one() {
        // The sender forgot the receiver after 5 messages (its linger ran out) and made a
        // new queue when it came back: numbered from 0, the receiver would take its
        // messages for those it had.
        assert_eq!(taken_by_a_receiver_that_had(5, 0), 0);
        let mut numbering = Numbering::default();
        for _ in 0..5 {
            numbering.next(0);
        }
        assert_eq!(numbering.next(1), 0, "each channel counts its own");
        assert_eq!(taken_by_a_receiver_that_had(5, numbering.next(0)), 3);
        // A receiver new to the sender takes them whatever the first number.
        assert_eq!(taken_by_a_receiver_that_had(0, 1 << 40), 3);
        // Acknowledgements are in the new numbering.
        let mut q = SendQueue::new(1 << 16).starting_at(7);
        q.push(b"x");
        assert_eq!(q.rewind(), 7);
        q.mark_sent(q.unsent().len());
        assert!(q.ack(9).is_err(), "beyond what was sent");
        q.ack(8).unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn a_message_limit_bounds_the_count_too() {
        let mut q = SendQueue::new(1 << 20).with_message_limit(2);
        assert!(q.has_room(8));
        q.push(b"one");
        assert!(q.has_room(8));
        q.push(b"two");
        assert!(!q.has_room(8), "two messages kept: full, whatever the bytes");
    }

    #[test]
    fn the_limit_bounds_bytes_but_takes_one_large_message() {
        let mut q = SendQueue::new(100);
        assert!(q.has_room(1000), "an empty queue takes anything");
        q.push(&[0; 1000]);
        assert!(!q.has_room(1));
        q.mark_sent(q.unsent().len());
        q.ack(1).unwrap();
        q.push(&[0; 4]);
        assert!(q.has_room(90) && !q.has_room(91));
    }

    #[test]
    fn headers_round_trip_and_refuse_garbage() {
        let h = StreamHeader {
            kind: StreamKind::Channel,
            session: 0xdead_beef_f00d,
            channel: 300,
            first_seq: 1 << 40,
            class: 3,
        };
        let mut w = Vec::new();
        h.encode(&mut w);
        assert!(w.len() <= StreamHeader::MAX_LEN);
        for cut in 0..w.len() {
            assert_eq!(StreamHeader::decode(&w[..cut]), Ok(None), "{cut} bytes are not enough");
        }
        w.push(0xaa);
        assert_eq!(StreamHeader::decode(&w), Ok(Some((h, w.len() - 1))));
        assert_eq!(StreamHeader::decode(b"GET / HTTP/1.1"), Err(HeaderError::BadMagic));
        assert_eq!(StreamHeader::decode(b"ZH1\x09aaaaaaaaaa"), Err(HeaderError::BadKind(9)));
        let mut huge = b"ZH1\x01aaaaaaaa".to_vec();
        huge.extend_from_slice(&[0xff; 11]);
        assert_eq!(StreamHeader::decode(&huge), Err(HeaderError::BadVarint));
        let mut wide = b"ZH1\x01aaaaaaaa".to_vec();
        put_varint(70_000, &mut wide);
        wide.push(0);
        assert_eq!(StreamHeader::decode(&wide), Err(HeaderError::BadVarint), "channels are u16");
        let mut w = Vec::new();
        StreamHeader { class: 8, ..h }.encode(&mut w);
        assert_eq!(StreamHeader::decode(&w), Err(HeaderError::BadClass(8)));
    }

    /// Writes up to `max` unsent bytes of `q` as a writer does (the ring's end may split
    /// them in two writes); the bytes written.
    fn send(q: &mut SendQueue, max: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while wire.len() < max && !q.unsent().is_empty() {
            let take = q.unsent().len().min(max - wire.len());
            wire.extend_from_slice(&q.unsent()[..take]);
            q.mark_sent(take);
        }
        wire
    }

    /// A reconnecting sender and a receiver whose application reads at its own pace,
    /// with a queue of `room` messages: what does not fit is held by the connection
    /// (and dies with it) until the application makes room. Whatever the cut points,
    /// the application sees every message once, in order, and no acknowledgement
    /// covers a message it has not read.
    fn replay(messages: &[Vec<u8>], cuts: &[usize], reads: &[usize], room: usize) -> Vec<Vec<u8>> {
        let mut q = SendQueue::new(usize::MAX);
        let mut w = ReceiveWindow::default();
        // The application's queue (position = index): each message's number and bytes.
        let mut app: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut read = 0usize;
        let mut pending = messages.iter();
        let ack = |q: &mut SendQueue, w: &mut ReceiveWindow, app: &[(u64, Vec<u8>)], read: usize| {
            if let Some(ack) = w.consumed(read as u64) {
                let last_read = read.checked_sub(1).map_or(0, |i| app[i].0 + 1);
                assert!(ack <= last_read, "acknowledged up to {ack}, read up to {last_read}");
                q.ack(ack).unwrap();
            }
        };
        let rounds = cuts.iter().map(|&c| (c, room)).chain([(usize::MAX, usize::MAX)]);
        for (round, (cut, room)) in rounds.enumerate() {
            let last = cut == usize::MAX;
            for m in pending.by_ref().take(if last { usize::MAX } else { 3 }) {
                q.push(m);
            }
            // One connection: the stream carries a prefix of the unsent bytes.
            w.start_stream(q.rewind());
            let wire = send(&mut q, cut);
            let mut held: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            let mut d = StreamDecoder::new(1 << 20);
            d.push(&wire, |m| {
                let Some(seq) = w.accept() else { return };
                if held.is_empty() && app.len() - read < room {
                    w.delivered(app.len() as u64, seq);
                    app.push((seq, m.to_vec()));
                } else {
                    held.push_back((seq, m.to_vec()));
                }
            })
            .unwrap();
            // The application reads a little at a time; room made goes to what is held.
            for step in 0..if last { usize::MAX } else { 3 } {
                read = (read + reads[(round + step) % reads.len()].max(usize::from(last))).min(app.len());
                while app.len() - read < room
                    && let Some((seq, m)) = held.pop_front()
                {
                    assert!(!w.is_stale(seq));
                    w.delivered(app.len() as u64, seq);
                    app.push((seq, m));
                }
                ack(&mut q, &mut w, &app, read);
                if held.is_empty() && (!last || read == app.len()) {
                    break;
                }
            }
        }
        assert!(q.is_empty(), "everything read was acknowledged");
        app.into_iter().map(|(_, m)| m).collect()
    }

    /// Framed messages moved out of a queue, decoded.
    fn decode_moved(moved: &[Vec<u8>]) -> Vec<Vec<u8>> {
        decode_all(&moved.concat())
    }

    proptest! {
        /// A receiver that went away: what no connection began to carry moves to another
        /// queue whole and in order; what was carried stays for its return.
        #[test]
        fn never_sent_messages_move_whole(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30),
            sent in 0usize..4000,
            acked in 0u64..30,
            reconnected in any::<bool>(),
        ) {
            let mut q = SendQueue::new(1 << 20);
            for m in &messages {
                q.push(m);
            }
            // (The connection goes after `sent` bytes: a message it cut short was not carried.)
            let carried = decode_all(&send(&mut q, sent)).len();
            let acked = acked.min(q.sent_until());
            q.ack(acked).unwrap();
            if reconnected {
                // A new connection carried nothing yet: what the old one did still counts.
                q.rewind();
            }
            let mut moved = Vec::new();
            let n = q.take_never_sent(|f| moved.push(f.to_vec()));
            prop_assert_eq!(n, messages.len() - carried);
            prop_assert_eq!(decode_moved(&moved), messages[carried..].to_vec());
            // What stays goes out (again) on the next connection, the new numbers after it.
            let mut other = SendQueue::new(1 << 20);
            for f in &moved {
                other.push_framed(f);
            }
            prop_assert_eq!(decode_all(&send(&mut other, usize::MAX)), messages[carried..].to_vec());
            q.rewind();
            let rest = decode_all(&send(&mut q, usize::MAX));
            prop_assert_eq!(&rest[..], &messages[acked as usize..carried]);
            prop_assert_eq!(q.push(b"next"), carried as u64);
        }

        /// A receiver given up on: everything it did not acknowledge moves.
        #[test]
        fn unacknowledged_messages_move_when_a_receiver_is_given_up(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30),
            sent in 0usize..4000,
            acked in 0u64..30,
        ) {
            let mut q = SendQueue::new(1 << 20).starting_at(1000);
            for m in &messages {
                q.push(m);
            }
            send(&mut q, sent);
            let acked = acked.min(q.sent_until() - 1000);
            q.ack(1000 + acked).unwrap();
            let mut moved = Vec::new();
            prop_assert_eq!(q.take_unacknowledged(|f| moved.push(f.to_vec())), messages.len() - acked as usize);
            prop_assert_eq!(decode_moved(&moved), messages[acked as usize..].to_vec());
            prop_assert!(q.is_empty());
        }

        #[test]
        fn reconnects_deliver_every_message_once_in_order(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..30),
            cuts in proptest::collection::vec(0usize..200, 0..12),
            reads in proptest::collection::vec(0usize..4, 1..5),
            room in 1usize..6,
        ) {
            prop_assert_eq!(replay(&messages, &cuts, &reads, room), messages);
        }

        /// Two channels' windows sharing the application's queue (so one channel's
        /// positions have gaps), read a bit at a time: each acknowledges what a list of
        /// every message's position and number says it should.
        #[test]
        fn the_ring_wraps_and_grows_without_losing_a_byte(
            ops in proptest::collection::vec((0usize..40, 0usize..60, any::<bool>()), 1..200),
        ) {
            // Push a message, write some bytes, maybe acknowledge all that was written.
            let mut q = SendQueue::new(usize::MAX);
            let (mut pushed, mut wire, mut most) = (Vec::new(), Vec::new(), 0);
            for (i, &(len, write, ack)) in ops.iter().enumerate() {
                let m = vec![i as u8; len];
                q.push(&m);
                pushed.push(m);
                most = most.max(q.queued_bytes());
                wire.extend(send(&mut q, write));
                if ack {
                    q.ack(q.sent_until()).unwrap();
                }
            }
            wire.extend(send(&mut q, usize::MAX));
            prop_assert_eq!(decode_all(&wire), pushed);
            prop_assert!(q.buf.len() <= (2 * most).next_power_of_two().max(MIN_RING), "a ring of {} for {} bytes at most", q.buf.len(), most);
        }

        #[test]
        fn acknowledgements_follow_what_was_read(
            deliveries in proptest::collection::vec((any::<bool>(), 0u8..3), 0..200),
            reads in proptest::collection::vec(0u64..7, 1..20),
        ) {
            let mut windows = [ReceiveWindow::default(), ReceiveWindow::default()];
            let mut model: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
            let mut acked = [0u64; 2];
            let (mut position, mut read) = (0u64, 0u64);
            for (i, &(channel, skip)) in deliveries.iter().enumerate() {
                let c = usize::from(channel);
                // A message now and then is a duplicate (it takes no position).
                for _ in 0..skip / 2 {
                    windows[c].accept();
                }
                if let Some(seq) = windows[c].accept() {
                    windows[c].delivered(position, seq);
                    model[c].push((position, seq));
                    position += 1;
                }
                read = (read + reads[i % reads.len()]).min(position);
                for c in 0..2 {
                    let want = model[c].iter().filter(|(p, _)| *p < read).map(|(_, s)| s + 1).max();
                    let want = want.filter(|w| *w > acked[c]);
                    prop_assert_eq!(windows[c].consumed(read), want);
                    if let Some(w) = want {
                        acked[c] = w;
                    }
                    prop_assert_eq!(windows[c].has_unread(), model[c].iter().any(|(p, _)| *p >= read));
                }
            }
        }

        #[test]
        fn header_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = StreamHeader::decode(&bytes);
        }
    }
}
