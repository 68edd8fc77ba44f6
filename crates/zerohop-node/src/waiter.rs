//! The waiter thread behind `recv()`: parks on the segment's futex on behalf of a
//! JavaScript subscriber and rings a doorbell when its cursor becomes readable. (A
//! reader with a bell, [`crate::bell`], needs one only for the holes its bell does not
//! ring for; this thread rings the bell then.)
//!
//! One thread per subscribing handle, idle (blocked on a condvar) unless armed. The
//! doorbell is a weak threadsafe function with a queue of one, so a burst of messages
//! costs at most one JavaScript wake-up; JavaScript then reads the ring directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use napi::Status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use zerohop_shm::{RingWaiter, Segment};

/// The doorbell: `(u32) => void` on the JS thread, weak, at most one call queued.
pub type Doorbell = ThreadsafeFunction<u32, (), u32, Status, false, true, 1>;

enum Request {
    Idle,
    Armed { cursor: u64, spin: Duration },
    Stop,
}

struct Shared {
    request: Mutex<Request>,
    changed: Condvar,
    cancel: AtomicBool,
}

/// Handle on a waiter thread.
pub struct Waiter {
    shared: Arc<Shared>,
    ring: RingWaiter,
    thread: Option<JoinHandle<()>>,
}

impl Waiter {
    /// Starts the thread for the subscriber holding table `entry` of `segment`.
    pub fn spawn(segment: Arc<Segment>, entry: Option<u32>, doorbell: Doorbell) -> std::io::Result<Waiter> {
        Self::ringing(segment, entry, move || {
            // QueueFull means a ring is already pending: that one suffices.
            let _ = doorbell.call(0, ThreadsafeFunctionCallMode::NonBlocking);
        })
    }

    /// [`spawn`](Self::spawn), with what the thread does once the cursor is readable.
    pub fn ringing(
        segment: Arc<Segment>,
        entry: Option<u32>,
        ring: impl Fn() + Send + 'static,
    ) -> std::io::Result<Waiter> {
        let shared = Arc::new(Shared {
            request: Mutex::new(Request::Idle),
            changed: Condvar::new(),
            cancel: AtomicBool::new(false),
        });
        let waiter = RingWaiter::new(segment, entry);
        let (s, w) = (shared.clone(), waiter.clone());
        let thread = std::thread::Builder::new().name("zerohop-waiter".into()).spawn(move || run(&s, &w, &ring))?;
        Ok(Waiter { shared, ring: waiter, thread: Some(thread) })
    }

    /// Requests one doorbell ring once `cursor` is readable.
    pub fn arm(&self, cursor: u64, spin: Duration) {
        let mut req = self.shared.request.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*req, Request::Stop) {
            return;
        }
        self.shared.cancel.store(false, Ordering::SeqCst);
        *req = Request::Armed { cursor, spin };
        self.shared.changed.notify_one();
    }

    /// Cancels an armed or ongoing wait.
    pub fn disarm(&self) {
        let mut req = self.shared.request.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*req, Request::Armed { .. }) {
            *req = Request::Idle;
        }
        drop(req);
        self.shared.cancel.store(true, Ordering::SeqCst);
        self.ring.wake_all();
    }

    fn halt(&mut self) {
        *self.shared.request.lock().unwrap_or_else(|p| p.into_inner()) = Request::Stop;
        self.shared.cancel.store(true, Ordering::SeqCst);
        self.shared.changed.notify_one();
        self.ring.wake_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(shared: &Shared, waiter: &RingWaiter, ring: &dyn Fn()) {
    loop {
        let (cursor, spin) = {
            let mut req = shared.request.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match std::mem::replace(&mut *req, Request::Idle) {
                    Request::Stop => {
                        *req = Request::Stop;
                        return;
                    }
                    Request::Armed { cursor, spin } => break (cursor, spin),
                    Request::Idle => req = shared.changed.wait(req).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        if waiter.wait(cursor, spin, None, &shared.cancel) {
            ring();
        }
    }
}
