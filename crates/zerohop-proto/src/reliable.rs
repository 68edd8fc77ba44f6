//! At-least-once delivery over datagrams, opt-in per channel: the sender's half.
//!
//! A sender keeps each datagram of a reliable channel ([`ResendWindow::sent`]) until
//! every peer acknowledged all the messages it carries, resends it to the peers that did
//! not when its timer runs out (the timeout doubling with each try, from twice the
//! smoothed round trip), and gives it up after `max_tries` (counted, as the messages it
//! carried). A peer that acknowledges the same point again ([`FAST_RESEND_AFTER`])
//! while more was sent has a hole there: the datagram it lacks goes again at once,
//! without waiting for its timer (TCP's fast retransmit). What is in flight is bounded
//! ([`ResendWindow::has_room`]), which pushes back on the publisher. The receiver's half is [`Inbox`](crate::datagram::Inbox):
//! it drops duplicates, and says what to acknowledge
//! ([`Inbox::acknowledgement`](crate::datagram::Inbox::acknowledgement)): the
//! sequence number below which it has every message (a cumulative acknowledgement).
//! Messages may arrive out of order (late ones are delivered); none is lost unless it
//! was given up, and a resent one may come twice only across a restart of the receiver.
//!
//! Time is microseconds on the caller's clock.
//!
//! ```
//! use zerohop_proto::reliable::{ResendConfig, ResendWindow};
//!
//! let mut w = ResendWindow::new(ResendConfig::default(), &['a', 'b']);
//! w.sent(0, 9, b"ten messages", 0); // messages 0..=9 in one datagram
//! w.on_ack('a', 10, 300);           // a has all below 10
//! let mut resent = Vec::new();
//! w.resend(1_000_000, |_, peer| resent.push(peer));
//! assert_eq!(resent, ['b']);        // only b is owed it
//! w.on_ack('b', 10, 1_000_100);
//! assert_eq!(w.in_flight(), 0);
//! ```

use std::collections::VecDeque;

use crate::header::FrameHeader;

/// Writes `floor` into the `ack` field of `frame`'s header (its checksum with it).
pub fn stamp_floor(frame: &mut [u8], floor: u64) {
    if let Ok((mut header, _)) = FrameHeader::decode_frame(frame) {
        header.ack = floor;
        let _ = header.encode_in_place(frame);
    }
}

/// Acknowledgements of the same point, past the first, after which the datagram there
/// is resent at once (once a datagram; then its timer). Receivers acknowledge once per
/// batch they read, so one repeat already means a later batch came while the hole
/// stayed (at 5 % loss in a namespace, one repeat: 300-330 K msg/s, two: 280-300 K,
/// none: 190-270 K; 12-06).
pub const FAST_RESEND_AFTER: u32 = 1;

/// How a [`ResendWindow`] resends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResendConfig {
    /// The least resend timeout, and the first before any round trip was measured.
    pub min_rto_us: u64,
    pub initial_rto_us: u64,
    /// The most a timeout grows to.
    pub max_rto_us: u64,
    /// Sends of a datagram (the first included) before it is given up.
    pub max_tries: u32,
    /// Messages in flight (sent, not yet acknowledged by every peer) at most.
    pub max_in_flight: u64,
}

impl Default for ResendConfig {
    fn default() -> Self {
        ResendConfig {
            min_rto_us: 2_000,
            initial_rto_us: 20_000,
            max_rto_us: 1_000_000,
            max_tries: 16,
            max_in_flight: 1024,
        }
    }
}

/// What a window did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResendStats {
    /// Datagrams sent again.
    pub resent: u64,
    /// Messages given up after `max_tries` sends.
    pub given_up: u64,
    /// Acknowledgements taken.
    pub acks: u64,
    /// Datagrams made due at once by repeated acknowledgements (counted in `resent` too
    /// when they go).
    pub fast_resent: u64,
}

/// A datagram kept until acknowledged.
#[derive(Debug)]
struct Held {
    first: u64,
    last: u64,
    bytes: Vec<u8>,
    sent_us: u64,
    due_us: u64,
    tries: u32,
    /// Made due at once by a repeated acknowledgement already (once a datagram: after
    /// that, its timer; a burst of repeats must not spend its tries).
    hurried: bool,
}

/// The sender's half of one reliable channel; see the module docs. `P` names a peer.
#[derive(Debug)]
pub struct ResendWindow<P> {
    config: ResendConfig,
    /// Each peer: the sequence number below which it has every message, and how many
    /// times it said so again.
    peers: Vec<(P, u64, u32)>,
    held: VecDeque<Held>,
    /// The next sequence number expected in `sent` (datagrams come in order).
    next: u64,
    srtt_us: Option<u64>,
    stats: ResendStats,
}

impl<P: Copy + PartialEq> ResendWindow<P> {
    pub fn new(config: ResendConfig, peers: &[P]) -> ResendWindow<P> {
        ResendWindow {
            config,
            peers: peers.iter().map(|&p| (p, 0, 0)).collect(),
            held: VecDeque::new(),
            next: 0,
            srtt_us: None,
            stats: ResendStats::default(),
        }
    }

    /// The peers change: those that stay keep what they acknowledged; a new one is owed
    /// what is held from now on, a gone one no longer holds anything back.
    pub fn set_peers(&mut self, peers: &[P]) {
        let from = self.held.front().map_or(self.next, |h| h.first);
        self.peers =
            peers.iter().map(|&p| self.peers.iter().find(|(q, ..)| *q == p).copied().unwrap_or((p, from, 0))).collect();
        self.retire();
    }

    fn rto_us(&self, tries: u32) -> u64 {
        let base = self.srtt_us.map_or(self.config.initial_rto_us, |s| (2 * s).max(self.config.min_rto_us));
        base.saturating_mul(1 << tries.saturating_sub(1).min(16)).min(self.config.max_rto_us)
    }

    /// A datagram carrying messages `first..=last` went to every peer at `now_us`.
    pub fn sent(&mut self, first: u64, last: u64, bytes: &[u8], now_us: u64) {
        self.next = self.next.max(last + 1);
        let due_us = now_us + self.rto_us(1);
        self.held.push_back(Held {
            first,
            last,
            bytes: bytes.to_vec(),
            sent_us: now_us,
            due_us,
            tries: 1,
            hurried: false,
        });
    }

    /// `peer` has every message below `ack`.
    pub fn on_ack(&mut self, peer: P, ack: u64, now_us: u64) {
        let Some(i) = self.peers.iter().position(|(p, ..)| *p == peer) else { return };
        self.stats.acks += 1;
        if ack == self.peers[i].1 && ack < self.next {
            // The same point again while more was sent: a hole, most likely.
            self.peers[i].2 += 1;
            if self.peers[i].2 >= FAST_RESEND_AFTER {
                self.peers[i].2 = 0;
                if let Some(h) = self.held.iter_mut().find(|h| h.first <= ack && ack <= h.last)
                    && h.due_us > now_us
                    && !h.hurried
                {
                    h.due_us = now_us;
                    h.hurried = true;
                    self.stats.fast_resent += 1;
                }
            }
            return;
        }
        if ack <= self.peers[i].1 || ack > self.next {
            return; // old news, or more than was sent (a stranger's)
        }
        self.peers[i].1 = ack;
        self.peers[i].2 = 0;
        // A round trip from a datagram acknowledged by this and sent once.
        if let Some(h) = self.held.iter().rev().find(|h| h.last < ack)
            && h.tries == 1
        {
            let sample = now_us.saturating_sub(h.sent_us);
            self.srtt_us = Some(self.srtt_us.map_or(sample, |s| (7 * s + sample) / 8));
        }
        self.retire();
    }

    /// Forgets the datagrams every peer has.
    fn retire(&mut self) {
        let all = self.peers.iter().map(|&(_, a, _)| a).min().unwrap_or(u64::MAX);
        while self.held.front().is_some_and(|h| h.last < all) {
            self.held.pop_front();
        }
    }

    /// When the first resend is due.
    pub fn due_us(&self) -> Option<u64> {
        self.held.iter().map(|h| h.due_us).min()
    }

    /// Resends what is due by `now_us` to each peer that lacks it (`send(datagram, peer)`),
    /// and gives up what was sent `max_tries` times.
    pub fn resend(&mut self, now_us: u64, mut send: impl FnMut(&[u8], P)) {
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if h.due_us > now_us {
                i += 1;
                continue;
            }
            if h.tries >= self.config.max_tries {
                // Given up: receivers learn it from the floor of what follows.
                let h = self.held.remove(i).expect("in range");
                self.stats.given_up += h.last - h.first + 1;
                continue;
            }
            let tries = h.tries + 1;
            let due = now_us + self.rto_us(tries);
            let floor = self.floor();
            let h = &mut self.held[i];
            h.tries = tries;
            h.due_us = due;
            stamp_floor(&mut h.bytes, floor);
            for &(p, acked, _) in &self.peers {
                if acked <= h.last {
                    send(&h.bytes, p);
                }
            }
            self.stats.resent += 1;
            i += 1;
        }
        self.retire();
    }

    /// The lowest sequence number still held (or the next to be sent): what receivers
    /// may stop waiting for below it, since it will never come again. Data frames of a
    /// reliable channel carry it in their `ack` field.
    pub fn floor(&self) -> u64 {
        self.held.front().map_or(self.next, |h| h.first)
    }

    /// Messages sent and not yet acknowledged by every peer.
    pub fn in_flight(&self) -> u64 {
        self.held.front().map_or(0, |h| self.next - h.first)
    }

    /// Whether `n` more messages may be sent now.
    pub fn has_room(&self, n: u64) -> bool {
        self.in_flight() + n <= self.config.max_in_flight
    }

    pub fn stats(&self) -> ResendStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{Chaos, ChaosSpec, Fate};
    use crate::datagram::{Inbox, Outbox};
    use crate::header::{FrameFlags, FrameHeader};
    use proptest::prelude::*;

    /// A sender and a receiver over a lossy, reordering, duplicating network, stepped in
    /// 1 ms ticks: what the receiver delivered, and the sender's window at the end.
    fn simulate(spec: ChaosSpec, seed: u64, messages: &[Vec<u8>], max_tries: u32) -> (Vec<u64>, ResendWindow<u8>) {
        let config = ResendConfig { max_tries, max_in_flight: 64, ..ResendConfig::default() };
        let mut window = ResendWindow::new(config, &[1u8]);
        let mut out = Outbox::new(300, 9, 2);
        out.set_reliable();
        let mut inbox = Inbox::new(300 - crate::FRAME_HEADER_LEN);
        let (mut there, mut back) = (Chaos::new(spec, seed), Chaos::new(spec, seed ^ 1));
        // In flight: (arrival µs, to the receiver?, bytes).
        let mut wire: Vec<(u64, bool, Vec<u8>)> = Vec::new();
        let mut got = Vec::new();
        let mut next = 0;
        let mut now = 0u64;
        let send = |wire: &mut Vec<(u64, bool, Vec<u8>)>, chaos: &mut Chaos, now: u64, to_receiver: bool, d: &[u8]| {
            if let Fate::Deliver { copies, delay, .. } = chaos.decide() {
                for _ in 0..copies {
                    wire.push((now + 200 + delay.as_micros() as u64, to_receiver, d.to_vec()));
                }
            }
        };
        while now < 60_000_000 && (next < messages.len() || window.in_flight() > 0) {
            // The publisher sends what the window has room for.
            while next < messages.len() && window.has_room(1) {
                out.set_floor(window.floor());
                out.push(&messages[next], now / 1000).unwrap();
                next += 1;
                out.flush();
                for (d, first, last) in out.datagrams_with_seqs() {
                    window.sent(first, last, d, now);
                    send(&mut wire, &mut there, now, true, d);
                }
                out.consume(out.ready());
            }
            window.resend(now, |d, _| send(&mut wire, &mut there, now, true, d));
            // What arrives by now, in order of arrival.
            wire.sort_by_key(|w| w.0);
            let arrived: Vec<_> = wire.iter().take_while(|w| w.0 <= now).cloned().collect();
            wire.drain(..arrived.len());
            for (_, to_receiver, d) in arrived {
                if to_receiver {
                    inbox.receive(&d, now / 1000, |seq, _| got.push(seq));
                    if let Some((session, channel, ack)) = inbox.acknowledgement() {
                        let h = FrameHeader {
                            flags: FrameFlags(FrameFlags::ACK),
                            session,
                            channel,
                            ack,
                            ..FrameHeader::new(0)
                        };
                        let mut frame = vec![0u8; crate::FRAME_HEADER_LEN];
                        h.encode_in_place(&mut frame).unwrap();
                        send(&mut wire, &mut back, now, false, &frame);
                    }
                } else {
                    let (h, _) = FrameHeader::decode_frame(&d).unwrap();
                    assert_eq!((h.session, h.channel), (9, 2));
                    window.on_ack(1, h.ack, now);
                }
            }
            now += 1000;
        }
        (got, window)
    }

    proptest! {
        /// Through loss, reordering and duplication, every message arrives, once; what
        /// was in flight never passed the limit.
        #[test]
        fn every_message_arrives_once_through_loss_reordering_and_duplication(
            seed in any::<u64>(),
            loss in 0.0f64..0.3,
            dup in 0.0f64..0.2,
            reorder in 0.0f64..0.3,
            sizes in proptest::collection::vec(0usize..700, 1..200),
        ) {
            let spec = ChaosSpec { loss, dup, reorder, reorder_by: std::time::Duration::from_millis(3), ..ChaosSpec::parse("").unwrap() };
            let messages: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![7u8; n]).collect();
            let (mut got, window) = simulate(spec, seed, &messages, 1000);
            let n = got.len();
            got.sort_unstable();
            got.dedup();
            prop_assert_eq!(got.len(), n, "a message was delivered twice");
            prop_assert_eq!(got, (0..messages.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(window.stats().given_up, 0);
            prop_assert_eq!(window.in_flight(), 0);
        }
    }

    #[test]
    fn what_is_given_up_is_counted_and_the_rest_goes_on() {
        // Everything lost for a while: a sender allowed 2 tries gives up, and the
        // receiver, told by the floor, acknowledges past the hole.
        let spec = ChaosSpec::parse("loss:0.5").unwrap();
        let messages: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 10]).collect();
        let (got, window) = simulate(spec, 3, &messages, 2);
        let s = window.stats();
        assert!(s.given_up > 0, "{s:?}");
        assert_eq!(window.in_flight(), 0, "the window drained");
        assert!(got.len() as u64 + s.given_up >= 100, "{} arrived, {} given up", got.len(), s.given_up);
    }

    #[test]
    fn a_hole_acknowledged_again_and_again_is_resent_at_once() {
        let mut w = ResendWindow::new(ResendConfig::default(), &['a']);
        for d in 0..4u64 {
            w.sent(d, d, &[d as u8], 0); // one message a datagram
        }
        w.on_ack('a', 1, 100); // has 0; 1 was lost, 2 and 3 arrive:
        assert!(w.due_us().unwrap() > 200, "nothing due before its timer");
        w.on_ack('a', 1, 200);
        assert_eq!(w.due_us(), Some(200), "acknowledged again: due now");
        let mut resent = Vec::new();
        w.resend(200, |d, _| resent.push(d.to_vec()));
        assert_eq!(resent, [vec![1u8]], "just the missing one");
        assert_eq!((w.stats().fast_resent, w.stats().resent), (1, 1));
        w.on_ack('a', 1, 250);
        assert!(w.due_us().unwrap() > 250, "once a datagram: then its timer");
        w.on_ack('a', 4, 300);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_peer_that_joins_is_owed_what_is_held_and_one_that_leaves_holds_nothing_back() {
        let mut w = ResendWindow::new(ResendConfig::default(), &['a']);
        w.sent(0, 4, b"x", 0);
        w.set_peers(&['a', 'b']);
        w.on_ack('a', 5, 10);
        assert_eq!(w.in_flight(), 5, "b has not got it");
        w.set_peers(&['a']);
        assert_eq!(w.in_flight(), 0);
    }
}
