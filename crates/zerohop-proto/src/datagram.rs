//! The datagram pipeline of unreliable transports, without sockets or clocks.
//!
//! - [`Outbox`] numbers messages, packs small ones several to a datagram, fragments the
//!   ones too large for one, and decides when to flush (a full datagram, an explicit
//!   [`Outbox::flush`], or [`Outbox::poll_flush`] once the oldest queued message has
//!   waited `flush_interval_ms`).
//! - [`Inbox`] takes datagrams from one peer: it drops and counts what is not a valid
//!   frame, unpacks and reassembles the rest, and tracks sequence numbers to count what
//!   was lost (gaps), duplicated (dropped) or late (delivered, and no longer lost).
//!
//! A packed frame's header carries the sequence number of its first record; record `i`
//! is message `seq + i`. The fragments of a message all carry its sequence number.
//!
//! ```
//! use zerohop_proto::datagram::{Inbox, Outbox};
//!
//! let mut out = Outbox::new(1200, 7, 0);
//! out.push(b"small", 0).unwrap();
//! out.push(&vec![1u8; 5000], 0).unwrap(); // fragmented
//! out.flush();
//! let mut inbox = Inbox::new(1200 - zerohop_proto::FRAME_HEADER_LEN);
//! let mut got = Vec::new();
//! for d in out.datagrams() {
//!     inbox.receive(d, 0, |seq, m| got.push((seq, m.len())));
//! }
//! assert_eq!(got, [(0, 5), (1, 5000)]);
//! ```

use crate::compress::Compressor;
use crate::frag::{FragmentError, MessageKey, Reassembler, ReassemblyLimits, fragments};
use crate::header::{FRAME_HEADER_LEN, FrameFlags, FrameHeader};
use crate::pack::{Packer, unpack};

/// Builds the datagrams a sender emits.
#[derive(Debug)]
pub struct Outbox {
    max_datagram: usize,
    session: u32,
    channel: u16,
    packer: Packer,
    /// Sequence number of the first message in `packer`.
    packed_first_seq: u64,
    next_seq: u64,
    /// Finished datagrams, end to end, where each one is, and the first and last
    /// sequence numbers of the messages it carries.
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
    seqs: Vec<(u64, u64)>,
    /// A reliable channel's: frames are flagged so, and carry `floor` (see
    /// [`crate::reliable`]) in their `ack` field.
    reliable: bool,
    floor: u64,
    /// Flow controlled: frames ask the receiver for reports (see [`crate::flow`]).
    flow: bool,
    /// LZ4 on: each frame whose payload shrinks goes compressed (flagged so).
    compressor: Option<Box<Compressor>>,
    /// The frame being packed carries expiring messages (`FrameFlags::EXPIRING`), and
    /// where one is put together with its expiry.
    expiring: bool,
    prefixed: Vec<u8>,
    /// Payload bytes compression saved.
    saved: u64,
    /// When the oldest message not yet in a finished datagram was queued.
    oldest_unflushed_ms: Option<u64>,
}

impl Outbox {
    /// An outbox for datagrams of at most `max_datagram` bytes, stamped with `session`
    /// and `channel`.
    pub fn new(max_datagram: usize, session: u32, channel: u16) -> Self {
        Self {
            max_datagram,
            session,
            channel,
            packer: Packer::new(max_datagram),
            packed_first_seq: 0,
            next_seq: 0,
            out: Vec::with_capacity(max_datagram * 8),
            spans: Vec::new(),
            seqs: Vec::new(),
            reliable: false,
            floor: 0,
            flow: false,
            compressor: None,
            expiring: false,
            prefixed: Vec::new(),
            saved: 0,
            oldest_unflushed_ms: None,
        }
    }

    /// Makes this a reliable channel's outbox: its frames ask to be acknowledged.
    pub fn set_reliable(&mut self) {
        self.reliable = true;
    }

    /// Whether the frames made from now on ask the receiver for flow reports
    /// (`FrameFlags::FLOW`, see [`crate::flow`]).
    pub fn set_flow(&mut self, on: bool) {
        self.flow = on;
    }

    /// The floor the next frames carry (a reliable channel's; see [`crate::reliable`]).
    pub fn set_floor(&mut self, floor: u64) {
        self.floor = floor;
    }

    /// Compresses each frame whose payload LZ4 shrinks (see [`crate::compress`]).
    pub fn set_compression(&mut self) {
        self.compressor = Some(Box::default());
    }

    /// Payload bytes compression saved so far.
    pub fn saved(&self) -> u64 {
        self.saved
    }

    /// Compresses the frame that starts at `start` of `out` (the last one) if that
    /// shrinks it.
    fn seal(&mut self, start: usize) {
        let Some(compressor) = &mut self.compressor else { return };
        let payload = &self.out[start + FRAME_HEADER_LEN..];
        let Some(small) = compressor.compress(payload) else { return };
        let (mut header, _) = FrameHeader::decode_frame(&self.out[start..]).expect("a frame of ours");
        self.saved += (payload.len() - small.len()) as u64;
        header.flags = FrameFlags(header.flags.0 | FrameFlags::COMPRESSED);
        header.payload_len = small.len() as u32;
        self.out.truncate(start + FRAME_HEADER_LEN);
        self.out.extend_from_slice(small);
        header.encode_in_place(&mut self.out[start..]).expect("consistent by construction");
        self.spans.last_mut().expect("the frame's span").1 = self.out.len() - start;
    }

    /// The header of a frame this outbox makes.
    fn header(&self, seq: u64, payload_len: u32) -> FrameHeader {
        let mut h = FrameHeader { channel: self.channel, session: self.session, seq, ..FrameHeader::new(payload_len) };
        if self.reliable {
            h.flags = FrameFlags(FrameFlags::RELIABLE);
            h.ack = self.floor;
        }
        if self.expiring {
            h.flags = FrameFlags(h.flags.0 | FrameFlags::EXPIRING);
        }
        if self.flow {
            h.flags = FrameFlags(h.flags.0 | FrameFlags::FLOW);
        }
        h
    }

    /// The largest fragment payload (a datagram minus the header).
    pub fn fragment_size(&self) -> usize {
        self.max_datagram - FRAME_HEADER_LEN
    }

    /// The largest datagram made.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Makes datagrams of at most `max_datagram` bytes from now on (the path to the
    /// peers changed); what was packed so far is finished first, at the old size.
    ///
    /// # Panics
    /// If `max_datagram` cannot hold a header and one empty record.
    pub fn set_max_datagram(&mut self, max_datagram: usize) {
        if max_datagram == self.max_datagram {
            return;
        }
        self.finish_packed();
        self.packer = Packer::new(max_datagram);
        self.max_datagram = max_datagram;
    }

    /// Queues one message at `now_ms`; returns its sequence number.
    pub fn push(&mut self, message: &[u8], now_ms: u64) -> Result<u64, FragmentError> {
        self.push_with(message, || now_ms)
    }

    /// [`push`](Self::push), reading the time from `now_ms` only if the message starts a
    /// datagram that will wait (the first after a flush, or one that did not fit in the
    /// datagram before): the others wait as long as the datagram they join.
    pub fn push_with(&mut self, message: &[u8], now_ms: impl FnOnce() -> u64) -> Result<u64, FragmentError> {
        self.mode(false);
        self.push_framed(message, now_ms)
    }

    /// [`push_with`](Self::push_with) of a message with the time after which it is not
    /// worth reading (`expiry_ns`, ns since the Unix epoch): it goes in a frame of
    /// expiring messages, after its expiry.
    pub fn push_expiring(
        &mut self,
        message: &[u8],
        expiry_ns: u64,
        now_ms: impl FnOnce() -> u64,
    ) -> Result<u64, FragmentError> {
        self.mode(true);
        let mut prefixed = std::mem::take(&mut self.prefixed);
        prefixed.clear();
        prefixed.extend_from_slice(&expiry_ns.to_le_bytes());
        prefixed.extend_from_slice(message);
        let seq = self.push_framed(&prefixed, now_ms);
        self.prefixed = prefixed;
        seq
    }

    /// Messages with and without an expiry go in frames of their own.
    fn mode(&mut self, expiring: bool) {
        if self.expiring != expiring {
            self.finish_packed();
            self.expiring = expiring;
        }
    }

    fn push_framed(&mut self, message: &[u8], now_ms: impl FnOnce() -> u64) -> Result<u64, FragmentError> {
        let seq = self.next_seq;
        if message.len() <= self.packer.max_message() {
            if !self.packer.fits(message.len()) {
                self.finish_packed();
            }
            if self.packer.is_empty() {
                self.packed_first_seq = seq;
            }
            self.packer.push(message).expect("fits: checked above");
            if self.oldest_unflushed_ms.is_none() {
                self.oldest_unflushed_ms = Some(now_ms());
            }
        } else {
            // Keep order: whatever is packed goes out before the fragments.
            self.finish_packed();
            let fs = self.fragment_size();
            for (index, count, bytes) in fragments(message, fs)? {
                let header =
                    FrameHeader { frag_index: index, frag_count: count, ..self.header(seq, bytes.len() as u32) };
                let start = self.out.len();
                self.out.resize(start + FRAME_HEADER_LEN + bytes.len(), 0);
                self.out[start + FRAME_HEADER_LEN..].copy_from_slice(bytes);
                header.encode_in_place(&mut self.out[start..]).expect("consistent by construction");
                self.spans.push((start, self.out.len() - start));
                self.seqs.push((seq, seq));
                self.seal(start);
            }
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Finishes the partly filled datagram so that it goes out with the next drain.
    pub fn flush(&mut self) {
        self.finish_packed();
    }

    /// Flushes if the oldest queued message has waited at least `interval_ms`, so a
    /// lone message is never held back longer than that. Returns whether it flushed.
    pub fn poll_flush(&mut self, now_ms: u64, interval_ms: u64) -> bool {
        match self.oldest_unflushed_ms {
            Some(t) if now_ms.saturating_sub(t) >= interval_ms => {
                self.finish_packed();
                true
            }
            _ => false,
        }
    }

    /// Whether a partly filled datagram is waiting for more messages (or the interval).
    pub fn waiting(&self) -> bool {
        self.oldest_unflushed_ms.is_some()
    }

    /// When `poll_flush` will next have something to do (for the sender's timer).
    pub fn flush_deadline(&self, interval_ms: u64) -> Option<u64> {
        self.oldest_unflushed_ms.map(|t| t + interval_ms)
    }

    /// Finished datagrams waiting to be sent, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, l)| &self.out[s..s + l])
    }

    /// Finished datagrams with the first and last sequence numbers of what each carries.
    pub fn datagrams_with_seqs(&self) -> impl Iterator<Item = (&[u8], u64, u64)> {
        self.spans.iter().zip(&self.seqs).map(|(&(s, l), &(first, last))| (&self.out[s..s + l], first, last))
    }

    /// Number of finished datagrams.
    pub fn ready(&self) -> usize {
        self.spans.len()
    }

    /// Forgets the first `n` finished datagrams (they were sent).
    pub fn consume(&mut self, n: usize) {
        if n >= self.spans.len() {
            self.out.clear();
            self.spans.clear();
            self.seqs.clear();
            return;
        }
        let cut = self.spans[n].0;
        self.out.drain(..cut);
        self.spans.drain(..n);
        self.seqs.drain(..n);
        for s in &mut self.spans {
            s.0 -= cut;
        }
    }

    fn finish_packed(&mut self) {
        if self.packer.is_empty() {
            return;
        }
        let header = self.header(self.packed_first_seq, 0);
        self.seqs.push((self.packed_first_seq, self.next_seq - 1));
        let frame = self.packer.finish(header);
        let start = self.out.len();
        self.out.extend_from_slice(frame);
        self.spans.push((start, frame.len()));
        self.oldest_unflushed_ms = None;
        self.seal(start);
    }
}

/// Counters of an [`Inbox`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    pub datagrams: u64,
    /// Datagrams that were not valid frames, or held invalid records or fragments.
    pub malformed: u64,
    pub delivered: u64,
    /// Messages never seen, by sequence gaps (a late arrival takes one back).
    pub lost: u64,
    /// Messages that arrived after later ones (delivered).
    pub late: u64,
    /// Messages seen twice (the copy was dropped).
    pub duplicates: u64,
}

/// The largest payload of a frame before compression: a whole UDP datagram's.
const MAX_FRAME_PAYLOAD: usize = 65_507;

/// How far back (in sequence numbers) late arrivals are recognised: two datagrams'
/// worth at the most a datagram carries (65,507 bytes of empty 4-byte records).
const WINDOW: u64 = 1 << 15;
const WINDOW_WORDS: usize = (WINDOW / 64) as usize;
/// A jump (either way) larger than this is not counted as loss: the sender restarted
/// its numbering or the frame is hostile, so the window restarts at it.
const MAX_GAP: u64 = 1 << 20;

/// Which of the `WINDOW` sequence numbers before `expected` were seen: bit `seq %
/// WINDOW`, a ring, so that moving on by one message touches one bit rather than
/// shifting the whole window.
#[derive(Clone, Debug)]
struct SeenWindow(Box<[u64; WINDOW_WORDS]>);

impl SeenWindow {
    fn empty() -> Self {
        Self(Box::new([0; WINDOW_WORDS]))
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Forgets numbers `from..to`, which enter the window: their bits held numbers a
    /// whole window older.
    fn forget(&mut self, from: u64, to: u64) {
        if to.saturating_sub(from) >= WINDOW {
            self.clear();
            return;
        }
        let mut seq = from;
        while seq < to {
            let bit = seq % WINDOW;
            let (word, at) = ((bit / 64) as usize, bit % 64);
            let n = (64 - at).min(to - seq);
            let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << at };
            self.0[word] &= !mask;
            seq += n;
        }
    }

    fn get(&self, seq: u64) -> bool {
        let bit = seq % WINDOW;
        self.0[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, seq: u64) {
        let bit = seq % WINDOW;
        self.0[(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

/// Receives the datagrams of one peer.
#[derive(Debug)]
pub struct Inbox {
    reassembler: Reassembler,
    session: Option<(u32, u16)>,
    /// The session this one replaced: its stragglers are dropped, not mistaken for new.
    retired: Option<(u32, u16)>,
    /// No message of this session accepted yet.
    fresh: bool,
    /// Lowest sequence number accepted in this session: gaps are counted above it.
    start: u64,
    /// Next sequence number expected, and which of the `WINDOW` before it were seen.
    expected: u64,
    seen: SeenWindow,
    stats: InboxStats,
    /// A reliable channel's: every message below this was received or given up by
    /// the sender, and whether an acknowledgement is owed (a reliable frame came).
    below: u64,
    ack_owed: bool,
    /// A compressed frame's payload, decompressed.
    scratch: Vec<u8>,
    /// Flow control (the sender's frames are flagged `FLOW`): bytes arrived since the
    /// last report, every how many one is owed, and whether one is.
    unreported: u64,
    report_every: u64,
    report_owed: bool,
    /// The sequence number reported: after the last message whose datagrams arrived
    /// (a message partly reassembled counts as read, so that a large one with a lost
    /// fragment cannot hold its sender back).
    flow_next: u64,
}

impl Inbox {
    /// An inbox that takes fragments of up to `max_fragment` bytes (a sender may use any
    /// size up to that).
    pub fn new(max_fragment: usize) -> Self {
        Self::with_limits(ReassemblyLimits::new(max_fragment))
    }

    /// An inbox with explicit reassembly limits.
    pub fn with_limits(limits: ReassemblyLimits) -> Self {
        Self {
            reassembler: Reassembler::new(limits),
            session: None,
            retired: None,
            fresh: true,
            start: 0,
            expected: 0,
            seen: SeenWindow::empty(),
            stats: InboxStats::default(),
            below: 0,
            ack_owed: false,
            scratch: Vec::new(),
            unreported: 0,
            report_every: u64::MAX,
            report_owed: false,
            flow_next: 0,
        }
    }

    /// What to acknowledge, if a frame of a reliable channel came since the last call:
    /// the sender's session and channel, and the sequence number below which every
    /// message arrived (or was given up by the sender). Owed again at each reliable
    /// frame, duplicates included, since an acknowledgement may be lost too.
    pub fn acknowledgement(&mut self) -> Option<(u32, u16, u64)> {
        if !std::mem::take(&mut self.ack_owed) {
            return None;
        }
        let (session, channel) = self.session?;
        // Older than the window is unknown: the sender's floor keeps what it holds inside.
        self.below = self.below.max(self.expected.saturating_sub(WINDOW));
        while self.below < self.expected && self.seen.get(self.below) {
            self.below += 1;
        }
        Some((session, channel, self.below))
    }

    /// Owes a flow report (see [`crate::flow`]) each time `bytes` more arrived from a
    /// flow-controlled sender (and at its first datagram).
    pub fn set_report_every(&mut self, bytes: u64) {
        self.report_every = bytes.max(1);
    }

    /// Whether a flow report is owed (see [`flow_report`](Self::flow_report)).
    pub fn owes_report(&self) -> bool {
        self.report_owed
    }

    /// The flow report owed, if one is: the sender's session and channel, and the next
    /// sequence number expected (everything before it was read, or lost).
    pub fn flow_report(&mut self) -> Option<(u32, u16, u64)> {
        if !std::mem::take(&mut self.report_owed) {
            return None;
        }
        self.unreported = 0;
        let (session, channel) = self.session?;
        Some((session, channel, self.flow_next))
    }

    /// Counters.
    pub fn stats(&self) -> InboxStats {
        self.stats
    }

    /// Counters of the reassembler.
    pub fn reassembly_stats(&self) -> crate::frag::ReassemblyStats {
        self.reassembler.stats()
    }

    /// Processes one datagram received at `now_ms`, calling `deliver(seq, message)` for
    /// every message it completes, in the order they become complete.
    pub fn receive(&mut self, datagram: &[u8], now_ms: u64, mut deliver: impl FnMut(u64, &[u8])) {
        self.receive_expiring(datagram, now_ms, |seq, m, _| deliver(seq, m));
    }

    /// [`receive`](Self::receive), with each message's expiry if it has one
    /// (`FrameFlags::EXPIRING`).
    pub fn receive_expiring(&mut self, datagram: &[u8], now_ms: u64, mut deliver: impl FnMut(u64, &[u8], Option<u64>)) {
        self.stats.datagrams += 1;
        let Ok((header, payload)) = FrameHeader::decode_frame(datagram) else {
            self.stats.malformed += 1;
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = if header.flags.contains(FrameFlags::COMPRESSED) {
            // A frame's payload was at most a datagram before it was compressed.
            if crate::compress::decompress(payload, MAX_FRAME_PAYLOAD, &mut scratch).is_err() {
                self.stats.malformed += 1;
                self.scratch = scratch;
                return;
            }
            &scratch[..]
        } else {
            payload
        };
        let fresh = self.session != Some((header.session, header.channel));
        self.receive_frame(header, payload, now_ms, &mut deliver);
        self.scratch = scratch;
        if header.flags.contains(FrameFlags::FLOW) {
            let read =
                if header.frag_count > 1 { self.expected.max(header.seq.saturating_add(1)) } else { self.expected };
            self.flow_next = if fresh { read } else { self.flow_next.max(read) };
            // The first report at once, so that the sender soon learns the window.
            self.unreported += datagram.len() as u64;
            self.report_owed |= fresh || self.unreported >= self.report_every;
        }
    }

    /// [`receive`](Self::receive) of a frame's header and (decompressed) payload.
    fn receive_frame(
        &mut self,
        header: FrameHeader,
        payload: &[u8],
        now_ms: u64,
        deliver: &mut impl FnMut(u64, &[u8], Option<u64>),
    ) {
        let expiring = header.flags.contains(FrameFlags::EXPIRING);
        // A message of an expiring frame: its expiry, then its bytes (none: malformed).
        let split = |m: &[u8]| -> Option<(Option<u64>, usize)> {
            if !expiring {
                return Some((None, 0));
            }
            let e = m.get(..8)?;
            Some((Some(u64::from_le_bytes(e.try_into().expect("8 bytes"))), 8))
        };
        let session = Some((header.session, header.channel));
        if session == self.retired {
            // A straggler of the session the sender replaced.
            self.stats.late += 1;
            return;
        }
        if self.session != session {
            // A new sender session (or the first one): sequence numbers start afresh.
            self.retired = self.session;
            self.session = session;
            self.fresh = true;
            self.below = 0;
        }
        if header.flags.contains(FrameFlags::RELIABLE) {
            // What the sender still holds starts at its floor: nothing below it will come.
            self.below = self.below.max(header.ack);
            self.ack_owed = true;
        }
        if header.flags.contains(FrameFlags::PACKED) {
            let mut seq = header.seq;
            for record in unpack(payload) {
                match record {
                    Ok(m) => {
                        let Some((expiry, at)) = split(m) else {
                            self.stats.malformed += 1;
                            break;
                        };
                        if self.accept(seq) {
                            self.stats.delivered += 1;
                            deliver(seq, &m[at..], expiry);
                        }
                        let Some(next) = seq.checked_add(1) else {
                            self.stats.malformed += 1; // numbering past u64::MAX: hostile
                            break;
                        };
                        seq = next;
                    }
                    Err(_) => {
                        self.stats.malformed += 1;
                        break;
                    }
                }
            }
            return;
        }
        let key = MessageKey { session: header.session, channel: header.channel, seq: header.seq };
        match self.reassembler.insert(key, header.frag_index, header.frag_count, payload, now_ms) {
            Ok(Some(message)) => match split(&message) {
                Some((expiry, at)) => {
                    if self.accept(header.seq) {
                        self.stats.delivered += 1;
                        deliver(header.seq, &message[at..], expiry);
                    }
                }
                None => self.stats.malformed += 1,
            },
            Ok(None) => {}
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Drops incomplete messages past the reassembly timeout.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.reassembler.expire(now_ms)
    }

    /// Sequence bookkeeping: whether to deliver message `seq`.
    fn accept(&mut self, seq: u64) -> bool {
        if seq == u64::MAX {
            self.stats.malformed += 1; // no successor: nobody numbers this far
            return false;
        }
        let far = if seq >= self.expected { seq - self.expected > MAX_GAP } else { self.expected - seq > MAX_GAP };
        if self.fresh || far {
            // The first message of a session, or a jump (either way) that no loss or
            // reordering explains: a restarted sender or a hostile frame. Restart here,
            // so one bad frame cannot stall the stream.
            self.fresh = false;
            self.start = seq;
            self.expected = seq + 1;
            self.seen.clear();
            self.seen.set(seq);
            return true;
        }
        if seq >= self.expected {
            let gap = seq - self.expected;
            self.stats.lost += gap;
            self.seen.forget(self.expected, seq + 1);
            self.seen.set(seq);
            self.expected = seq + 1;
            return true;
        }
        let back = self.expected - 1 - seq;
        if back >= WINDOW {
            // Too old to tell a duplicate from a late arrival: treat it as a duplicate.
            self.stats.duplicates += 1;
            return false;
        }
        if self.seen.get(seq) {
            self.stats.duplicates += 1;
            return false;
        }
        self.seen.set(seq);
        self.stats.late += 1;
        if seq >= self.start {
            // It was counted in a gap: no longer lost.
            self.stats.lost = self.stats.lost.saturating_sub(1);
        } else {
            // Older than anything seen: what lies between it and the old start is a gap now.
            self.stats.lost += self.start - seq - 1;
            self.start = seq;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(outbox: &Outbox, order: &[usize], inbox: &mut Inbox) -> Vec<(u64, Vec<u8>)> {
        let datagrams: Vec<&[u8]> = outbox.datagrams().collect();
        let mut got = Vec::new();
        for &i in order {
            inbox.receive(datagrams[i], 0, |seq, m| got.push((seq, m.to_vec())));
        }
        got
    }

    /// Messages with their sequence numbers.
    type Numbered = Vec<(u64, Vec<u8>)>;

    /// Every message through `out` (512-byte datagrams) into an inbox, in order: what
    /// came out, numbered, and the inbox.
    fn through(mut out: Outbox, messages: &[Vec<u8>]) -> (Numbered, Numbered, Inbox, Outbox) {
        for m in messages {
            out.push(m, 0).unwrap();
        }
        out.flush();
        assert!(out.datagrams().all(|d| d.len() <= 512));
        let mut inbox = Inbox::new(out.fragment_size());
        let order: Vec<usize> = (0..out.ready()).collect();
        let got = run(&out, &order, &mut inbox);
        let expected = messages.iter().cloned().enumerate().map(|(i, m)| (i as u64, m)).collect();
        (got, expected, inbox, out)
    }

    #[test]
    fn a_flow_controlled_sender_gets_a_report_at_once_then_each_quarter_window() {
        let mut out = Outbox::new(1000, 5, 2);
        out.set_flow(true);
        let mut inbox = Inbox::new(1000);
        inbox.set_report_every(3000);
        let mut reports = Vec::new();
        for i in 0..20u8 {
            out.push(&[i; 900], 0).unwrap();
            out.flush();
            for d in out.datagrams() {
                inbox.receive(d, 0, |_, _| {});
            }
            out.consume(out.ready());
            if let Some(r) = inbox.flow_report() {
                reports.push((i, r));
            }
        }
        // At the first datagram, then each time 3000 more bytes came (four of 940).
        let at: Vec<u8> = reports.iter().map(|r| r.0).collect();
        assert_eq!(at, [0, 4, 8, 12, 16]);
        assert_eq!(reports[1].1, (5, 2, 5), "session, channel, next sequence number expected");
        // Frames not flagged: no reports.
        let mut plain = Outbox::new(1000, 6, 0);
        plain.push(b"x", 0).unwrap();
        plain.flush();
        let mut inbox = Inbox::new(1000);
        inbox.receive(plain.datagrams().next().unwrap(), 0, |_, _| {});
        assert_eq!(inbox.flow_report(), None);
    }

    proptest! {
        /// Messages with and without an expiry, packed or fragmented, compressed or not:
        /// each comes back whole, in order, with its own expiry.
        #[test]
        fn expiring_messages_keep_their_expiry(
            messages in proptest::collection::vec((0usize..2000, proptest::option::of(any::<u64>())), 1..40),
            compress in any::<bool>(),
        ) {
            let mut out = Outbox::new(512, 3, 1);
            if compress {
                out.set_compression();
            }
            let messages: Vec<(Vec<u8>, Option<u64>)> =
                messages.iter().enumerate().map(|(i, &(len, e))| (vec![i as u8; len], e)).collect();
            for (m, e) in &messages {
                match e {
                    Some(e) => out.push_expiring(m, *e, || 0).unwrap(),
                    None => out.push(m, 0).unwrap(),
                };
            }
            out.flush();
            let mut inbox = Inbox::new(out.fragment_size());
            let mut got = Vec::new();
            for d in out.datagrams() {
                inbox.receive_expiring(d, 0, |_, m, e| got.push((m.to_vec(), e)));
            }
            prop_assert_eq!(got, messages);
            prop_assert_eq!(inbox.stats().malformed, 0);
        }

        /// Peers with different datagram sizes (a path MTU each, or a size set by hand)
        /// still talk: a receiver takes packed frames and fragments of any size up to
        /// its own, and a sender may change its size between messages.
        #[test]
        fn senders_of_any_datagram_size_reach_a_receiver_that_takes_them(
            messages in proptest::collection::vec((0usize..20_000, 0usize..3), 1..40),
            sizes in proptest::collection::vec(60usize..=65_507, 3),
            slack in 0usize..1000,
        ) {
            let mut out = Outbox::new(sizes[0], 3, 1);
            let mut expected = Vec::new();
            for (i, &(len, size)) in messages.iter().enumerate() {
                out.set_max_datagram(sizes[size]);
                let m: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                out.push(&m, 0).unwrap();
                expected.push((i as u64, m));
            }
            out.flush();
            prop_assert!(out.datagrams().all(|d| d.len() <= *sizes.iter().max().unwrap()));
            let largest = sizes.iter().max().unwrap() + slack;
            let mut inbox = Inbox::new(largest.min(65_507) - FRAME_HEADER_LEN);
            // Each message's fragments last first (the receiver learns their size late).
            let datagrams: Vec<&[u8]> = out.datagrams().collect();
            let seq = |d: &[u8]| FrameHeader::decode_frame(d).unwrap().0.seq;
            let mut order: Vec<usize> = Vec::new();
            let mut at = 0;
            while at < datagrams.len() {
                let end = (at..datagrams.len()).find(|&k| seq(datagrams[k]) != seq(datagrams[at])).unwrap_or(datagrams.len());
                order.extend((at..end).rev());
                at = end;
            }
            let mut got = Vec::new();
            for &i in &order {
                inbox.receive(datagrams[i], 0, |seq, m| got.push((seq, m.to_vec())));
            }
            got.sort();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(inbox.stats().malformed, 0);
        }

        /// A receiver that takes less than a sender sends drops what it cannot hold and
        /// counts it, without a panic; what it delivers is whole.
        #[test]
        fn a_receiver_smaller_than_the_sender_counts_what_it_cannot_take(
            messages in proptest::collection::vec(0usize..5000, 1..30),
            sender in 60usize..3000,
            receiver in 60usize..3000,
        ) {
            let mut out = Outbox::new(sender, 3, 1);
            for (i, &len) in messages.iter().enumerate() {
                out.push(&vec![i as u8; len], 0).unwrap();
            }
            out.flush();
            let mut inbox = Inbox::new(receiver - FRAME_HEADER_LEN);
            let mut got = Vec::new();
            for d in out.datagrams() {
                inbox.receive(d, 0, |seq, m| got.push((seq, m.to_vec())));
            }
            for (seq, m) in &got {
                prop_assert_eq!(m, &vec![*seq as u8; messages[*seq as usize]]);
            }
            if receiver >= sender {
                prop_assert_eq!(got.len(), messages.len());
            }
        }

        #[test]
        fn lossless_in_order_delivery_is_exact(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..40),
        ) {
            let (got, expected, inbox, _) = through(Outbox::new(512, 3, 1), &messages);
            prop_assert_eq!(got, expected);
            let s = inbox.stats();
            prop_assert_eq!((s.lost, s.late, s.duplicates, s.malformed), (0, 0, 0, 0));
        }

        /// With compression on, every message comes back the same, compressible ones
        /// in fewer bytes, whether they were packed or fragmented.
        #[test]
        fn compressed_frames_deliver_the_same_messages(
            messages in proptest::collection::vec((0u8..3, 0usize..3000, any::<bool>()), 1..30),
        ) {
            let messages: Vec<Vec<u8>> = messages
                .iter()
                .map(|&(b, n, random)| if random { (0..n).map(|i| (i * 7919 % 251) as u8 ^ b).collect() } else { vec![b; n] })
                .collect();
            let mut out = Outbox::new(512, 3, 1);
            out.set_compression();
            let (got, expected, inbox, out) = through(out, &messages);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(inbox.stats().malformed, 0);
            // (The first frame is always tried; after one that did not shrink the
            // compressor backs off for a few.)
            let m = &messages[0];
            if m.len() > 100 && m.windows(2).all(|w| w[0] == w[1]) {
                prop_assert!(out.saved() > 0);
            }
        }

        #[test]
        fn loss_reordering_and_duplication_are_accounted(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..60),
            drop_mask in any::<u64>(),
            dup_mask in any::<u64>(),
            swap_seed in any::<u64>(),
        ) {
            // Small messages only, one per datagram after a flush, so each datagram is a message.
            let mut out = Outbox::new(1024, 9, 0);
            for m in &messages {
                out.push(m, 0).unwrap();
                out.flush();
            }
            let n = out.ready();
            let mut order: Vec<usize> = (0..n).filter(|i| drop_mask >> (i % 64) & 1 == 0).collect();
            let kept: std::collections::BTreeSet<usize> = order.iter().copied().collect();
            // Adjacent swaps: reordering within the window.
            let mut s = swap_seed | 1;
            for i in 1..order.len() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                if s % 3 == 0 { order.swap(i - 1, i); }
            }
            let dups: Vec<usize> = order.iter().copied().filter(|i| dup_mask >> (i % 64) & 1 == 1).collect();
            order.extend(dups);
            let mut inbox = Inbox::new(out.fragment_size());
            let got = run(&out, &order, &mut inbox);
            // Every kept message is delivered exactly once, with its own sequence number.
            let delivered: std::collections::BTreeSet<u64> = got.iter().map(|g| g.0).collect();
            prop_assert_eq!(delivered.len(), got.len(), "no duplicate delivered");
            for (seq, m) in &got {
                prop_assert_eq!(m, &messages[*seq as usize]);
            }
            prop_assert_eq!(delivered, kept.iter().map(|&i| i as u64).collect());
            // Lost counts the gaps below the highest sequence number seen.
            let s = inbox.stats();
            let highest = *kept.iter().max().unwrap_or(&0) as u64;
            let first = *kept.iter().min().unwrap_or(&0) as u64;
            let missing_inside = (first..=highest).filter(|i| !kept.contains(&(*i as usize))).count() as u64;
            if !kept.is_empty() {
                prop_assert_eq!(s.lost, missing_inside);
            }
        }
    }

    #[test]
    fn an_expiring_frame_whose_message_has_no_room_for_its_expiry_is_malformed() {
        let mut out = Outbox::new(512, 3, 1);
        out.push_expiring(b"x", 5, || 0).unwrap();
        out.flush();
        let mut d = out.datagrams().next().unwrap().to_vec();
        // The packed record's length (4 bytes, big endian) says 9: make it 3, and fix the
        // frame's length and checksum as a sender would have.
        let (mut h, _) = FrameHeader::decode_frame(&d).unwrap();
        d[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4].copy_from_slice(&3u32.to_be_bytes());
        d.truncate(FRAME_HEADER_LEN + 4 + 3);
        h.payload_len = 7;
        h.encode_in_place(&mut d).unwrap();
        let mut inbox = Inbox::new(out.fragment_size());
        let mut n = 0;
        inbox.receive_expiring(&d, 0, |_, _, _| n += 1);
        assert_eq!((n, inbox.stats().malformed), (0, 1));
    }

    #[test]
    fn the_window_covers_several_packed_datagrams_arriving_out_of_order() {
        let mut out = Outbox::new(1472, 1, 0);
        for i in 0..600u32 {
            out.push(&i.to_le_bytes(), 0).unwrap(); // ~180 per datagram
        }
        out.flush();
        assert!(out.ready() >= 3);
        let mut inbox = Inbox::new(out.fragment_size());
        let order: Vec<usize> = (0..out.ready()).rev().collect();
        let got = run(&out, &order, &mut inbox);
        assert_eq!(got.len(), 600, "every message delivered once");
        let s = inbox.stats();
        assert_eq!((s.lost, s.duplicates), (0, 0), "{s:?}");
    }

    #[test]
    fn hostile_sequence_numbers_neither_panic_nor_kill_the_stream() {
        let mut inbox = Inbox::new(1000);
        let frame = |seq: u64, body: &[u8]| {
            let mut p = crate::pack::Packer::new(200);
            p.push(body).unwrap();
            p.push(body).unwrap();
            p.finish(FrameHeader { seq, session: 5, ..FrameHeader::new(0) }).to_vec()
        };
        let mut got = Vec::new();
        inbox.receive(&frame(10, b"a"), 0, |seq, _| got.push(seq));
        inbox.receive(&frame(u64::MAX, b"x"), 0, |seq, _| got.push(seq)); // would overflow
        inbox.receive(&frame(u64::MAX - 1, b"y"), 0, |seq, _| got.push(seq));
        inbox.receive(&frame(12, b"b"), 0, |seq, _| got.push(seq)); // after a huge jump: restart
        assert!(got.contains(&10) && got.contains(&12));
        assert!(inbox.stats().lost < 10, "a hostile jump is not counted as loss: {:?}", inbox.stats());
    }

    #[test]
    fn stragglers_of_a_replaced_session_are_not_delivered() {
        let mut old = Outbox::new(200, 1, 0);
        let mut new = Outbox::new(200, 2, 0);
        for i in 0..3u8 {
            old.push(&[i], 0).unwrap();
            old.flush();
            new.push(&[100 + i], 0).unwrap();
            new.flush();
        }
        let (o, n): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            (old.datagrams().map(<[u8]>::to_vec).collect(), new.datagrams().map(<[u8]>::to_vec).collect());
        let mut inbox = Inbox::new(160);
        let mut got = Vec::new();
        for d in [&o[0], &n[0], &o[1], &n[1], &n[0], &n[2]] {
            inbox.receive(d, 0, |_, m| got.push(m[0]));
        }
        assert_eq!(got, [0, 100, 101, 102], "old-session stragglers and new-session duplicates dropped");
    }

    #[test]
    fn a_message_that_starts_the_next_datagram_waits_from_its_own_time() {
        let mut out = Outbox::new(300, 1, 0);
        out.push_with(&[1u8; 100], || 10).unwrap();
        // Joins the waiting datagram: the clock is not read.
        out.push_with(&[2u8; 4], || unreachable!("joined a waiting datagram")).unwrap();
        // Does not fit: the first datagram is finished, this one starts the next at 50.
        out.push_with(&[3u8; 200], || 50).unwrap();
        assert_eq!(out.ready(), 1);
        assert_eq!(out.flush_deadline(5), Some(55));
        assert!(!out.poll_flush(54, 5));
        assert!(out.poll_flush(55, 5));
    }

    #[test]
    fn lone_message_flushes_after_the_interval() {
        let mut out = Outbox::new(1200, 1, 0);
        out.push(b"x", 100).unwrap();
        assert_eq!(out.ready(), 0);
        assert_eq!(out.flush_deadline(5), Some(105));
        assert!(!out.poll_flush(104, 5));
        assert!(out.poll_flush(105, 5));
        assert_eq!(out.ready(), 1);
        assert_eq!(out.flush_deadline(5), None);
        out.consume(1);
        assert_eq!(out.ready(), 0);
    }

    #[test]
    fn full_datagrams_go_out_without_a_flush_and_garbage_is_counted() {
        let mut out = Outbox::new(100, 1, 0);
        for _ in 0..10 {
            out.push(&[7u8; 20], 0).unwrap();
        }
        assert!(out.ready() >= 3, "datagrams of 100 bytes hold 2 records of 20");
        let mut inbox = Inbox::new(out.fragment_size());
        inbox.receive(b"not a frame", 0, |_, _| panic!("garbage delivered"));
        let mut first = out.datagrams().next().unwrap().to_vec();
        first[50] ^= 1; // corrupt: checksum fails
        inbox.receive(&first, 0, |_, _| panic!("corrupt frame delivered"));
        assert_eq!(inbox.stats().malformed, 2);
    }
}
