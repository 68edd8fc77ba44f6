//! `NetHandle`: any network hub (`udp://`, `quic://`, and what comes next) for JavaScript.
//!
//! One class for every network transport: it opens a [`zerohop::Hub`] with the options
//! object as given (the hub and its transport take their own, and refuse the rest), and
//! offers each capability as a method that throws `ERR_UNSUPPORTED_TRANSPORT` where the
//! transport lacks it. Publishing enters Rust once per message through the link
//! ([`crate::fast`]). Receiving does not come through here: messages land in the
//! transport's receive ring, which [`NetHandle::ring`] hands to JavaScript as a
//! [`ShmHandle`], read in place like a `shm://` segment.
//!
//! A parked reader is woken from its own event loop ([`Watcher`]) where libuv allows,
//! and by the transport's threads through a threadsafe function for what they deliver.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use napi::JsValue;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use zerohop::status::status_name;
use zerohop::{Hub, Link, ReadInPlace, StatusEvent, Value};

use crate::waiter::Doorbell;
use crate::watch::Watcher;
use crate::{ShmHandle, closed, duration_ms, js_error};

/// A status change, as JavaScript gets it.
#[napi(object)]
pub struct NetStatusEvent {
    /// `connecting`, `connected`, `reconnecting`, `disconnected` or `closed`.
    pub status: String,
    /// The peer it is about (a listening hub's peers; a connecting hub's server).
    pub peer: Option<String>,
    /// `reconnecting`: the attempt under way or scheduled, from 1.
    pub attempt: Option<u32>,
    /// Why, as a stable error code and a message.
    pub code: Option<String>,
    pub message: Option<String>,
}

fn js_event(e: &StatusEvent) -> NetStatusEvent {
    let (status, attempt) = status_name(e.status);
    NetStatusEvent {
        status: status.to_owned(),
        peer: e.peer.clone(),
        attempt,
        code: e.error.as_ref().map(|e| e.code().as_str().to_owned()),
        message: e.error.as_ref().map(|e| e.message().to_owned()),
    }
}

type StatusCallback = ThreadsafeFunction<NetStatusEvent, (), NetStatusEvent, Status, false, true>;

/// A status listener that calls `callback` on the JavaScript thread (without keeping
/// the event loop alive).
pub(crate) fn status_listener(callback: Function<NetStatusEvent, ()>) -> Result<zerohop::StatusListener> {
    let tsfn: StatusCallback = callback.build_threadsafe_function().weak::<true>().build()?;
    Ok(Arc::new(move |e: &StatusEvent| {
        let _ = tsfn.call(js_event(e), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}

/// Waits (off the JavaScript thread) for what was published to reach its receivers.
pub struct LingerTask {
    link: Arc<dyn Link>,
    linger: Duration,
}

impl Task for LingerTask {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> Result<bool> {
        Ok(self.link.linger(self.linger))
    }

    fn resolve(&mut self, _env: Env, output: bool) -> Result<bool> {
        Ok(output)
    }
}

/// Waits (off the JavaScript thread) until the hub receives what others publish.
pub struct OpenTask {
    link: Arc<dyn Link>,
}

impl Task for OpenTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        self.link.wait_open().map_err(js_error)
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

/// What a network hub's transport can do besides publishing and receiving.
#[napi(object)]
pub struct Capabilities {
    /// `setPeers`.
    pub peers: bool,
    /// `flush`, `flushAtEndOfTurn`.
    pub batching: bool,
    /// `status`, `onStatus`.
    pub connections: bool,
    /// `request`, `cancel`, `respond`.
    pub requests: bool,
    /// `ready` waits (for the server's confirmation of the hub's first connection).
    pub waits_open: bool,
}

/// How a hub's waiting reader is woken: what `netArm(waker, cursor)` ([`crate::fast`])
/// arms. JavaScript thread only (shared with the waker external, not across threads).
pub struct Waker {
    ring: Arc<dyn ReadInPlace>,
    /// libuv watching the socket, where it can (else the transport's threads ring).
    watcher: RefCell<Option<Watcher>>,
    closed: Cell<bool>,
}

impl Waker {
    /// Rings the doorbell once the ring's tail passes `cursor` (at once if it has);
    /// false once the hub is closed.
    pub fn arm(&self, cursor: u64) -> bool {
        if self.closed.get() {
            return false;
        }
        match &mut *self.watcher.borrow_mut() {
            Some(w) => w.arm(cursor),
            None => self.ring.arm(cursor, false),
        }
        true
    }

    fn disarm(&self) {
        match &mut *self.watcher.borrow_mut() {
            Some(w) => w.disarm(),
            None => {
                self.ring.disarm();
            }
        }
    }
}

/// A network hub.
#[napi]
pub struct NetHandle {
    hub: Option<Hub>,
    link: Arc<dyn Link>,
    ring: Arc<dyn ReadInPlace>,
    /// The hub's place in its receive ring, until JavaScript's reader takes it (`ring()`).
    place: Option<zerohop::RingPlace>,
    waker: Rc<Waker>,
}

impl NetHandle {
    fn hub(&self) -> Result<&Hub> {
        self.hub.as_ref().ok_or_else(closed)
    }
}

#[napi]
impl NetHandle {
    /// Opens `url` with `options` (an object of options by name; `undefined` for none).
    #[napi(factory, ts_args_type = "url: string, options?: object")]
    pub fn open(env: Env, url: String, options: Unknown) -> Result<NetHandle> {
        // SAFETY: `options` is an argument of this call, on its env.
        let named = unsafe { crate::options::from_js(env.raw(), options.raw()) }.map_err(js_error)?;
        let mut hub = Hub::open_named(&url, named).map_err(js_error)?;
        let link = hub.link().map_err(js_error)?;
        let ring = hub.read_in_place().map_err(js_error)?;
        // JavaScript reads the ring from the hub's place in it (claimed through `ring()`).
        let place = hub.detach_reader();
        let waker = Rc::new(Waker { ring: ring.clone(), watcher: RefCell::new(None), closed: Cell::new(false) });
        Ok(NetHandle { hub: Some(hub), link, ring, place, waker })
    }

    /// The hub's settings, with the transport's defaults filled in.
    #[napi]
    pub fn settings(&self) -> Result<crate::HubSettings> {
        Ok(self.hub()?.settings().into())
    }

    /// The scheme (`udp`, `quic`, …).
    #[napi]
    pub fn transport(&self) -> Result<String> {
        Ok(self.hub()?.endpoint().kind().scheme().to_owned())
    }

    /// The hot path: what `netBind(link)` binds `publish`, `publishStaged` and `pump` to
    /// (see [`crate::fast`]).
    #[napi(ts_return_type = "unknown")]
    pub fn link<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let value = crate::fast::link_external(env, self.link.clone())?;
        // SAFETY: `value` was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
    }

    /// The receive ring, for reading in place.
    #[napi]
    pub fn ring(&mut self) -> Result<ShmHandle> {
        self.hub()?;
        Ok(ShmHandle::from_segment(self.ring.segment().clone(), self.place.take()))
    }

    /// Largest message in bytes.
    #[napi]
    pub fn max_message_size(&self) -> Result<f64> {
        Ok(self.hub()?.max_message_size() as f64)
    }

    /// The bound address as `host:port` (`[v6]:port`).
    #[napi]
    pub fn local_address(&self) -> Result<Option<String>> {
        Ok(self.hub()?.local_addr().map(|a| a.to_string()))
    }

    /// The event loop flushes at the end of every turn it published in, if the
    /// transport batches: whether it does (then call `flush` so), and from now on its
    /// batches wait for those flushes rather than for a timer.
    #[napi]
    pub fn flush_at_end_of_turn(&self) -> Result<bool> {
        let Ok(b) = self.hub()?.batching() else { return Ok(false) };
        if !b.flushes_at_end_of_turn() {
            return Ok(false);
        }
        b.set_caller_flushes();
        Ok(true)
    }

    /// Which capabilities the transport has (the methods of the others throw
    /// `ERR_UNSUPPORTED_TRANSPORT`).
    #[napi]
    pub fn capabilities(&self) -> Result<Capabilities> {
        let hub = self.hub()?;
        Ok(Capabilities {
            peers: hub.peers().is_ok(),
            batching: hub.batching().is_ok(),
            connections: hub.connection().is_ok(),
            requests: hub.requests().is_ok(),
            waits_open: self.link.waits_open(),
        })
    }

    /// Whether the hub connects to one server (its status events are its own), or
    /// accepts peers (events with a peer are about that peer).
    #[napi]
    pub fn connects(&self) -> Result<bool> {
        self.hub()?.connection().map(|c| c.connects()).map_err(js_error)
    }

    /// Publishes `data` on `channel` with the time after which it is not worth reading
    /// (`ttlMs`: `expires_at_ms`, ms since the Unix epoch); false if the policy dropped it.
    #[napi]
    pub fn publish_expiring(&self, data: &[u8], channel: u32, expires_at_ms: f64) -> Result<bool> {
        self.hub()?;
        let expiry_ns = (expires_at_ms.max(1.0) * 1e6) as u64;
        let delivery = self.link.publish_expiring(channel as u16, data, expiry_ns).map_err(js_error)?;
        Ok(delivery == zerohop::Delivery::Accepted)
    }

    /// Publishes `data.len() / size` messages of `size` bytes laid end to end.
    #[napi]
    pub fn publish_packed(&self, data: &[u8], size: u32) -> Result<u32> {
        self.hub()?;
        self.link.publish_packed(0, data, size as usize).map(|n| n as u32).map_err(js_error)
    }

    /// Sends what is batched now.
    #[napi]
    pub fn flush(&self) -> Result<()> {
        self.hub()?.batching().and_then(|b| b.flush()).map_err(js_error)
    }

    /// Replaces where published messages go.
    #[napi]
    pub fn set_peers(&self, peers: Vec<String>) -> Result<()> {
        self.hub()?.peers().and_then(|p| p.set_peers(&peers)).map_err(js_error)
    }

    /// Sends a request; returns its key. The answer arrives in the ring with envelope
    /// kind 2 (or 3: failed) and that key.
    #[napi]
    pub fn request(&self, data: &[u8]) -> Result<f64> {
        self.hub()?.requests().and_then(|r| r.request(data)).map(|k| k as f64).map_err(js_error)
    }

    /// Gives up on request `key`; false if it had ended.
    #[napi]
    pub fn cancel(&self, key: f64) -> Result<bool> {
        self.hub()?.requests().map(|r| r.cancel(key as u64)).map_err(js_error)
    }

    /// Answers request `key` (received with envelope kind 1); false if it is gone.
    #[napi]
    pub fn respond(&self, key: f64, ok: bool, data: &[u8]) -> Result<bool> {
        self.hub()?.requests().map(|r| r.respond(key as u64, ok, data)).map_err(js_error)
    }

    /// The subject numbered `id` in a received message's envelope (`nats://`), while the
    /// hub still knows it.
    #[napi]
    pub fn subject(&self, id: u32) -> Result<Option<String>> {
        Ok(self.hub()?.subject(id))
    }

    /// The bytes of a message too large for its slot (the envelope gives the key).
    #[napi]
    pub fn take_spilled(&self, key: f64) -> Result<Buffer> {
        let bytes = self.ring.take_spilled(key as u64).ok_or_else(|| {
            js_error(zerohop::Error::new(zerohop::ErrorCode::InvalidState, "that large message was already taken"))
        })?;
        Ok(bytes.into())
    }

    /// Installs the doorbell: `callback` runs on the JS thread when an armed reader may
    /// read; when it was another thread that rang (through a threadsafe function),
    /// `threaded` runs instead, and should call [`rung_elsewhere`](Self::rung_elsewhere).
    #[napi]
    pub fn set_doorbell(&mut self, env: Env, callback: Function<u32, ()>, threaded: Function<u32, ()>) -> Result<()> {
        self.hub()?;
        // SAFETY: `callback` is a function argument of this call, on its env.
        *self.waker.watcher.borrow_mut() =
            unsafe { Watcher::new(env.raw(), callback.raw(), self.link.clone(), self.ring.clone()) };
        let tsfn: Doorbell =
            threaded.build_threadsafe_function::<u32>().weak::<true>().max_queue_size::<1>().build()?;
        let tsfn = Arc::new(tsfn);
        self.ring.set_doorbell(Some(Arc::new(move || {
            // QueueFull means a ring is already pending: that one suffices.
            let _ = tsfn.call(0, ThreadsafeFunctionCallMode::NonBlocking);
        })));
        Ok(())
    }

    /// Whether an armed doorbell keeps the event loop alive by itself (the reader's loop
    /// watches the socket); otherwise the caller holds it while it waits.
    #[napi]
    pub fn arm_keeps_loop_alive(&self) -> bool {
        self.waker.watcher.borrow().as_ref().is_some_and(Watcher::keeps_loop_alive)
    }

    /// What `netArm(waker, cursor)` takes (see [`crate::fast`]): arming, once per wait,
    /// without a `#[napi]` method's cost.
    #[napi(ts_return_type = "unknown")]
    pub fn waker<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let value = crate::fast::waker_external(env, self.waker.clone())?;
        // SAFETY: `value` was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
    }

    /// Cancels an arm.
    #[napi]
    pub fn disarm(&self) {
        self.waker.disarm();
    }

    /// The doorbell was rung by another thread: the wait it armed is over (the watcher
    /// no longer holds the loop for it).
    #[napi]
    pub fn rung_elsewhere(&self) {
        if let Some(w) = &mut *self.waker.watcher.borrow_mut() {
            w.rung_elsewhere();
        }
    }

    /// Calls `callback` with every status event from now on (and the ones so far).
    #[napi]
    pub fn on_status(&self, callback: Function<NetStatusEvent, ()>) -> Result<()> {
        let Ok(connection) = self.hub()?.connection() else { return Ok(()) };
        // Events from before the listener existed first, then the live ones.
        connection.set_status_listener(Some(status_listener(callback)?));
        Ok(())
    }

    /// The status now.
    #[napi]
    pub fn status(&self) -> String {
        self.hub.as_ref().map_or("closed", |h| status_name(h.status()).0).to_owned()
    }

    /// Counters: what every hub counts, and the transport's own under `details`.
    #[napi(
        ts_return_type = "{ published: number; publishedBytes: number; dropped: number; blocked: number; received: number; receivedBytes: number; rateLimited: number; details: Record<string, unknown>; chaos?: Record<string, unknown> }"
    )]
    pub fn metrics<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let m = self.hub()?.metrics();
        let mut out = Object::new(env)?;
        let n = |v: u64| v as f64;
        out.set("published", n(m.published))?;
        out.set("publishedBytes", n(m.published_bytes))?;
        out.set("dropped", n(m.dropped))?;
        out.set("blocked", n(m.blocked))?;
        out.set("received", n(m.received))?;
        out.set("receivedBytes", n(m.received_bytes))?;
        out.set("rateLimited", n(m.rate_limited))?;
        let mut details = Object::new(env)?;
        for (name, value) in &m.details {
            details.set(name, js_value(env, value)?)?;
        }
        out.set("details", details)?;
        if let Some(chaos) = &m.chaos {
            out.set("chaos", js_value(env, &chaos.to_value())?)?;
        }
        Ok(out)
    }

    /// Whether a `len`-byte message on `channel` would find room now (what `Hub.send` waits for).
    #[napi]
    pub fn has_room(&self, channel: u32, len: f64) -> Result<bool> {
        self.hub()?;
        Ok(self.link.has_room(channel as u16, len as usize))
    }

    /// Installs the room bell: `callback` runs on the JS thread (through a threadsafe
    /// function) once after each [`want_room`](Self::want_room), when the transport may
    /// have made room. False where the transport cannot tell: look by the clock.
    #[napi]
    pub fn set_room_bell(&self, callback: Function<u32, ()>) -> Result<bool> {
        self.hub()?;
        let tsfn: Doorbell =
            callback.build_threadsafe_function::<u32>().weak::<true>().max_queue_size::<1>().build()?;
        Ok(self.link.set_room_bell(Some(Arc::new(move || {
            // QueueFull means a ring is already pending: that one suffices.
            let _ = tsfn.call(0, ThreadsafeFunctionCallMode::NonBlocking);
        }))))
    }

    /// Asks for one ring of the room bell; then look at `hasRoom`.
    #[napi]
    pub fn want_room(&self) {
        self.link.want_room();
    }

    /// Resolves true once what was published has reached its receivers (over QUIC: been
    /// read by their applications), or false after `linger_ms`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn linger(&self, linger_ms: f64) -> Result<AsyncTask<LingerTask>> {
        self.hub()?;
        Ok(AsyncTask::new(LingerTask { link: self.link.clone(), linger: duration_ms(linger_ms) }))
    }

    /// Resolves once the hub receives what others publish (a `nats://` hub: once its
    /// server confirmed its first connection); rejects with what ended that attempt.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ready(&self) -> Result<AsyncTask<OpenTask>> {
        self.hub()?;
        Ok(AsyncTask::new(OpenTask { link: self.link.clone() }))
    }

    /// Sends what is queued, stops the transport's threads and closes its sockets. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.waker.closed.set(true);
        drop(self.waker.watcher.borrow_mut().take());
        self.link.set_room_bell(None);
        if let Some(mut hub) = self.hub.take() {
            // JavaScript reports its own `closed`: no late native one after it.
            if let Ok(c) = hub.connection() {
                c.set_status_listener(None);
            }
            hub.close();
        }
    }
}

/// A value of a transport's metrics as JavaScript sees it: lists become arrays, groups
/// objects.
fn js_value<'env>(env: &'env Env, value: &Value) -> Result<Unknown<'env>> {
    match value {
        Value::Number(v) => v.into_unknown(env),
        Value::Bool(v) => v.into_unknown(env),
        Value::Text(v) => v.as_str().into_unknown(env),
        Value::List(items) => {
            let mut array = env.create_array(items.len() as u32)?;
            for (i, item) in items.iter().enumerate() {
                array.set(i as u32, js_value(env, item)?)?;
            }
            array.into_unknown(env)
        }
        Value::Map(group) => {
            let mut object = Object::new(env)?;
            for (k, v) in group.entries() {
                object.set(k, js_value(env, v)?)?;
            }
            object.into_unknown(env)
        }
    }
}
