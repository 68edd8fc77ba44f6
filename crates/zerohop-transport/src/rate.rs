//! Rate limits every hub may have: `rateLimit` (messages a second), `rateLimitBytes`
//! (bytes a second) and `rateBurstMs` (how much unused rate is saved up, as time at the
//! rate: 50 ms unless given), kept with token buckets (`zerohop_proto::qos`).
//!
//! A publish over the limit meets the hub's `backpressure` policy, as a publish with no
//! room does: `block` waits for the tokens (up to `publishTimeoutMs`), `drop_new`
//! discards it, `fail_fast` throws `ERR_BACKPRESSURE`; `drop_old`, which has nothing to
//! overwrite here, discards it as `drop_new` does. Discarded and refused publishes are
//! counted (`metrics().rateLimited`).
//!
//! ```
//! use std::time::Duration;
//! use zerohop_transport::rate::{Limiter, RateLimit};
//! use zerohop_transport::Backpressure;
//!
//! let limit = RateLimit { messages: Some(100.0), bytes: None, burst: Duration::from_millis(50) };
//! let limiter = Limiter::new(limit, Backpressure::DropNew, Duration::ZERO);
//! let passed = (0..20).filter(|_| limiter.admit(10).unwrap()).count();
//! assert_eq!(passed, 5); // the burst: 50 ms at 100 a second
//! assert_eq!(limiter.limited(), 15);
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zerohop_proto::qos::TokenBucket;

use crate::error::{Error, ErrorCode, Result};
use crate::options::{Backpressure, Options};

/// The burst unless `rateBurstMs` says otherwise.
pub const DEFAULT_BURST: Duration = Duration::from_millis(50);

/// A hub's rate limit, as given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Messages a second.
    pub messages: Option<f64>,
    /// Bytes a second.
    pub bytes: Option<f64>,
    /// Unused rate saved up, as time at the rate (at least one message, or one byte).
    pub burst: Duration,
}

impl RateLimit {
    /// Reads `rateLimit`, `rateLimitBytes` and `rateBurstMs` from `named`.
    pub fn take_from(named: &mut Options) -> Result<Option<RateLimit>> {
        let messages = named.take_in("rateLimit", f64::MIN_POSITIVE..=f64::MAX)?;
        let bytes = named.take_in("rateLimitBytes", f64::MIN_POSITIVE..=f64::MAX)?;
        let burst = named.take_ms("rateBurstMs")?;
        if messages.is_none() && bytes.is_none() {
            return match burst {
                Some(_) => Err(named.bad("rateBurstMs", "is given without rateLimit or rateLimitBytes")),
                None => Ok(None),
            };
        }
        Ok(Some(RateLimit { messages, bytes, burst: burst.unwrap_or(DEFAULT_BURST) }))
    }

    fn bucket(rate: Option<f64>, burst: Duration) -> Option<TokenBucket> {
        rate.map(|r| TokenBucket::new(r, (r * burst.as_secs_f64()).max(1.0)))
    }
}

/// A rate limit applied to publishes, from any thread.
#[derive(Debug)]
pub struct Limiter {
    policy: Backpressure,
    timeout: Duration,
    epoch: Instant,
    /// Messages, and bytes.
    buckets: Mutex<(Option<TokenBucket>, Option<TokenBucket>)>,
    limited: AtomicU64,
}

impl Limiter {
    /// Applies `limit` with `policy`; `block` waits up to `timeout`.
    pub fn new(limit: RateLimit, policy: Backpressure, timeout: Duration) -> Limiter {
        Limiter {
            policy,
            timeout,
            epoch: Instant::now(),
            buckets: Mutex::new((
                RateLimit::bucket(limit.messages, limit.burst),
                RateLimit::bucket(limit.bytes, limit.burst),
            )),
            limited: AtomicU64::new(0),
        }
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Takes the tokens of a `len`-byte message if both buckets have them; else how
    /// long until they do.
    fn try_take(&self, len: usize) -> std::result::Result<(), u64> {
        let now = self.micros();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (messages, bytes) = &mut *b;
        let wait = [messages.as_ref().map(|m| m.wait_us(now, 1.0)), bytes.as_ref().map(|m| m.wait_us(now, len as f64))]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        if wait > 0 {
            return Err(wait);
        }
        if let Some(m) = messages {
            m.take(now, 1.0);
        }
        if let Some(m) = bytes {
            m.take(now, len as f64);
        }
        Ok(())
    }

    /// Whether a `len`-byte message may go now (what an asynchronous send waits for).
    pub fn has_room(&self, len: usize) -> bool {
        let now = self.micros();
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        b.0.as_ref().is_none_or(|m| m.wait_us(now, 1.0) == 0)
            && b.1.as_ref().is_none_or(|m| m.wait_us(now, len as f64) == 0)
    }

    /// Whether a `len`-byte message may go, as the policy says: true to publish it,
    /// false if it is discarded (counted); `ERR_BACKPRESSURE` (`fail_fast`) or
    /// `ERR_TIMEOUT` (`block`, after the publish timeout).
    pub fn admit(&self, len: usize) -> Result<bool> {
        let Err(mut wait) = self.try_take(len) else { return Ok(true) };
        if self.policy != Backpressure::Block {
            self.limited.fetch_add(1, Ordering::Relaxed);
            return match self.policy {
                Backpressure::FailFast => Err(Error::new(ErrorCode::Backpressure, "over the hub's rate limit")),
                _ => Ok(false),
            };
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.limited.fetch_add(1, Ordering::Relaxed);
                return Err(Error::new(ErrorCode::Timeout, "over the hub's rate limit for publishTimeoutMs"));
            }
            std::thread::sleep(Duration::from_micros(wait).min(left));
            match self.try_take(len) {
                Ok(()) => return Ok(true),
                Err(w) => wait = w,
            }
        }
    }

    /// Publishes discarded or refused for the limit.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(messages: f64, bytes: Option<f64>) -> RateLimit {
        RateLimit { messages: Some(messages), bytes, burst: Duration::from_millis(100) }
    }

    #[test]
    fn each_policy_meets_the_limit_its_way() {
        // 100 a second, a burst of 10.
        let drop = Limiter::new(limit(100.0, None), Backpressure::DropNew, Duration::ZERO);
        assert_eq!((0..30).filter(|_| drop.admit(1).unwrap()).count(), 10);
        assert_eq!(drop.limited(), 20);
        assert!(!drop.has_room(1));
        let fail = Limiter::new(limit(100.0, None), Backpressure::FailFast, Duration::ZERO);
        assert!((0..10).all(|_| fail.admit(1).unwrap()));
        assert_eq!(fail.admit(1).unwrap_err().code(), ErrorCode::Backpressure);
        // Block waits for each token: 5 past the burst take about 50 ms, never less than 40.
        let block = Limiter::new(limit(100.0, None), Backpressure::Block, Duration::from_secs(5));
        let start = Instant::now();
        assert!((0..15).all(|_| block.admit(1).unwrap()));
        assert!(start.elapsed() >= Duration::from_millis(40), "{:?}", start.elapsed());
        assert_eq!(block.limited(), 0);
        // …and gives up after the publish timeout.
        let short = Limiter::new(limit(1.0, None), Backpressure::Block, Duration::from_millis(20));
        assert!(short.admit(1).unwrap());
        assert_eq!(short.admit(1).unwrap_err().code(), ErrorCode::Timeout);
    }

    #[test]
    fn a_byte_limit_counts_bytes_and_a_large_message_goes_when_the_bucket_is_full() {
        // 10 000 bytes a second, a burst of 1000 bytes.
        let l = Limiter::new(
            RateLimit { messages: None, bytes: Some(10_000.0), burst: Duration::from_millis(100) },
            Backpressure::DropNew,
            Duration::ZERO,
        );
        assert!(l.admit(600).unwrap());
        assert!(!l.admit(600).unwrap(), "400 bytes left");
        assert!(l.admit(400).unwrap());
        let big = Limiter::new(
            RateLimit { messages: None, bytes: Some(10_000.0), burst: Duration::from_millis(100) },
            Backpressure::DropNew,
            Duration::ZERO,
        );
        assert!(big.admit(5000).unwrap(), "larger than the burst: goes on a full bucket");
        assert!(!big.admit(1).unwrap(), "and leaves it owing");
    }

    #[test]
    fn the_options_read_and_refuse() {
        let mut o = Options::from_query(&[("rateLimit".into(), "100".into()), ("rateBurstMs".into(), "20".into())]);
        let r = RateLimit::take_from(&mut o).unwrap().unwrap();
        assert_eq!((r.messages, r.bytes, r.burst), (Some(100.0), None, Duration::from_millis(20)));
        let mut o = Options::from_query(&[("rateBurstMs".into(), "20".into())]);
        assert_eq!(RateLimit::take_from(&mut o).unwrap_err().code(), ErrorCode::BadUrl);
        let mut o = Options::from_query(&[("rateLimit".into(), "0".into())]);
        assert!(RateLimit::take_from(&mut o).is_err());
    }
}
