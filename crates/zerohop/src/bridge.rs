//! [`Bridge`]: forwards what one hub receives to another, and back if asked: local hubs
//! to a NATS subject (`shm://prices` ⇄ `nats://server/prices`), so that several local
//! processes publish through shared memory and one bridge carries the stream across sites.
//!
//! Each direction runs off any event loop: a NATS source's own I/O thread publishes each
//! message it reads straight into the destination ([`Hub::forward_to`]); other sources
//! get a thread of the bridge's, which waits on the source hub, takes what waits there
//! (up to a batch), publishes each message to the destination through its [`Link`], and
//! flushes once per batch. Only messages are forwarded (not requests or their answers).
//!
//! No echo. A hub never receives its own publishes, so what a bridge put on one side
//! never comes back to it on that side; NATS does not echo a connection's own messages
//! either; and a `nats://` side carries the bridge's **origin** in a header on
//! everything it publishes and drops what comes back with it (through another bridge
//! of the same origin).
//!
//! No loops. Each side is a bridge's ([`Hub::set_bridge_side`]): what a bridge brings
//! into shared memory is marked there as bridged, and a bridge's reader passes over what
//! is marked, so a message crosses at most one bridge into a segment and one out of it
//! (as NATS routes do not pass on what came from a route), and bridges may form any
//! graph, cycles included.
//!
//! A destination that is behind (its socket draining) is waited for, so the source's
//! own backpressure applies; one that stays without room (a NATS server gone,
//! `sendQueueBytes` full) gets what finds no room dropped, counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerohop_transport::{Endpoint, Error, ForwardCounts, Kind, Link, Options, Result, Target, TransportKind, Value};

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
    /// Each direction's thread, which gives its source hub back when it stops.
    threads: Vec<JoinHandle<Hub>>,
    /// The hubs no thread holds (a side only written to; all of them once closed).
    kept: Vec<Hub>,
    out: Arc<ForwardCounts>,
    r#in: Arc<ForwardCounts>,
    /// The destinations' shareable handles (what is flushed and lingered over at close).
    links: Vec<Arc<dyn Link>>,
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
        // Each side: read (the source of a direction), written (its destination), or both.
        for (url, options, reads, written) in [
            (local, &mut local_options, direction.out(), direction.r#in()),
            (remote, &mut remote_options, direction.r#in(), direction.out()),
        ] {
            let endpoint = Endpoint::parse(url)?;
            if let Target::Subject { subject, .. } = endpoint.target()
                && written
                && !zerohop_proto::nats::valid_subject(subject, false)
            {
                return Err(Error::bad_option(format!(
                    "{url}: a bridge publishes there, and '{subject}' has wildcards (it only subscribes)"
                )));
            }
            let given = |options: &Options, name: &str| options.has(name) || endpoint.param(name).is_some();
            // A side only written to receives nothing (a NATS side subscribes to nothing,
            // rather than be sent the subject to drop); one only read publishes nothing.
            match (reads, written, endpoint.kind()) {
                (false, true, TransportKind::Nats) if !given(options, "subscribe") => {
                    options.put_back("subscribe", Value::Bool(false));
                }
                (false, true, _) if !given(options, "role") => {
                    options.put_back("role", Value::Text("publisher".into()))
                }
                (true, false, _) if !given(options, "role") => {
                    options.put_back("role", Value::Text("subscriber".into()))
                }
                _ => {}
            }
            // Into shared memory, the bridge waits for its readers rather than overwrite
            // what they have not read (the other side holds or drops, counted).
            if written && endpoint.kind() == TransportKind::Shm && !given(options, "backpressure") {
                options.put_back("backpressure", Value::Text("block".into()));
            }
            if endpoint.kind() == TransportKind::Nats {
                if !given(options, "origin") {
                    options.put_back("origin", Value::Text(origin.clone()));
                }
                // The bridge itself waits for a server that is behind (see `forward`):
                // the hub drops what finds no room, counted, once it stays without.
                if written && !given(options, "backpressure") {
                    options.put_back("backpressure", Value::Text("drop_new".into()));
                }
            }
        }
        let mut a = Hub::open_named(local, local_options)?;
        let mut b = match Hub::open_named(remote, remote_options) {
            Ok(b) => b,
            Err(e) => {
                a.close();
                return Err(e);
            }
        };
        for hub in [&mut a, &mut b] {
            hub.set_bridge_side();
        }
        let opened = || -> Result<[Option<Arc<dyn Link>>; 2]> {
            // (A side only read has no link: it publishes nothing.) Each destination is
            // flushed once a batch: what it sends or wakes waits for that.
            let local = direction.r#in().then(|| a.link()).transpose()?;
            let remote = direction.out().then(|| b.link()).transpose()?;
            for link in [&local, &remote].into_iter().flatten() {
                link.set_caller_flushes();
            }
            // (A network side's link waits for it, read or written: a NATS side for the
            // server's confirmation of its subscription.)
            for hub in [&a, &b] {
                if let Ok(link) = hub.link() {
                    link.wait_open()?;
                }
            }
            Ok([local, remote])
        };
        let [local_link, remote_link] = match opened() {
            Ok(links) => links,
            Err(e) => {
                a.close();
                b.close();
                return Err(e);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (out, r#in) = (Arc::new(ForwardCounts::default()), Arc::new(ForwardCounts::default()));
        let mut bridge = Bridge {
            stop: stop.clone(),
            threads: Vec::new(),
            kept: Vec::new(),
            out: out.clone(),
            r#in: r#in.clone(),
            links: [local_link.clone(), remote_link.clone()].into_iter().flatten().collect(),
        };
        // Each direction forwarded by its source's own thread where the transport can
        // (a NATS hub's I/O thread publishes each message it reads straight into the
        // destination), else by a thread of the bridge's that owns the source and gives
        // it back when stopped; a side nothing is read from stays with the bridge.
        for (from, to, counts, name) in
            [(a, remote_link, out, "zerohop-bridge-out"), (b, local_link, r#in, "zerohop-bridge-in")]
        {
            let Some(to) = to else {
                bridge.kept.push(from);
                continue;
            };
            if from.forward_to(to.clone(), counts.clone()).is_ok() {
                bridge.kept.push(from);
                continue;
            }
            let stop = stop.clone();
            let mut from = from;
            let thread = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    forward(&mut from, &*to, &counts, &stop);
                    from
                })
                .map_err(|e| Error::io("spawn a bridge thread", e))?;
            bridge.threads.push(thread);
        }
        Ok(bridge)
    }

    pub fn metrics(&self) -> BridgeMetrics {
        let of = |c: &ForwardCounts| DirectionMetrics {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: c.forwarded_bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        };
        BridgeMetrics { out: of(&self.out), r#in: of(&self.r#in) }
    }

    /// Stops forwarding; what was forwarded is given up to `linger` to reach the other
    /// side, then both hubs close. Idempotent.
    pub fn close(&mut self, linger: Duration) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // The threads stop first (each at most a wait on its source away), and give their
        // sources back: nothing they took is lost to a destination closed under them.
        for t in self.threads.drain(..) {
            if let Ok(hub) = t.join() {
                self.kept.push(hub);
            }
        }
        for link in &self.links {
            let _ = link.flush();
        }
        for link in &self.links {
            link.linger(linger);
        }
        for hub in &mut self.kept {
            hub.close();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// Forwards what `from` receives to `to` until `stop`.
fn forward(from: &mut Hub, to: &dyn Link, counts: &ForwardCounts, stop: &AtomicBool) {
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
                    while !to.wait_room(0, buf.len(), WAIT) && !stop.load(Ordering::Relaxed) {
                        if since.elapsed() > STALL {
                            stalled = true;
                            break;
                        }
                    }
                }
            } else {
                stalled = false;
            }
            let published = match info.expiry_ns {
                Some(at) => to.publish_expiring(0, &buf, at),
                None => to.publish(0, &buf),
            };
            if !counts.count(published, buf.len()) {
                return; // the destination closed
            }
        }
        if taken > 0 {
            let _ = to.flush();
        }
    }
}

/// The origin of a bridge of `local` on this host: short, since every message it
/// forwards to NATS carries it (a hash of the machine's id, its name and the local URL:
/// cloned machines share a name).
fn default_origin(local: &str) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let host = read("/etc/machine-id") + &read("/proc/sys/kernel/hostname");
    // FNV-1a: stable across runs and builds (what `std`'s hasher is not).
    let hash = format!("{}/{local}", host.trim())
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}
