//! Flow control of unreliable datagram lanes: a sender keeps at most a window of bytes in
//! flight to each peer, so that a sender faster than its receiver waits (or drops, as its
//! backpressure says) instead of overflowing the receiver's socket buffer, where the
//! kernel would drop what it cannot hold.
//!
//! The sender flags its frames [`FrameFlags::FLOW`](crate::FrameFlags::FLOW). A receiver
//! ([`crate::datagram::Inbox`]) then reports, each time another quarter of its window
//! arrived, how far it has read: a header-only frame flagged `ACK | FLOW` whose `ack` is
//! the next sequence number it expects on that channel (what it lost counts as read:
//! nothing is resent) and whose `seq` is the window it allows, in bytes (from its socket
//! buffer). A receiver reads its socket only while its reader keeps up, so its reports
//! pace the sender to the reader.
//!
//! A peer that stops reporting while bytes are in flight (gone, or never a zerohop
//! receiver) is *silent* after `silence_us`: it no longer holds the sender back, until
//! it reports again. Nothing here reads a clock: time is passed in, in µs.
//!
//! ```
//! use zerohop_proto::flow::FlowWindow;
//!
//! let mut w = FlowWindow::new(&["b"], 1000, 50_000);
//! w.sent(9, 600, 0); // a datagram of messages 0..=9
//! w.sent(19, 600, 0); // and of 10..=19: 1200 bytes in flight, more than 1000
//! assert!(!w.has_room());
//! assert!(w.on_report("b", 10, 4000, 10)); // b read up to 10, and allows 4000 bytes
//! assert!(w.has_room());
//! ```

use std::collections::VecDeque;

/// The least and most window a receiver may ask for: one largest datagram, and 64 MiB.
pub const MIN_WINDOW: u64 = 64 << 10;
pub const MAX_WINDOW: u64 = 64 << 20;
/// Datagrams remembered to turn a reported sequence number into bytes.
const MAX_MARKS: usize = 8192;

/// One peer's side of a [`FlowWindow`].
#[derive(Clone, Debug)]
struct FlowPeer<P> {
    peer: P,
    /// Bytes sent before what the peer reported it read.
    read_bytes: u64,
    /// The next sequence number the peer expects, as it last said.
    next_seq: u64,
    window: u64,
    /// Since when bytes have been in flight to the peer without a report.
    waiting_since_us: Option<u64>,
    silent: bool,
}

/// What a sender may have in flight to each peer (see the module docs).
#[derive(Clone, Debug)]
pub struct FlowWindow<P> {
    /// Bytes sent so far.
    sent_bytes: u64,
    /// Per datagram sent, oldest first: the sequence number after its last message, and
    /// `sent_bytes` once it went.
    marks: VecDeque<(u64, u64)>,
    peers: Vec<FlowPeer<P>>,
    initial_window: u64,
    silence_us: u64,
}

impl<P: Copy + PartialEq> FlowWindow<P> {
    /// A window of `initial_window` bytes to each of `peers` until they say otherwise;
    /// a peer silent for `silence_us` while bytes are in flight stops holding back.
    pub fn new(peers: &[P], initial_window: u64, silence_us: u64) -> Self {
        let mut w = Self { sent_bytes: 0, marks: VecDeque::new(), peers: Vec::new(), initial_window, silence_us };
        w.set_peers(peers);
        w
    }

    /// Replaces the peers: those kept keep their state, new ones start with nothing in
    /// flight.
    pub fn set_peers(&mut self, peers: &[P]) {
        let mut old = std::mem::take(&mut self.peers);
        for &peer in peers {
            let kept = old.iter().position(|p| p.peer == peer).map(|i| old.swap_remove(i));
            self.peers.push(kept.unwrap_or(FlowPeer {
                peer,
                read_bytes: self.sent_bytes,
                next_seq: 0,
                window: self.initial_window,
                waiting_since_us: None,
                silent: false,
            }));
        }
    }

    /// Bytes in flight to the peer that has the most.
    pub fn in_flight(&self) -> u64 {
        self.peers.iter().filter(|p| !p.silent).map(|p| self.sent_bytes - p.read_bytes).max().unwrap_or(0)
    }

    /// Whether another datagram may go: every peer that is not silent has room in its
    /// window. (One datagram may overshoot it: a window is far larger than a datagram.)
    pub fn has_room(&self) -> bool {
        self.peers.iter().all(|p| p.silent || self.sent_bytes - p.read_bytes < p.window)
    }

    /// Records a datagram of `bytes` sent at `now_us`, whose last message is `last_seq`.
    pub fn sent(&mut self, last_seq: u64, bytes: u64, now_us: u64) {
        self.sent_bytes += bytes;
        if self.marks.len() == MAX_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((last_seq.saturating_add(1), self.sent_bytes));
        for p in &mut self.peers {
            p.waiting_since_us.get_or_insert(now_us);
        }
    }

    /// A report from `peer` at `now_us`: it read everything before `next_seq`, and
    /// allows `window` bytes in flight. Whether that made room where there was none.
    pub fn on_report(&mut self, peer: P, next_seq: u64, window: u64, now_us: u64) -> bool {
        let was = self.has_room();
        let Some(i) = self.peers.iter().position(|p| p.peer == peer) else { return false };
        // The bytes of every datagram whose messages all precede `next_seq`.
        let read = match self.marks.partition_point(|&(end, _)| end <= next_seq) {
            0 => None,
            n => Some(self.marks[n - 1].1),
        };
        let (sent, p) = (self.sent_bytes, &mut self.peers[i]);
        if next_seq >= p.next_seq || p.silent {
            p.next_seq = next_seq;
            // A peer back from silence may be behind every datagram remembered: what it
            // has not read then is at most a window (the rest was dropped or is gone).
            let floor = match read {
                Some(read) => read,
                None if p.silent => sent.saturating_sub(window.clamp(MIN_WINDOW, MAX_WINDOW)),
                None => 0,
            };
            p.read_bytes = p.read_bytes.max(floor);
        }
        p.window = window.clamp(MIN_WINDOW, MAX_WINDOW);
        p.silent = false;
        p.waiting_since_us = (self.sent_bytes > p.read_bytes).then_some(now_us);
        // Marks every peer is past are of no more use.
        let oldest = self.peers.iter().filter(|p| !p.silent).map(|p| p.next_seq).min().unwrap_or(u64::MAX);
        while self.marks.front().is_some_and(|&(end, _)| end <= oldest) && self.marks.len() > 1 {
            self.marks.pop_front();
        }
        !was && self.has_room()
    }

    /// When a peer that holds the sender back turns silent, if one does (only while
    /// there is no room: otherwise nobody waits for it).
    pub fn due_us(&self) -> Option<u64> {
        if self.has_room() {
            return None;
        }
        self.peers
            .iter()
            .filter(|p| !p.silent && self.sent_bytes - p.read_bytes >= p.window)
            .filter_map(|p| p.waiting_since_us)
            .min()
            .map(|t| t + self.silence_us)
    }

    /// Marks the peers silent that said nothing for `silence_us` with bytes in flight;
    /// whether that made room where there was none.
    pub fn poll(&mut self, now_us: u64) -> bool {
        let was = self.has_room();
        for p in &mut self.peers {
            if !p.silent && p.waiting_since_us.is_some_and(|t| now_us.saturating_sub(t) >= self.silence_us) {
                p.silent = true;
            }
        }
        !was && self.has_room()
    }

    /// Peers that are silent now.
    pub fn silent(&self) -> usize {
        self.peers.iter().filter(|p| p.silent).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_silent_peer_stops_holding_back_until_it_reports() {
        let mut w = FlowWindow::new(&[1u8, 2], 100_000, 1000);
        for seq in 0..20 {
            w.sent(seq, 10_000, 0);
        }
        assert!(!w.has_room());
        // Peer 1 reads everything; peer 2 says nothing.
        assert!(!w.on_report(1, 20, 100_000, 10));
        assert_eq!(w.due_us(), Some(1000));
        assert!(!w.poll(999));
        assert!(w.poll(1000));
        assert_eq!(w.silent(), 1);
        assert!(w.has_room());
        // Peer 2 comes back: it holds back again, from what it read.
        w.on_report(2, 5, 100_000, 2000);
        assert_eq!(w.silent(), 0);
        assert_eq!(w.in_flight(), 150_000);
        assert!(!w.has_room());
    }

    #[test]
    fn new_peers_start_empty_and_windows_are_clamped() {
        let mut w = FlowWindow::new(&[1u8], 200_000, 1000);
        w.sent(0, 150_000, 0);
        w.set_peers(&[1, 3]);
        assert_eq!(w.in_flight(), 150_000);
        w.on_report(3, 0, 1, 0);
        w.on_report(1, 1, u64::MAX, 0);
        assert_eq!(w.in_flight(), 0);
        w.sent(1, 70_000, 0);
        assert!(!w.has_room(), "peer 3 asked for less than a datagram: it gets MIN_WINDOW");
        w.on_report(3, 2, 0, 0);
        assert!(w.has_room());
    }

    proptest! {
        /// Whatever reports arrive (late, repeated, out of order, from strangers), what
        /// is counted in flight never exceeds what was sent, and a peer that read
        /// everything leaves nothing in flight.
        #[test]
        fn reports_in_any_order_keep_the_books_straight(
            sends in proptest::collection::vec((1u64..5, 1u64..70_000), 1..200),
            reports in proptest::collection::vec((0u8..3, 0u64..800, 0u64..(1 << 27)), 0..100),
        ) {
            let mut w = FlowWindow::new(&[0u8, 1], 1 << 20, 1_000_000);
            let mut seq = 0;
            let mut total = 0;
            let mut r = reports.into_iter();
            for (messages, bytes) in sends {
                seq += messages;
                total += bytes;
                w.sent(seq - 1, bytes, 0);
                if let Some((peer, at, window)) = r.next() {
                    w.on_report(peer, at.min(seq), window, 0);
                }
                prop_assert!(w.in_flight() <= total);
            }
            w.on_report(0, seq, 1 << 20, 0);
            w.on_report(1, seq, 1 << 20, 0);
            prop_assert_eq!(w.in_flight(), 0);
            prop_assert!(w.has_room());
        }
    }
}
