//! The I/O driver: one protocol engine under one lock, moved on by whichever thread
//! needs it, and a thread of its own for when nobody does.
//!
//! ```text
//!   publish ──► engine (caller's thread): queue, frame, send
//!   pump    ──► engine (reader's thread): read the socket into the receive ring
//!   socket readable / deadline passed ──► engine (the I/O thread)
//! ```
//!
//! A message leaves on the thread that publishes it, and a reader that polls reads the
//! socket itself: neither waits for a thread hop. The I/O thread does the rest
//! (timers, acknowledgements, flushing a batch that waited long enough) and reads the
//! socket while nobody else does.
//!
//! ## Who reads the socket
//!
//! Two readers at once would wake on every datagram and take turns on a busy core, so
//! the I/O thread leaves the socket to the hub's reader while the reader
//! - *polls* ([`Driver::pump`] within the last [`READER_ACTIVE`]), or
//! - is *watched*: the reader's own event loop waits for the socket
//!   ([`Driver::set_watched`]) and pumps when it is readable, which wakes the reader
//!   with no thread between (the Node binding does this with libuv), or
//! - is a *publisher that flushes* at the end of each turn and reads what came back then
//!   ([`Driver::flush_then_pump`]: acknowledgements, which would otherwise wake the I/O
//!   thread by the thousand), until it waits for room or a reader parks.
//!
//! The handshake is a store followed by a load on each side: the I/O thread announces
//! that it leaves the socket, then looks whether the reader still polls; a reader that
//! parks ([`Driver::reader_parks`]) says so, then looks whether the I/O thread left the
//! socket, and wakes it. Either the I/O thread sees the reader park, or the reader sees
//! the announcement. A watched reader whose event loop is stuck (busy in other code)
//! would leave the socket unread: the I/O thread looks every [`WATCHDOG`] and reads it
//! itself when it found it readable twice with no pump between. Once it found the
//! socket quiet twice with no pump between, it sleeps on the socket instead of looking,
//! so an idle hub costs no wake-ups (see `Look`).
//!
//! ## Who runs the timers
//!
//! While the reader pumps (within the last [`READER_ACTIVE`] when the I/O thread looks),
//! the reader does: a polling reader every [`TIMER_CHECK_PUMPS`] pumps, a watched one at
//! every pump, runs what is due, and the I/O thread neither takes the engine's lock nor
//! is woken for an earlier deadline; it only looks every [`READER_LOOK`] whether the
//! pumps go on. An I/O thread that woke for a timer would take the CPU from the reader
//! and wait on the lock it holds (both sides of a spinning round trip lost tens of
//! microseconds about once a millisecond that way; a `spinUs: 0` ping-pong's readers
//! were preempted about 800 times a second by acknowledgement timers and the watchdog,
//! 2026-12-05). A watched reader that pumps is not stuck, so the watchdog rests
//! meanwhile too. A reader that stops pumping without parking hands the timers back
//! within twice [`READER_LOOK`]; one that parks, at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerohop_transport::{Doorbell, Error, Link, Result};

/// How recent the reader's last pump must be, when the I/O thread looks, for it to
/// leave the socket to the reader (see [`READER_LOOK`] for how often it looks then).
pub const READER_ACTIVE: Duration = Duration::from_millis(1);
/// How long a watched socket may stay readable with no pump before the I/O thread
/// reads it itself.
pub const WATCHDOG: Duration = Duration::from_millis(10);
/// How often the I/O thread looks whether a polling reader still polls (it takes the
/// socket and the timers back within twice this once the pumps stop). Each look takes
/// the reader's CPU for a moment: on this VM, a spinning round trip that met one took
/// 30-60 µs instead of 12, and looking every millisecond met 3 % of them.
pub const READER_LOOK: Duration = Duration::from_millis(20);
/// How often the I/O thread looks again while the engine may not read (no room).
pub const ROOM_POLL: Duration = Duration::from_micros(100);
/// A polling reader runs what is due every this many pumps (about every 10-40 µs):
/// reading the clock on every pump would cost a spinning round trip more than the
/// pump itself saves.
pub const TIMER_CHECK_PUMPS: u64 = 32;

/// What woke a turn of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The readiness descriptor polled readable (or the caller wants it read).
    pub readable: bool,
    /// The socket has room again (when [`Drive::wants_write`] asked).
    pub writable: bool,
}

impl Ready {
    pub const NONE: Ready = Ready { readable: false, writable: false };
    pub const READABLE: Ready = Ready { readable: true, writable: false };
}

/// A protocol engine the driver moves on.
pub trait Drive: Send + 'static {
    /// The descriptor that polls readable when there is something to read: the socket,
    /// or the io_uring that receives from it.
    fn readiness_fd(&self) -> RawFd;

    /// When the engine must run next even if nothing is readable.
    fn deadline(&mut self) -> Option<Instant>;

    /// Whether a send waits for the socket to have room.
    fn wants_write(&self) -> bool {
        false
    }

    /// Whether the engine may read now. While it may not (the receive ring has no room),
    /// the I/O thread does not watch the socket and runs the engine every [`ROOM_POLL`].
    fn may_read(&self) -> bool {
        true
    }

    /// Reads what waits (if `ready.readable`), runs what is due, sends what waits.
    /// Returns how many datagrams were read.
    fn drive(&mut self, now: Instant, ready: Ready) -> usize;

    /// A reader's poll, on its thread: reads what waits and delivers it. The default is
    /// a full turn. An engine overrides it to do only what delivering takes, and leaves
    /// the rest of the turn to [`settle`](Self::settle).
    ///
    /// `alone`: nobody waits on the [readiness descriptor](Self::readiness_fd) now (the
    /// I/O thread leaves the socket to this reader, and no event loop watches it), so
    /// the engine may read a socket without its readiness being tracked, until
    /// [`readiness_needed`](Self::readiness_needed).
    fn pump(&mut self, alone: bool) -> usize {
        let _ = alone;
        self.drive(Instant::now(), Ready::READABLE)
    }

    /// Someone is about to wait on the readiness descriptor (the I/O thread, or the
    /// reader's event loop): every socket must be tracked by it again.
    fn readiness_needed(&mut self) {}

    /// The rest of a reader's turn, once the reader has taken what [`pump`](Self::pump)
    /// delivered: what the engine sends in answer to what it read (acknowledgements),
    /// and what is due. A reader woken for a request answers it before this runs, so
    /// none of it delays the answer, and an acknowledgement rides in the answer's
    /// packet instead of one of its own.
    fn settle(&mut self) {}

    /// Whether threads waiting on the engine ([`Driver::wait`]) should look again (room
    /// was freed, say). Taken: the next call says false until it changes again.
    fn take_changed(&mut self) -> bool {
        false
    }

    /// Where the turn just run forwarded messages to (`Transport::forward_to`), taken:
    /// the driver flushes it once the engine is unlocked, so that the readers the flush
    /// wakes (on this CPU perhaps, preempting this thread) do not find the engine locked.
    fn take_forwarded(&mut self) -> Option<Arc<dyn Link>> {
        None
    }

    /// The reader read everything delivered and is about to wait: what the engine
    /// answers to that now (acknowledgements a sender waits on, say) rather than at its
    /// next timer. Whether it did anything.
    fn caught_up(&mut self) -> bool {
        false
    }
}

/// What a caller's work on the engine did to its timers (see [`Driver::after_timers`]):
/// whether the I/O thread, asleep until its deadline, must be woken to sleep less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timers {
    /// None is earlier than before.
    Kept,
    /// Any may be: the engine's deadline is worked out again.
    Moved,
    /// One was set that may be met as late as this (a burst's, see
    /// [`Burst::late_by`](crate::sending::Burst::late_by)): the I/O thread is woken
    /// only if it would sleep past it.
    DueBy(Instant),
}

/// An eventfd: a counter another thread bumps to end an I/O thread's `poll`.
pub struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; failure (the counter is
        // saturated) means a wake-up is pending anyway.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Waits until `fd` is readable (if given), `wake` is bumped, or `deadline`; returns
/// whether `fd` is readable and whether it is writable (when asked).
fn wait(fd: Option<RawFd>, want_write: bool, wake: &Wake, deadline: Option<Instant>) -> Ready {
    // ppoll(2), not poll(2): protocol timers (pacing, acknowledgement delays) are finer
    // than a millisecond.
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        }
    });
    let events = libc::POLLIN | if want_write { libc::POLLOUT } else { 0 };
    let mut fds = [
        libc::pollfd { fd: fd.unwrap_or(-1), events, revents: 0 },
        libc::pollfd { fd: wake.fd(), events: libc::POLLIN, revents: 0 },
    ];
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: two valid pollfds and an optional timespec, valid for the duration of the
    // call; a null signal mask leaves the mask alone.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, timeout_ptr, std::ptr::null()) };
    if r <= 0 {
        return Ready::NONE; // timeout or EINTR
    }
    if fds[1].revents != 0 {
        wake.clear();
    }
    // An error (a connected socket's ICMP "port unreachable", say) counts as readable:
    // reading is what reports and clears it, or poll would return at once forever.
    let readable = fds[0].revents & (libc::POLLIN | libc::POLLERR) != 0;
    Ready { readable, writable: fds[0].revents & libc::POLLOUT != 0 }
}

/// Whether `fd` is readable right now.
fn readable_now(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; a zero timeout.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR) != 0 }
}

/// What the I/O thread and the engine's other users share.
struct Shared<D> {
    /// `None` once shut down: the engine (and its socket) goes then, not when the last
    /// handle on the driver is dropped.
    engine: Mutex<Option<D>>,
    /// Threads waiting for the engine to change ([`Drive::take_changed`]), and how many
    /// wait (a notify with nobody waiting would still cost a system call).
    changed: Condvar,
    waiting: AtomicUsize,
    wake: Wake,
    /// The engine's readiness descriptor (fixed for its life).
    fd: RawFd,
    /// When the I/O thread wakes by itself next, in µs since `epoch` (0: it is awake and
    /// will look; `u64::MAX`: not by itself).
    io_deadline_us: AtomicU64,
    /// Someone woke the I/O thread for an earlier deadline, and it has not looked at its
    /// deadline since: waking it again would only cost another system call (a burst of
    /// publishes would make one each).
    deadline_wake_pending: AtomicBool,
    epoch: Instant,
    stop: AtomicBool,
    /// How many times the reader pumped; the I/O thread watches it change (a counter,
    /// because reading the clock on every pump would cost more than the pump).
    pumps: AtomicU64,
    /// Set when the reader parks, cleared by its next pump.
    reader_parked: AtomicBool,
    /// A publisher waits for room: the I/O thread takes the socket back until the next
    /// pump (a reader's, or a publisher's flush, see [`Driver::flush_then_pump`]).
    publisher_waits: AtomicBool,
    /// Rung (once per [`Driver::want_room`]) when the engine changed, as it does when
    /// it frees room: what an asynchronous send waits on.
    room_bell: Mutex<Option<Doorbell>>,
    room_wanted: AtomicBool,
    /// The reader's event loop watches the readiness descriptor.
    watched: AtomicBool,
    /// The I/O thread leaves the socket to the reader now.
    io_ignores_socket: AtomicBool,
    /// The I/O thread leaves the timers to the polling reader now (see the module docs).
    reader_runs_timers: AtomicBool,
}

impl<D> Shared<D> {
    /// Wakes the threads waiting for the engine to change, if any.
    fn notify_changed(&self) {
        // A waiter counts itself under the engine's lock before it waits, and whoever
        // changed the engine held that lock too: it sees the count.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
        // The same ordering for an asynchronous waiter: it asks (`want_room`) before it
        // looks at the engine.
        if self.room_wanted.load(Ordering::SeqCst) && self.room_wanted.swap(false, Ordering::SeqCst) {
            let bell = self.room_bell.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(ring) = bell {
                ring();
            }
        }
    }
}

/// A protocol engine and its I/O thread; see the module docs.
pub struct Driver<D: Drive> {
    shared: Arc<Shared<D>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The engine, locked.
pub type Guard<'a, D> = MutexGuard<'a, Option<D>>;

impl<D: Drive> Driver<D> {
    /// Starts the I/O thread (named `name`, running `on_start` first: pinning, say).
    pub fn start(name: &str, engine: D, on_start: impl FnOnce() + Send + 'static) -> Result<Driver<D>> {
        let fd = engine.readiness_fd();
        let shared = Arc::new(Shared {
            engine: Mutex::new(Some(engine)),
            changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            wake: Wake::new().map_err(|e| Error::io("eventfd", e))?,
            fd,
            io_deadline_us: AtomicU64::new(0),
            deadline_wake_pending: AtomicBool::new(false),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            pumps: AtomicU64::new(0),
            reader_parked: AtomicBool::new(false),
            publisher_waits: AtomicBool::new(false),
            room_bell: Mutex::new(None),
            room_wanted: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            io_ignores_socket: AtomicBool::new(false),
            reader_runs_timers: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                on_start();
                io_loop(&s)
            })
            .map_err(|e| Error::io("spawn the I/O thread", e))?;
        Ok(Driver { shared, thread: Mutex::new(Some(thread)) })
    }

    fn guard(&self) -> Guard<'_, D> {
        self.shared.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine, locked (`ERR_CLOSED` after [`shutdown`](Self::shutdown)). Hand the
    /// guard back through [`after`](Self::after) when done.
    pub fn lock(&self) -> Result<Guard<'_, D>> {
        let g = self.guard();
        if g.is_none() {
            return Err(Error::closed());
        }
        Ok(g)
    }

    /// Releases the engine after the caller worked on it: threads waiting for a change
    /// are woken if it changed, and the I/O thread if something is now due before it
    /// would wake.
    pub fn after(&self, g: Guard<'_, D>) {
        self.after_timers(g, Timers::Moved);
    }

    /// [`after`](Self::after), for a caller that knows what its work did to the timers
    /// (see [`Timers`]): a publish that queues into a burst goes through here. Working
    /// the engine's deadline out (every connection's timers) cost a third of a 64-byte
    /// QUIC stream's rate (2026-12-07).
    pub fn after_timers(&self, mut g: Guard<'_, D>, timers: Timers) {
        let Some(e) = g.as_mut() else { return };
        let changed = e.take_changed();
        let forwarded = e.take_forwarded();
        // Compared under the lock: the I/O thread stores its deadline under it too. An
        // I/O thread that is awake, or leaves the timers to a polling reader, says 0:
        // then no deadline is earlier, and none is worked out (a spinning reader's
        // round trip goes through here).
        let io_due_us = self.shared.io_deadline_us.load(Ordering::Acquire);
        let us = |t: Instant| t.saturating_duration_since(self.shared.epoch).as_micros() as u64;
        let wake = io_due_us != 0
            && match timers {
                Timers::Kept => false,
                Timers::Moved => e.deadline().is_some_and(|due| us(due) < io_due_us),
                Timers::DueBy(latest) => us(latest) < io_due_us,
            };
        drop(g);
        if let Some(to) = forwarded {
            let _ = to.flush();
        }
        if changed {
            self.shared.notify_changed();
        }
        if wake && !self.shared.deadline_wake_pending.swap(true, Ordering::AcqRel) {
            self.shared.wake.wake();
        }
    }

    /// Runs `f` on the engine, then [`after`](Self::after).
    pub fn with<R>(&self, f: impl FnOnce(&mut D) -> R) -> Result<R> {
        let mut g = self.lock()?;
        let r = f(g.as_mut().expect("checked by lock"));
        self.after(g);
        Ok(r)
    }

    /// Sets what rings (on whichever thread changed the engine) after a
    /// [`want_room`](Self::want_room).
    pub fn set_room_bell(&self, bell: Option<Doorbell>) {
        *self.shared.room_bell.lock().unwrap_or_else(|p| p.into_inner()) = bell;
    }

    /// Asks for one ring of the room bell at the engine's next change (room freed, say).
    /// Ask first, then look whether there is room: room freed meanwhile rings.
    pub fn want_room(&self) {
        self.shared.room_wanted.store(true, Ordering::SeqCst);
        self.publisher_waits();
    }

    /// A publisher waits for room: what makes it (acknowledgements) must be read by the
    /// I/O thread, not by the flushes it no longer makes (see
    /// [`flush_then_pump`](Self::flush_then_pump)).
    fn publisher_waits(&self) {
        let s = &self.shared;
        if !s.publisher_waits.load(Ordering::Relaxed) {
            s.publisher_waits.store(true, Ordering::SeqCst);
            if s.io_ignores_socket.load(Ordering::SeqCst) {
                s.wake.wake();
            }
        }
    }

    /// A publisher's flush at the end of its turn (the caller that flushes of
    /// `Batching`): `flush` sends what waits, then this thread reads the socket as a
    /// polling reader's [`pump`](Self::pump) does (the acknowledgements of what it
    /// sent) and runs what is due. While these flushes come, the I/O thread leaves the
    /// socket and the timers to them, as to a polling reader's pumps, instead of waking
    /// for every acknowledgement and taking the publisher's CPU each time (5,000 times a
    /// second of a 64-byte QUIC stream; 4.5-4.9 → 6.0-6.5 M msg/s, 2026-12-07). A
    /// publisher that stops hands them back at the I/O thread's next look
    /// ([`READER_LOOK`]); one that waits for room ([`wait`](Self::wait),
    /// [`want_room`](Self::want_room)), at once. A reader that waits without watching
    /// the socket keeps it with the I/O thread: the flush is only a flush then.
    pub fn flush_then_pump(&self, flush: impl FnOnce(&mut D)) -> Result<()> {
        let s = &self.shared;
        if s.reader_parked.load(Ordering::SeqCst) {
            return self.with(flush);
        }
        let Some(mut g) = self.reader_lock() else { return self.with(flush) };
        flush(g.as_mut().ok_or_else(Error::closed)?);
        self.pump_held(g);
        Ok(())
    }

    /// A publisher sent a burst in the middle of a flood of publishes (see
    /// `sending::Go::Burst`), under `g`: it reads what came back now, as its flush at
    /// the end of the turn does ([`flush_then_pump`](Self::flush_then_pump)). A turn
    /// of publishes can last many milliseconds, and the acknowledgements that open the
    /// congestion window and the send queue would meanwhile wait for the I/O thread,
    /// which shares the publisher's CPU: a 64-byte QUIC stream's receiver was then
    /// 30 ms behind its publisher after 200,000 messages (2026-12-07).
    pub fn read_back(&self, g: Guard<'_, D>) {
        let s = &self.shared;
        if s.reader_parked.load(Ordering::SeqCst) {
            return self.after(g);
        }
        self.count_pump();
        self.pump_held(g);
    }

    /// A pump's turn on the engine a reader holds: read the socket, the rest of the
    /// turn, what is due.
    fn pump_held(&self, mut g: Guard<'_, D>) {
        let alone = self.alone();
        if let Some(e) = g.as_mut() {
            e.pump(alone);
            e.settle();
            self.run_due(e, true);
        }
        self.after(g);
    }

    /// Waits (releasing the engine) until it changes or `timeout` passes.
    pub fn wait<'a>(&self, g: Guard<'a, D>, timeout: Duration) -> Guard<'a, D> {
        self.publisher_waits();
        // Counted under the lock, so a change made after this is seen by its notifier.
        self.shared.waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.shared.changed.wait_timeout(g, timeout).unwrap_or_else(|p| p.into_inner()).0;
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// Waits up to `timeout` for `done` to hold of the engine (looking again whenever it
    /// changes), unless `give_up` holds first; whether `done` held. What `linger` (the
    /// on close) is made of.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&D) -> bool, give_up: impl Fn(&D) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut g) = self.lock() else { return false };
        loop {
            let Some(e) = g.as_ref() else { return false };
            if done(e) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || give_up(e) {
                return false;
            }
            // Changes wake it; the bound covers what changes without saying so.
            g = self.wait(g, left.min(Duration::from_millis(5)));
        }
    }

    /// Reads the socket on the caller's thread, if no other thread is at the engine;
    /// how many datagrams were read. The I/O thread then leaves the socket to this
    /// reader until it stops pumping, parks, or stops being watched.
    pub fn pump(&self) -> Result<usize> {
        let Some(mut g) = self.reader_lock() else { return Ok(0) };
        // Nobody to hand over to: the whole turn, under one lock.
        let alone = self.alone();
        let e = g.as_mut().ok_or_else(Error::closed)?;
        let n = e.pump(alone);
        e.settle();
        self.run_due(e, false);
        self.after(g);
        Ok(n)
    }

    /// [`pump`](Self::pump) for a reader its event loop woke, then `reader` (which takes
    /// what was delivered, and may publish), then the rest of the engine's turn
    /// ([`Drive::settle`]). `reader` runs whether or not the pump could read (another
    /// thread may have delivered), without the engine's lock.
    pub fn pump_then(&self, reader: impl FnOnce()) -> Result<usize> {
        let Some(mut g) = self.reader_lock() else {
            // The other thread at the engine does a whole turn.
            reader();
            return Ok(0);
        };
        let alone = self.alone();
        let n = g.as_mut().map(|e| e.pump(alone));
        drop(g);
        reader();
        let n = n.ok_or_else(Error::closed)?;
        let mut g = self.guard();
        if let Some(e) = g.as_mut() {
            e.settle();
            self.run_due(e, true);
        }
        self.after(g);
        Ok(n)
    }

    /// A pumping reader's share of the I/O thread's work: what is due, while the I/O
    /// thread leaves it the timers. Looked at on `every_pump` of a reader woken by its
    /// event loop ([`pump_then`](Self::pump_then): a wake-up, beside which reading the
    /// clock costs nothing), every [`TIMER_CHECK_PUMPS`] pumps of a polling one.
    fn run_due(&self, e: &mut D, every_pump: bool) {
        let s = &self.shared;
        if !s.reader_runs_timers.load(Ordering::Relaxed)
            || !(every_pump || s.pumps.load(Ordering::Relaxed).is_multiple_of(TIMER_CHECK_PUMPS))
        {
            return;
        }
        let now = Instant::now();
        if e.deadline().is_some_and(|due| due <= now) {
            e.drive(now, Ready::NONE);
        }
    }

    /// A reader's pump begins: counted (the I/O thread leaves the socket to a reader
    /// that pumps), and the engine taken if no other thread is at it.
    fn reader_lock(&self) -> Option<Guard<'_, D>> {
        self.count_pump();
        match self.shared.engine.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// A reader's pump begins: the I/O thread leaves the socket to a reader that pumps.
    fn count_pump(&self) {
        let s = &self.shared;
        // One thread pumps a hub, so a plain increment suffices.
        s.pumps.store(s.pumps.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        if s.reader_parked.load(Ordering::Relaxed) {
            s.reader_parked.store(false, Ordering::SeqCst);
        }
        // A pump reads what a publisher that waited for room waits on, too.
        if s.publisher_waits.load(Ordering::Relaxed) {
            s.publisher_waits.store(false, Ordering::SeqCst);
        }
    }

    /// Whether the reader that holds the engine reads alone (see [`Drive::pump`]). Read
    /// under the engine's lock: the I/O thread announces that it leaves the socket
    /// before it takes the lock, and takes it (to call [`Drive::readiness_needed`])
    /// before it waits on the descriptor again; a watcher does the same.
    fn alone(&self) -> bool {
        let s = &self.shared;
        s.io_ignores_socket.load(Ordering::SeqCst) && !s.watched.load(Ordering::SeqCst)
    }

    /// The reader read everything delivered and is about to wait ([`Drive::caught_up`]),
    /// if no other thread is at the engine (that one's turn looks at it soon anyway).
    pub fn reader_caught_up(&self) {
        let mut g = match self.shared.engine.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        // Nothing done, nothing to tell (a ping-pong's reader goes through here).
        if g.as_mut().is_some_and(|e| e.caught_up()) {
            self.after(g);
        }
    }

    /// The reader stops polling and waits to be told (not watching): the I/O thread
    /// must watch the socket again, now.
    pub fn reader_parks(&self) {
        let s = &self.shared;
        s.reader_parked.store(true, Ordering::SeqCst);
        if s.io_ignores_socket.load(Ordering::SeqCst) {
            s.wake.wake();
        }
    }

    /// Whether the reader's own event loop watches [`readiness_fd`](Self::readiness_fd)
    /// (and pumps when it is readable).
    pub fn set_watched(&self, watched: bool) {
        // Watching starts right after the reader pumped (the I/O thread already leaves
        // the socket to it), and when it stops, the reader pumps again or nobody is
        // waiting for what comes: the socket needs no wake. Nor do the timers: a watched
        // reader that pumps runs them as a polling one does, and one that stops hands
        // them back at the I/O thread's next look (a wake here would cost every round
        // trip of a ping-pong a thread's wake-up).
        self.shared.watched.store(watched, Ordering::SeqCst);
        if watched && let Some(e) = self.guard().as_mut() {
            // The event loop is about to wait on the descriptor: it must hear of every
            // socket (a spinning pump may have read one without it).
            e.readiness_needed();
        }
    }

    /// The descriptor that polls readable when [`pump`](Self::pump) has something to read.
    pub fn readiness_fd(&self) -> RawFd {
        self.shared.fd
    }

    /// Whether [`shutdown`](Self::shutdown) ran.
    pub fn is_closed(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Runs `last` on the engine (a flush, close frames), stops the I/O thread and drops
    /// the engine, closing its socket. Idempotent.
    pub fn shutdown(&self, last: impl FnOnce(&mut D)) {
        let s = &self.shared;
        {
            let mut g = self.guard();
            let Some(e) = g.as_mut() else { return };
            last(e);
            s.stop.store(true, Ordering::Release);
        }
        s.notify_changed();
        s.wake.wake();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
        drop(self.guard().take());
    }
}

impl<D: Drive> Drop for Driver<D> {
    fn drop(&mut self) {
        self.shutdown(|_| {});
    }
}

/// What the I/O thread's watchdog last found of a socket the reader's event loop watches,
/// with the reader's pump count then.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Not looked yet: look after [`WATCHDOG`].
    Unknown,
    /// Not readable: look again after [`WATCHDOG`].
    Quiet(u64),
    /// Not readable twice, with no pump between: the hub is idle, and this thread sleeps
    /// on the socket instead of looking (an idle hub costs no wake-ups; a busy one is
    /// looked at by the clock, not woken with its reader by every message).
    Idle,
    /// Readable: still so at the next look with no pump between is a stuck reader.
    Readable(u64),
}

/// The I/O thread: sleeps until the socket is readable, a deadline passes, or someone
/// wakes it; then runs the engine.
fn io_loop<D: Drive>(s: &Shared<D>) {
    let (mut pumps_seen, mut pumps_changed) = (0u64, Instant::now() - READER_ACTIVE);
    let mut look = Look::Unknown;
    while !s.stop.load(Ordering::Acquire) {
        let pumps = s.pumps.load(Ordering::Relaxed);
        if pumps != pumps_seen {
            (pumps_seen, pumps_changed) = (pumps, Instant::now());
        }
        // Announce first, then look (see the module docs).
        s.io_ignores_socket.store(true, Ordering::SeqCst);
        let polls = !s.reader_parked.load(Ordering::SeqCst)
            && !s.publisher_waits.load(Ordering::SeqCst)
            && pumps_changed.elapsed() < READER_ACTIVE;
        let watched = s.watched.load(Ordering::SeqCst);
        let leave = polls || watched;
        if !leave {
            s.io_ignores_socket.store(false, Ordering::SeqCst);
            look = Look::Unknown;
        }
        if polls {
            // The reader runs the timers: look again only whether it still pumps, without
            // the engine (see the module docs). Nobody wakes this thread for a deadline
            // meanwhile (0: awake, as far as `after` is concerned), but a reader that
            // parks does. A watched reader that pumps is not stuck: no watchdog either.
            s.reader_runs_timers.store(true, Ordering::SeqCst);
            s.io_deadline_us.store(0, Ordering::Release);
            wait(None, false, &s.wake, Some(Instant::now() + READER_LOOK));
            continue;
        }
        s.reader_runs_timers.store(false, Ordering::SeqCst);
        let (deadline, want_write, may_read) = {
            let mut g = s.engine.lock().unwrap_or_else(|p| p.into_inner());
            let Some(e) = g.as_mut() else { return };
            if !leave {
                // About to wait on the descriptor: see `Driver::alone`.
                e.readiness_needed();
            }
            let mut deadline = e.deadline();
            let may_read = e.may_read();
            let mut sooner = |after: Duration| {
                let t = Instant::now() + after;
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            };
            // A watched reader is woken by its own event loop whether or not it polls
            // too: only the watchdog is needed then (see `Look`).
            if watched && look != Look::Idle {
                sooner(WATCHDOG);
            }
            if !may_read {
                sooner(ROOM_POLL);
            }
            // Stored under the lock, so a caller that sets an earlier deadline after this
            // sees it and wakes this thread; one that did so before, this thread has seen.
            let due_us = deadline.map_or(u64::MAX, |d| d.saturating_duration_since(s.epoch).as_micros() as u64);
            s.io_deadline_us.store(due_us, Ordering::Release);
            s.deadline_wake_pending.store(false, Ordering::Release);
            (deadline, e.wants_write(), may_read)
        };
        let idle = watched && may_read && look == Look::Idle;
        let fd = ((!leave && may_read) || idle).then_some(s.fd);
        let mut ready = wait(fd, want_write, &s.wake, deadline);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        if watched && may_read {
            // The watchdog's look. Readable while watched is fine once (the reader's loop
            // is about to pump); a stuck reader if still so at the next look with no pump
            // between: this thread reads it then.
            let readable = ready.readable || readable_now(s.fd);
            ready.readable = false;
            let pumps = s.pumps.load(Ordering::Relaxed);
            look = match (readable, look) {
                // Woken by a timer while asleep on a quiet socket: still idle.
                (false, Look::Idle) => Look::Idle,
                (false, Look::Quiet(p)) if p == pumps => Look::Idle,
                (false, _) => Look::Quiet(pumps),
                (true, Look::Readable(p)) if p == pumps => {
                    ready.readable = true;
                    look
                }
                (true, _) => Look::Readable(pumps),
            };
        }
        let mut g = s.engine.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = g.as_mut() else { return };
        e.drive(Instant::now(), ready);
        s.io_deadline_us.store(0, Ordering::Release);
        let changed = e.take_changed();
        let forwarded = e.take_forwarded();
        drop(g);
        if let Some(to) = forwarded {
            let _ = to.flush();
        }
        if changed {
            s.notify_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine whose "socket" is an eventfd: readable once bumped, read by a drive
    /// that was told it is readable. It counts the I/O thread's turns and reads.
    struct Fake {
        socket: Arc<Wake>,
        turns: Arc<AtomicUsize>,
        reads: Arc<AtomicUsize>,
        /// Set to say the engine changed (room freed, say).
        changed: Arc<AtomicBool>,
    }

    impl Drive for Fake {
        fn readiness_fd(&self) -> RawFd {
            self.socket.fd()
        }
        fn deadline(&mut self) -> Option<Instant> {
            None
        }
        fn drive(&mut self, _now: Instant, ready: Ready) -> usize {
            self.turns.fetch_add(1, Ordering::SeqCst);
            if ready.readable {
                self.socket.clear();
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            0
        }
        /// The reader's poll reads the socket without counting as the I/O thread's turn.
        fn pump(&mut self, _alone: bool) -> usize {
            self.socket.clear();
            0
        }
        fn take_changed(&mut self) -> bool {
            self.changed.swap(false, Ordering::SeqCst)
        }
    }

    fn watched() -> (Driver<Fake>, Arc<Wake>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let socket = Arc::new(Wake::new().unwrap());
        let (turns, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let changed = Arc::new(AtomicBool::new(false));
        let fake = Fake { socket: socket.clone(), turns: turns.clone(), reads: reads.clone(), changed };
        let d = Driver::start("zerohop-test-io", fake, || {}).unwrap();
        d.set_watched(true);
        (d, socket, turns, reads)
    }

    #[test]
    fn a_watched_socket_gone_quiet_lets_the_io_thread_sleep() {
        let (_d, socket, turns, reads) = watched();
        // A message wakes the thread (whoever reads it), and it looks at the socket from
        // then on: a few looks find it quiet, then it sleeps on the socket.
        socket.wake();
        std::thread::sleep(WATCHDOG * 10);
        let read = reads.load(Ordering::SeqCst);
        let before = turns.load(Ordering::SeqCst);
        std::thread::sleep(WATCHDOG * 30);
        let idle = turns.load(Ordering::SeqCst) - before;
        assert!(
            idle <= 1,
            "{idle} turns in {:?} of an idle watched socket (a look every {WATCHDOG:?} would be 30)",
            WATCHDOG * 30
        );
        // A message after the sleep wakes it, and is read (nobody else does here).
        socket.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads.load(Ordering::SeqCst) == read {
            assert!(Instant::now() < deadline, "a stuck reader's socket is read by the I/O thread");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_watched_socket_nobody_reads_is_read_by_the_io_thread() {
        let (_d, socket, _turns, reads) = watched();
        socket.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "a stuck reader's socket is read by the I/O thread");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_room_bell_rings_once_a_want_at_the_engines_next_change() {
        let (d, _socket, _turns, _reads) = watched();
        let rings = Arc::new(AtomicUsize::new(0));
        let counted = rings.clone();
        d.set_room_bell(Some(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })));
        let change = |d: &Driver<Fake>| d.with(|e| e.changed.store(true, Ordering::SeqCst)).unwrap();
        change(&d);
        assert_eq!(rings.load(Ordering::SeqCst), 0, "nobody asked");
        d.want_room();
        d.with(|_| {}).unwrap();
        assert_eq!(rings.load(Ordering::SeqCst), 0, "no change");
        change(&d);
        assert_eq!(rings.load(Ordering::SeqCst), 1, "asked, then changed: rung");
        change(&d);
        assert_eq!(rings.load(Ordering::SeqCst), 1, "once a want");
        d.want_room();
        change(&d);
        assert_eq!(rings.load(Ordering::SeqCst), 2);
    }

    /// Acknowledgements keep coming while a publisher sends every 100 µs (`send`):
    /// after its first look, the I/O thread leaves them to the publisher; a publisher
    /// that waits for room sends no more, and the I/O thread reads at once.
    fn publisher_reads_what_comes_back(send: impl Fn(&Driver<Fake>)) {
        let socket = Arc::new(Wake::new().unwrap());
        let (turns, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let changed = Arc::new(AtomicBool::new(false));
        let fake = Fake { socket: socket.clone(), turns, reads: reads.clone(), changed };
        let d = Driver::start("zerohop-test-io", fake, || {}).unwrap();
        let mut sent = 0;
        let until = Instant::now() + READER_LOOK * 3;
        while Instant::now() < until {
            socket.wake();
            send(&d);
            sent += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(sent > 100);
        let by_io = reads.load(Ordering::SeqCst);
        assert!(by_io <= 3, "the I/O thread read {by_io} times while the publisher read");
        d.want_room();
        socket.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads.load(Ordering::SeqCst) == by_io {
            assert!(Instant::now() < deadline, "a publisher waiting for room leaves the socket to the I/O thread");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_publisher_that_flushes_reads_what_comes_back_until_it_waits_for_room() {
        let flushes = AtomicUsize::new(0);
        publisher_reads_what_comes_back(|d| {
            d.flush_then_pump(|_| {
                flushes.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
        });
        assert!(flushes.load(Ordering::SeqCst) > 100);
    }

    #[test]
    fn a_publisher_that_sends_a_burst_in_a_flood_reads_what_comes_back() {
        publisher_reads_what_comes_back(|d| d.read_back(d.lock().unwrap()));
    }
}
