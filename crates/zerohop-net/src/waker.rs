//! [`Waker`]: one descriptor that polls readable when the socket has datagrams or a
//! timer of the engine is due.
//!
//! The driver hands the timers to the hub's reader while it reads (see
//! [`crate::driver`]): a reader whose event loop waits on the readiness descriptor
//! runs them when it is woken, and the I/O thread takes them back only at its next look,
//! up to 40 ms later. A byte stream loses nothing by that (the kernel resends), but
//! KCP's resends are timers: a lost datagram cost 40 ms instead of the 5 of its tail
//! probe (a ping-pong at 2 % loss, 2026-12-06), and a datagram that chaos delays by
//! 2 ms must come out after 2 ms. An engine with such timers makes its readiness
//! descriptor an epoll set of the socket and a timerfd armed for the earliest
//! deadline: whoever waits on it wakes when a timer is due.
//!
//! Deadlines are in microseconds on the engine's clock.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// See the module docs.
#[derive(Debug)]
pub struct Waker {
    epoll: OwnedFd,
    timer: OwnedFd,
    /// The deadline the timer is armed for (µs on the engine's clock), if any.
    armed: Option<u64>,
}

impl Waker {
    /// Watches `socket` and a fresh timer.
    pub fn new(socket: RawFd) -> io::Result<Waker> {
        // SAFETY: no pointers; a negative result is an error.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: no pointers; a negative result is an error.
        let timer = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let timer = unsafe { OwnedFd::from_raw_fd(timer) };
        for fd in [socket, timer.as_raw_fd()] {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
            // SAFETY: a valid event for the call; both descriptors are open.
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Waker { epoll, timer, armed: None })
    }

    /// Watches `fd` too (the socket, when a receive ring it watched is given up).
    pub fn watch(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: a valid event for the call; the caller keeps `fd` open while it is watched.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Takes the timer's expiry if it fired (it can have only once its deadline is
    /// `now` or past, so a look before costs no system call): whether it did.
    pub fn take_fired(&mut self, now: u64) -> bool {
        if self.armed.is_none_or(|at| at > now) {
            return false;
        }
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our timerfd (non-blocking).
        let n = unsafe { libc::read(self.timer.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        let fired = n == 8;
        if fired {
            self.armed = None;
        }
        fired
    }

    /// Makes sure the descriptor polls readable by `deadline` (µs on the engine's clock,
    /// `now` being the time now on it): the timer is set again only for a sooner one
    /// (one that fires early costs a look that finds nothing due, and is set again).
    pub fn arm(&mut self, deadline: Option<u64>, now: u64) {
        let Some(at) = deadline else { return };
        if self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        // (Zero would disarm it: a deadline already past fires in a microsecond.)
        let after = Duration::from_micros(at.saturating_sub(now)).max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: `spec` is valid for reads for the call; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } == 0 {
            self.armed = Some(at);
        }
    }
}
