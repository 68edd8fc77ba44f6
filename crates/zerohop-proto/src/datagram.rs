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
    /// Finished datagrams, end to end, and where each one is.
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
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
            oldest_unflushed_ms: None,
        }
    }

    /// The largest fragment payload (a datagram minus the header).
    pub fn fragment_size(&self) -> usize {
        self.max_datagram - FRAME_HEADER_LEN
    }

    /// Queues one message at `now_ms`; returns its sequence number.
    pub fn push(&mut self, message: &[u8], now_ms: u64) -> Result<u64, FragmentError> {
        let seq = self.next_seq;
        if message.len() <= self.packer.max_message() {
            if !self.packer.fits(message.len()) {
                self.finish_packed();
            }
            if self.packer.is_empty() {
                self.packed_first_seq = seq;
            }
            self.packer.push(message).expect("fits: checked above");
            self.oldest_unflushed_ms.get_or_insert(now_ms);
        } else {
            // Keep order: whatever is packed goes out before the fragments.
            self.finish_packed();
            let fs = self.fragment_size();
            for (index, count, bytes) in fragments(message, fs)? {
                let header = FrameHeader {
                    channel: self.channel,
                    session: self.session,
                    seq,
                    frag_index: index,
                    frag_count: count,
                    ..FrameHeader::new(bytes.len() as u32)
                };
                let start = self.out.len();
                self.out.resize(start + FRAME_HEADER_LEN + bytes.len(), 0);
                self.out[start + FRAME_HEADER_LEN..].copy_from_slice(bytes);
                header.encode_in_place(&mut self.out[start..]).expect("consistent by construction");
                self.spans.push((start, self.out.len() - start));
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

    /// When `poll_flush` will next have something to do (for the sender's timer).
    pub fn flush_deadline(&self, interval_ms: u64) -> Option<u64> {
        self.oldest_unflushed_ms.map(|t| t + interval_ms)
    }

    /// Finished datagrams waiting to be sent, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, l)| &self.out[s..s + l])
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
            return;
        }
        let cut = self.spans[n].0;
        self.out.drain(..cut);
        self.spans.drain(..n);
        for s in &mut self.spans {
            s.0 -= cut;
        }
    }

    fn finish_packed(&mut self) {
        if self.packer.is_empty() {
            return;
        }
        let header = FrameHeader {
            channel: self.channel,
            session: self.session,
            seq: self.packed_first_seq,
            ..FrameHeader::new(0)
        };
        let frame = self.packer.finish(header);
        let start = self.out.len();
        self.out.extend_from_slice(frame);
        self.spans.push((start, frame.len()));
        self.oldest_unflushed_ms = None;
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

/// How far back (in sequence numbers) late arrivals are recognised.
const WINDOW: u64 = 64;

/// Receives the datagrams of one peer.
#[derive(Debug)]
pub struct Inbox {
    reassembler: Reassembler,
    session: Option<(u32, u16)>,
    /// No message of this session accepted yet.
    fresh: bool,
    /// Lowest sequence number accepted in this session: gaps are counted above it.
    start: u64,
    /// Next sequence number expected, and which of the `WINDOW` before it were seen
    /// (bit i = `expected - 1 - i`).
    expected: u64,
    seen: u64,
    stats: InboxStats,
}

impl Inbox {
    /// An inbox whose sender fragments at `fragment_size` bytes.
    pub fn new(fragment_size: usize) -> Self {
        Self::with_limits(ReassemblyLimits::new(fragment_size))
    }

    /// An inbox with explicit reassembly limits.
    pub fn with_limits(limits: ReassemblyLimits) -> Self {
        Self {
            reassembler: Reassembler::new(limits),
            session: None,
            fresh: true,
            start: 0,
            expected: 0,
            seen: 0,
            stats: InboxStats::default(),
        }
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
        self.stats.datagrams += 1;
        let Ok((header, payload)) = FrameHeader::decode_frame(datagram) else {
            self.stats.malformed += 1;
            return;
        };
        if self.session != Some((header.session, header.channel)) {
            // A new sender session (or the first one): sequence numbers start afresh.
            self.session = Some((header.session, header.channel));
            self.fresh = true;
        }
        if header.flags.contains(FrameFlags::PACKED) {
            let mut seq = header.seq;
            for record in unpack(payload) {
                match record {
                    Ok(m) => {
                        if self.accept(seq) {
                            self.stats.delivered += 1;
                            deliver(seq, m);
                        }
                        seq += 1;
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
            Ok(Some(message)) => {
                if self.accept(header.seq) {
                    self.stats.delivered += 1;
                    deliver(header.seq, &message);
                }
            }
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
        if self.fresh {
            self.fresh = false;
            self.start = seq;
            self.expected = seq + 1;
            self.seen = 1; // bit 0 = expected - 1 = seq
            return true;
        }
        if seq >= self.expected {
            let gap = seq - self.expected;
            self.stats.lost += gap;
            // Shift the window past the gap, then mark `seq` (the new expected - 1).
            let shift = gap + 1;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.expected = seq + 1;
            return true;
        }
        let back = self.expected - 1 - seq;
        if back >= WINDOW {
            // Too old to tell a duplicate from a late arrival: treat it as a duplicate.
            self.stats.duplicates += 1;
            return false;
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            self.stats.duplicates += 1;
            return false;
        }
        self.seen |= bit;
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

    proptest! {
        #[test]
        fn lossless_in_order_delivery_is_exact(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..40),
        ) {
            let mut out = Outbox::new(512, 3, 1);
            for m in &messages {
                out.push(m, 0).unwrap();
            }
            out.flush();
            prop_assert!(out.datagrams().all(|d| d.len() <= 512));
            let mut inbox = Inbox::new(out.fragment_size());
            let order: Vec<usize> = (0..out.ready()).collect();
            let got = run(&out, &order, &mut inbox);
            let expected: Vec<(u64, Vec<u8>)> = messages.iter().cloned().enumerate().map(|(i, m)| (i as u64, m)).collect();
            prop_assert_eq!(got, expected);
            let s = inbox.stats();
            prop_assert_eq!((s.lost, s.late, s.duplicates, s.malformed), (0, 0, 0, 0));
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
