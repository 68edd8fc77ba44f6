//! Shared memory for zerohop: named segments under `/dev/shm`, the SPMC broadcast
//! ring that lives in them, and futex wake-ups between processes.
//!
//! - [`segment`]: create, join, recover and unlink a `0600` segment (`flock` tracks
//!   who is alive, so a crashed creator leaves nothing that blocks a later open).
//! - [`layout`]: where the header, the subscriber table and the slots are; the
//!   TypeScript package reads the same offsets.
//! - [`ring`]: the publish/receive protocol (stamps, lapping, backpressure, parking).
//! - [`registry`]: every live segment of the host, its publishers and subscribers.
//! - [`side`]: the side path, for messages too large for a slot and the payload pool.
//! - [`futex`]: cross-process wait/wake with timeouts.
//!
//! ```
//! use std::sync::Arc;
//! use zerohop_shm::{Backpressure, Publisher, Segment, SegmentOptions, Subscriber};
//!
//! let dir = std::env::temp_dir();
//! let options = SegmentOptions { dir: Some(dir), ..Default::default() };
//! let seg = Arc::new(Segment::open(&format!("doc-{}", std::process::id()), &options).unwrap());
//! let mut publisher = Publisher::new(seg.clone(), Backpressure::DropOld);
//! let mut subscriber = Subscriber::new(seg).unwrap();
//! publisher.publish(b"tick").unwrap();
//! let mut buf = Vec::new();
//! assert_eq!(subscriber.try_recv(&mut buf), Some(0));
//! assert_eq!(buf, b"tick");
//! ```

pub mod error;
mod fdpass;
pub mod futex;
pub mod handoff;
pub mod layout;
pub mod registry;
pub mod ring;
pub mod segment;
pub mod side;

pub use error::{Result, ShmError};
pub use layout::Layout;
pub use ring::{Backpressure, Loan, Published, Publisher, PublisherStats, RingWaiter, Subscriber, SubscriberStats};
pub use segment::{Segment, SegmentOptions};
