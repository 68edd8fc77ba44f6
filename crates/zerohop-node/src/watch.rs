//! Waking a parked JavaScript reader from its own event loop.
//!
//! A network hub's reader that finds nothing and parks would otherwise be woken by the
//! transport's I/O thread: that thread wakes when the socket is readable, reads it,
//! and rings a threadsafe function, which wakes the event loop: two wake-ups, one
//! thread hop between. Here libuv itself polls the transport's readiness descriptor
//! (`uv_poll_t` on the loop of the env the hub was opened in) while the reader is
//! armed: when it is readable, the loop runs [`on_readable`] on the JavaScript thread,
//! which pumps the socket into the receive ring and calls the doorbell directly: one
//! wake-up, no hop. The transport leaves the socket to it meanwhile
//! ([`ReadInPlace::arm`] with `watched`), and still rings the threadsafe doorbell for
//! what other threads deliver.
//!
//! libuv's functions are exported by every Node.js binary; they are declared here and
//! resolved when the addon loads, as Node-API's are.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::Arc;

use napi::sys;
use zerohop::{Link, ReadInPlace};
use zerohop_shm::ring::table;

unsafe extern "C" {
    pub(crate) fn uv_handle_size(kind: c_int) -> usize;
    pub(crate) fn uv_poll_init(event_loop: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
    pub(crate) fn uv_poll_start(
        handle: *mut c_void,
        events: c_int,
        cb: unsafe extern "C" fn(*mut c_void, c_int, c_int),
    ) -> c_int;
    pub(crate) fn uv_poll_stop(handle: *mut c_void) -> c_int;
    pub(crate) fn uv_close(handle: *mut c_void, cb: Option<unsafe extern "C" fn(*mut c_void)>);
    pub(crate) fn uv_ref(handle: *mut c_void);
    pub(crate) fn uv_unref(handle: *mut c_void);
    pub(crate) fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
    pub(crate) fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
}

/// `UV_POLL` in libuv's `uv_handle_type`.
pub(crate) const UV_POLL: c_int = 8;
/// `UV_READABLE` in libuv's `uv_poll_event`.
pub(crate) const UV_READABLE: c_int = 1;

/// What the poll callback needs, owned by the handle's memory block.
struct State {
    link: Arc<dyn Link>,
    ring: Arc<dyn ReadInPlace>,
    cursor: u64,
    /// A reader waits (armed here, not yet rung).
    armed: bool,
    /// Another thread rang for the reader, and that ring (a threadsafe function, which
    /// does not hold the loop by itself) has not arrived yet: the watcher holds the loop
    /// until it does, or the process could exit with a receive pending.
    ring_on_its_way: bool,
}

/// The doorbell a poll callback rings: a JavaScript function (called with no
/// arguments) and the async context it is called in.
pub(crate) struct Js {
    env: sys::napi_env,
    doorbell: sys::napi_ref,
    context: sys::napi_async_context,
}

impl Js {
    /// Calls the doorbell.
    ///
    /// # Safety
    /// On the JavaScript thread of the env, outside any other call into JavaScript.
    pub(crate) unsafe fn ring(&self) {
        // SAFETY: per the contract; the reference and the context were made on `env`.
        unsafe { ring_doorbell(self.env, self.doorbell, self.context) }
    }
}

/// What libuv's poll callback is.
pub(crate) type OnReadable = unsafe extern "C" fn(*mut c_void, c_int, c_int);

/// One `uv_poll_t` (its memory, aligned for it) on a descriptor, initialised.
pub(crate) struct Poll {
    handle: Vec<u64>,
    on_readable: OnReadable,
    /// libuv polls the descriptor. Watchers leave it on after a ring, until they find
    /// the descriptor readable with nobody waiting: a reader that waits again right away
    /// (a ping-pong) then costs libuv no `epoll_ctl`.
    polling: bool,
}

impl Poll {
    fn ptr(&mut self) -> *mut c_void {
        self.handle.as_mut_ptr().cast()
    }

    /// Polls for readability, if it does not already.
    pub(crate) fn start(&mut self) {
        if !self.polling {
            // SAFETY: an initialised poll handle (see `Block::new`); the callback's
            // signature is libuv's.
            self.polling = unsafe { uv_poll_start(self.ptr(), UV_READABLE, self.on_readable) } == 0;
        }
    }

    /// Stops polling, if it does.
    pub(crate) fn stop(&mut self) {
        if self.polling {
            // SAFETY: an initialised poll handle.
            unsafe { uv_poll_stop(self.ptr()) };
            self.polling = false;
        }
    }

    /// libuv stopped polling by itself (an error condition: a callback's status < 0).
    pub(crate) fn stopped(&mut self) {
        self.polling = false;
    }

    /// Whether the handle holds the event loop open while it polls.
    pub(crate) fn hold_loop(&mut self, hold: bool) {
        // SAFETY: an initialised handle; both are idempotent.
        unsafe {
            if hold {
                uv_ref(self.ptr());
            } else {
                uv_unref(self.ptr());
            }
        }
    }
}

/// A poll handle, the doorbell, and the state its data points to.
pub(crate) struct Block<S> {
    pub(crate) poll: Poll,
    pub(crate) js: Js,
    pub(crate) state: S,
}

impl<S> Block<S> {
    /// A poll handle on `fd` of `env`'s loop (unreferenced, not polling yet) whose data
    /// is a block with `state`, calling `on_readable` when polled; `None` where libuv
    /// refuses it.
    ///
    /// # Safety
    /// `env` must be the env of the current call (on the JavaScript thread), and
    /// `doorbell` a function value of it.
    pub(crate) unsafe fn new(
        env: sys::napi_env,
        doorbell: sys::napi_value,
        fd: c_int,
        on_readable: OnReadable,
        state: S,
    ) -> Option<*mut Self> {
        let mut event_loop = ptr::null_mut();
        // SAFETY: per the contract; a valid out-pointer.
        if unsafe { sys::napi_get_uv_event_loop(env, &mut event_loop) } != sys::Status::napi_ok || event_loop.is_null()
        {
            return None;
        }
        // SAFETY: asks libuv for a size; no pointers.
        let size = unsafe { uv_handle_size(UV_POLL) };
        if size == 0 {
            return None;
        }
        let mut reference = ptr::null_mut();
        let mut name = ptr::null_mut();
        let mut context = ptr::null_mut();
        // SAFETY: per the contract; valid out-pointers; the name is a valid UTF-8 literal.
        unsafe {
            if sys::napi_create_reference(env, doorbell, 1, &mut reference) != sys::Status::napi_ok {
                return None;
            }
            sys::napi_create_string_utf8(env, c"zerohop.doorbell".as_ptr(), -1, &mut name);
            sys::napi_async_init(env, ptr::null_mut(), name, &mut context);
        }
        let js = Js { env, doorbell: reference, context };
        let poll = Poll { handle: vec![0u64; size.div_ceil(8)], on_readable, polling: false };
        let block = Box::into_raw(Box::new(Block { poll, js, state }));
        // SAFETY: `block` is ours and alive; its handle memory is `size` bytes, 8-aligned,
        // and stays where it is (the Box is not moved) until the close callback frees it.
        unsafe {
            let handle = (*block).poll.ptr();
            if uv_poll_init(event_loop, handle, fd) != 0 {
                let b = Box::from_raw(block);
                sys::napi_delete_reference(env, b.js.doorbell);
                sys::napi_async_destroy(env, b.js.context);
                return None;
            }
            uv_handle_set_data(handle, block.cast());
            // Only an armed watcher keeps the loop alive.
            uv_unref(handle);
        }
        Some(block)
    }

    /// The poll handle and the state of `block`, apart.
    ///
    /// # Safety
    /// `block` must be alive (made by [`new`](Self::new), not yet closed), on the
    /// JavaScript thread (the only one that touches it), with no other reference to it
    /// held.
    pub(crate) unsafe fn parts<'a>(block: *mut Self) -> (&'a mut Poll, &'a Js, &'a mut S) {
        // SAFETY: per the contract.
        let block = unsafe { &mut *block };
        (&mut block.poll, &block.js, &mut block.state)
    }

    /// The block of the handle a poll callback was called with.
    ///
    /// # Safety
    /// `handle` must be the handle of a live block with state `S`, on the JavaScript thread.
    pub(crate) unsafe fn of<'a>(handle: *mut c_void) -> &'a mut Self {
        // SAFETY: per the contract: the data of every handle here is its block.
        unsafe { &mut *uv_handle_get_data(handle).cast::<Self>() }
    }

    /// Stops the handle and hands it to libuv to close; the block (and its state) is
    /// freed on the loop's next turn.
    ///
    /// # Safety
    /// `block` must be alive (made by [`new`](Self::new), not yet closed), on the
    /// JavaScript thread of its env; it is not used again.
    pub(crate) unsafe fn close(block: *mut Self) {
        // SAFETY: per the contract: the reference and the context are the block's; after
        // `uv_close` the block belongs to the close callback.
        unsafe {
            let js = &(*block).js;
            sys::napi_delete_reference(js.env, js.doorbell);
            sys::napi_async_destroy(js.env, js.context);
            uv_close((*block).poll.ptr(), Some(free_block::<S>));
        }
    }
}

/// libuv's close callback: the handle is done with; free its block.
unsafe extern "C" fn free_block<S>(handle: *mut c_void) {
    // SAFETY: the data of every handle here is its block, leaked by `Block::new`.
    drop(unsafe { Box::from_raw(uv_handle_get_data(handle).cast::<Block<S>>()) });
}

/// A libuv poll watcher on a hub's readiness descriptor; JavaScript thread only.
pub struct Watcher {
    block: *mut Block<State>,
}

impl Watcher {
    /// Watches `ring.readiness_fd()` on `env`'s loop; `None` where libuv refuses it (the
    /// threadsafe doorbell then does the waking).
    ///
    /// # Safety
    /// `env` must be the env of the current call (on the JavaScript thread), and
    /// `doorbell` a function value of it.
    pub unsafe fn new(
        env: sys::napi_env,
        doorbell: sys::napi_value,
        link: Arc<dyn Link>,
        ring: Arc<dyn ReadInPlace>,
    ) -> Option<Watcher> {
        let fd = ring.readiness_fd();
        let state = State { link, ring, cursor: 0, armed: false, ring_on_its_way: false };
        // SAFETY: per this function's contract.
        let block = unsafe { Block::new(env, doorbell, fd, on_readable, state) }?;
        Some(Watcher { block })
    }

    fn parts(&mut self) -> (&mut Poll, &mut State) {
        // SAFETY: `block` lives until `drop` closes it; JavaScript thread only.
        let (poll, _, state) = unsafe { Block::parts(self.block) };
        (poll, state)
    }

    /// Asks for one doorbell ring once the ring's tail passes `cursor`: the transport
    /// arms for other threads' deliveries, and libuv watches the socket meanwhile. While
    /// armed, the watcher keeps the event loop alive, as a pending read of a Node socket
    /// does.
    pub fn arm(&mut self, cursor: u64) {
        let (poll, state) = self.parts();
        state.cursor = cursor;
        state.armed = true;
        state.ring.arm(cursor, true);
        poll.start();
        poll.hold_loop(true);
    }

    /// Cancels an `arm`.
    pub fn disarm(&mut self) {
        let (poll, state) = self.parts();
        state.armed = false;
        state.ring_on_its_way = false; // nobody waits for it any more
        stop(poll, state);
        state.ring.disarm();
    }

    /// Another thread rang the doorbell (through the threadsafe function): the wait is
    /// over. Polling goes on (see [`Poll::polling`]) without holding the loop.
    pub fn rung_elsewhere(&mut self) {
        let (poll, state) = self.parts();
        if state.armed || state.ring_on_its_way {
            state.armed = false;
            state.ring_on_its_way = false;
            poll.hold_loop(false);
        }
    }

    /// Whether the loop is kept alive while armed (by the watcher itself).
    pub fn keeps_loop_alive(&self) -> bool {
        true
    }
}

impl Drop for Watcher {
    /// Stops watching; libuv frees the handle's memory on its next turn.
    fn drop(&mut self) {
        self.disarm();
        // SAFETY: on the JavaScript thread with its env (watchers live in hub handles,
        // dropped by `close` or the handle's finalizer); the block is not used again.
        unsafe { Block::close(self.block) };
    }
}

/// Stops libuv's polling, and tells the transport it reads its socket itself again.
fn stop(poll: &mut Poll, state: &State) {
    poll.hold_loop(false);
    poll.stop();
    state.ring.unwatch();
}

/// The socket is readable (on the JavaScript thread): read it into the ring, and ring
/// the doorbell if the reader's cursor is readable now. The transport finishes its turn
/// (acknowledgements, timers) after the doorbell, so that an answer the reader
/// publishes from it goes first.
unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
    // SAFETY: the data of every handle here is its block; the loop runs this on the
    // JavaScript thread, the only one that touches the state.
    let block = unsafe { Block::<State>::of(handle) };
    let (poll, js, state) = (&mut block.poll, &block.js, &mut block.state);
    if status < 0 {
        // libuv stopped the handle on an error condition (POLLERR: a connected socket's
        // ICMP "port unreachable", say). The pump below reads the error, which clears it;
        // polling starts again when the reader waits again.
        poll.stopped();
    }
    let link = state.link.clone();
    if !state.armed {
        let _ = link.pump();
        if state.ring_on_its_way {
            // Polling goes on (again, if an error stopped it): an active, referenced
            // handle is what holds the loop until the other thread's ring arrives.
            poll.start();
        } else {
            // Nobody waits: stop until someone does (the transport's I/O thread reads).
            stop(poll, state);
        }
        return;
    }
    // Take the arm first, so that what the pump delivers does not ring the threadsafe
    // doorbell (a hop through the loop's async handle): this callback rings it directly.
    let rung_elsewhere = !state.ring.disarm();
    // An error is the transport closing: the reader learns of it from its own calls.
    let _ = link.pump_then(&mut || {
        if rung_elsewhere {
            // Another thread rang already: its ring is on its way, and the loop stays
            // held until it comes (`Watcher::rung_elsewhere`).
            state.armed = false;
            state.ring_on_its_way = true;
            poll.start();
            return;
        }
        if table::tail(state.ring.segment()) <= state.cursor {
            // Acknowledgements only: wait on (the arm rings at once if a message came meanwhile).
            state.ring.arm(state.cursor, true);
            poll.start();
            return;
        }
        state.armed = false;
        // Polling goes on (see `Poll::polling`), without holding the loop.
        poll.hold_loop(false);
        // SAFETY: on the JavaScript thread of its env, inside libuv's callback. JavaScript
        // may arm again (or close the hub) from the doorbell, reaching the state through
        // the handle: nothing here touches `state` after the call.
        unsafe { js.ring() };
    });
}

/// Calls the doorbell function.
///
/// # Safety
/// On the JavaScript thread of `env`, outside any other call into JavaScript;
/// `doorbell` and `context` are the state's, created on `env`.
unsafe fn ring_doorbell(env: sys::napi_env, doorbell: sys::napi_ref, context: sys::napi_async_context) {
    // SAFETY: per the contract; every value is created in the scope opened here;
    // `napi_make_callback` runs microtasks after the call, as an I/O callback of Node's
    // own would.
    unsafe {
        let mut scope = ptr::null_mut();
        sys::napi_open_handle_scope(env, &mut scope);
        let (mut function, mut recv, mut result) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        sys::napi_get_reference_value(env, doorbell, &mut function);
        sys::napi_get_global(env, &mut recv); // must be an object: napi_make_callback converts it
        if !function.is_null()
            && sys::napi_make_callback(env, context, recv, function, 0, ptr::null(), &mut result)
                == sys::Status::napi_pending_exception
        {
            let mut error = ptr::null_mut();
            sys::napi_get_and_clear_last_exception(env, &mut error);
            sys::napi_fatal_exception(env, error);
        }
        sys::napi_close_handle_scope(env, scope);
    }
}
