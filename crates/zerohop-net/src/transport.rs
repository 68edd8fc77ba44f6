//! [`NetTransport`]: the one [`Transport`] implementation of every network transport.
//!
//! A network transport brings its [`Protocol`] (publishing, its counters, its extras
//! such as peers or requests) and a [`Reader`] (its [`Driver`], which
//! reads the socket into the [`ReceiveRing`]); the core does the rest: receiving with
//! envelopes and spilled messages, waiting, the doorbell, status, metrics, roles and
//! counting what was published (or leaving that to a protocol whose publishes take one
//! lock anyway: [`PublishTally`]).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use zerohop_shm::{Segment, Subscriber};
use zerohop_transport::chaos::ChaosReport;
use zerohop_transport::rate::Limiter;
use zerohop_transport::status::{Status, StatusEvent};
use zerohop_transport::{
    Batching, Connection, Delivery, Doorbell, Error, ErrorCode, ForwardCounts, Link, MessageInfo, Metrics, Peers,
    ReadInPlace, Requests, Result, RingPlace, Settings, StatusListener, Transport, TransportKind, Value,
};

use crate::driver::{Drive, Driver};
use crate::envelope::{self, Envelope, Placement};
use crate::ring::ReceiveRing;

/// How long a waiting reader polls the socket before it parks, unless told otherwise:
/// longer than a loopback round trip, so that a quick answer skips the wake-up.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// What a network transport supplies to the core.
pub trait Protocol: Send + Sync + 'static {
    fn kind(&self) -> TransportKind;
    /// Largest message in bytes.
    fn max_message_size(&self) -> usize;
    /// Sends `payload` on `channel` (the core checked the role and counts it).
    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery>;
    /// Sends `payload` on `channel` with the time after which it is not worth reading
    /// (`ttlMs`: ns since the Unix epoch); a transport that cannot carry one refuses it.
    fn publish_expiring(&self, _channel: u16, _payload: &[u8], _expiry_ns: u64) -> Result<Delivery> {
        Err(no_ttl(self.kind()))
    }
    /// Sends the messages of `size` bytes laid end to end in `packed` (`size` divides
    /// it); how many were accepted. One by one unless the transport does better.
    fn publish_packed(&self, channel: u16, packed: &[u8], size: usize) -> Result<usize> {
        let mut n = 0;
        for m in packed.chunks_exact(size) {
            if self.publish(channel, m)? == Delivery::Accepted {
                n += 1;
            }
        }
        Ok(n)
    }
    /// The bound address.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// The transport's own counters and settings, by the names users see.
    fn details(&self) -> Vec<(&'static str, Value)>;
    /// Whether a `len`-byte message on `channel` would find room now (see
    /// [`Link::has_room`]); a transport that never waits nor drops for want of room
    /// always has it.
    fn has_room(&self, _channel: u16, _len: usize) -> bool {
        true
    }
    /// Waits up to `timeout` for [`has_room`](Self::has_room) (see [`Link::wait_room`]).
    fn wait_room(&self, channel: u16, len: usize, timeout: Duration) -> bool {
        zerohop_transport::transport::poll_room(|| self.has_room(channel, len), timeout)
    }
    /// What `?chaos=` did, if the hub injects faults.
    fn chaos(&self) -> Option<ChaosReport> {
        None
    }
    /// Waits up to `linger` for what was published to reach its receivers.
    fn linger(&self, _linger: Duration) -> bool {
        true
    }
    /// See [`Link::wait_open`].
    fn wait_open(&self) -> Result<()> {
        Ok(())
    }
    /// See [`Link::waits_open`].
    fn waits_open(&self) -> bool {
        false
    }
    /// Closes sockets and stops threads. Idempotent.
    fn close(&self);
    fn peers(&self) -> Option<&dyn Peers> {
        None
    }
    fn batching(&self) -> Option<&dyn Batching> {
        None
    }
    fn requests(&self) -> Option<&dyn Requests> {
        None
    }
    /// See [`Transport::subject`].
    fn subject(&self, _id: u32) -> Option<String> {
        None
    }
    /// See [`Transport::forward_to`].
    fn forward_to(&self, _to: Arc<dyn Link>, _counts: Arc<ForwardCounts>) -> Result<()> {
        Err(Error::unsupported(self.kind().scheme(), "forwarding on its own thread"))
    }
    /// Where the protocol counts what it publishes itself, under the lock every publish
    /// takes ([`PublishTally::count_locked`]); the core then does not count again.
    fn publish_tally(&self) -> Option<Arc<PublishTally>> {
        None
    }
}

/// What was published: messages, their bytes, and those some receiver did not get.
/// Counted by the core for every publish ([`count`](Self::count), atomic additions
/// from any thread), or by a protocol whose publishes all take one lock
/// ([`count_locked`](Self::count_locked), plain loads and stores under it): the two
/// atomic additions a publish took 8 % of a 64-byte QUIC stream's rate (2026-12-07).
/// Read at any time, after close too.
#[derive(Debug, Default)]
pub struct PublishTally {
    published: AtomicU64,
    published_bytes: AtomicU64,
    dropped: AtomicU64,
}

impl PublishTally {
    /// A publish of `len` bytes; `dropped` if some receiver did not get it.
    pub fn count(&self, len: usize, dropped: bool) {
        // Relaxed: counters, read by `metrics` with no ordering to keep.
        self.published.fetch_add(1, Ordering::Relaxed);
        self.published_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`count`](Self::count), by a caller holding the lock that every caller of this
    /// holds (and nobody counts this tally with `count`): a store then adds to what the
    /// last holder stored, with no read-modify-write.
    pub fn count_locked(&self, len: usize, dropped: bool) {
        let add = |c: &AtomicU64, n: u64| c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        add(&self.published, 1);
        add(&self.published_bytes, len as u64);
        if dropped {
            add(&self.dropped, 1);
        }
    }

    /// `accepted` messages of `size` bytes each, out of `offered`.
    fn count_packed(&self, accepted: usize, size: usize, offered: usize) {
        self.published.fetch_add(accepted as u64, Ordering::Relaxed);
        self.published_bytes.fetch_add((accepted * size) as u64, Ordering::Relaxed);
        self.dropped.fetch_add((offered - accepted) as u64, Ordering::Relaxed);
    }
}

/// The error of a transport without per-message time to live.
pub fn no_ttl(kind: TransportKind) -> Error {
    Error::bad_option(format!("{}:// hubs have no per-message time to live (ttlMs)", kind.scheme()))
}

/// The reader's side of a [`Driver`], whatever its engine.
pub trait Reader: Send + Sync {
    /// See [`Driver::pump`].
    fn pump(&self) -> Result<usize>;
    /// See [`Driver::pump_then`].
    fn pump_then(&self, reader: &mut dyn FnMut()) -> Result<usize>;
    fn reader_parks(&self);
    /// See [`Driver::reader_caught_up`].
    fn reader_caught_up(&self);
    fn set_watched(&self, watched: bool);
    fn readiness_fd(&self) -> RawFd;
    /// See [`Driver::set_room_bell`].
    fn set_room_bell(&self, bell: Option<Doorbell>);
    /// See [`Driver::want_room`].
    fn want_room(&self);
}

impl<D: Drive> Reader for Driver<D> {
    fn pump(&self) -> Result<usize> {
        Driver::pump(self)
    }

    fn pump_then(&self, reader: &mut dyn FnMut()) -> Result<usize> {
        Driver::pump_then(self, reader)
    }

    fn reader_parks(&self) {
        Driver::reader_parks(self)
    }

    fn set_room_bell(&self, bell: Option<Doorbell>) {
        Driver::set_room_bell(self, bell)
    }

    fn want_room(&self) {
        Driver::want_room(self)
    }

    fn reader_caught_up(&self) {
        Driver::reader_caught_up(self)
    }

    fn set_watched(&self, watched: bool) {
        Driver::set_watched(self, watched)
    }

    fn readiness_fd(&self) -> RawFd {
        Driver::readiness_fd(self)
    }
}

/// The hot path of a [`NetTransport`], shared with other threads (and JavaScript).
struct NetLink<P> {
    protocol: Arc<P>,
    reader: Arc<dyn Reader>,
    /// What was published, counted where every publish passes (Rust's or JavaScript's):
    /// here, or by the protocol (`by_protocol`).
    tally: Arc<PublishTally>,
    by_protocol: bool,
    can_publish: bool,
    /// The hub's rate limit, if it has one.
    limiter: Option<Limiter>,
    /// The time to live of every message published without one of its own (`ttlMs`).
    ttl: Option<Duration>,
}

impl<P: Protocol> NetLink<P> {
    /// What every publish goes through: the role, the rate limit, then `send`, counted.
    #[inline]
    fn publish_with(&self, payload: &[u8], send: impl FnOnce() -> Result<Delivery>) -> Result<Delivery> {
        if !self.can_publish {
            return Err(Error::role("publish"));
        }
        if let Some(l) = &self.limiter
            && !l.admit(payload.len())?
        {
            return Ok(Delivery::Dropped);
        }
        let delivery = send()?;
        if !self.by_protocol {
            self.tally.count(payload.len(), delivery == Delivery::Dropped);
        }
        Ok(delivery)
    }
}

impl<P: Protocol> Link for NetLink<P> {
    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        if let Some(ttl) = self.ttl {
            return self.publish_expiring(channel, payload, envelope::now_ns() + ttl.as_nanos() as u64);
        }
        self.publish_with(payload, || self.protocol.publish(channel, payload))
    }

    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery> {
        self.publish_with(payload, || self.protocol.publish_expiring(channel, payload, expiry_ns))
    }

    fn publish_packed(&self, channel: u16, packed: &[u8], size: usize) -> Result<usize> {
        if !self.can_publish {
            return Err(Error::role("publish"));
        }
        if size == 0 || !packed.len().is_multiple_of(size) {
            return Err(Error::bad_option(format!("messageSize {size} does not divide {} bytes", packed.len())));
        }
        if self.limiter.is_some() || self.ttl.is_some() {
            // One by one: each message meets the limit, or gets its expiry.
            let mut n = 0;
            for m in packed.chunks_exact(size) {
                match self.publish(channel, m) {
                    Ok(Delivery::Accepted) => n += 1,
                    Ok(Delivery::Dropped) => {}
                    Err(e) if e.code() == ErrorCode::Backpressure => break,
                    Err(e) => return Err(e),
                }
            }
            return Ok(n);
        }
        let n = self.protocol.publish_packed(channel, packed, size)?;
        if !self.by_protocol {
            self.tally.count_packed(n, size, packed.len() / size);
        }
        Ok(n)
    }

    fn pump(&self) -> Result<usize> {
        self.reader.pump()
    }

    fn pump_then(&self, reader: &mut dyn FnMut()) -> Result<usize> {
        self.reader.pump_then(reader)
    }

    fn flush(&self) -> Result<()> {
        self.protocol.batching().map_or(Ok(()), |b| b.flush())
    }

    fn set_caller_flushes(&self) {
        if let Some(b) = self.protocol.batching() {
            b.set_caller_flushes();
        }
    }

    fn linger(&self, linger: Duration) -> bool {
        self.protocol.linger(linger)
    }

    fn wait_open(&self) -> Result<()> {
        self.protocol.wait_open()
    }

    fn waits_open(&self) -> bool {
        self.protocol.waits_open()
    }

    fn has_room(&self, channel: u16, len: usize) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.has_room(len)) && self.protocol.has_room(channel, len)
    }

    fn set_room_bell(&self, bell: Option<Doorbell>) -> bool {
        self.reader.set_room_bell(bell);
        // (A rate limit makes room by the clock: looked at by the clock too.)
        self.limiter.is_none()
    }

    fn want_room(&self) {
        self.reader.want_room();
    }

    fn wait_room(&self, channel: u16, len: usize, timeout: Duration) -> bool {
        match &self.limiter {
            Some(l) => {
                zerohop_transport::transport::poll_room(|| l.has_room(len), timeout)
                    && self.protocol.has_room(channel, len)
            }
            None => self.protocol.wait_room(channel, len, timeout),
        }
    }
}

/// How a [`NetTransport`] is put together.
pub struct Parts<P> {
    pub protocol: Arc<P>,
    pub reader: Arc<dyn Reader>,
    pub ring: Arc<ReceiveRing>,
    /// The hub's settings, resolved by the transport ([`HubOptions::settings`]).
    ///
    /// [`HubOptions::settings`]: zerohop_transport::HubOptions::settings
    pub settings: Settings,
    /// Whether the hub has connections (its status, and its peers', change with them),
    /// or is connected until closed.
    pub connections: bool,
}

/// Reading the receive ring in place, with a cursor of one's own.
struct RingReader {
    reader: Arc<dyn Reader>,
    ring: Arc<ReceiveRing>,
}

/// A network transport: a protocol on the core.
pub struct NetTransport<P: Protocol> {
    link: Arc<NetLink<P>>,
    ring: Arc<ReceiveRing>,
    in_place: Arc<RingReader>,
    subscriber: Option<Subscriber>,
    settings: Settings,
    connections: bool,
    never_cancelled: AtomicBool,
    closed: bool,
    /// Bytes of the spilled messages read (their slots hold only the envelope).
    spilled_bytes: u64,
    /// Messages passed over because their time to live had run out, and their bytes
    /// (the subscriber counted them received).
    expired: u64,
    expired_bytes: u64,
}

impl<P: Protocol> NetTransport<P> {
    /// The next message, whatever its expiry: its bytes into `out`, and its envelope.
    fn try_recv_any(&mut self, out: &mut Vec<u8>) -> Result<Option<Envelope>> {
        let link = self.link.clone();
        let ring = self.ring.clone();
        let sub = self.subscriber()?;
        // A message whose bytes are aside gets them appended to its envelope before the
        // cursor moves on (after that the writer may reuse them).
        let mut recv = |out: &mut Vec<u8>| {
            sub.try_recv_then(out, |out| {
                if let Some(Envelope { placement: Placement::Aside { offset, len }, .. }) = Envelope::read(out)
                    && let Some(bytes) = ring.aside(offset, len)
                {
                    out.truncate(envelope::LEN);
                    out.extend_from_slice(bytes);
                }
            })
        };
        // An empty ring: read the socket on this thread rather than wait for another.
        if recv(out).is_none() && (link.pump()? == 0 || recv(out).is_none()) {
            return Ok(None);
        }
        let env =
            Envelope::read(out).ok_or_else(|| Error::new(ErrorCode::Io, "a received message without its envelope"))?;
        match env.placement {
            Placement::Inline => {
                out.drain(..envelope::LEN);
            }
            Placement::Aside { len, .. } => {
                if out.len() != envelope::LEN + len as usize {
                    return Err(Error::new(ErrorCode::Io, "a message's bytes are not where its envelope says"));
                }
                out.drain(..envelope::LEN);
                self.spilled_bytes += out.len() as u64;
            }
            Placement::Spilled { key, .. } => {
                *out = self
                    .ring
                    .take_spilled(key)
                    .ok_or_else(|| Error::new(ErrorCode::Io, "a spilled message was taken twice"))?;
                self.spilled_bytes += out.len() as u64;
            }
        }
        Ok(Some(env))
    }

    pub fn new(parts: Parts<P>) -> Result<Self> {
        let role = parts.settings.role;
        let subscriber = if role.receives() { Some(Subscriber::new(parts.ring.segment().clone())?) } else { None };
        let tally = parts.protocol.publish_tally();
        Ok(NetTransport {
            in_place: Arc::new(RingReader { reader: parts.reader.clone(), ring: parts.ring.clone() }),
            link: Arc::new(NetLink {
                by_protocol: tally.is_some(),
                tally: tally.unwrap_or_default(),
                protocol: parts.protocol,
                reader: parts.reader,
                can_publish: role.publishes(),
                limiter: parts
                    .settings
                    .rate
                    .map(|r| Limiter::new(r, parts.settings.backpressure, parts.settings.publish_timeout)),
                ttl: parts.settings.ttl,
            }),
            ring: parts.ring,
            subscriber,
            settings: parts.settings,
            connections: parts.connections,
            never_cancelled: AtomicBool::new(false),
            closed: false,
            spilled_bytes: 0,
            expired: 0,
            expired_bytes: 0,
        })
    }

    /// The protocol (for a transport's own tests and tools).
    pub fn protocol(&self) -> &Arc<P> {
        &self.link.protocol
    }

    fn subscriber(&mut self) -> Result<&mut Subscriber> {
        if self.closed {
            return Err(Error::closed());
        }
        self.subscriber.as_mut().ok_or_else(|| Error::role("receive"))
    }
}

impl<P: Protocol> Transport for NetTransport<P> {
    fn kind(&self) -> TransportKind {
        self.link.protocol.kind()
    }

    fn max_message_size(&self) -> usize {
        self.link.protocol.max_message_size()
    }

    fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        if self.closed {
            return Err(Error::closed());
        }
        self.link.publish(channel, payload)
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<MessageInfo>> {
        // A message whose time to live ran out is passed over (and counted).
        loop {
            let Some(env) = self.try_recv_any(out)? else { return Ok(None) };
            match env.expiry_ns {
                Some(e) if e < envelope::now_ns() => {
                    self.expired += 1;
                    self.expired_bytes += out.len() as u64;
                }
                _ => return Ok(Some(env.info())),
            }
        }
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.subscriber()?;
        self.link.reader.reader_caught_up();
        // Parked on the ring's futex, not watching: the I/O thread must read the socket.
        self.link.reader.reader_parks();
        let sub = self.subscriber.as_ref().expect("checked above");
        Ok(sub.wait(self.settings.spin, timeout, &self.never_cancelled))
    }

    fn metrics(&self) -> Metrics {
        let c = &self.link.tally;
        let mut m = Metrics::new(self.kind(), false);
        m.published = c.published.load(Ordering::Relaxed);
        m.published_bytes = c.published_bytes.load(Ordering::Relaxed);
        m.dropped = c.dropped.load(Ordering::Relaxed);
        m.rate_limited = self.link.limiter.as_ref().map_or(0, Limiter::limited);
        if !self.closed {
            m.details = self.link.protocol.details();
            m.chaos = self.link.protocol.chaos();
        }
        let mut m = m.with_subscriber(self.subscriber.as_ref());
        // What the slots held, less the envelopes: the messages' own bytes.
        m.received_bytes = m.received_bytes - m.received * envelope::LEN as u64 + self.spilled_bytes;
        // What expired was not received.
        m.received -= self.expired;
        m.received_bytes -= self.expired_bytes;
        m.expired = self.expired;
        m
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        if self.closed { None } else { self.link.protocol.local_addr() }
    }

    fn linger(&mut self, linger: Duration) -> bool {
        self.link.protocol.linger(linger)
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.link.protocol.close();
        if self.ring.status() != Status::Closed {
            self.ring.report(StatusEvent { status: Status::Closed, peer: None, error: None });
        }
        self.ring.set_doorbell(None);
        self.ring.set_status_listener(None);
    }

    fn peers(&self) -> Option<&dyn Peers> {
        self.link.protocol.peers()
    }

    fn batching(&self) -> Option<&dyn Batching> {
        self.link.protocol.batching()
    }

    fn connection(&self) -> Option<&dyn Connection> {
        self.connections.then_some(&*self.ring as &dyn Connection)
    }

    fn requests(&self) -> Option<&dyn Requests> {
        self.link.protocol.requests()
    }

    fn subject(&self, id: u32) -> Option<String> {
        self.link.protocol.subject(id)
    }

    fn forward_to(&self, to: Arc<dyn Link>, counts: Arc<ForwardCounts>) -> Result<()> {
        self.link.protocol.forward_to(to, counts)
    }

    fn read_in_place(&self) -> Option<Arc<dyn ReadInPlace>> {
        Some(self.in_place.clone())
    }

    fn link(&self) -> Option<Arc<dyn Link>> {
        Some(self.link.clone())
    }

    fn detach_reader(&mut self) -> Option<RingPlace> {
        let (entry, cursor) = self.subscriber.take()?.hand_over();
        Some(RingPlace { entry, cursor })
    }
}

impl ReadInPlace for RingReader {
    fn segment(&self) -> &Arc<Segment> {
        self.ring.segment()
    }

    fn take_spilled(&self, key: u64) -> Option<Vec<u8>> {
        self.ring.take_spilled(key)
    }

    fn set_doorbell(&self, doorbell: Option<Doorbell>) {
        self.ring.set_doorbell(doorbell);
    }

    fn arm(&self, cursor: u64, watched: bool) {
        // The reader read up to `cursor`, all there was.
        self.reader.reader_caught_up();
        if watched {
            self.reader.set_watched(true);
        } else {
            // The reader stops polling the socket: the I/O thread takes it back.
            self.reader.reader_parks();
        }
        self.ring.arm(cursor);
    }

    fn disarm(&self) -> bool {
        self.ring.disarm()
    }

    fn unwatch(&self) {
        self.reader.set_watched(false);
    }

    fn readiness_fd(&self) -> RawFd {
        self.reader.readiness_fd()
    }
}

impl Connection for ReceiveRing {
    fn status(&self) -> Status {
        ReceiveRing::status(self)
    }

    fn connects(&self) -> bool {
        self.connecting()
    }

    fn take_status_events(&self) -> Vec<StatusEvent> {
        ReceiveRing::take_status_events(self)
    }

    fn set_status_listener(&self, listener: Option<StatusListener>) {
        ReceiveRing::set_status_listener(self, listener);
    }
}

impl<P: Protocol> Drop for NetTransport<P> {
    fn drop(&mut self) {
        self.close();
    }
}
