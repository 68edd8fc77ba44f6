//! How a reliable network transport sends: what a full send queue does to a publish
//! ([`Overflow`]), when the messages of a burst go out ([`Burst`]), and how often it
//! looks whether the application read what it received, to acknowledge it
//! ([`ReadLooks`]).

use std::time::{Duration, Instant};

use zerohop_transport::{Backpressure, Settings};

/// What `publish` does when a peer's send queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Wait up to the timeout for the peer to read (how a listener treats a slow peer
    /// is the transport's to say).
    Block(Duration),
    /// That peer does not get the message.
    DropNew,
    /// The publish fails at once, and no peer gets the message.
    FailFast,
}

impl Overflow {
    /// The policy `settings` ask for (`drop_old` cannot apply to a reliable stream, and
    /// transports refuse it before this).
    pub fn of(settings: &Settings) -> Overflow {
        match settings.backpressure {
            Backpressure::Block => Overflow::Block(settings.publish_timeout),
            Backpressure::DropNew => Overflow::DropNew,
            _ => Overflow::FailFast,
        }
    }
}

/// Publishes closer together than this are a burst, and wait to share one write.
const BURST_GAP: Duration = Duration::from_micros(5);
/// How long a message waits in a burst for more, at most.
const FLUSH_DELAY: Duration = Duration::from_micros(50);
/// How long a burst waits for its caller's flush at the end of its turn, at most: a
/// turn that does not end (a thread spinning on another hub, never yielding) would
/// otherwise hold it until something else writes (a heartbeat: a second, 12-06).
const CALLER_FLUSH_LATE: Duration = Duration::from_millis(1);

/// In an open burst, one publish in this many reads the clock (to see the burst go on,
/// or its deadline pass); the others only queue. A clock read on every publish was
/// 5 % of a 64-byte QUIC stream's sender, and one in 8 still 2 % (2026-12-07).
const CLOCKED_EVERY: u32 = 8;
/// The same for a burst its caller flushes ([`Burst::flush_by_caller`]), whose deadline
/// is 20 times longer: one in 32 (a 64-byte QUIC stream 3 % faster than one in 8).
const CLOCKED_EVERY_BY_CALLER: u32 = 32;

/// What a publish does with what waits to go out (see [`Burst::published`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Go {
    /// Nothing yet: it waits for more (the burst's size, its deadline, or the caller's
    /// flush at the end of its turn).
    Wait,
    /// It goes now, alone: it came after a pause, or right after a poll.
    Now,
    /// It goes now with the burst it ends (the burst's size, or its deadline, reached
    /// while the publishes go on). A publisher in such a flood also reads what came
    /// back then (see `Driver::read_back`): the acknowledgements its sending waits on
    /// would otherwise wait for an I/O thread that shares the publisher's CPU.
    Burst,
}

impl Go {
    /// Whether what waits goes now.
    pub fn sends(self) -> bool {
        self != Go::Wait
    }
}

/// When what was published goes out: at once after a pause, or, in a burst (publishes
/// microseconds apart), together with what follows, after [`FLUSH_DELAY`] or
/// `flush_bytes` at the most (a byte stream writes best in large pieces; QUIC packs
/// packets as it goes, and wants them sooner). A publish is part of a burst when the
/// application called it right after the previous one returned: measured from the
/// return, so that the time the sending itself takes does not hide a loop of publishes.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    flush_bytes: usize,
    /// Whether a burst waits [`FLUSH_DELAY`], or for its caller's flush
    /// ([`flush_by_caller`](Self::flush_by_caller), [`CALLER_FLUSH_LATE`] at most).
    timed: bool,
    last_publish: Instant,
    unflushed: usize,
    flush_at: Option<Instant>,
    /// The caller polled since the last publish (and the poll sent what waited).
    polled: bool,
    /// When the publish under way started, if it read the clock and has not written
    /// (see [`returned`](Self::returned)).
    started: Option<Instant>,
    /// The publish under way followed a poll: it went at once without the clock, and
    /// its return is not timed either (the next publish's gap is measured from the last
    /// timed one: longer, so that one goes at once too). A publish that queued into an
    /// open burst without the clock is not timed either.
    untimed: bool,
    /// Publishes queued into the open burst since the last that read the clock.
    unclocked: u32,
}

impl Burst {
    /// A burst that goes out once `flush_bytes` wait.
    pub fn new(now: Instant, flush_bytes: usize) -> Burst {
        Burst {
            flush_bytes,
            timed: true,
            last_publish: now,
            unflushed: 0,
            flush_at: None,
            polled: false,
            started: None,
            untimed: false,
            unclocked: 0,
        }
    }

    /// The caller flushes at the end of each turn it published in (an event loop):
    /// bursts then wait for that, with a late deadline ([`CALLER_FLUSH_LATE`]) for the
    /// I/O thread in case the turn does not end.
    pub fn flush_by_caller(&mut self) {
        self.timed = false;
        self.flush_at = None;
    }

    /// Whether something published waits to go out.
    pub fn pending(&self) -> bool {
        self.unflushed > 0
    }

    /// The caller polled (and sent what waited): the next publish goes at once. A
    /// caller that polls between publishes flushes at each poll anyway, so holding the
    /// publish would only delay it; and it is not timed (a clock read saved on a
    /// spinning reader's round trip).
    pub fn polled(&mut self) {
        self.polled = true;
    }

    /// A publish of `len` bytes, which `start` says when it started (read only if
    /// needed): whether to send now (else it waits for [`due`](Self::due)), and how.
    /// Call [`returned`](Self::returned) after sending.
    pub fn published(&mut self, len: usize, start: impl FnOnce() -> Instant) -> Go {
        self.unflushed += len;
        self.started = None;
        self.untimed = std::mem::take(&mut self.polled);
        if self.untimed {
            return Go::Now;
        }
        let clocked_every = if self.timed { CLOCKED_EVERY } else { CLOCKED_EVERY_BY_CALLER };
        if self.flush_at.is_some() && self.unflushed < self.flush_bytes && self.unclocked + 1 < clocked_every {
            // Into the open burst, which neither its size nor (within a few publishes)
            // its deadline ends: queued, without the clock.
            self.unclocked += 1;
            self.untimed = true;
            return Go::Wait;
        }
        // Publishes that did not read the clock lie between this one and the last that
        // did: the burst goes on if they came BURST_GAP apart on average.
        let apart = std::mem::take(&mut self.unclocked) + 1;
        let start = start();
        self.started = Some(start);
        let burst = start.saturating_duration_since(self.last_publish) < BURST_GAP * apart;
        if !burst {
            return Go::Now;
        }
        // Overdue: the publisher goes on, so it sends what waited itself.
        if self.unflushed >= self.flush_bytes || self.flush_at.is_some_and(|t| t <= start) {
            return Go::Burst;
        }
        self.flush_at.get_or_insert(start + if self.timed { FLUSH_DELAY } else { CALLER_FLUSH_LATE });
        Go::Wait
    }

    /// The publish returns (its sending done). A publish that only queued took a
    /// fraction of [`BURST_GAP`], so its start stands for its return; one that wrote
    /// reads the clock (the write may have taken longer than the gap).
    pub fn returned(&mut self) {
        if std::mem::take(&mut self.untimed) {
            return;
        }
        self.last_publish = self.started.take().unwrap_or_else(Instant::now);
    }

    /// Everything waiting went out.
    pub fn flushed(&mut self) {
        self.flush_at = None;
        self.unflushed = 0;
        self.started = None;
        self.unclocked = 0;
    }

    /// When what waits must go.
    pub fn due(&self) -> Option<Instant> {
        self.flush_at
    }

    /// The latest it may go: its deadline, plus that deadline's length again. A thread
    /// that sends overdue bursts (an I/O thread) need not be woken for a new burst when
    /// it wakes by then anyway: it was woken for the one before, so it looks about once
    /// a deadline while bursts follow one another, instead of once a burst (16,000
    /// wake-ups a second of a 64-byte QUIC stream, each taking the publisher's CPU
    /// for a moment, 2026-12-07).
    pub fn late_by(&self) -> Option<Instant> {
        self.flush_at.map(|t| t + if self.timed { FLUSH_DELAY } else { CALLER_FLUSH_LATE })
    }
}

/// How often a transport looks at the receive ring's consumed position while received
/// messages wait unread, to acknowledge what the application read (the application reads
/// the ring in place and tells nobody): every [`FIRST`](Self::FIRST) while it reads,
/// backing off to [`MAX`](Self::MAX) while it reads nothing. A hub whose messages wait
/// unread (an application busy elsewhere, or a thousand hubs in one process) then wakes
/// its I/O thread some 16 times a second, not 500.
#[derive(Clone, Copy, Debug)]
pub struct ReadLooks {
    every: Duration,
    seen: u64,
}

impl ReadLooks {
    /// The first look after a message is delivered, and every look while the
    /// application reads: one acknowledgement then covers many messages.
    pub const FIRST: Duration = Duration::from_millis(2);
    /// The longest the looks back off to.
    pub const MAX: Duration = Duration::from_millis(64);

    pub fn new() -> ReadLooks {
        ReadLooks { every: Self::FIRST, seen: 0 }
    }

    /// How long after the last look the next comes.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// A look found the ring consumed up to `consumed`: how long until the next. Only
    /// the clock's own looks (`timed`) back off: a transport that also looks at every
    /// read would otherwise reach the longest wait within a few reads.
    pub fn looked(&mut self, consumed: u64, timed: bool) -> Duration {
        if consumed != self.seen {
            self.every = Self::FIRST;
        } else if timed {
            self.every = (self.every * 2).min(Self::MAX);
        }
        self.seen = consumed;
        self.every
    }
}

impl Default for ReadLooks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_after_a_poll_goes_at_once_without_the_clock() {
        let mut b = Burst::new(Instant::now(), usize::MAX);
        b.returned();
        let soon = b.last_publish + Duration::from_micros(1);
        assert!(!b.published(64, || soon).sends(), "right after another: waits");
        b.returned();
        b.polled();
        assert!(b.published(64, || unreachable!("no clock after a poll")) == Go::Now, "after a poll: now, alone");
        b.flushed();
        b.returned();
        assert_eq!(b.last_publish, soon, "nor a clock when it returns");
        assert!(!b.published(64, || soon + Duration::from_micros(2)).sends(), "the poll counts once");
    }

    #[test]
    fn a_publish_after_a_pause_goes_at_once_and_a_burst_waits_a_little() {
        let t0 = Instant::now();
        let mut b = Burst::new(t0 - Duration::from_secs(1), 16 << 10);
        assert_eq!(b.published(64, || t0), Go::Now, "after a pause: now, alone");
        b.flushed();
        b.returned();
        let next = Instant::now();
        assert!(!b.published(64, || next).sends(), "right after: waits");
        assert_eq!(b.due(), Some(next + FLUSH_DELAY));
        assert_eq!(b.published(16 << 10, || next), Go::Burst, "until enough is written: then with the burst");
    }

    #[test]
    fn a_publisher_that_goes_on_sends_an_overdue_burst_itself() {
        let mut b = Burst::new(Instant::now(), usize::MAX);
        b.returned();
        assert!(!b.published(64, Instant::now).sends(), "a burst waits");
        std::thread::sleep(FLUSH_DELAY);
        b.returned();
        // (Within the few publishes of the burst that do not read the clock.)
        let sent_by = (1..=CLOCKED_EVERY).find(|_| {
            let sent = b.published(64, Instant::now).sends();
            b.returned();
            sent
        });
        assert_eq!(sent_by, Some(CLOCKED_EVERY), "overdue: the burst's next clocked publish sends it");
    }

    #[test]
    fn a_publish_that_only_queued_returns_when_it_started() {
        let t0 = Instant::now() - Duration::from_secs(1);
        let mut b = Burst::new(t0 - Duration::from_secs(1), usize::MAX);
        assert!(b.published(64, || t0).sends(), "after a pause: now");
        b.flushed();
        b.returned();
        assert!(b.last_publish > t0, "it wrote: the clock is read on return");
        let t1 = b.last_publish + Duration::from_micros(1);
        assert!(!b.published(64, || t1).sends(), "right after: waits");
        b.returned();
        assert_eq!(b.last_publish, t1, "it only queued: its start is its return");
    }

    #[test]
    fn a_burst_flushed_by_its_caller_has_a_late_deadline() {
        let mut b = Burst::new(Instant::now(), 1024);
        b.flush_by_caller();
        b.returned();
        let t = b.last_publish + Duration::from_micros(1);
        assert!(!b.published(64, || t).sends());
        assert_eq!(b.due(), Some(t + CALLER_FLUSH_LATE), "the I/O thread sends it if the turn never ends");
        assert!(b.pending());
        assert!(b.published(1024, Instant::now).sends(), "its size still sends it");
        b.flushed();
        assert!(!b.pending());
    }

    #[test]
    fn an_open_burst_reads_the_clock_once_every_few_publishes() {
        let mut b = Burst::new(Instant::now(), 1 << 20);
        b.flush_by_caller();
        b.returned();
        let t = b.last_publish + Duration::from_micros(1);
        assert!(!b.published(64, || t).sends(), "the burst opens");
        b.returned();
        for _ in 1..CLOCKED_EVERY_BY_CALLER {
            assert!(!b.published(64, || unreachable!("no clock inside the burst")).sends());
            b.returned();
        }
        // The clocked one: the unclocked publishes between stretch the gap allowed.
        let later = t + BURST_GAP * (CLOCKED_EVERY_BY_CALLER - 1);
        assert!(
            !b.published(64, || later).sends(),
            "still a burst: {CLOCKED_EVERY_BY_CALLER} publishes within their gaps"
        );
        b.returned();
        assert_eq!(b.last_publish, later);
        // Its deadline passed: the next clocked publish sends it.
        for _ in 1..CLOCKED_EVERY_BY_CALLER {
            assert!(!b.published(64, || unreachable!()).sends());
            b.returned();
        }
        assert!(b.published(64, || later + CALLER_FLUSH_LATE).sends(), "overdue: sent by the publisher");
        b.flushed();
        b.returned();
        // Its size ends a burst without the clock's say.
        let mut b = Burst::new(Instant::now(), 256);
        b.returned();
        let t = b.last_publish + Duration::from_micros(1);
        assert!(!b.published(64, || t).sends());
        b.returned();
        assert!(!b.published(64, || unreachable!()).sends());
        b.returned();
        assert!(!b.published(64, || unreachable!()).sends());
        b.returned();
        assert_eq!(b.published(64, || t), Go::Burst, "256 bytes wait: sent, ending the burst");
    }

    #[test]
    fn looks_back_off_while_nothing_is_read_and_come_back_once_something_is() {
        let mut l = ReadLooks::new();
        let waits: Vec<u64> = (0..8).map(|_| l.looked(0, true).as_millis() as u64).collect();
        assert_eq!(waits, [4, 8, 16, 32, 64, 64, 64, 64]);
        assert_eq!(l.looked(10, true), ReadLooks::FIRST, "the application read: soon again");
        assert_eq!(l.looked(10, true).as_millis(), 4);
        assert_eq!(l.looked(10, false).as_millis(), 4, "a look of a read's own does not back off");
    }
}
