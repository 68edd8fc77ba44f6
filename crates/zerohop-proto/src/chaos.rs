//! Fault injection: what becomes of each datagram that passes a chaos proxy.
//!
//! A spec is written as in an endpoint URL, `loss:0.1,reorder:0.05,dup:0.01,delay:2ms`,
//! with a seed, so that a failing run replays exactly: the same seed and the same
//! sequence of datagrams give the same fates. Deciding is pure; the proxy that applies
//! the fates to real sockets is `zerohop_udp::chaos`.
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
                other => {
                    return Err(ChaosSpecError(format!(
                        "unknown chaos key '{other}' (loss, reorder, reorder_by, dup, delay, jitter)"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// What becomes of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It is dropped.
    Drop,
    /// It is delivered `copies` times (1 or 2) after `delay`.
    Deliver { copies: u8, delay: Duration },
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
        if reorder < self.spec.reorder {
            delay += self.spec.reorder_by;
        }
        Fate::Deliver { copies: if dup < self.spec.dup { 2 } else { 1 }, delay }
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
            assert_eq!(c.decide(), Fate::Deliver { copies: 1, delay: Duration::ZERO });
        }
    }
}
