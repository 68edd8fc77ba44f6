//! Quality of service, free of clocks: a token bucket for rate limits and a scheduler
//! of priority classes in which none starves. Times are microseconds on any monotonic
//! clock the caller reads.
//!
//! ```
//! use zerohop_proto::qos::{Priorities, TokenBucket};
//!
//! // 1000 messages a second, bursts of 10.
//! let mut bucket = TokenBucket::new(1000.0, 10.0);
//! assert!((0..10).all(|_| bucket.take(0, 1.0)));
//! assert!(!bucket.take(0, 1.0), "the burst is spent");
//! assert_eq!(bucket.wait_us(0, 1.0), 1000, "one more in a millisecond");
//! assert!(bucket.take(1000, 1.0));
//!
//! // Class 0 first, but every waiting lower class earns a quarter of a turn each time
//! // it is passed over, and goes when it has a whole one.
//! let mut p = Priorities::new(3, 0.25);
//! let picks: Vec<usize> = (0..20).map(|_| p.next(&[true, true, true]).unwrap()).collect();
//! assert_eq!(picks.iter().filter(|&&c| c == 0).count(), 13);
//! assert_eq!(picks.iter().filter(|&&c| c == 2).count(), 3);
//! ```

/// A token bucket: `rate` tokens a second (messages, or bytes) up to `burst`. A take
/// larger than the burst is allowed once the bucket is full, and leaves it owing, so a
/// large message passes at the limit's pace instead of never.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at_us: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at `rate` a second (both above zero).
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket { rate: rate.max(f64::MIN_POSITIVE), burst: burst.max(1.0), tokens: burst.max(1.0), at_us: 0 }
    }

    fn refill(&mut self, now_us: u64) {
        let elapsed = now_us.saturating_sub(self.at_us) as f64 / 1e6;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at_us = self.at_us.max(now_us);
    }

    /// Takes `n` tokens at `now_us` if they are there (or, for more than a burst, if the
    /// bucket is full): whether it did.
    pub fn take(&mut self, now_us: u64, n: f64) -> bool {
        self.refill(now_us);
        if self.tokens >= n.min(self.burst) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// How long from `now_us` until [`take`](Self::take) of `n` succeeds (0: now).
    pub fn wait_us(&self, now_us: u64, n: f64) -> u64 {
        let elapsed = now_us.saturating_sub(self.at_us) as f64 / 1e6;
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let missing = n.min(self.burst) - tokens;
        if missing <= 0.0 { 0 } else { (missing / self.rate * 1e6).ceil() as u64 }
    }
}

/// Priority classes, 0 first: the highest class with something waiting goes, except
/// that every lower class with something waiting earns `share` of a turn each time it
/// is passed over, and goes once it has earned a whole one. So a class keeps at least
/// about `share` of the turns whatever the classes above it send, and none starves.
#[derive(Debug, Clone, PartialEq)]
pub struct Priorities {
    share: f64,
    /// What each class has earned while passed over.
    earned: Vec<f64>,
}

impl Priorities {
    /// `classes` classes (at least one); each lower class's share of the turns, in 0..1.
    pub fn new(classes: usize, share: f64) -> Priorities {
        Priorities { share: share.clamp(0.0, 1.0), earned: vec![0.0; classes.max(1)] }
    }

    /// The class that goes next, given which have something `waiting` (one flag per
    /// class); `None` if none has.
    pub fn next(&mut self, waiting: &[bool]) -> Option<usize> {
        let waits = |c: usize| waiting.get(c).copied().unwrap_or(false);
        let top = (0..self.earned.len()).find(|&c| waits(c))?;
        // A lower class that earned its turn goes before the top one (the highest such
        // class first; the others keep what they earned).
        let chosen = (top + 1..self.earned.len()).find(|&c| waits(c) && self.earned[c] >= 1.0).unwrap_or(top);
        for c in top + 1..self.earned.len() {
            if c == chosen {
                self.earned[c] -= 1.0;
            } else if waits(c) {
                self.earned[c] += self.share;
            } else {
                self.earned[c] = 0.0; // nothing waited: nothing owed
            }
        }
        Some(chosen)
    }
}

/// A lower priority class's share of the turns, at least, whatever the classes above it
/// have to send: none starves.
pub const LOWER_SHARE: f64 = 0.25;
/// Priority classes at most (`priorities` takes 0..=7).
pub const CLASSES: usize = 8;

/// Channels in priority classes (`priorities: [class per channel]`, 0 first, at most
/// [`CLASSES`]; channels past the list are in class 0), and the [`Priorities`] that picks the class to send
/// next, with [`LOWER_SHARE`] for each lower one.
///
/// ```
/// use zerohop_proto::qos::ChannelClasses;
///
/// let mut c = ChannelClasses::new(vec![1, 0]); // channel 1 before channel 0
/// assert_eq!(c.next([0, 1].into_iter()), Some(0)); // class 0: channel 1's
/// assert_eq!(c.class(0), 1);
/// assert!(ChannelClasses::new(vec![0, 0]).is_flat(), "one class: nothing to choose");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelClasses {
    classes: Vec<u8>,
    priorities: Option<Priorities>,
}

impl ChannelClasses {
    /// (A class past the last is in the last.)
    pub fn new(mut classes: Vec<u8>) -> ChannelClasses {
        for c in &mut classes {
            *c = (*c).min(CLASSES as u8 - 1);
        }
        let count = usize::from(classes.iter().copied().max().unwrap_or(0)) + 1;
        ChannelClasses { priorities: (count > 1).then(|| Priorities::new(count, LOWER_SHARE)), classes }
    }

    /// Whether every channel is in one class (nothing to choose).
    pub fn is_flat(&self) -> bool {
        self.priorities.is_none()
    }

    /// Channel `channel`'s class.
    pub fn class(&self, channel: usize) -> usize {
        usize::from(self.classes.get(channel).copied().unwrap_or(0))
    }

    /// The class that goes next, given the channels with something `waiting` (`None`:
    /// none waits, or every channel is in one class).
    pub fn next(&mut self, waiting: impl Iterator<Item = usize>) -> Option<usize> {
        let p = self.priorities.as_mut()?;
        let mut classes = [false; CLASSES];
        for channel in waiting {
            classes[usize::from(self.classes.get(channel).copied().unwrap_or(0))] = true;
        }
        p.next(&classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_take_larger_than_the_burst_goes_when_the_bucket_is_full_and_leaves_it_owing() {
        let mut b = TokenBucket::new(100.0, 10.0);
        assert!(b.take(0, 50.0), "full: a large one passes");
        assert!(!b.take(0, 1.0));
        // It owes 40 tokens: 0.4 s until it is back at zero, 0.41 s until one more.
        assert_eq!(b.wait_us(0, 1.0), 410_000);
        assert!(!b.take(400_000, 1.0));
        assert!(b.take(410_000, 1.0));
    }

    #[test]
    fn a_lone_class_has_every_turn_and_nothing_waiting_has_none() {
        let mut p = Priorities::new(3, 0.25);
        assert_eq!(p.next(&[false, false, false]), None);
        assert!((0..100).all(|_| p.next(&[false, true, false]) == Some(1)));
        // What class 2 earned while it waited is forgotten once it stops waiting.
        for _ in 0..10 {
            p.next(&[true, false, true]);
        }
        p.next(&[true, false, false]);
        assert!((0..3).all(|_| p.next(&[true, false, true]) == Some(0)), "no stale credit");
    }

    proptest! {
        /// Over any span, what a bucket let through is at most its burst plus its rate
        /// times the span (within one take's size), whatever the pattern of takes.
        #[test]
        fn a_bucket_never_lets_more_through_than_its_rate_allows(
            rate in 1.0f64..100_000.0,
            burst in 1.0f64..1000.0,
            takes in proptest::collection::vec((0u64..5_000, 1u32..50), 1..400),
        ) {
            let mut b = TokenBucket::new(rate, burst);
            let (mut now, mut passed) = (0u64, 0.0);
            for (gap, n) in takes {
                now += gap;
                let n = f64::from(n);
                if b.take(now, n) {
                    passed += n;
                }
                prop_assert!(passed <= burst + rate * now as f64 / 1e6 + 50.0, "{passed} by {now} µs");
            }
        }

        /// With every class always waiting, each lower class gets at least about `share`
        /// of the turns, and class 0 the rest.
        #[test]
        fn no_class_starves(classes in 2usize..6, share in 0.01f64..0.3, turns in 100usize..3000) {
            let mut p = Priorities::new(classes, share);
            let waiting = vec![true; classes];
            let mut got = vec![0usize; classes];
            for _ in 0..turns {
                got[p.next(&waiting).unwrap()] += 1;
            }
            // Each lower class is passed over at most 1/share times in a row.
            let floor = turns as f64 * share / (1.0 + share * classes as f64) - 2.0;
            for (c, &n) in got.iter().enumerate().skip(1) {
                prop_assert!(n as f64 >= floor, "class {c}: {n} of {turns} (floor {floor:.1}): {got:?}");
            }
            // (While the lower classes' shares leave it most of the turns.)
            if share * (classes - 1) as f64 <= 0.5 {
                prop_assert!(got[0] >= *got[1..].iter().max().unwrap(), "the first class goes first: {got:?}");
            }
        }
    }
}
