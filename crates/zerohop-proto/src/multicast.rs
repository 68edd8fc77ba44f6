//! Reliable multicast, free of I/O: one sender, many members, every member gets every
//! message once and in order, repaired by negative acknowledgements.
//!
//! A member starts from the first number it hears (one that joins late gets what is
//! sent from then on). The sender numbers each message, multicasts it once and keeps it in a retransmit
//! window bounded in messages and bytes; when it has sent nothing for a while it
//! multicasts its next number (a *tail*), so that a member learns of a loss at the end
//! of a burst too. A member delivers in order, holds what arrives early, and for each
//! gap unicasts a NAK listing the missing ranges, again after a backoff until repaired.
//! The sender answers a NAK by multicasting what it still holds (a loss one member saw
//! others usually saw too; a number repaired within the last `repair_gap` is not sent
//! again), and with *gone* for what fell out of its window: that member has fallen
//! behind, counts what it lost and goes on from the oldest number the sender holds.
//!
//! Nothing authenticates a datagram: as with any multicast, a forged one can disturb a
//! member, within bounds (a number more than [`MAX_AHEAD`] past what it expects is
//! ignored, and no datagram makes it hold more than `hold` messages).
//!
//! Why NAKs rather than a session per member: the sender keeps no state per member, so
//! it sends each message once whatever the number of members, and a member that stops
//! or falls far behind holds nobody back; it only loses what left the window, and says
//! so. A session per member (KCP to each) would send every message N times and let the
//! slowest member's window stall the sender.
//!
//! Datagrams (little endian): `kind: u8` (1 data, 2 tail, 3 NAK, 4 gone), `group: u32`
//! (the sender's choice, so that two senders on one address are told apart), then
//! data: `seq: u64`, payload; tail: `next: u64`; NAK: up to [`MAX_NAK_RANGES`] of
//! (`first: u64`, `count: u32`); gone: `oldest: u64`.
//!
//! ```
//! use zerohop_proto::multicast::{Member, MemberEvent, Sender, SenderLimits};
//!
//! let mut s = Sender::new(7, SenderLimits::default());
//! let mut m = Member::new(7, 100);
//! let sent: Vec<Vec<u8>> = [&b"one"[..], b"two", b"three"].iter().map(|m| s.publish(m).to_vec()).collect();
//! let mut got = Vec::new();
//! // "two" is late: "three" is held until it comes (a NAK would ask for it).
//! for d in [&sent[0], &sent[2], &sent[1]] {
//!     m.receive(0, d, &mut |e| if let MemberEvent::Message(b) = e { got.push(b.to_vec()) });
//! }
//! assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
//! ```

use std::collections::{BTreeMap, VecDeque};

const DATA: u8 = 1;
const TAIL: u8 = 2;
const NAK: u8 = 3;
const GONE: u8 = 4;
/// Bytes before a data datagram's payload.
pub const DATA_HEADER: usize = 13;
/// Ranges one NAK lists at most.
pub const MAX_NAK_RANGES: usize = 64;

/// How much a sender keeps for repairs, and how it paces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderLimits {
    /// Messages kept for retransmission at most.
    pub window_messages: usize,
    /// Bytes of them at most.
    pub window_bytes: usize,
    /// A number repaired this recently (ms) is not multicast again for another NAK.
    pub repair_gap_ms: u64,
}

impl Default for SenderLimits {
    fn default() -> Self {
        Self { window_messages: 65_536, window_bytes: 64 << 20, repair_gap_ms: 5 }
    }
}

/// The sending side of a group.
#[derive(Debug)]
pub struct Sender {
    group: u32,
    limits: SenderLimits,
    next: u64,
    /// Messages `oldest..next`, as whole data datagrams, each with when it was last repaired.
    window: VecDeque<(Vec<u8>, Option<u64>)>,
    oldest: u64,
    bytes: usize,
    pool: Vec<Vec<u8>>,
    out: Vec<u8>,
    /// Counters.
    pub repairs: u64,
    pub gone_answers: u64,
}

impl Sender {
    pub fn new(group: u32, limits: SenderLimits) -> Self {
        Self {
            group,
            limits,
            next: 0,
            window: VecDeque::new(),
            oldest: 0,
            bytes: 0,
            pool: Vec::new(),
            out: Vec::new(),
            repairs: 0,
            gone_answers: 0,
        }
    }

    /// The number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Numbers `message` and keeps it for repairs: the datagram to multicast.
    pub fn publish(&mut self, message: &[u8]) -> &[u8] {
        let mut d = self.pool.pop().unwrap_or_default();
        d.clear();
        d.push(DATA);
        d.extend_from_slice(&self.group.to_le_bytes());
        d.extend_from_slice(&self.next.to_le_bytes());
        d.extend_from_slice(message);
        self.bytes += d.len();
        self.window.push_back((d, None));
        self.next += 1;
        while self.window.len() > self.limits.window_messages.max(1)
            || (self.bytes > self.limits.window_bytes && self.window.len() > 1)
        {
            let (old, _) = self.window.pop_front().expect("not empty");
            self.bytes -= old.len();
            self.oldest += 1;
            if self.pool.len() < 64 {
                self.pool.push(old);
            }
        }
        &self.window.back().expect("just pushed").0
    }

    /// The tail datagram: the next number, for members to find a loss at a burst's end.
    pub fn tail(&mut self) -> &[u8] {
        self.out.clear();
        self.out.push(TAIL);
        self.out.extend_from_slice(&self.group.to_le_bytes());
        self.out.extend_from_slice(&self.next.to_le_bytes());
        &self.out
    }

    /// A NAK from a member, at `now` (ms): `multicast` gets each repair, `reply` the
    /// *gone* datagram for the member when it asked for what the window no longer holds.
    /// A datagram that is not a NAK of this group is ignored (false).
    pub fn on_nak(
        &mut self,
        now: u64,
        datagram: &[u8],
        multicast: &mut dyn FnMut(&[u8]),
        reply: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let Some(ranges) = nak_ranges(self.group, datagram) else { return false };
        let mut gone = false;
        for (first, count) in ranges {
            let end = first.saturating_add(u64::from(count)).min(self.next);
            if first < self.oldest {
                gone = true;
            }
            for seq in first.max(self.oldest)..end {
                let (d, repaired) = &mut self.window[(seq - self.oldest) as usize];
                if repaired.is_some_and(|at| now.saturating_sub(at) < self.limits.repair_gap_ms) {
                    continue;
                }
                *repaired = Some(now);
                self.repairs += 1;
                multicast(d);
            }
        }
        if gone {
            self.gone_answers += 1;
            self.out.clear();
            self.out.push(GONE);
            self.out.extend_from_slice(&self.group.to_le_bytes());
            self.out.extend_from_slice(&self.oldest.to_le_bytes());
            reply(&self.out);
        }
        true
    }
}

/// The ranges of a NAK datagram of `group` (first number, count), if it is one.
/// The group a sender's datagram (data, tail or gone) belongs to: how a member that has
/// heard nobody yet learns which sender to follow.
pub fn sender_group(d: &[u8]) -> Option<u32> {
    (d.len() >= 13 && matches!(d[0], DATA | TAIL | GONE)).then(|| u32_at(d, 1))
}

fn nak_ranges(group: u32, d: &[u8]) -> Option<impl Iterator<Item = (u64, u32)> + '_> {
    if d.len() < 5 || d[0] != NAK || u32_at(d, 1) != group || !(d.len() - 5).is_multiple_of(12) {
        return None;
    }
    Some(d[5..].chunks_exact(12).take(MAX_NAK_RANGES).map(|c| (u64_at(c, 0), u32_at(c, 8))))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What a member hands its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum MemberEvent<'a> {
    /// The next message, in order.
    Message(&'a [u8]),
    /// Messages the sender no longer holds were skipped: this many.
    FellBehind(u64),
}

/// A receiving member of a group.
#[derive(Debug)]
pub struct Member {
    group: u32,
    /// The next number to deliver; `None` until the first datagram says where the stream is.
    next: Option<u64>,
    /// Highest number the sender is known to have sent, plus one.
    known_end: u64,
    /// Early arrivals, by number (at most `hold` of them).
    early: BTreeMap<u64, Vec<u8>>,
    hold: usize,
    /// When the next NAK goes (`u64::MAX`: none pending), and the backoff after it (ms).
    nak_at: u64,
    nak_backoff: u64,
    out: Vec<u8>,
    /// Counters.
    pub duplicates: u64,
    pub lost: u64,
    pub naks_sent: u64,
    /// Datagrams of the group whose numbers were implausible.
    pub ignored: u64,
}

/// A member's first NAK for a gap waits this long (ms) for a reordered datagram; later
/// ones back off from it, doubling up to [`NAK_BACKOFF_MAX_MS`].
pub const NAK_DELAY_MS: u64 = 2;
/// How far ahead of what a member expects a number may be (further is ignored).
pub const MAX_AHEAD: u64 = 1 << 32;
pub const NAK_BACKOFF_MAX_MS: u64 = 200;

impl Member {
    /// A member of `group` holding up to `hold` early messages while it waits for a gap.
    pub fn new(group: u32, hold: usize) -> Self {
        Self {
            group,
            next: None,
            known_end: 0,
            early: BTreeMap::new(),
            hold: hold.max(1),
            nak_at: u64::MAX,
            nak_backoff: NAK_DELAY_MS,
            out: Vec::new(),
            duplicates: 0,
            lost: 0,
            naks_sent: 0,
            ignored: 0,
        }
    }

    /// Messages missing before the last one known to exist.
    pub fn missing(&self) -> u64 {
        let Some(next) = self.next else { return 0 };
        self.known_end.saturating_sub(next).saturating_sub(self.early.len() as u64)
    }

    /// A datagram from the group at `now` (ms); in-order messages and fallings-behind go
    /// to `event`. Others' datagrams, and garbage, are ignored (false).
    pub fn receive(&mut self, now: u64, d: &[u8], event: &mut dyn FnMut(MemberEvent<'_>)) -> bool {
        if d.len() < 13 || u32_at(d, 1) != self.group {
            return false;
        }
        let n = u64_at(d, 5);
        // A number implausibly far ahead is garbage (or forged), not a gap to wait for.
        if self.next.is_some_and(|next| n.saturating_sub(next) > MAX_AHEAD) || n == u64::MAX {
            self.ignored += 1;
            return false;
        }
        match d[0] {
            DATA => {
                let next = *self.next.get_or_insert(n);
                // Numbers never heard of before it: a new gap.
                let new_gap = n > self.known_end.max(next);
                self.known_end = self.known_end.max(n + 1);
                if n < next || self.early.contains_key(&n) {
                    self.duplicates += 1;
                } else if n == next {
                    event(MemberEvent::Message(&d[DATA_HEADER..]));
                    self.next = Some(n + 1);
                    self.release(event);
                } else if self.early.len() < self.hold {
                    self.early.insert(n, d[DATA_HEADER..].to_vec());
                    if new_gap {
                        self.gap_found(now);
                    }
                } else {
                    // More early than it may hold: it cannot keep up; what it waits for
                    // it gives up, as if gone, and goes on from what it holds.
                    let first = *self.early.keys().next().expect("hold ≥ 1");
                    self.skip_to(first, event);
                    return self.receive(now, d, event);
                }
            }
            TAIL => {
                self.next.get_or_insert(n);
                if n > self.known_end {
                    self.known_end = n;
                    self.gap_found(now);
                }
            }
            GONE => {
                if self.next.is_some_and(|next| next < n) {
                    self.skip_to(n, event);
                }
            }
            _ => return false,
        }
        true
    }

    /// Skips everything before `to` that has not arrived (counted lost), then delivers
    /// what it holds from there on.
    fn skip_to(&mut self, to: u64, event: &mut dyn FnMut(MemberEvent<'_>)) {
        let next = self.next.unwrap_or(to);
        let held_before = self.early.range(..to).count() as u64;
        let skipped = to.saturating_sub(next).saturating_sub(held_before);
        // What arrived early below `to` is still delivered, in order, before the skip's end.
        let below: Vec<u64> = self.early.range(..to).map(|(&k, _)| k).collect();
        for k in below {
            let m = self.early.remove(&k).expect("listed");
            event(MemberEvent::Message(&m));
        }
        if skipped > 0 {
            self.lost += skipped;
            event(MemberEvent::FellBehind(skipped));
        }
        self.next = Some(to.max(next));
        self.release(event);
    }

    /// Delivers the early messages that are next in order.
    fn release(&mut self, event: &mut dyn FnMut(MemberEvent<'_>)) {
        while let Some(next) = self.next {
            let Some(m) = self.early.remove(&next) else { break };
            event(MemberEvent::Message(&m));
            self.next = Some(next + 1);
        }
        if self.missing() == 0 {
            // Nothing to ask for: no NAK pending.
            self.nak_backoff = NAK_DELAY_MS;
            self.nak_at = u64::MAX;
        }
    }

    /// A new gap: a NAK soon (after a wait for a reordered datagram), and the backoff
    /// starts again (a NAK lists every gap, so an older one is asked for again with it).
    fn gap_found(&mut self, now: u64) {
        self.nak_backoff = NAK_DELAY_MS;
        self.nak_at = self.nak_at.min(now + NAK_DELAY_MS);
    }

    /// The NAK to unicast to the sender now, if one is due: the missing ranges (the
    /// earliest first, at most [`MAX_NAK_RANGES`]). The next waits a backoff.
    /// Gives up what is missing (the sender is gone, or no longer answers): what it
    /// holds past the gaps is delivered, and the gaps are lost ([`MemberEvent::FellBehind`]).
    pub fn give_up(&mut self, event: &mut dyn FnMut(MemberEvent<'_>)) {
        if let Some(next) = self.next {
            self.skip_to(self.known_end.max(next), event);
        }
    }

    /// The group (the sender) it follows.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// When [`Member::poll_nak`] has a NAK to send (`None`: nothing is missing).
    pub fn nak_due(&self) -> Option<u64> {
        (self.next.is_some() && self.missing() > 0).then_some(self.nak_at)
    }

    pub fn poll_nak(&mut self, now: u64) -> Option<&[u8]> {
        let next = self.next?;
        if self.missing() == 0 || now < self.nak_at {
            return None;
        }
        self.out.clear();
        self.out.push(NAK);
        self.out.extend_from_slice(&self.group.to_le_bytes());
        let mut at = next;
        let mut ranges = 0;
        for &held in self.early.keys().chain(std::iter::once(&self.known_end)) {
            if held > at && ranges < MAX_NAK_RANGES {
                self.out.extend_from_slice(&at.to_le_bytes());
                self.out.extend_from_slice(&((held - at).min(u64::from(u32::MAX)) as u32).to_le_bytes());
                ranges += 1;
            }
            at = held.saturating_add(1);
        }
        self.naks_sent += 1;
        self.nak_at = now + self.nak_backoff;
        self.nak_backoff = (self.nak_backoff * 2).min(NAK_BACKOFF_MAX_MS);
        Some(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{Chaos, ChaosSpec, Fate};

    /// A group of `members` through links that each lose as `spec` says (multicast
    /// datagrams and NAKs alike), 1 ms a step.
    struct Group {
        sender: Sender,
        members: Vec<Member>,
        /// Each member's deliveries.
        got: Vec<Vec<Vec<u8>>>,
        behind: Vec<u64>,
        chaos: Chaos,
        /// Members that stopped reading (their datagrams are not delivered).
        stopped: Vec<bool>,
        now: u64,
    }

    impl Group {
        fn new(members: usize, spec: &str, seed: u64, limits: SenderLimits) -> Self {
            Self {
                sender: Sender::new(42, limits),
                members: (0..members).map(|_| Member::new(42, 4096)).collect(),
                got: vec![Vec::new(); members],
                behind: vec![0; members],
                chaos: Chaos::new(ChaosSpec::parse(spec).unwrap(), seed),
                stopped: vec![false; members],
                now: 0,
            }
        }

        /// Multicasts `d`: each running member gets it unless its link loses it.
        fn multicast(&mut self, d: &[u8]) {
            for i in 0..self.members.len() {
                if !self.stopped[i] && !matches!(self.chaos.decide(), Fate::Drop) {
                    self.deliver(i, d);
                }
            }
        }

        /// Member `i` receives `d`; what it hands over is recorded.
        fn deliver(&mut self, i: usize, d: &[u8]) {
            let (got, behind) = (&mut self.got[i], &mut self.behind[i]);
            self.members[i].receive(self.now, d, &mut |e| match e {
                MemberEvent::Message(m) => got.push(m.to_vec()),
                MemberEvent::FellBehind(n) => *behind += n,
            });
        }

        fn step(&mut self, send: &[Vec<u8>]) {
            self.now += 1;
            for m in send {
                let d = self.sender.publish(m).to_vec();
                self.multicast(&d);
            }
            if send.is_empty() {
                let t = self.sender.tail().to_vec();
                self.multicast(&t);
            }
            for i in 0..self.members.len() {
                if self.stopped[i] {
                    continue;
                }
                let Some(nak) = self.members[i].poll_nak(self.now).map(<[u8]>::to_vec) else { continue };
                if matches!(self.chaos.decide(), Fate::Drop) {
                    continue;
                }
                let (mut repairs, mut replies) = (Vec::new(), Vec::new());
                let now = self.now;
                assert!(
                    self.sender.on_nak(now, &nak, &mut |d| repairs.push(d.to_vec()), &mut |d| replies.push(d.to_vec()))
                );
                for d in repairs {
                    self.multicast(&d);
                }
                for d in replies {
                    self.deliver(i, &d);
                }
            }
        }
    }

    fn messages(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("message {i}").into_bytes()).collect()
    }

    #[test]
    fn at_five_percent_loss_every_member_gets_every_message_once_in_order() {
        for seed in 0..5 {
            let sent = messages(3000);
            let mut g = Group::new(3, "loss:0.05", seed, SenderLimits::default());
            for chunk in sent.chunks(10) {
                g.step(chunk);
            }
            for _ in 0..2000 {
                g.step(&[]);
            }
            for (i, got) in g.got.iter().enumerate() {
                assert_eq!(got.len(), sent.len(), "seed {seed}, member {i}");
                assert!(got == &sent, "seed {seed}, member {i}: out of order or altered");
                assert_eq!(g.behind[i], 0, "seed {seed}, member {i} fell behind");
            }
            assert!(g.sender.repairs > 0);
        }
    }

    #[test]
    fn a_member_that_stops_falls_behind_says_how_far_and_holds_nobody_back() {
        let sent = messages(5000);
        let limits = SenderLimits { window_messages: 1024, ..SenderLimits::default() };
        let mut g = Group::new(3, "loss:0.02", 9, limits);
        for (k, chunk) in sent.chunks(10).enumerate() {
            g.stopped[2] = (100..400).contains(&k); // stopped for 3000 messages, past the window
            g.step(chunk);
        }
        for _ in 0..2000 {
            g.step(&[]);
        }
        for i in 0..2 {
            assert!(g.got[i] == sent, "member {i} went on whole");
        }
        let (got, behind) = (&g.got[2], g.behind[2]);
        assert!(behind > 0, "it was told it fell behind");
        assert_eq!(got.len() as u64 + behind, sent.len() as u64, "every message delivered or counted lost");
        let mut last = None;
        for m in got {
            let i: usize = std::str::from_utf8(&m[8..]).unwrap().parse().unwrap();
            assert!(last.is_none_or(|l| i > l), "in order, once");
            last = Some(i);
        }
        assert!(g.sender.gone_answers > 0);
    }

    #[test]
    fn a_member_whose_sender_is_gone_gives_up_its_gaps_and_keeps_what_it_holds() {
        let mut s = Sender::new(9, SenderLimits::default());
        let sent: Vec<Vec<u8>> = (0..6u8).map(|i| s.publish(&[i]).to_vec()).collect();
        let mut m = Member::new(9, 100);
        let (mut got, mut lost) = (Vec::new(), 0);
        let mut on = |e: MemberEvent<'_>| match e {
            MemberEvent::Message(b) => got.push(b[0]),
            MemberEvent::FellBehind(n) => lost += n,
        };
        // 2 and 3 never come; 4 and 5 wait for them.
        for i in [0, 1, 4, 5] {
            m.receive(0, &sent[i], &mut on);
        }
        assert_eq!((m.missing(), m.nak_due().is_some()), (2, true));
        m.give_up(&mut on);
        assert_eq!((got, lost), (vec![0, 1, 4, 5], 2));
        assert_eq!((m.missing(), m.nak_due()), (0, None), "nothing left to ask for");
        assert_eq!(m.group(), 9);
        assert_eq!(sender_group(&sent[0]), Some(9));
        assert_eq!(sender_group(b"nak"), None);
    }

    #[test]
    fn duplicates_are_dropped_and_foreign_or_garbled_datagrams_ignored() {
        let mut s = Sender::new(1, SenderLimits::default());
        let mut m = Member::new(1, 16);
        let d = s.publish(b"x").to_vec();
        let mut n = 0;
        for _ in 0..3 {
            m.receive(0, &d, &mut |_| n += 1);
        }
        assert_eq!((n, m.duplicates), (1, 2));
        let mut other = Sender::new(2, SenderLimits::default());
        assert!(!m.receive(0, other.publish(b"y"), &mut |_| n += 1));
        assert!(!m.receive(0, &[DATA, 1, 0], &mut |_| n += 1));
        assert!(!s.on_nak(0, &[NAK, 1, 0, 0, 0, 9], &mut |_| {}, &mut |_| {}), "a NAK's ranges are 12 bytes each");
        assert_eq!(n, 1);
    }

    #[test]
    fn numbers_implausibly_far_ahead_are_ignored() {
        let mut s = Sender::new(3, SenderLimits::default());
        let mut m = Member::new(3, 16);
        let first = s.publish(b"a").to_vec();
        assert!(m.receive(0, &first, &mut |_| {}));
        for far in [u64::MAX, MAX_AHEAD + 2] {
            let mut d = first.clone();
            d[5..13].copy_from_slice(&far.to_le_bytes());
            assert!(!m.receive(0, &d, &mut |_| {}), "{far}");
        }
        assert_eq!((m.ignored, m.missing()), (2, 0));
        let mut n = 0;
        assert!(m.receive(0, s.publish(b"b"), &mut |_| n += 1));
        assert_eq!(n, 1, "and it goes on");
    }

    proptest::proptest! {
        #[test]
        fn no_datagram_panics_either_side(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut s = Sender::new(0, SenderLimits { window_messages: 8, ..SenderLimits::default() });
            for i in 0..10u8 {
                s.publish(&[i]);
            }
            let mut m = Member::new(0, 4);
            let mut d = d;
            if d.len() > 4 {
                d[1..5].copy_from_slice(&0u32.to_le_bytes());
            }
            s.on_nak(0, &d, &mut |_| {}, &mut |_| {});
            m.receive(0, &d, &mut |_| {});
            let _ = m.poll_nak(10);
        }
    }
}
