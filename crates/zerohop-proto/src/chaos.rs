//! Fault injection: what becomes of each datagram that a transport with `?chaos=`
//! sends or receives, or that passes the chaos proxy of the tests.
//!
//! A spec is written as in an endpoint URL, `loss:0.1,reorder:0.05,dup:0.01,delay:2ms`,
//! with a seed, so that a failing run replays exactly: the same seed and the same
//! sequence of datagrams give the same fates. Deciding is pure ([`Chaos`]), and so is
//! holding the delayed datagrams until they are due ([`Gate`], on a clock the caller
//! reads); the sockets they go to are the transport's.
//!
//! ```
//! use zerohop_proto::chaos::{Chaos, ChaosSpec, Fate};
//!
//! let spec = ChaosSpec::parse("loss:0.5,delay:1ms").unwrap();
//! let mut a = Chaos::new(spec, 7);
//! let mut b = Chaos::new(spec, 7);
//! for _ in 0..100 {
//!     assert_eq!(a.decide(), b.decide()); // seeded: replays exactly
//! }
//! ```

use std::time::Duration;

use crate::rng::SplitMix64;

/// How often each fault happens, and how long datagrams are held.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChaosSpec {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is held back by `reorder_by`, so that later ones
    /// overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back (default 1 ms).
    pub reorder_by: Duration,
    /// Probability that a datagram is delivered twice.
    pub dup: f64,
    /// Every datagram's delay.
    pub delay: Duration,
    /// Up to this much more delay, uniformly (which reorders too).
    pub jitter: Duration,
    /// A transport with connections drops them this often (zero: never); they
    /// reconnect as after any other loss of the connection.
    pub disconnect: Duration,
}

/// Why a spec does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosSpecError(pub String);

impl core::fmt::Display for ChaosSpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChaosSpecError {}

fn parse_probability(key: &str, v: &str) -> Result<f64, ChaosSpecError> {
    match v.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(ChaosSpecError(format!("{key} must be a probability in 0..1, got '{v}'"))),
    }
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, ChaosSpecError> {
    let bad = || ChaosSpecError(format!("{key} must be a duration like 2ms, 500us or 1s, got '{v}'"));
    let (number, unit) = v.find(|c: char| c.is_ascii_alphabetic()).map_or((v, "ms"), |i| v.split_at(i));
    let n: f64 = number.parse().map_err(|_| bad())?;
    let micros = match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return Err(bad()),
    };
    if !(0.0..=60e6).contains(&micros) {
        return Err(bad());
    }
    Ok(Duration::from_micros(micros as u64))
}

impl ChaosSpec {
    /// Parses `key:value,…` with keys `loss`, `reorder`, `reorder_by`, `dup`, `delay`
    /// and `jitter` (probabilities in 0..1; durations with `us`, `ms` or `s`).
    pub fn parse(spec: &str) -> Result<ChaosSpec, ChaosSpecError> {
        let mut out = ChaosSpec { reorder_by: Duration::from_millis(1), ..ChaosSpec::default() };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                part.split_once(':').ok_or_else(|| ChaosSpecError(format!("'{part}' is not key:value")))?;
            match key {
                "loss" => out.loss = parse_probability(key, value)?,
                "reorder" => out.reorder = parse_probability(key, value)?,
                "dup" => out.dup = parse_probability(key, value)?,
                "reorder_by" => out.reorder_by = parse_duration(key, value)?,
                "delay" => out.delay = parse_duration(key, value)?,
                "jitter" => out.jitter = parse_duration(key, value)?,
                "disconnect" => out.disconnect = parse_duration(key, value)?,
                other => {
                    return Err(ChaosSpecError(format!(
                        "unknown chaos key '{other}' (loss, reorder, reorder_by, dup, delay, jitter, disconnect)"
                    )));
                }
            }
        }
        if !out.disconnect.is_zero() && out.disconnect < Duration::from_millis(10) {
            return Err(ChaosSpecError(format!("disconnect must be at least 10ms, got {:?}", out.disconnect)));
        }
        Ok(out)
    }

    /// Whether anything happens to datagrams (as opposed to connections only, or nothing).
    pub fn touches_datagrams(&self) -> bool {
        self.loss > 0.0 || self.reorder > 0.0 || self.dup > 0.0 || !self.delay.is_zero() || !self.jitter.is_zero()
    }

    /// The spec in the URL form, keys with a default left out (`loss:0.1,delay:2ms`).
    pub fn to_url_form(&self) -> String {
        let mut parts = Vec::new();
        let dur = |d: Duration| {
            if !d.subsec_micros().is_multiple_of(1000) {
                format!("{}us", d.as_micros())
            } else {
                format!("{}ms", d.as_millis())
            }
        };
        for (key, p) in [("loss", self.loss), ("reorder", self.reorder), ("dup", self.dup)] {
            if p > 0.0 {
                parts.push(format!("{key}:{p}"));
            }
        }
        if self.reorder > 0.0 && self.reorder_by != Duration::from_millis(1) {
            parts.push(format!("reorder_by:{}", dur(self.reorder_by)));
        }
        for (key, d) in [("delay", self.delay), ("jitter", self.jitter), ("disconnect", self.disconnect)] {
            if !d.is_zero() {
                parts.push(format!("{key}:{}", dur(d)));
            }
        }
        parts.join(",")
    }
}

/// What becomes of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It is dropped.
    Drop,
    /// It is delivered `copies` times (1 or 2) after `delay` (which includes
    /// `reorder_by` when it was `reordered`).
    Deliver { copies: u8, delay: Duration, reordered: bool },
}

/// A seeded decider of fates.
#[derive(Clone, Debug)]
pub struct Chaos {
    spec: ChaosSpec,
    rng: SplitMix64,
}

impl Chaos {
    /// Decides with `spec`; the same `seed` gives the same fates in the same order.
    pub fn new(spec: ChaosSpec, seed: u64) -> Chaos {
        Chaos { spec, rng: SplitMix64::new(seed) }
    }

    /// The next datagram's fate. Every call draws the same number of random values, so
    /// one fault's probability does not shift the others' sequence.
    pub fn decide(&mut self) -> Fate {
        let r = &mut self.rng;
        let (loss, reorder, dup, jitter) = (r.unit(), r.unit(), r.unit(), r.unit());
        if loss < self.spec.loss {
            return Fate::Drop;
        }
        let mut delay = self.spec.delay + self.spec.jitter.mul_f64(jitter);
        let reordered = reorder < self.spec.reorder;
        if reordered {
            delay += self.spec.reorder_by;
        }
        Fate::Deliver { copies: if dup < self.spec.dup { 2 } else { 1 }, delay, reordered }
    }
}

/// What a [`Gate`] did to the datagrams that passed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Datagrams that reached the gate.
    pub seen: u64,
    /// Dropped (by `loss`, or because too many were held already).
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back by `reorder_by`, so that later ones overtook them.
    pub reordered: u64,
    /// Held for any delay before they went on.
    pub delayed: u64,
}

impl GateStats {
    /// Adds `other`'s counts.
    pub fn absorb(&mut self, other: &GateStats) {
        self.seen += other.seen;
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.delayed += other.delayed;
    }
}

/// A datagram held until its time.
#[derive(Debug)]
struct Held<R> {
    due_us: u64,
    /// Arrival order among those due at the same time.
    order: u64,
    route: R,
    bytes: Vec<u8>,
}

impl<R> PartialEq for Held<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.due_us, self.order) == (other.due_us, other.order)
    }
}

impl<R> Eq for Held<R> {}

impl<R> PartialOrd for Held<R> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<R> Ord for Held<R> {
    /// Reversed, so that the heap's top is the first due.
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (other.due_us, other.order).cmp(&(self.due_us, self.order))
    }
}

/// At most this many datagrams wait in a gate; more are dropped (and counted), so a
/// long delay at a high rate cannot take all memory.
pub const GATE_HOLDS: usize = 65_536;

/// Spare buffers a gate keeps for the datagrams it will hold, so holding one does not
/// allocate once traffic is steady.
const SPARE_BUFFERS: usize = 256;

/// One direction of a transport's traffic through chaos: each datagram is dropped,
/// passed on at once (once or twice), or held until its delay is over. `R` says where a
/// datagram goes (a peer's address, a connection). Time is the caller's clock in
/// microseconds.
///
/// ```
/// use zerohop_proto::chaos::{ChaosSpec, Gate};
///
/// let mut gate = Gate::new(ChaosSpec::parse("delay:2ms").unwrap(), 7);
/// let mut out = Vec::new();
/// gate.pass(0, b"hello", 'a', |bytes, to| out.push((bytes.to_vec(), to)));
/// assert!(out.is_empty()); // held for 2 ms
/// assert_eq!(gate.due_us(), Some(2000));
/// gate.release(2000, |bytes, to| out.push((bytes.to_vec(), to)));
/// assert_eq!(out, [(b"hello".to_vec(), 'a')]);
/// ```
#[derive(Debug)]
pub struct Gate<R> {
    chaos: Chaos,
    held: std::collections::BinaryHeap<Held<R>>,
    spare: Vec<Vec<u8>>,
    order: u64,
    stats: GateStats,
}

impl<R: Copy> Gate<R> {
    pub fn new(spec: ChaosSpec, seed: u64) -> Gate<R> {
        Gate {
            chaos: Chaos::new(spec, seed),
            held: std::collections::BinaryHeap::new(),
            spare: Vec::new(),
            order: 0,
            stats: GateStats::default(),
        }
    }

    /// Decides `bytes`' fate at `now_us`: `deliver` gets it now (once or twice), or the
    /// gate keeps a copy until [`release`](Self::release) at its time, or it is gone.
    pub fn pass(&mut self, now_us: u64, bytes: &[u8], route: R, mut deliver: impl FnMut(&[u8], R)) {
        self.stats.seen += 1;
        let Fate::Deliver { copies, delay, reordered } = self.chaos.decide() else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.duplicated += u64::from(copies > 1);
        self.stats.reordered += u64::from(reordered);
        if delay.is_zero() {
            for _ in 0..copies {
                deliver(bytes, route);
            }
            return;
        }
        self.stats.delayed += 1;
        for _ in 0..copies {
            if self.held.len() >= GATE_HOLDS {
                self.stats.dropped += 1;
                continue;
            }
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(bytes);
            self.order += 1;
            let due_us = now_us.saturating_add(delay.as_micros() as u64);
            self.held.push(Held { due_us, order: self.order, route, bytes: copy });
        }
    }

    /// When the first held datagram is due.
    pub fn due_us(&self) -> Option<u64> {
        self.held.peek().map(|h| h.due_us)
    }

    /// Hands `deliver` every held datagram due by `now_us`, in order of their times.
    pub fn release(&mut self, now_us: u64, mut deliver: impl FnMut(&[u8], R)) {
        while self.held.peek().is_some_and(|h| h.due_us <= now_us) {
            let h = self.held.pop().expect("peeked");
            deliver(&h.bytes, h.route);
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(h.bytes);
            }
        }
    }

    /// How many datagrams wait.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn stats(&self) -> GateStats {
        self.stats
    }
}

/// Mixed into the seed of what a transport receives, so that its faults do not mirror
/// those of what it sends.
pub const RECEIVED_SALT: u64 = 0x005e_ed0f_c4a0_5000;

/// How long a byte stream takes to resend a lost segment: Linux's least TCP
/// retransmission timeout (`TCP_RTO_MIN`), what a loss costs a stream on a short path.
pub const STREAM_RESEND: Duration = Duration::from_millis(200);

/// One direction of a byte stream through chaos. A stream loses nothing and keeps its
/// order (the kernel resends and reorders below it), so a fault shows only as time: a
/// lost segment comes [`STREAM_RESEND`] late, a reordered or delayed one late by its
/// delay, a duplicate is discarded by the receiving kernel; and no segment comes before
/// one written earlier (head-of-line blocking, as over TCP). Time is the caller's clock
/// in microseconds.
///
/// ```
/// use zerohop_proto::chaos::{ChaosSpec, StreamGate, STREAM_RESEND};
///
/// let mut gate = StreamGate::new(ChaosSpec::parse("loss:1").unwrap(), 7);
/// assert_eq!(gate.due_us(0), STREAM_RESEND.as_micros() as u64);
/// assert_eq!(gate.stats().dropped, 1);
/// ```
#[derive(Clone, Debug)]
pub struct StreamGate {
    chaos: Chaos,
    /// When the last segment is due: none is due before it.
    last_due_us: u64,
    stats: GateStats,
}

impl StreamGate {
    pub fn new(spec: ChaosSpec, seed: u64) -> StreamGate {
        StreamGate { chaos: Chaos::new(spec, seed), last_due_us: 0, stats: GateStats::default() }
    }

    /// When a segment written at `now_us` reaches the other side.
    pub fn due_us(&mut self, now_us: u64) -> u64 {
        self.stats.seen += 1;
        let late = match self.chaos.decide() {
            Fate::Drop => {
                self.stats.dropped += 1;
                STREAM_RESEND
            }
            Fate::Deliver { copies, delay, reordered } => {
                self.stats.duplicated += u64::from(copies > 1);
                self.stats.reordered += u64::from(reordered);
                delay
            }
        };
        if !late.is_zero() {
            self.stats.delayed += 1;
        }
        self.last_due_us = self.last_due_us.max(now_us.saturating_add(late.as_micros() as u64));
        self.last_due_us
    }

    pub fn stats(&self) -> GateStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_form_and_refuses_nonsense() {
        let s = ChaosSpec::parse("loss:0.1,reorder:0.05,dup:0.01,delay:2ms,jitter:500us").unwrap();
        assert_eq!((s.loss, s.reorder, s.dup), (0.1, 0.05, 0.01));
        assert_eq!(
            (s.delay, s.jitter, s.reorder_by),
            (Duration::from_millis(2), Duration::from_micros(500), Duration::from_millis(1))
        );
        assert_eq!(ChaosSpec::parse("delay:1s").unwrap().delay, Duration::from_secs(1));
        assert_eq!(
            ChaosSpec::parse("").unwrap(),
            ChaosSpec { reorder_by: Duration::from_millis(1), ..Default::default() }
        );
        for bad in ["loss:1.5", "loss:-1", "loss", "flood:1", "delay:2h", "delay:x", "dup:NaN"] {
            assert!(ChaosSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_come_out_near_the_spec_and_replay_with_the_seed() {
        let spec = ChaosSpec::parse("loss:0.1,dup:0.05,reorder:0.2,delay:1ms").unwrap();
        let fates: Vec<Fate> = {
            let mut c = Chaos::new(spec, 42);
            (0..100_000).map(|_| c.decide()).collect()
        };
        let mut again = Chaos::new(spec, 42);
        assert!(fates.iter().all(|f| *f == again.decide()));
        let dropped = fates.iter().filter(|f| **f == Fate::Drop).count() as f64 / 1e5;
        let duplicated = fates.iter().filter(|f| matches!(f, Fate::Deliver { copies: 2, .. })).count() as f64 / 0.9e5;
        let held = fates
            .iter()
            .filter(|f| matches!(f, Fate::Deliver { delay, .. } if *delay > Duration::from_millis(1)))
            .count() as f64
            / 0.9e5;
        assert!((dropped - 0.1).abs() < 0.01, "{dropped}");
        assert!((duplicated - 0.05).abs() < 0.01, "{duplicated}");
        assert!((held - 0.2).abs() < 0.01, "{held}");
        // Another seed, other fates.
        let mut other = Chaos::new(spec, 43);
        assert!(fates.iter().take(1000).any(|f| *f != other.decide()));
    }

    #[test]
    fn no_spec_no_faults() {
        let mut c = Chaos::new(ChaosSpec::default(), 1);
        for _ in 0..1000 {
            assert_eq!(c.decide(), Fate::Deliver { copies: 1, delay: Duration::ZERO, reordered: false });
        }
    }

    /// A gate's output is exactly what the seeded fates say: the same seed over the
    /// same datagrams gives the same deliveries, a delayed datagram comes out at its
    /// time and not before, and the counts add up.
    mod gate {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn a_gate_delivers_exactly_the_seeded_fates(
                seed in any::<u64>(),
                loss in 0.0f64..0.5,
                dup in 0.0f64..0.3,
                reorder in 0.0f64..0.3,
                delay_us in 0u64..3000,
                jitter_us in 0u64..2000,
                gaps in proptest::collection::vec(0u64..1500, 1..300),
            ) {
                let spec = ChaosSpec {
                    loss, dup, reorder,
                    reorder_by: Duration::from_millis(1),
                    delay: Duration::from_micros(delay_us),
                    jitter: Duration::from_micros(jitter_us),
                    disconnect: Duration::ZERO,
                };
                // What the fates say each datagram becomes: (due, index) per copy.
                let mut fates = Chaos::new(spec, seed);
                let mut expected = Vec::new();
                let mut now = 0u64;
                for (i, gap) in gaps.iter().enumerate() {
                    now += gap;
                    if let Fate::Deliver { copies, delay, .. } = fates.decide() {
                        for _ in 0..copies {
                            expected.push((now + delay.as_micros() as u64, i as u32));
                        }
                    }
                }
                expected.sort(); // by due time, then arrival (a stable order)
                let mut gate = Gate::new(spec, seed);
                let mut got = Vec::new();
                let mut now = 0u64;
                for (i, gap) in gaps.iter().enumerate() {
                    now += gap;
                    gate.release(now, |b, _| got.push((now, u32::from_le_bytes(b.try_into().unwrap()))));
                    let due_now = now;
                    let idx = i as u32;
                    gate.pass(now, &idx.to_le_bytes(), 0u64, |b, _| got.push((due_now, u32::from_le_bytes(b.try_into().unwrap()))));
                    prop_assert!(gate.due_us().is_none_or(|d| d >= now));
                }
                // Held ones, at their times: record each at its due time.
                while let Some(due) = gate.due_us() {
                    gate.release(due, |b, _| got.push((due, u32::from_le_bytes(b.try_into().unwrap()))));
                }
                // Released in a release call at time t: due ≤ t; compare sets of (index)
                // with their due times from the fates, where the gate's release time
                // is never earlier than due.
                let mut got_sorted: Vec<u32> = got.iter().map(|(_, i)| *i).collect();
                got_sorted.sort_unstable();
                let mut want_sorted: Vec<u32> = expected.iter().map(|(_, i)| *i).collect();
                want_sorted.sort_unstable();
                prop_assert_eq!(&got_sorted, &want_sorted);
                let s = gate.stats();
                prop_assert_eq!(s.seen, gaps.len() as u64);
                prop_assert_eq!(s.seen - s.dropped + s.duplicated, got.len() as u64);
                // Nothing comes out before its time: each output's index's earliest due.
                for (at, i) in &got {
                    let earliest = expected.iter().filter(|(_, j)| j == i).map(|(d, _)| *d).min().unwrap();
                    prop_assert!(*at >= earliest, "datagram {} out at {} before {}", i, at, earliest);
                }
            }
        }

        #[test]
        fn a_full_gate_drops_and_counts() {
            let mut gate = Gate::new(ChaosSpec::parse("delay:1s").unwrap(), 1);
            for i in 0..GATE_HOLDS as u64 + 10 {
                gate.pass(i, b"x", (), |_, _| panic!("held"));
            }
            assert_eq!(gate.held(), GATE_HOLDS);
            assert_eq!(gate.stats().dropped, 10);
            let mut n = 0;
            gate.release(u64::MAX, |_, _| n += 1);
            assert_eq!(n, GATE_HOLDS);
        }

        #[test]
        fn the_url_form_round_trips() {
            for s in
                ["loss:0.1,dup:0.01,delay:2ms,jitter:500us", "reorder:0.05,reorder_by:3ms", "disconnect:5000ms", ""]
            {
                assert_eq!(ChaosSpec::parse(s).unwrap().to_url_form(), s);
            }
            assert!(ChaosSpec::parse("disconnect:1ms").is_err());
            assert!(!ChaosSpec::parse("disconnect:1s").unwrap().touches_datagrams());
        }

        proptest! {
            /// A stream's segments come in the order they were written, never before
            /// their time, and a lost one at least the resend time late.
            #[test]
            fn a_stream_gate_keeps_order_and_charges_losses_in_time(
                seed in any::<u64>(),
                loss in 0.0f64..0.5,
                delay_us in 0u64..3000,
                gaps in proptest::collection::vec(0u64..1500, 1..300),
            ) {
                let spec = ChaosSpec { loss, delay: Duration::from_micros(delay_us), ..ChaosSpec::parse("").unwrap() };
                let mut gate = StreamGate::new(spec, seed);
                let mut fates = Chaos::new(spec, seed);
                let (mut now, mut last) = (0u64, 0u64);
                for gap in gaps {
                    now += gap;
                    let due = gate.due_us(now);
                    prop_assert!(due >= last && due >= now);
                    let least = match fates.decide() {
                        Fate::Drop => STREAM_RESEND,
                        Fate::Deliver { delay, .. } => delay,
                    };
                    prop_assert!(due >= now + least.as_micros() as u64);
                    last = due;
                }
            }
        }
    }
}
