//! The `shm://` transport: a [`zerohop_shm`] ring behind the [`Transport`] trait.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use zerohop_shm::registry::PublisherEntry;
use zerohop_shm::{Backpressure, Layout, Published, Publisher, Segment, SegmentOptions, Subscriber};
use zerohop_transport::{
    Delivery, Endpoint, Error, ErrorCode, FromOptions, HubOptions, Loans, MessageInfo, Metrics, Options, Result,
    Settings, Target, Transport, TransportKind, TransportOptions,
};

/// How long a waiting subscriber spins before it parks, unless told otherwise.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// The options only `shm://` hubs have.
#[derive(Clone, Debug, Default)]
pub struct ShmOptions {
    /// Subscribers the segment has room for (default 64); fixed when it is created.
    pub max_subscribers: Option<u32>,
}

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
        Ok(ShmOptions { max_subscribers: o.take_u32("maxSubscribers", 1..=zerohop_shm::layout::MAX_SUBSCRIBERS)? })
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
    settings: Settings,
    selected_automatically: bool,
    never_cancelled: AtomicBool,
}

/// What an `shm://name` endpoint with `options` opens: the segment's name, the layout
/// asked for (`None`: adopt the existing one's), and the hub's settings. Shared with
/// the Node binding, whose JavaScript publishes into the segment itself.
pub fn resolve(endpoint: &Endpoint, options: &mut HubOptions) -> Result<(String, Option<Layout>, Settings)> {
    let Target::Name(name) = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "shm:// needs a segment name"));
    };
    let shm: ShmOptions = options.take_specific("shm")?;
    let all = [Backpressure::DropOld, Backpressure::DropNew, Backpressure::Block, Backpressure::FailFast];
    let settings = options.settings("shm", DEFAULT_SPIN, Backpressure::DropOld, &all, "")?;
    let layout = Layout::requested(options.slot_size, options.capacity, shm.max_subscribers);
    Ok((name.clone(), layout, settings))
}

/// Opens (or creates) the segment an `shm://name` endpoint names.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    let (name, layout, settings) = resolve(endpoint, &mut options)?;
    let segment = Arc::new(Segment::open(&name, &SegmentOptions { layout, dir: None })?);
    let subscriber = if settings.role.receives() { Some(Subscriber::new(segment.clone())?) } else { None };
    let publisher = settings.role.publishes().then(|| {
        let mut p = Publisher::new(segment.clone(), settings.backpressure);
        p.set_timeout(settings.publish_timeout);
        p.set_own_entry(subscriber.as_ref().map(Subscriber::index));
        p
    });
    let listed = publisher.is_some().then(|| PublisherEntry::join(segment.clone()));
    Ok(Box::new(ShmTransport {
        segment: Some(segment),
        publisher,
        listed,
        subscriber,
        settings,
        selected_automatically: endpoint.selected_automatically(),
        never_cancelled: AtomicBool::new(false),
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
        self.segment.as_ref().map_or(0, |s| s.layout().slot_size as usize)
    }

    fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        if channel != 0 {
            return Err(Error::bad_option(format!("shm:// hubs have one channel, 0; got {channel}")));
        }
        Ok(delivery(self.publisher()?.publish(payload)?))
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<MessageInfo>> {
        Ok(self.subscriber()?.try_recv(out).map(|_| MessageInfo::default()))
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
        m.with_subscriber(self.subscriber.as_ref())
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn close(&mut self) {
        self.publisher = None;
        self.listed = None;
        self.subscriber = None;
        if let Some(segment) = self.segment.take() {
            segment.release();
        }
    }

    fn loans(&mut self) -> Option<&mut dyn Loans> {
        Some(self)
    }
}

impl Loans for ShmTransport {
    fn publish_in_place(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<Delivery> {
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
