//! Fault injection asked for with a hub's options (`?chaos=loss:0.1&seed=7`, or
//! `{ chaos: { loss: 0.1 }, seed: 7 }`), and what it did, for `metrics().chaos`.
//!
//! A transport that can inject faults takes the options with [`take_chaos`] and
//! applies them inside, below its reliability (see `zerohop_net::chaos`); a transport
//! that cannot leaves them, and they are refused as any option it does not have.
//!
//! ```
//! use zerohop_transport::chaos::take_chaos;
//! use zerohop_transport::options::Options;
//!
//! let mut o = Options::from_query(&[("chaos".into(), "loss:0.1,delay:2ms".into()), ("seed".into(), "7".into())]);
//! let c = take_chaos(&mut o).unwrap().unwrap();
//! assert_eq!((c.spec.loss, c.seed), (0.1, 7));
//! assert_eq!(c.spec.to_url_form(), "loss:0.1,delay:2ms");
//! ```

use std::time::Duration;

pub use zerohop_proto::chaos::{ChaosSpec, Gate, GateStats, RECEIVED_SALT, StreamGate};

use crate::error::Result;
use crate::options::{HubOptions, Options, Value};

/// The faults a hub injects, and the seed that replays them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChaosConfig {
    pub spec: ChaosSpec,
    pub seed: u64,
}

/// The largest seed: a JavaScript number holds it exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Takes `chaos` (the URL form, or an object of `loss`, `reorder`, `reorderByMs`,
/// `dup`, `delayMs`, `jitterMs`, `disconnectMs` and `seed`) and `seed` from `named`. Without a
/// seed one is drawn, and reported in the metrics so that a run can be replayed.
pub fn take_chaos(named: &mut Options) -> Result<Option<ChaosConfig>> {
    let seed = named.take_u64("seed", 0..=MAX_SEED)?;
    let (spec, inner_seed) = match named.take("chaos") {
        None => {
            if seed.is_some() {
                return Err(named.bad("seed", "is given without chaos (it seeds the faults chaos injects)"));
            }
            return Ok(None);
        }
        Some(Value::Text(t)) => {
            (ChaosSpec::parse(&t).map_err(|e| named.bad("chaos", format!("is not valid: {e}")))?, None)
        }
        Some(Value::Map(o)) => {
            let mut o = named.group("chaos", o);
            let ms = |o: &mut Options, name: &str| -> Result<Duration> { Ok(o.take_ms(name)?.unwrap_or_default()) };
            let mut spec = ChaosSpec {
                loss: o.take_in("loss", 0.0..=1.0)?.unwrap_or(0.0),
                reorder: o.take_in("reorder", 0.0..=1.0)?.unwrap_or(0.0),
                dup: o.take_in("dup", 0.0..=1.0)?.unwrap_or(0.0),
                delay: ms(&mut o, "delayMs")?,
                jitter: ms(&mut o, "jitterMs")?,
                disconnect: ms(&mut o, "disconnectMs")?,
                ..ChaosSpec::parse("").expect("the empty spec")
            };
            if let Some(by) = o.take_ms("reorderByMs")? {
                spec.reorder_by = by;
            }
            let inner_seed = o.take_u64("seed", 0..=MAX_SEED)?;
            o.finish_group("chaos")?;
            // The same checks as the URL form's.
            let spec =
                ChaosSpec::parse(&spec.to_url_form()).map_err(|e| named.bad("chaos", format!("is not valid: {e}")))?;
            (spec, inner_seed)
        }
        Some(_) => return Err(named.bad("chaos", "must be a string like 'loss:0.1,delay:2ms' or an object")),
    };
    if seed.is_some() && inner_seed.is_some() {
        return Err(named.bad("seed", "is given twice (in chaos and beside it)"));
    }
    Ok(Some(ChaosConfig { spec, seed: seed.or(inner_seed).unwrap_or_else(draw_seed) }))
}

/// What faults a transport can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injects {
    /// Into datagrams or segments: loss, reordering, duplication, delay.
    pub datagrams: bool,
    /// Dropping connections (`disconnect`).
    pub disconnects: bool,
}

impl HubOptions {
    /// Takes the faults asked for (see [`take_chaos`]), refusing those `scheme`
    /// cannot inject (`why` says what it lacks).
    pub fn take_chaos(&mut self, scheme: &str, injects: Injects, why: &str) -> Result<Option<ChaosConfig>> {
        let named = &mut self.named;
        let Some(c) = take_chaos(named)? else { return Ok(None) };
        let refused = if !injects.disconnects && !c.spec.disconnect.is_zero() {
            Some("disconnect")
        } else if !injects.datagrams && c.spec.touches_datagrams() {
            Some("loss, reorder, dup, delay and jitter")
        } else {
            None
        };
        match refused {
            Some(what) => Err(named.bad("chaos", format!("{what}: not on {scheme}:// ({why})"))),
            None => Ok(Some(c)),
        }
    }
}

/// A seed nobody chose: from the clock and the process, so runs differ.
fn draw_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    // One splitmix64 step spreads the bits.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & MAX_SEED
}

/// What a hub's chaos did (`metrics().chaos`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChaosReport {
    /// The spec in the URL form, and the seed that replays it.
    pub spec: String,
    pub seed: u64,
    /// What it did to the datagrams (or segments) the hub sent…
    pub sent: GateStats,
    /// …and to those it received.
    pub received: GateStats,
    /// Connections it dropped (`disconnect`).
    pub disconnects: u64,
}

impl ChaosReport {
    /// What faults of `config` did: to what was sent, to what was received, and the
    /// connections they dropped.
    pub fn new(config: &ChaosConfig, sent: GateStats, received: GateStats, disconnects: u64) -> ChaosReport {
        ChaosReport { spec: config.spec.to_url_form(), seed: config.seed, sent, received, disconnects }
    }

    /// By the names users see (`{ spec, seed, sent: { seen, dropped, … }, received, disconnects }`).
    pub fn to_value(&self) -> Value {
        let n = |v: u64| Value::Number(v as f64);
        let gate = |g: &GateStats| {
            Value::Map(Options::new(vec![
                ("seen".into(), n(g.seen)),
                ("dropped".into(), n(g.dropped)),
                ("duplicated".into(), n(g.duplicated)),
                ("reordered".into(), n(g.reordered)),
                ("delayed".into(), n(g.delayed)),
            ]))
        };
        Value::Map(Options::new(vec![
            ("spec".into(), Value::Text(self.spec.clone())),
            ("seed".into(), n(self.seed)),
            ("sent".into(), gate(&self.sent)),
            ("received".into(), gate(&self.received)),
            ("disconnects".into(), n(self.disconnects)),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn text(entries: &[(&str, &str)]) -> Options {
        Options::from_query(&entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>())
    }

    #[test]
    fn the_url_form_and_the_object_are_the_same_faults() {
        let from_url =
            take_chaos(&mut text(&[("chaos", "loss:0.1,reorder:0.05,dup:0.01,delay:2ms,jitter:1ms"), ("seed", "7")]))
                .unwrap()
                .unwrap();
        let object = Options::new(vec![
            ("loss".into(), Value::Number(0.1)),
            ("reorder".into(), Value::Number(0.05)),
            ("dup".into(), Value::Number(0.01)),
            ("delayMs".into(), Value::Number(2.0)),
            ("jitterMs".into(), Value::Number(1.0)),
            ("seed".into(), Value::Number(7.0)),
        ]);
        let mut o = Options::new(vec![("chaos".into(), Value::Map(object))]);
        assert_eq!(take_chaos(&mut o).unwrap().unwrap(), from_url);
    }

    #[test]
    fn nonsense_is_refused_and_a_missing_seed_is_drawn() {
        let err = take_chaos(&mut text(&[("chaos", "loss:2")])).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadUrl);
        assert!(err.message().contains("chaos is not valid: loss must be a probability"), "{}", err.message());
        let err = take_chaos(&mut text(&[("seed", "1")])).unwrap_err();
        assert!(err.message().contains("seed is given without chaos"), "{}", err.message());
        let mut o =
            Options::new(vec![("chaos".into(), Value::Map(Options::new(vec![("los".into(), Value::Number(0.1))])))]);
        let err = take_chaos(&mut o).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadOption);
        assert!(
            err.message().contains("chaos.los is not an option of chaos (the nearest is 'chaos.loss')"),
            "{}",
            err.message()
        );
        let a = take_chaos(&mut text(&[("chaos", "loss:0.1")])).unwrap().unwrap();
        assert!(a.seed <= MAX_SEED);
    }
}
