//! [`Faults`]: what `?chaos=` does inside a network transport.
//!
//! A transport with faults asked for keeps one `Faults` beside its socket and passes
//! every datagram (or segment) through it twice: on the way out, after its own
//! framing, acknowledgements and resends ([`Faults::send`]); on the way in, before any
//! of them sees it ([`Faults::receive`]). So the faults sit below every reliability
//! layer, as a lossy network would. Each direction has its own seeded decider, so the
//! same seed over the same traffic gives the same faults. What is held for a delay
//! comes out at its time ([`Faults::release_sent`], [`Faults::release_received`])
//! when the engine runs at [`Faults::due`]: an engine whose reader may wait on its
//! readiness descriptor arms a [`Waker`] for it ([`WakingFaults`]).
//!
//! With no faults asked for a transport holds no `Faults` at all: chaos costs nothing
//! when off.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use zerohop_transport::chaos::{ChaosConfig, ChaosReport, Gate, RECEIVED_SALT};

use crate::waker::Waker;

/// When a transport's connections are dropped next (`disconnect`), and how often they
/// were.
#[derive(Debug)]
pub struct Disconnects {
    every: Duration,
    next: Option<Instant>,
    count: u64,
}

impl Disconnects {
    /// Every `every` from `start` (zero: never).
    pub fn new(every: Duration, start: Instant) -> Disconnects {
        Disconnects { every, next: (!every.is_zero()).then(|| start + every), count: 0 }
    }

    /// Whether it is time to drop every connection (counted; the next is due `every` later).
    pub fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if at <= now => {
                self.next = Some(now + self.every);
                self.count += 1;
                true
            }
            _ => false,
        }
    }

    /// When the next is due.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// How many there were.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// See the module docs. `R` says where a datagram goes or came from.
#[derive(Debug)]
pub struct Faults<R> {
    config: ChaosConfig,
    epoch: Instant,
    sent: Gate<R>,
    received: Gate<R>,
    disconnects: Disconnects,
}

impl<R: Copy> Faults<R> {
    pub fn new(config: ChaosConfig) -> Faults<R> {
        let epoch = Instant::now();
        Faults {
            sent: Gate::new(config.spec, config.seed),
            received: Gate::new(config.spec, config.seed ^ RECEIVED_SALT),
            disconnects: Disconnects::new(config.spec.disconnect, epoch),
            config,
            epoch,
        }
    }

    /// `now` on the faults' clock, in microseconds.
    pub fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn instant(&self, micros: u64) -> Instant {
        self.epoch + Duration::from_micros(micros)
    }

    /// A datagram the transport sends: `send` gets it now (once or twice), later (from
    /// [`release_sent`](Self::release_sent)), or never.
    pub fn send(&mut self, now: Instant, bytes: &[u8], to: R, send: impl FnMut(&[u8], R)) {
        let us = self.micros(now);
        self.sent.pass(us, bytes, to, send);
    }

    /// A datagram the transport received: `handle` gets it now, later (from
    /// [`release_received`](Self::release_received)), or never.
    pub fn receive(&mut self, now: Instant, bytes: &[u8], from: R, handle: impl FnMut(&[u8], R)) {
        let us = self.micros(now);
        self.received.pass(us, bytes, from, handle);
    }

    /// Sends what was held and is due by `now`.
    pub fn release_sent(&mut self, now: Instant, send: impl FnMut(&[u8], R)) {
        let us = self.micros(now);
        self.sent.release(us, send);
    }

    /// Hands on what was received, held, and is due by `now`.
    pub fn release_received(&mut self, now: Instant, handle: impl FnMut(&[u8], R)) {
        let us = self.micros(now);
        self.received.release(us, handle);
    }

    /// Whether something received is due by `now` (the engine should handle it even
    /// if its socket is not readable).
    pub fn received_due(&self, now: Instant) -> bool {
        self.received.due_us().is_some_and(|d| d <= self.micros(now))
    }

    /// When the engine must run next for the faults: a held datagram, or a disconnect.
    pub fn due(&self) -> Option<Instant> {
        let held = [self.sent.due_us(), self.received.due_us()].into_iter().flatten().min().map(|us| self.instant(us));
        [held, self.disconnects.next()].into_iter().flatten().min()
    }

    /// [`due`](Self::due) in microseconds on the faults' clock (for a [`Waker`](crate::waker::Waker)).
    pub fn due_micros(&self) -> Option<u64> {
        self.due().map(|d| self.micros(d))
    }

    /// Whether it is time to drop the connections (counted; the next is due a
    /// `disconnect` later).
    pub fn disconnect_due(&mut self, now: Instant) -> bool {
        self.disconnects.due(now)
    }

    /// What the faults did so far (`metrics().chaos`).
    pub fn report(&self) -> ChaosReport {
        ChaosReport::new(&self.config, self.sent.stats(), self.received.stats(), self.disconnects.count())
    }
}

/// [`Faults`] with the descriptor that wakes when what they hold is due: the readiness
/// descriptor of an engine whose own timers do not need one.
#[derive(Debug)]
pub struct WakingFaults<R> {
    pub faults: Faults<R>,
    waker: Waker,
}

impl<R: Copy> WakingFaults<R> {
    /// Faults as `config` says, waking also when `readiness` (the socket) is readable.
    pub fn new(config: ChaosConfig, readiness: RawFd) -> io::Result<Box<WakingFaults<R>>> {
        Ok(Box::new(WakingFaults { faults: Faults::new(config), waker: Waker::new(readiness)? }))
    }

    /// The descriptor to wait on instead of the socket.
    pub fn fd(&self) -> RawFd {
        self.waker.fd()
    }

    /// Watches `fd` too (see [`Waker::watch`]).
    pub fn watch(&self, fd: RawFd) -> io::Result<()> {
        self.waker.watch(fd)
    }

    /// Takes the timer's expiry, so the descriptor polls readable only for what comes next.
    pub fn take_fired(&mut self, now: Instant) {
        let us = self.faults.micros(now);
        self.waker.take_fired(us);
    }

    /// Makes the descriptor poll readable when the next held datagram is due.
    pub fn arm(&mut self, now: Instant) {
        let at = self.faults.due_micros();
        self.waker.arm(at, self.faults.micros(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_transport::chaos::ChaosSpec;

    #[test]
    fn each_direction_is_seeded_apart_and_delays_come_due() {
        let spec = ChaosSpec::parse("loss:0.3,delay:1ms").unwrap();
        let mut f: Faults<()> = Faults::new(ChaosConfig { spec, seed: 9 });
        let t0 = Instant::now();
        let (mut sent, mut received) = (0, 0);
        for _ in 0..1000 {
            f.send(t0, b"x", (), |_, ()| sent += 1);
            f.receive(t0, b"x", (), |_, ()| received += 1);
        }
        assert_eq!((sent, received), (0, 0), "held for the delay");
        assert!(f.due().is_some_and(|d| d > t0 && d <= t0 + Duration::from_millis(2)));
        let later = t0 + Duration::from_millis(5);
        assert!(f.received_due(later));
        f.release_sent(later, |_, ()| sent += 1);
        f.release_received(later, |_, ()| received += 1);
        let r = f.report();
        assert_eq!((r.sent.seen, r.received.seen), (1000, 1000));
        assert_eq!((sent, received), (1000 - r.sent.dropped, 1000 - r.received.dropped));
        assert_ne!(r.sent.dropped, r.received.dropped, "the directions draw apart");
        assert_eq!((r.spec.as_str(), r.seed), ("loss:0.3,delay:1ms", 9));
        assert_eq!(f.due(), None);
    }

    #[test]
    fn disconnects_come_at_their_period() {
        let spec = ChaosSpec::parse("disconnect:50ms").unwrap();
        let mut f: Faults<()> = Faults::new(ChaosConfig { spec, seed: 1 });
        let t0 = f.epoch;
        assert!(!f.disconnect_due(t0 + Duration::from_millis(49)));
        assert!(f.disconnect_due(t0 + Duration::from_millis(50)));
        assert!(!f.disconnect_due(t0 + Duration::from_millis(60)));
        assert_eq!(f.due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(f.report().disconnects, 1);
    }
}
