//! Cross-process futex wait and wake on a `u32` in a shared mapping.
//!
//! The words live in `MAP_SHARED` memory used by several processes, so the
//! `FUTEX_PRIVATE_FLAG` must not be set. Every wait has a timeout: a peer that dies
//! never wakes us, and callers re-check liveness between waits.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`. Returns early on a wake,
/// a spurious wake-up or a signal; callers re-check their condition either way.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the u32 behind `word`, which is a valid, aligned
    // AtomicU32 for the duration of the call; `ts` outlives the call. The kernel does
    // not write through either pointer. Errors (EAGAIN when the value already changed,
    // ETIMEDOUT, EINTR) all mean "re-check", so the result is ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process sleeping on `word`; returns how many were woken.
pub fn wake_all(word: &AtomicU32) -> usize {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key and never
    // dereferences the unused pointer arguments.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    woken.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_times_out_and_returns_on_changed_value() {
        let w = AtomicU32::new(5);
        let t = Instant::now();
        wait(&w, 5, Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(15));
        // A value that differs returns at once (EAGAIN).
        wait(&w, 6, Duration::from_secs(10));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let waiter = std::thread::spawn(move || {
            while w2.load(Ordering::SeqCst) == 0 {
                wait(&w2, 0, Duration::from_secs(10));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::SeqCst);
        wake_all(&w);
        waiter.join().unwrap();
    }
}
