//! The shared-memory transport: a [`zerohop_shm`] ring behind the [`Transport`] trait.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use zerohop_shm::{Layout, Published, Publisher, Segment, SegmentOptions, Subscriber};

use crate::endpoint::TransportKind;
use crate::error::{Error, ErrorCode, Result};
use crate::hub::{HubOptions, Role};
use crate::metrics::Metrics;
use crate::transport::{Delivery, Transport};

/// A hub's handle on a shared-memory segment.
#[derive(Debug)]
pub struct ShmTransport {
    segment: Arc<Segment>,
    publisher: Option<Publisher>,
    subscriber: Option<Subscriber>,
    spin: Duration,
    selected_automatically: bool,
    never_cancelled: AtomicBool,
}

impl ShmTransport {
    /// Opens (or creates) segment `name` with `options`.
    pub fn open(name: &str, options: &HubOptions, selected_automatically: bool) -> Result<Self> {
        let layout = Layout::requested(options.slot_size, options.capacity, options.max_subscribers);
        let segment = Arc::new(Segment::open(name, &SegmentOptions { layout, dir: None })?);
        let subscriber = match options.role {
            Role::Publisher => None,
            Role::Subscriber | Role::PubSub => Some(Subscriber::new(segment.clone())?),
        };
        let publisher = match options.role {
            Role::Subscriber => None,
            Role::Publisher | Role::PubSub => {
                let mut p = Publisher::new(segment.clone(), options.backpressure);
                p.set_timeout(options.publish_timeout);
                p.set_own_entry(subscriber.as_ref().map(Subscriber::index));
                Some(p)
            }
        };
        Ok(Self {
            segment,
            publisher,
            subscriber,
            spin: options.spin,
            selected_automatically,
            never_cancelled: AtomicBool::new(false),
        })
    }

    /// The segment (for zero-copy access).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    fn subscriber(&mut self) -> Result<&mut Subscriber> {
        self.subscriber
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))
    }
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn max_message_size(&self) -> usize {
        self.segment.layout().slot_size as usize
    }

    fn publish(&mut self, payload: &[u8]) -> Result<Delivery> {
        let publisher = self
            .publisher
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'subscriber'"))?;
        Ok(match publisher.publish(payload)? {
            Published::Sent(_) => Delivery::Accepted,
            Published::Dropped => Delivery::Dropped,
        })
    }

    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        Ok(self.subscriber()?.try_recv(out).is_some())
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let spin = self.spin;
        let sub = self
            .subscriber
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::InvalidState, "this hub was opened with role 'publisher'"))?;
        Ok(sub.wait(spin, timeout, &self.never_cancelled))
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
}
