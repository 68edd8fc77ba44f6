//! Waking a shared-memory reader through its own event loop: libuv polls the reader's
//! bell ([`zerohop_shm::ring::bell`]), which publishers ring, and calls the doorbell on
//! the JavaScript thread. No thread parks on the reader's behalf, and no threadsafe
//! function hops to the loop (what [`crate::waiter`] does where a segment has no bell).

use std::ffi::{c_int, c_void};

use napi::sys;
use zerohop_shm::ring::bell::{Armed, Bell};

use crate::watch::{Block, Poll};

struct State {
    /// Taken out when the watcher is dropped: the bell goes at once (before its table
    /// entry goes to another reader), the handle on the loop's next turn.
    bell: Option<Bell>,
    /// A reader waits (armed, not yet rung).
    armed: bool,
}

/// A reader's bell on the event loop; JavaScript thread only.
pub struct BellWatcher {
    block: *mut Block<State>,
}

impl BellWatcher {
    /// Watches `bell` on `env`'s loop; `None` where libuv refuses it.
    ///
    /// # Safety
    /// `env` must be the env of the current call (on the JavaScript thread), and
    /// `doorbell` a function value of it.
    pub unsafe fn new(env: sys::napi_env, doorbell: sys::napi_value, bell: Bell) -> Option<BellWatcher> {
        let fd = bell.fd();
        // SAFETY: per this function's contract.
        let block = unsafe { Block::new(env, doorbell, fd, on_rung, State { bell: Some(bell), armed: false }) }?;
        Some(BellWatcher { block })
    }

    fn parts(&mut self) -> (&mut Poll, &mut State) {
        // SAFETY: `block` lives until `drop` closes it; JavaScript thread only.
        let (poll, _, state) = unsafe { Block::parts(self.block) };
        (poll, state)
    }

    /// Asks for one doorbell ring once the ring holds messages past `cursor`: false if
    /// the message at `cursor` is a hole, which a publish does not ring for: the caller
    /// waits for it on another thread (see [`Armed::AtHole`]), which rings the bell
    /// ([`ringer`](Self::ringer)) once it is readable. While armed, the watcher keeps
    /// the event loop alive, as a pending read of a socket does.
    pub fn arm(&mut self, cursor: u64) -> bool {
        let (poll, state) = self.parts();
        let Some(bell) = &state.bell else { return true };
        let armed = bell.arm(cursor);
        if armed == Armed::Readable {
            // Come meanwhile: rung by itself, so that the doorbell still comes from the loop.
            bell.ring_itself();
        }
        state.armed = true;
        poll.start();
        poll.hold_loop(true);
        armed != Armed::AtHole
    }

    /// What rings the bell from another thread.
    pub fn ringer(&self) -> std::io::Result<impl Fn() + Send + 'static> {
        // SAFETY: as in `parts`.
        let (_, _, state) = unsafe { Block::parts(self.block) };
        let bell = state.bell.as_ref().ok_or(std::io::ErrorKind::NotConnected)?;
        bell.ringer().map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Cancels an `arm`.
    pub fn disarm(&mut self) {
        let (poll, state) = self.parts();
        if state.armed {
            state.armed = false;
            if let Some(bell) = &state.bell {
                bell.settle();
            }
            poll.hold_loop(false);
        }
    }
}

impl Drop for BellWatcher {
    /// Stops watching; libuv frees the handle (and the bell) on its next turn.
    fn drop(&mut self) {
        self.disarm();
        let (poll, state) = self.parts();
        poll.stop(); // (before its descriptor closes)
        state.bell = None;
        // SAFETY: on the JavaScript thread with its env (watchers live in hub handles,
        // dropped by `close` or the handle's finalizer); the block is not used again.
        unsafe { Block::close(self.block) };
    }
}

/// The bell rang (on the JavaScript thread): the wait is over; the doorbell rings.
unsafe extern "C" fn on_rung(handle: *mut c_void, status: c_int, _events: c_int) {
    // SAFETY: the data of every handle here is its block; the loop runs this on the
    // JavaScript thread, the only one that touches the state.
    let block = unsafe { Block::<State>::of(handle) };
    let (poll, js, state) = (&mut block.poll, &block.js, &mut block.state);
    if let Some(bell) = &state.bell {
        bell.settle();
    }
    if status < 0 || !state.armed {
        // Nobody waits (a ring that came as the reader stopped waiting), or libuv gave
        // the handle up: stop until someone waits again.
        poll.stop();
        if !state.armed {
            return;
        }
    }
    state.armed = false;
    poll.hold_loop(false);
    // SAFETY: on the JavaScript thread of its env, inside libuv's callback. JavaScript
    // may arm again (or close the hub) from the doorbell, reaching the state through the
    // handle: nothing here touches `state` after the call.
    unsafe { js.ring() };
}
