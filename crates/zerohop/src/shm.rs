//! The `shm://` transport: a [`zerohop_shm`] ring behind the [`Transport`] trait.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::shm_events::{MemberEvents, ShmConnection};
use zerohop_shm::registry::{Member, PublisherEntry, Role};
use zerohop_shm::{Backpressure, Layout, Published, Publisher, Segment, SegmentOptions, Subscriber};
use zerohop_transport::rate::Limiter;
use zerohop_transport::{
    Connection, Delivery, Endpoint, Error, ErrorCode, FromOptions, HubOptions, Link, Loans, MessageInfo, Metrics,
    Options, Result, Settings, Target, Transport, TransportKind, TransportOptions,
};

/// How long a waiting subscriber spins before it parks, unless told otherwise.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// The options only `shm://` hubs have.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// Subscribers the segment has room for (default 64); fixed when it is created.
    pub max_subscribers: Option<u32>,
    /// Bytes of the segment's payload pool, where messages longer than a slot go
    /// (`poolSize`, a multiple of 64; default none); fixed when it is created.
    pub pool_size: Option<u32>,
    /// The largest message this hub publishes (`maxMessageSize`, up to 1 GiB; default
    /// 16 MiB, or a slot or the pool if larger): longer than the pool, it takes the side
    /// path ([`zerohop_shm::side`]).
    pub max_message_size: Option<usize>,
    /// How often the hub looks who comes and goes on the segment, for its status
    /// events (`heartbeatMs`, default 1000; `None`, or 0 by name, for no events).
    pub heartbeat: Option<Duration>,
    /// Where the ring counts as filling up, and as drained again (`highWater`,
    /// `lowWater`): the TypeScript hub's water-mark events and batch hint.
    pub water: WaterMarks,
    /// Make the segment with `memfd_create` and hand it to joiners over a Unix socket
    /// (`memfd`, or `shm://name?memfd`): no file in `/dev/shm` (see
    /// [`zerohop_shm::handoff`]). Every hub of the segment must say so.
    pub memfd: bool,
    /// The work group this hub reads in (`group`, 1 to 32 bytes): the hubs of a segment
    /// that name the same group share its messages, each read by one of them (see
    /// [`zerohop_shm::ring`]'s `group`).
    pub group: Option<String>,
}

impl Default for ShmOptions {
    fn default() -> Self {
        ShmOptions {
            max_subscribers: None,
            pool_size: None,
            max_message_size: None,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            water: WaterMarks::default(),
            memfd: false,
            group: None,
        }
    }
}

/// The ring's fill (the slowest subscriber's lag as a share of its slots) at which it
/// counts as filling up (`high`), and at which it counts as drained again (`low`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WaterMarks {
    pub high: f64,
    pub low: f64,
}

impl WaterMarks {
    /// `highWater` and `lowWater` (without a low mark, half the high one, at most the
    /// default's); the low below the high, the high above 0.
    fn take(o: &mut Options) -> Result<WaterMarks> {
        let d = WaterMarks::default();
        let high = o.take_in("highWater", 0.0..=1.0)?.unwrap_or(d.high);
        let low = o.take_in("lowWater", 0.0..=1.0)?.unwrap_or(d.low.min(high / 2.0));
        if low >= high || high <= 0.0 {
            return Err(Error::new(
                ErrorCode::BadOption,
                format!("lowWater ({low}) must be below highWater ({high}), and highWater above 0"),
            ));
        }
        Ok(WaterMarks { high, low })
    }
}

impl Default for WaterMarks {
    /// 0.8 and 0.25.
    fn default() -> Self {
        WaterMarks { high: 0.8, low: 0.25 }
    }
}

/// How often a hub looks at its segment's members unless told otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

impl TransportOptions for ShmOptions {
    fn scheme(&self) -> &'static str {
        "shm"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for ShmOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        Ok(ShmOptions {
            max_subscribers: o.take_u32("maxSubscribers", 1..=zerohop_shm::layout::MAX_SUBSCRIBERS)?,
            pool_size: o.take_u32("poolSize", 0..=zerohop_shm::layout::MAX_POOL_SIZE)?,
            max_message_size: o.take_usize("maxMessageSize", 1..=zerohop_shm::ring::MAX_MESSAGE_LIMIT)?,
            heartbeat: o.take_interval_ms("heartbeatMs", Some(DEFAULT_HEARTBEAT))?,
            memfd: o.take_bool("memfd")?.unwrap_or(false),
            water: WaterMarks::take(o)?,
            group: o.take_work_group(false)?,
        })
    }
}

/// A hub's handle on a shared-memory segment.
#[derive(Debug)]
pub struct ShmTransport {
    segment: Option<Arc<Segment>>,
    publisher: Option<Publisher>,
    /// The publisher's line in the segment's publisher table (`Hub.list()`).
    listed: Option<PublisherEntry>,
    subscriber: Option<Subscriber>,
    /// Who comes and goes (`None` with `heartbeatMs: 0`).
    events: Option<ShmConnection>,
    settings: Settings,
    /// The largest message it publishes.
    max_message: usize,
    selected_automatically: bool,
    never_cancelled: AtomicBool,
    /// The rate limit on publishing, if any.
    limiter: Option<Arc<Limiter>>,
    /// What it was opened with (for a link's publisher).
    spec: ShmSpec,
    /// The hub as a handle other threads share, once asked for ([`Transport::link`]).
    link: std::sync::OnceLock<Arc<ShmLink>>,
    /// A side of a bridge ([`Transport::set_bridge_side`]).
    bridge_side: bool,
}

/// A shared-memory hub's publishing as a handle other threads share: a publisher of its
/// own (with a line of its own in the segment's table), whose messages the hub's own
/// subscriber passes over as it does the hub's (a hub never receives its own).
#[derive(Debug)]
struct ShmLink {
    publisher: std::sync::Mutex<Publisher>,
    _listed: PublisherEntry,
    limiter: Option<Arc<Limiter>>,
    closed: AtomicBool,
}

impl ShmLink {
    /// Publishes with expiry word `expiry` (0: the hub's time to live, if any).
    fn publish_with(&self, channel: u16, payload: &[u8], expiry: u32) -> Result<Delivery> {
        if channel != 0 {
            return Err(Error::bad_option(format!("shm:// hubs have one channel, 0; got {channel}")));
        }
        if let Some(l) = &self.limiter
            && !l.admit(payload.len())?
        {
            return Ok(Delivery::Dropped);
        }
        let mut p = self.publisher()?;
        p.set_expiry(expiry);
        let r = p.publish(payload);
        p.set_expiry(0);
        Ok(delivery(r?))
    }

    fn publisher(&self) -> Result<std::sync::MutexGuard<'_, Publisher>> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(self.publisher.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Link for ShmLink {
    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        self.publish_with(channel, payload, 0)
    }

    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery> {
        self.publish_with(channel, payload, zerohop_shm::ring::expiry_word_at(expiry_ns))
    }

    fn publish_packed(&self, channel: u16, packed: &[u8], size: usize) -> Result<usize> {
        if size == 0 || !packed.len().is_multiple_of(size) {
            return Err(Error::bad_option(format!("messageSize {size} does not divide {} bytes", packed.len())));
        }
        let mut n = 0;
        for m in packed.chunks_exact(size) {
            if self.publish(channel, m)? == Delivery::Accepted {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Nothing to read into a ring: readers read the segment itself.
    fn pump(&self) -> Result<usize> {
        Ok(0)
    }

    fn pump_then(&self, reader: &mut dyn FnMut()) -> Result<usize> {
        reader();
        Ok(0)
    }

    /// Wakes the readers that parked while the batch was published.
    fn flush(&self) -> Result<()> {
        self.publisher()?.announce();
        Ok(())
    }

    fn set_caller_flushes(&self) {
        if let Ok(mut p) = self.publisher() {
            p.set_announce_later(true);
        }
    }

    fn linger(&self, linger: Duration) -> bool {
        self.publisher().is_ok_and(|p| p.linger(linger))
    }
}

/// What an `shm://name` endpoint with its options opens ([`resolve`]).
#[derive(Clone, Debug)]
pub struct ShmSpec {
    /// The segment's name.
    pub name: String,
    /// The layout asked for (`None`: adopt the existing one's).
    pub layout: Option<Layout>,
    pub settings: Settings,
    /// How often to look who comes and goes (`None`: no status events).
    pub heartbeat: Option<Duration>,
    pub water: WaterMarks,
    /// A memfd segment, handed over a Unix socket.
    pub memfd: bool,
    /// The largest message a publisher takes (`None`: its default).
    pub max_message_size: Option<usize>,
    /// The work group its reader is a member of.
    pub group: Option<String>,
}

impl ShmSpec {
    /// A publisher on `segment` with these settings, announcing its claims in `line`
    /// and not waiting for `own`, its hub's subscriber entry.
    pub fn publisher(&self, segment: &Arc<Segment>, line: Option<u32>, own: Option<u32>) -> Publisher {
        let mut p = Publisher::with_line(segment.clone(), self.settings.backpressure, line);
        p.set_timeout(self.settings.publish_timeout);
        // (A slot's expiry word counts ms modulo 2^32: `open` refused more than 2^31.)
        p.set_ttl(self.settings.ttl);
        p.set_own_entry(own);
        p.set_max_message_size(self.max_message_size(segment.layout()));
        p
    }

    /// The largest message a hub publishes on a segment of `layout`.
    pub fn max_message_size(&self, layout: &Layout) -> usize {
        self.max_message_size.unwrap_or_else(|| zerohop_shm::ring::default_max_message(layout))
    }

    /// Opens (or creates) the segment.
    pub fn open_segment(&self) -> Result<Segment> {
        let options = SegmentOptions { layout: self.layout, dir: None };
        Ok(if self.memfd { Segment::open_memfd(&self.name, &options)? } else { Segment::open(&self.name, &options)? })
    }
}

/// What an `shm://name` endpoint with `options` opens. Shared with the Node binding,
/// whose JavaScript publishes into the segment itself.
pub fn resolve(endpoint: &Endpoint, options: &mut HubOptions) -> Result<ShmSpec> {
    let Target::Name(name) = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "shm:// needs a segment name"));
    };
    let shm: ShmOptions = options.take_specific("shm")?;
    let all = [Backpressure::DropOld, Backpressure::DropNew, Backpressure::Block, Backpressure::FailFast];
    let settings = options.settings("shm", DEFAULT_SPIN, Backpressure::DropOld, &all, "")?;
    if settings.ttl.is_some_and(|t| t.as_millis() >= 1 << 31) {
        return Err(Error::bad_option("ttlMs over shm:// is at most 2^31 - 1 ms (24 days)"));
    }
    if shm.group.is_some() && !settings.role.receives() {
        return Err(Error::bad_option(
            "group shares what a group receives: a hub of role 'publisher' receives nothing",
        ));
    }
    let layout = Layout::requested(options.slot_size, options.capacity, shm.max_subscribers, shm.pool_size);
    Ok(ShmSpec {
        name: name.clone(),
        layout,
        settings,
        heartbeat: shm.heartbeat,
        water: shm.water,
        memfd: shm.memfd,
        max_message_size: shm.max_message_size,
        group: shm.group,
    })
}

/// The members of a segment a hub reports on: all but its own entries.
pub fn member_events(
    seg: &Arc<Segment>,
    heartbeat: Option<Duration>,
    publisher: Option<&PublisherEntry>,
    subscriber: Option<u32>,
) -> Option<Arc<MemberEvents>> {
    let pid = std::process::id();
    let own = publisher
        .and_then(PublisherEntry::index)
        .map(|entry| Member { role: Role::Publisher, pid, entry })
        .into_iter()
        .chain(subscriber.map(|entry| Member { role: Role::Subscriber, pid, entry }))
        .collect();
    heartbeat.map(|every| MemberEvents::new(seg.clone(), own, every))
}

/// Opens (or creates) the segment an `shm://name` endpoint names.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    let spec = resolve(endpoint, &mut options)?;
    let segment = Arc::new(spec.open_segment()?);
    // (The water marks are the TypeScript hub's: a Rust hub has no events for them.)
    let (settings, heartbeat) = (spec.settings, spec.heartbeat);
    let subscriber = match (&spec.group, settings.role.receives()) {
        (_, false) => None,
        (Some(group), true) => Some(Subscriber::join(segment.clone(), group)?),
        (None, true) => Some(Subscriber::new(segment.clone())?),
    };
    let listed = settings.role.publishes().then(|| PublisherEntry::join(segment.clone()));
    let publisher = listed
        .as_ref()
        .map(|entry| spec.publisher(&segment, entry.index(), subscriber.as_ref().map(Subscriber::index)));
    let max_message = spec.max_message_size(segment.layout());
    let events = member_events(&segment, heartbeat, listed.as_ref(), subscriber.as_ref().map(Subscriber::index));
    Ok(Box::new(ShmTransport {
        segment: Some(segment),
        publisher,
        listed,
        events: events.map(ShmConnection),
        subscriber,
        settings,
        max_message,
        selected_automatically: endpoint.selected_automatically(),
        never_cancelled: AtomicBool::new(false),
        limiter: settings.rate.map(|r| Arc::new(Limiter::new(r, settings.backpressure, settings.publish_timeout))),
        spec,
        link: std::sync::OnceLock::new(),
        bridge_side: false,
    }))
}

impl ShmTransport {
    fn publisher(&mut self) -> Result<&mut Publisher> {
        if self.segment.is_none() {
            return Err(Error::closed());
        }
        self.publisher.as_mut().ok_or_else(|| Error::role("publish"))
    }

    fn subscriber(&mut self) -> Result<&mut Subscriber> {
        if self.segment.is_none() {
            return Err(Error::closed());
        }
        self.subscriber.as_mut().ok_or_else(|| Error::role("receive"))
    }
}

fn delivery(p: Published) -> Delivery {
    match p {
        Published::Sent(_) => Delivery::Accepted,
        Published::Dropped => Delivery::Dropped,
    }
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn max_message_size(&self) -> usize {
        if self.segment.is_some() { self.max_message } else { 0 }
    }

    fn linger(&mut self, linger: Duration) -> bool {
        // Sent on the side path: held by this publisher until read.
        self.publisher.as_ref().is_none_or(|p| p.linger(linger))
    }

    fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        if channel != 0 {
            return Err(Error::bad_option(format!("shm:// hubs have one channel, 0; got {channel}")));
        }
        if let Some(l) = &self.limiter
            && !l.admit(payload.len())?
        {
            return Ok(Delivery::Dropped);
        }
        Ok(delivery(self.publisher()?.publish(payload)?))
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<MessageInfo>> {
        let sub = self.subscriber()?;
        Ok(sub.try_recv(out).map(|_| MessageInfo { expiry_ns: sub.last_expiry_ns(), ..MessageInfo::default() }))
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.subscriber()?;
        let sub = self.subscriber.as_ref().expect("checked above");
        Ok(sub.wait(self.settings.spin, timeout, &self.never_cancelled))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new(TransportKind::Shm, self.selected_automatically);
        if let Some(p) = &self.publisher {
            let s = p.stats();
            m.published = s.published;
            m.published_bytes = s.published_bytes;
            m.dropped = s.dropped;
            m.blocked = s.blocked;
        }
        m.rate_limited = self.limiter.as_ref().map_or(0, |l| l.limited());
        m.with_subscriber(self.subscriber.as_ref())
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn close(&mut self) {
        if let Some(events) = self.events.take() {
            events.0.stop();
        }
        if let Some(link) = self.link.get() {
            link.closed.store(true, std::sync::atomic::Ordering::Release);
        }
        self.publisher = None;
        self.listed = None;
        self.subscriber = None;
        if let Some(segment) = self.segment.take() {
            segment.release();
        }
    }

    /// Marks what it publishes as bridged, and its reader passes over what is.
    fn set_bridge_side(&mut self) {
        self.bridge_side = true;
        if let Some(p) = &mut self.publisher {
            p.set_bridged(true);
        }
        if let Some(s) = &mut self.subscriber {
            s.pass_over_bridged(true);
        }
    }

    fn link(&self) -> Option<Arc<dyn Link>> {
        let segment = self.segment.as_ref()?;
        if !self.settings.role.publishes() {
            return None;
        }
        let link = self.link.get_or_init(|| {
            let listed = PublisherEntry::join(segment.clone());
            let own = self.subscriber.as_ref().map(Subscriber::index);
            let mut publisher = self.spec.publisher(segment, listed.index(), own);
            publisher.set_bridged(self.bridge_side);
            Arc::new(ShmLink {
                publisher: std::sync::Mutex::new(publisher),
                _listed: listed,
                // (One rate for the hub, whichever handle publishes.)
                limiter: self.limiter.clone(),
                closed: AtomicBool::new(false),
            })
        });
        Some(link.clone())
    }

    fn loans(&mut self) -> Option<&mut dyn Loans> {
        Some(self)
    }

    fn connection(&self) -> Option<&dyn Connection> {
        self.events.as_ref().map(|c| c as &dyn Connection)
    }
}

impl Loans for ShmTransport {
    fn publish_in_place(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<Delivery> {
        // (The length is not known yet: the message counts, its bytes as a slot's.)
        let slot = self.max_message;
        if let Some(l) = &self.limiter
            && !l.admit(slot)?
        {
            return Ok(Delivery::Dropped);
        }
        let Some(mut loan) = self.publisher()?.loan()? else { return Ok(Delivery::Dropped) };
        let len = fill(loan.as_mut_slice());
        let max = loan.as_mut_slice().len();
        if len > max {
            return Err(Error::new(ErrorCode::MessageTooLarge, format!("{len} bytes written into a slot of {max}")));
        }
        loan.commit(len);
        Ok(Delivery::Accepted)
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        self.close();
    }
}
