//! The life of a connection (QUIC now; TCP and Unix sockets later), without I/O: the
//! status a user sees, and when to try again after a connection is lost.
//!
//! ```text
//!   connecting ──ok──▶ connected ──lost──▶ reconnecting ──ok──▶ connected
//!       │                  │                   │  └─failed: wait backoff, retry
//!       └─failed───────────┴──────────────────▶ disconnected (attempts used up)
//!   any ──close──▶ closed
//! ```
//!
//! ```
//! use std::time::Duration;
//!
//! use zerohop_proto::lifecycle::{Backoff, Event, Lifecycle, Status};
//!
//! let policy = Backoff { initial: Duration::from_millis(100), max_attempts: Some(3), ..Backoff::default() };
//! let mut c = Lifecycle::new(policy, 7);
//! assert_eq!(c.status(), Status::Connecting);
//! c.on(Event::Connected);
//! let next = c.on(Event::Lost);
//! assert_eq!(c.status(), Status::Reconnecting { attempt: 1 });
//! assert!(next.retry_after.unwrap() <= Duration::from_millis(100));
//! ```

use std::time::Duration;

use crate::rng::SplitMix64;

/// How long to wait between attempts: exponential, capped, with jitter, and optionally
/// a bounded number of attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// How much of each wait is random, 0..=1: the wait is `base × (1 − jitter × r)`,
    /// so that many clients of one restarted server do not retry in step.
    pub jitter: f64,
    /// Attempts before giving up (`None`: forever).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

/// What a user sees of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The first attempt is under way.
    Connecting,
    Connected,
    /// Lost, or failed to connect; attempt `attempt` (from 1) is scheduled or under way.
    Reconnecting {
        attempt: u32,
    },
    /// Gave up: the attempts are used up.
    Disconnected,
    /// Closed on request; final.
    Closed,
}

/// What happened to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A handshake completed.
    Connected,
    /// An attempt failed.
    Failed,
    /// An established connection was lost.
    Lost,
    /// The user closed it.
    Close,
}

/// What the caller should do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    /// Whether the status changed (emit a status event).
    pub changed: bool,
    /// Try to connect again after this long.
    pub retry_after: Option<Duration>,
}

/// A connection's status and retry schedule.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    policy: Backoff,
    status: Status,
    /// Attempts made since the last success.
    attempts: u32,
    rng: SplitMix64,
}

impl Lifecycle {
    /// Starts `Connecting`; `seed` makes the jitter reproducible.
    pub fn new(policy: Backoff, seed: u64) -> Lifecycle {
        Lifecycle { policy, status: Status::Connecting, attempts: 0, rng: SplitMix64::new(seed) }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The wait before retry number `attempt` (from 1).
    fn delay(&mut self, attempt: u32) -> Duration {
        let p = &self.policy;
        let growth = p.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let base = p.initial.as_secs_f64() * growth;
        let base = base.min(p.max.as_secs_f64());
        let jitter = p.jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(base * (1.0 - jitter * self.rng.unit()))
    }

    /// Schedules the next attempt, or gives up.
    fn retry(&mut self) -> Next {
        if self.policy.max_attempts.is_some_and(|max| self.attempts >= max) {
            self.status = Status::Disconnected;
            return Next { changed: true, retry_after: None };
        }
        self.attempts += 1;
        let attempt = self.attempts;
        let changed = self.status != Status::Reconnecting { attempt };
        self.status = Status::Reconnecting { attempt };
        Next { changed, retry_after: Some(self.delay(attempt)) }
    }

    /// Applies `event`; says whether the status changed and when to retry.
    pub fn on(&mut self, event: Event) -> Next {
        let unchanged = Next { changed: false, retry_after: None };
        match (self.status, event) {
            (Status::Closed, _) => unchanged,
            (_, Event::Close) => {
                self.status = Status::Closed;
                Next { changed: true, retry_after: None }
            }
            (Status::Disconnected, _) => unchanged,
            (Status::Connecting | Status::Reconnecting { .. }, Event::Connected) => {
                self.status = Status::Connected;
                self.attempts = 0;
                Next { changed: true, retry_after: None }
            }
            (Status::Connecting | Status::Reconnecting { .. }, Event::Failed) => self.retry(),
            (Status::Connected, Event::Lost) => self.retry(),
            // Events that cannot happen in this status (a late callback): ignored.
            _ => unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter(max_attempts: Option<u32>) -> Backoff {
        Backoff { jitter: 0.0, max_attempts, ..Backoff::default() }
    }

    #[test]
    fn waits_grow_then_cap() {
        let mut c = Lifecycle::new(no_jitter(None), 1);
        let waits: Vec<u64> = (0..10).map(|_| c.on(Event::Failed).retry_after.unwrap().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        assert_eq!(c.status(), Status::Reconnecting { attempt: 10 });
    }

    #[test]
    fn bounded_attempts_end_disconnected_and_success_resets_the_count() {
        let mut c = Lifecycle::new(no_jitter(Some(2)), 1);
        c.on(Event::Connected);
        assert_eq!(c.on(Event::Lost).retry_after, Some(Duration::from_millis(100)));
        assert_eq!(c.on(Event::Failed).retry_after, Some(Duration::from_millis(200)));
        c.on(Event::Connected);
        assert_eq!(c.status(), Status::Connected);
        assert_eq!(c.on(Event::Lost).retry_after, Some(Duration::from_millis(100)), "a success starts over");
        c.on(Event::Failed);
        let last = c.on(Event::Failed);
        assert_eq!((c.status(), last), (Status::Disconnected, Next { changed: true, retry_after: None }));
        assert!(!c.on(Event::Connected).changed, "disconnected is final until closed");
        assert!(c.on(Event::Close).changed);
        assert_eq!(c.status(), Status::Closed);
        assert_eq!(c.on(Event::Failed), Next { changed: false, retry_after: None });
    }

    #[test]
    fn jitter_stays_within_bounds_spreads_waits_and_replays_with_the_seed() {
        let policy =
            Backoff { jitter: 0.5, initial: Duration::from_secs(1), max: Duration::from_secs(1), ..Backoff::default() };
        let waits = |seed| {
            let mut c = Lifecycle::new(policy, seed);
            (0..200).map(|_| c.on(Event::Failed).retry_after.unwrap()).collect::<Vec<_>>()
        };
        let a = waits(5);
        assert!(a.iter().all(|w| *w > Duration::from_millis(500) && *w <= Duration::from_secs(1)));
        assert!(a.iter().any(|w| *w < Duration::from_millis(600)) && a.iter().any(|w| *w > Duration::from_millis(900)));
        assert_eq!(a, waits(5));
        assert_ne!(a, waits(6));
    }

    #[test]
    fn late_events_are_ignored() {
        let mut c = Lifecycle::new(Backoff::default(), 1);
        assert!(!c.on(Event::Lost).changed, "not connected yet");
        c.on(Event::Connected);
        assert!(!c.on(Event::Connected).changed);
        assert!(!c.on(Event::Failed).changed, "a failed attempt while connected is stale");
    }
}
