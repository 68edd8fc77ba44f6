//! [`Bridge`]: forwards what one hub receives to another, and back if asked: local hubs
//! to a NATS subject (`shm://prices` ⇄ `nats://server/prices`), so that several local
//! processes publish through shared memory and one bridge carries the stream across sites.
//!
//! Each direction is a thread of its own, off any event loop: it waits on the source hub,
//! takes what waits there (up to a batch), publishes each message to the destination
//! through its [`Link`], and flushes once per batch. Only messages are forwarded (not
//! requests or their answers).
//!
//! Loops cannot form. A hub never receives its own publishes, so what a bridge put on one
//! side never comes back to it on that side; NATS does not echo a connection's own
//! messages either; and a `nats://` side carries the bridge's **origin** in a header on
//! everything it publishes and drops what comes back with it (through another bridge
//! of the same origin). A destination that is behind (its socket draining) is waited
//! for, so the source's own backpressure applies; one that stays without room (a NATS
//! server gone, `sendQueueBytes` full) gets what finds no room dropped, counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerohop_transport::{
    Delivery, Endpoint, Error, ErrorCode, Kind, Link, Options, Result, Target, TransportKind, Value,
};

use crate::hub::Hub;

/// Which way a bridge forwards, from its local side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Local to remote.
    Out,
    /// Remote to local.
    In,
    Both,
}

impl Direction {
    fn out(self) -> bool {
        self != Direction::In
    }

    fn r#in(self) -> bool {
        self != Direction::Out
    }
}

/// Messages taken from a source before the destination is flushed.
const BATCH: usize = 256;

/// How long a forwarding thread waits on its source before it looks whether to stop.
const WAIT: Duration = Duration::from_millis(50);

/// How long a destination with no room may stay still before the bridge stops waiting
/// for it and drops what finds no room.
const STALL: Duration = Duration::from_secs(1);

/// How often a bridge looks whether a destination has room again.
const ROOM_POLL: Duration = Duration::from_micros(200);

/// What one direction counted.
#[derive(Debug, Default)]
struct Counts {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped: AtomicU64,
}

/// A bridge's counters: each direction's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeMetrics {
    /// Local to remote: messages and bytes forwarded, and dropped for want of room.
    pub out: DirectionMetrics,
    /// Remote to local.
    pub r#in: DirectionMetrics,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionMetrics {
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    pub dropped: u64,
}

/// See the module docs.
pub struct Bridge {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    out: Arc<Counts>,
    r#in: Arc<Counts>,
    /// The hubs' shareable handles (for what lingers at close).
    local: Arc<dyn Link>,
    remote: Arc<dyn Link>,
}

impl core::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bridge").field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

impl Bridge {
    /// Opens `local` and `remote` with their options (by name) and starts forwarding
    /// `direction`. A `nats://` side gets `origin` (default: a hash of this host's name and the
    /// local URL), unless its options name one.
    pub fn start(
        local: &str,
        mut local_options: Options,
        remote: &str,
        mut remote_options: Options,
        direction: Direction,
        origin: Option<String>,
    ) -> Result<Bridge> {
        let origin = origin.unwrap_or_else(|| default_origin(local));
        for (url, options, publishes) in
            [(local, &mut local_options, direction.r#in()), (remote, &mut remote_options, direction.out())]
        {
            let endpoint = Endpoint::parse(url)?;
            if let Target::Subject { subject, .. } = endpoint.target()
                && publishes
                && !zerohop_proto::nats::valid_subject(subject, false)
            {
                return Err(Error::bad_option(format!(
                    "{url}: a bridge publishes there, and '{subject}' has wildcards (it only subscribes)"
                )));
            }
            let given = |options: &Options, name: &str| options.has(name) || endpoint.param(name).is_some();
            // Into shared memory, the bridge waits for its readers rather than overwrite
            // what they have not read (the other side holds or drops, counted).
            if endpoint.kind() == TransportKind::Shm && !given(options, "backpressure") {
                options.push("backpressure", Value::Text("block".into()));
            }
            if endpoint.kind() == TransportKind::Nats {
                if !given(options, "origin") {
                    options.push("origin", Value::Text(origin.clone()));
                }
                // What finds no room is dropped and counted, rather than holding up the
                // other direction's source (which would lose it uncounted).
                if !given(options, "backpressure") {
                    options.push("backpressure", Value::Text("drop_new".into()));
                }
            }
        }
        let mut a = Hub::open_named(local, local_options)?;
        let mut b = Hub::open_named(remote, remote_options)?;
        for hub in [&a, &b] {
            if let Ok(batching) = hub.batching() {
                batching.set_caller_flushes();
            }
        }
        let (local, remote) = (a.link()?, b.link()?);
        if let Err(e) = local.wait_open().and_then(|()| remote.wait_open()) {
            a.close();
            b.close();
            return Err(e);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (out, r#in) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let mut threads = Vec::new();
        let spawn = |mut from: Hub, to: Arc<dyn Link>, counts: Arc<Counts>, forwards: bool, name: &str| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if forwards {
                        forward(&mut from, &*to, &counts, &stop);
                    } else {
                        // Not forwarded this way: the hub only keeps its side open.
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::park_timeout(WAIT);
                        }
                    }
                    from.close();
                })
                .map_err(|e| Error::io("spawn a bridge thread", e))
        };
        threads.push(spawn(a, remote.clone(), out.clone(), direction.out(), "zerohop-bridge-out")?);
        threads.push(spawn(b, local.clone(), r#in.clone(), direction.r#in(), "zerohop-bridge-in")?);
        Ok(Bridge { stop, threads, out, r#in, local, remote })
    }

    pub fn metrics(&self) -> BridgeMetrics {
        let of = |c: &Counts| DirectionMetrics {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: c.forwarded_bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        };
        BridgeMetrics { out: of(&self.out), r#in: of(&self.r#in) }
    }

    /// Stops forwarding; what was forwarded is given up to `linger` to reach the other
    /// side. Idempotent.
    pub fn close(&mut self, linger: Duration) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = (self.local.flush(), self.remote.flush());
        self.local.linger(linger);
        self.remote.linger(linger);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// Forwards what `from` receives to `to` until `stop`.
fn forward(from: &mut Hub, to: &dyn Link, counts: &Counts, stop: &AtomicBool) {
    let mut buf = Vec::new();
    let mut stalled = false;
    while !stop.load(Ordering::Relaxed) {
        let mut taken = 0;
        let mut wait = Some(WAIT);
        while taken < BATCH {
            let got = match wait.take() {
                Some(w) => from.recv(&mut buf, Some(w)),
                None => from.try_recv(&mut buf),
            };
            let info = match got {
                Ok(Some(info)) => info,
                Ok(None) => break,
                Err(_) => return, // the hub closed
            };
            taken += 1;
            if info.kind != Kind::Message {
                continue;
            }
            if !to.has_room(0, buf.len()) {
                // The destination is behind: wait while it moves (its socket drains); one
                // that has not moved for `STALL` is cut off (its bound full: no server),
                // and what finds no room is dropped, counted, until it has room again.
                if !stalled {
                    let _ = to.flush();
                    let since = Instant::now();
                    while !to.has_room(0, buf.len()) && !stop.load(Ordering::Relaxed) {
                        if since.elapsed() > STALL {
                            stalled = true;
                            break;
                        }
                        std::thread::sleep(ROOM_POLL);
                    }
                }
            } else {
                stalled = false;
            }
            match to.publish(0, &buf) {
                Ok(Delivery::Accepted) => {
                    counts.forwarded.fetch_add(1, Ordering::Relaxed);
                    counts.forwarded_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                }
                Ok(Delivery::Dropped) => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.code() == ErrorCode::Closed => return,
                Err(_) => {
                    // No room within the destination's bound (or too large for it).
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if taken > 0 {
            let _ = to.flush();
        }
    }
}

/// The origin of a bridge of `local` on this host: short, since every message it
/// forwards to NATS carries it (a hash of the host's name and the local URL).
fn default_origin(local: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    // FNV-1a: stable across runs and builds (what `std`'s hasher is not).
    let hash = format!("{}/{local}", host.trim())
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}
