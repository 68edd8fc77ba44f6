//! Reliable multicast, free of I/O: one sender, many members, every member gets every
//! message once and in order, repaired by negative acknowledgements.
//!
//! A member asks the sender where to start once it first hears it (a *join*, saying how
//! long it has been listening): the sender answers with the first number it published
//! since then (*start*), so a member gets every message published after it joined, even
//! when the first ones it should have heard were lost, and one that joins late does not
//! get the past. The sender numbers each message, multicasts it once and keeps it in a
//! retransmit window bounded in messages and bytes; when it has sent nothing for a while it
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
//! Datagrams (little endian): `kind: u8` (1 data, 2 tail, 3 NAK, 4 gone, 5 join,
//! 6 start), `group: u32` (the sender's choice, so that two senders on one address are
//! told apart), then data: `seq: u64`, payload; tail: `next: u64`; NAK: up to
//! [`MAX_NAK_RANGES`] of (`first: u64`, `count: u32`); gone: `oldest: u64`; join:
//! `listening_ms: u64`, `member: u32`; start: `first: u64`, `member: u32`.
//!
//! Members unicast NAKs and joins to the sender; everything the sender sends is
//! multicast, its answers too: members on one host share the group's port, so a
//! unicast answer would reach any one of them. A start names the member it answers (a
//! number each member draws); *gone* is true for every member.
//!
//! ```
//! use zerohop_proto::multicast::{Member, MemberEvent, Sender, SenderLimits};
//!
//! let mut s = Sender::new(7, SenderLimits::default());
//! let mut m = Member::new(7, 100, 0, 1); // listening since 0 ms, member 1
//! let sent: Vec<Vec<u8>> = [&b"one"[..], b"two", b"three"].iter().map(|m| s.publish(1, m).to_vec()).collect();
//! let mut got = Vec::new();
//! let mut on = |e: MemberEvent<'_>| if let MemberEvent::Message(b) = e { got.push(b.to_vec()) };
//! // "one" was lost and "two" is late: "three" is held while the member asks where to start.
//! m.receive(2, &sent[2], &mut on);
//! let join = m.poll_nak(2).unwrap().to_vec();
//! let mut start = Vec::new();
//! s.on_request(2, &join, &mut |d| start = d.to_vec());
//! m.receive(2, &start, &mut on); // "start from the first": a gap of two, asked for by a NAK
//! let nak = m.poll_nak(9).unwrap().to_vec();
//! s.on_request(9, &nak, &mut |d| _ = m.receive(9, d, &mut on));
//! assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
//! ```

use std::collections::{BTreeMap, VecDeque};

const DATA: u8 = 1;
const TAIL: u8 = 2;
const NAK: u8 = 3;
const GONE: u8 = 4;
const JOIN: u8 = 5;
const START: u8 = 6;
/// Bytes before a data datagram's payload.
pub const DATA_HEADER: usize = 13;
/// Ranges one NAK lists at most.
pub const MAX_NAK_RANGES: usize = 64;
/// A joining member also gets what was published this long (ms) before it joined: room
/// for the time its join took to reach the sender, so that none published after it
/// joined is missed.
pub const JOIN_SLACK_MS: u64 = 20;
/// Milliseconds a sender remembers the first number of (to answer a join), at most.
const MARKS: usize = 1 << 16;

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
    /// When it published: (ms, the first number of that millisecond), oldest first.
    marks: VecDeque<(u64, u64)>,
    pool: Vec<Vec<u8>>,
    out: Vec<u8>,
    /// Counters.
    pub repairs: u64,
    pub gone_answers: u64,
    pub joins: u64,
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
            marks: VecDeque::new(),
            pool: Vec::new(),
            out: Vec::new(),
            repairs: 0,
            gone_answers: 0,
            joins: 0,
        }
    }

    /// The number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Numbers `message`, published at `now` (ms), and keeps it for repairs: the
    /// datagram to multicast.
    pub fn publish(&mut self, now: u64, message: &[u8]) -> &[u8] {
        if self.marks.back().is_none_or(|&(at, _)| now > at) {
            self.marks.push_back((now, self.next));
            if self.marks.len() > MARKS {
                self.marks.pop_front();
            }
        }
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

    /// A NAK or a join from a member, at `now` (ms): `multicast` gets the answers (each
    /// repair; *gone* when it asked for what the window no longer holds; where a joining
    /// member starts). A datagram that is neither, of this group, is ignored (false).
    pub fn on_request(&mut self, now: u64, datagram: &[u8], multicast: &mut dyn FnMut(&[u8])) -> bool {
        if datagram.len() == 17 && datagram[0] == JOIN && u32_at(datagram, 1) == self.group {
            let since = now.saturating_sub(u64_at(datagram, 5).saturating_add(JOIN_SLACK_MS));
            // The first number published at `since` or later (the next one if none was).
            let at = self.marks.partition_point(|&(ms, _)| ms < since);
            let first = self.marks.get(at).map_or(self.next, |&(_, seq)| seq);
            self.joins += 1;
            self.answer(START, first);
            self.out.extend_from_slice(&datagram[13..17]);
            multicast(&self.out);
            return true;
        }
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
            multicast(self.answer(GONE, self.oldest));
        }
        true
    }

    fn answer(&mut self, kind: u8, seq: u64) -> &[u8] {
        self.out.clear();
        self.out.push(kind);
        self.out.extend_from_slice(&self.group.to_le_bytes());
        self.out.extend_from_slice(&seq.to_le_bytes());
        &self.out
    }
}

/// The ranges of a NAK datagram of `group` (first number, count), if it is one.
/// The group a sender's datagram (data, tail or gone) belongs to: how a member that has
/// heard nobody yet learns which sender to follow.
pub fn sender_group(d: &[u8]) -> Option<u32> {
    (d.len() >= 13 && matches!(d[0], DATA | TAIL | GONE | START)).then(|| u32_at(d, 1))
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
    /// Its number, in joins, and in the start that answers one.
    id: u32,
    /// When it began listening (ms, on the clock of `now`).
    joined: u64,
    /// The next number to deliver; `None` until the sender said where to start.
    next: Option<u64>,
    /// It heard the sender and asks it where to start (a join is due at `nak_at`).
    joining: bool,
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
    /// Messages heard while joining that were published before it joined (not delivered).
    pub before_join: u64,
}

/// A member's first NAK for a gap waits this long (ms) for a reordered datagram; later
/// ones back off from it, doubling up to [`NAK_BACKOFF_MAX_MS`].
pub const NAK_DELAY_MS: u64 = 2;
/// How far ahead of what a member expects a number may be (further is ignored).
pub const MAX_AHEAD: u64 = 1 << 32;
pub const NAK_BACKOFF_MAX_MS: u64 = 200;

impl Member {
    /// Member `id` (a number it drew) of `group`, listening since `joined` (ms), holding
    /// up to `hold` early messages while it waits for a gap or to be told where to start.
    pub fn new(group: u32, hold: usize, joined: u64, id: u32) -> Self {
        Self {
            group,
            id,
            joined,
            next: None,
            joining: false,
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
            before_join: 0,
        }
    }

    /// Whether it waits for something from the sender: a repair, or where to start.
    pub fn waiting(&self) -> bool {
        self.joining || self.missing() > 0
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
        let Some(next) = self.next else { return self.receive_joining(now, n, d, event) };
        match d[0] {
            DATA => {
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
                if n > self.known_end {
                    self.known_end = n;
                    self.gap_found(now);
                }
            }
            GONE => {
                if next < n {
                    self.skip_to(n, event);
                }
            }
            START => {} // (a join's answer, again)
            _ => return false,
        }
        true
    }

    /// `receive` before the sender said where to start: data is held, and a join is
    /// asked at once; the answer starts delivery.
    fn receive_joining(&mut self, now: u64, n: u64, d: &[u8], event: &mut dyn FnMut(MemberEvent<'_>)) -> bool {
        match d[0] {
            DATA if self.early.contains_key(&n) => self.duplicates += 1,
            DATA if self.early.len() < self.hold => {
                self.early.insert(n, d[DATA_HEADER..].to_vec());
                self.known_end = self.known_end.max(n + 1);
            }
            DATA => {
                // It cannot hold more while it waits: it starts from what it holds.
                let first = *self.early.keys().next().expect("hold ≥ 1");
                self.start(now, first, event);
                return self.receive(now, d, event);
            }
            TAIL => self.known_end = self.known_end.max(n),
            START if d.len() == 17 && u32_at(d, 13) == self.id => {
                self.start(now, n, event);
                return true;
            }
            GONE | START => return true, // (not for it, or nothing to skip yet)
            _ => return false,
        }
        if !self.joining {
            self.joining = true;
            self.nak_backoff = NAK_DELAY_MS;
            self.nak_at = now;
        }
        true
    }

    /// Delivery starts at `first`: what it holds from before is dropped (published
    /// before it joined), and a gap after it is asked for.
    fn start(&mut self, now: u64, first: u64, event: &mut dyn FnMut(MemberEvent<'_>)) {
        let later = self.early.split_off(&first);
        self.before_join += std::mem::replace(&mut self.early, later).len() as u64;
        self.joining = false;
        self.next = Some(first);
        self.known_end = self.known_end.max(first);
        self.nak_at = u64::MAX;
        self.release(event);
        if self.missing() > 0 {
            self.gap_found(now);
        }
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

    /// Gives up what is missing (the sender is gone, or no longer answers): what it
    /// holds past the gaps is delivered, and the gaps are lost ([`MemberEvent::FellBehind`]).
    /// A member still joining starts from what it holds.
    pub fn give_up(&mut self, event: &mut dyn FnMut(MemberEvent<'_>)) {
        if self.joining {
            let first = self.early.keys().next().copied().unwrap_or(self.known_end);
            self.start(0, first, event);
        }
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
        self.waiting().then_some(self.nak_at)
    }

    /// The NAK (or, while joining, the join) to unicast to the sender now, if one is
    /// due: the missing ranges, the earliest first, at most [`MAX_NAK_RANGES`]. The next
    /// waits a backoff.
    pub fn poll_nak(&mut self, now: u64) -> Option<&[u8]> {
        if !self.waiting() || now < self.nak_at {
            return None;
        }
        self.out.clear();
        self.out.push(if self.joining { JOIN } else { NAK });
        self.out.extend_from_slice(&self.group.to_le_bytes());
        self.nak_at = now + self.nak_backoff;
        self.nak_backoff = (self.nak_backoff * 2).min(NAK_BACKOFF_MAX_MS);
        let Some(next) = self.next else {
            self.out.extend_from_slice(&now.saturating_sub(self.joined).to_le_bytes());
            self.out.extend_from_slice(&self.id.to_le_bytes());
            return Some(&self.out);
        };
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
                members: (0..members).map(|i| Member::new(42, 4096, 0, i as u32)).collect(),
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
                let d = self.sender.publish(self.now, m).to_vec();
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
                let mut answers = Vec::new();
                assert!(self.sender.on_request(self.now, &nak, &mut |d| answers.push(d.to_vec())));
                for d in answers {
                    self.multicast(&d);
                }
            }
        }
    }

    fn messages(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("message {i}").into_bytes()).collect()
    }

    /// Member `m` asks sender `s` where to start, and is told.
    fn join(m: &mut Member, s: &mut Sender, now: u64, on: &mut dyn FnMut(MemberEvent<'_>)) {
        let join = m.poll_nak(now).expect("a join is due").to_vec();
        assert_eq!(join[0], JOIN);
        let mut start = Vec::new();
        assert!(s.on_request(now, &join, &mut |d| start = d.to_vec()));
        assert!(m.receive(now, &start, on));
    }

    #[test]
    fn at_five_percent_loss_every_member_gets_every_message_once_in_order() {
        for seed in 0..20 {
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
    fn a_member_listening_before_the_first_message_gets_it_even_when_the_first_ones_are_lost() {
        let sent = messages(100);
        let mut g = Group::new(2, "loss:0", 1, SenderLimits::default());
        g.stopped[0] = true; // member 0 misses the first 3 (a loss, not a late join)
        g.step(&sent[..3]);
        g.stopped[0] = false;
        for chunk in sent[3..].chunks(10) {
            g.step(chunk);
        }
        for _ in 0..50 {
            g.step(&[]);
        }
        assert!(g.got[0] == sent && g.got[1] == sent);
        assert_eq!(g.behind, [0, 0]);
    }

    #[test]
    fn a_member_that_joins_late_gets_everything_published_since_and_nothing_long_before() {
        for seed in 0..10 {
            let sent = messages(3000);
            let mut g = Group::new(3, "loss:0.05", seed, SenderLimits::default());
            // Members 1 and 2 join together at 100 ms (a step is 1 ms, 10 messages a step),
            // and each is told where it starts; but member 1 has listened since 60 ms (all
            // it heard until 100 was lost): it gets everything since 60.
            let (joins_at, listening_since) = (100, [0, 60, 100]);
            g.stopped[1] = true;
            g.stopped[2] = true;
            for chunk in sent.chunks(10) {
                if g.now + 1 == joins_at {
                    for (i, &since) in listening_since.iter().enumerate().skip(1) {
                        g.members[i] = Member::new(42, 4096, since, i as u32);
                        g.stopped[i] = false;
                    }
                }
                g.step(chunk);
            }
            for _ in 0..2000 {
                g.step(&[]);
            }
            for (i, got) in g.got.iter().enumerate() {
                let first = sent.len() - got.len();
                assert!(
                    got[..] == sent[first..],
                    "seed {seed}, member {i}: every message from its first on, once, in order"
                );
                // Messages published at step s are 10(s-1)..10s.
                let since = 10 * listening_since[i].saturating_sub(1) as usize;
                let slack = 10 * JOIN_SLACK_MS as usize;
                assert!(first <= since, "seed {seed}, member {i}: none published after it joined is missed ({first})");
                assert!(first + slack + 10 >= since, "seed {seed}, member {i}: not the past ({first})");
                assert_eq!(g.behind[i], 0);
            }
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
        let sent: Vec<Vec<u8>> = (0..6u8).map(|i| s.publish(0, &[i]).to_vec()).collect();
        let mut m = Member::new(9, 100, 0, 1);
        let (mut got, mut lost) = (Vec::new(), 0);
        let mut on = |e: MemberEvent<'_>| match e {
            MemberEvent::Message(b) => got.push(b[0]),
            MemberEvent::FellBehind(n) => lost += n,
        };
        // 2 and 3 never come; 4 and 5 wait for them.
        for i in [0, 1, 4, 5] {
            m.receive(0, &sent[i], &mut on);
        }
        join(&mut m, &mut s, 0, &mut on);
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
        let mut m = Member::new(1, 16, 0, 1);
        let d = s.publish(0, b"x").to_vec();
        let mut n = 0;
        for _ in 0..2 {
            m.receive(0, &d, &mut |_| n += 1);
        }
        join(&mut m, &mut s, 0, &mut |_| n += 1);
        m.receive(0, &d, &mut |_| n += 1);
        assert_eq!((n, m.duplicates), (1, 2));
        let mut other = Sender::new(2, SenderLimits::default());
        assert!(!m.receive(0, other.publish(0, b"y"), &mut |_| n += 1));
        assert!(!m.receive(0, &[DATA, 1, 0], &mut |_| n += 1));
        assert!(!s.on_request(0, &[NAK, 1, 0, 0, 0, 9], &mut |_| {}), "a NAK's ranges are 12 bytes each");
        assert_eq!(n, 1);
    }

    #[test]
    fn numbers_implausibly_far_ahead_are_ignored() {
        let mut s = Sender::new(3, SenderLimits::default());
        let mut m = Member::new(3, 16, 0, 1);
        let first = s.publish(0, b"a").to_vec();
        assert!(m.receive(0, &first, &mut |_| {}));
        join(&mut m, &mut s, 0, &mut |_| {});
        for far in [u64::MAX, MAX_AHEAD + 2] {
            let mut d = first.clone();
            d[5..13].copy_from_slice(&far.to_le_bytes());
            assert!(!m.receive(0, &d, &mut |_| {}), "{far}");
        }
        assert_eq!((m.ignored, m.missing()), (2, 0));
        let mut n = 0;
        assert!(m.receive(0, s.publish(0, b"b"), &mut |_| n += 1));
        assert_eq!(n, 1, "and it goes on");
    }

    proptest::proptest! {
        #[test]
        fn no_datagram_panics_either_side(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut s = Sender::new(0, SenderLimits { window_messages: 8, ..SenderLimits::default() });
            for i in 0..10u8 {
                s.publish(u64::from(i), &[i]);
            }
            let mut m = Member::new(0, 4, 0, 0);
            let mut d = d;
            if d.len() > 4 {
                d[1..5].copy_from_slice(&0u32.to_le_bytes());
            }
            s.on_request(0, &d, &mut |_| {});
            m.receive(0, &d, &mut |_| {});
            let _ = m.poll_nak(10);
        }
    }
}
