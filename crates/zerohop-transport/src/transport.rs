//! The contract every transport fulfils, so that a hub looks the same over shared
//! memory, UDP, QUIC and whatever comes next.
//!
//! A transport moves opaque byte messages; codecs, typing and the async API live above
//! it (in the TypeScript package, or in the caller's Rust code). What only some
//! transports can do is a *capability*: a method that returns `None` where a transport
//! lacks it, so that nothing above a transport ever asks which one it is.
//!
//! | capability | what it is | who has it now |
//! |---|---|---|
//! | [`Transport::peers`] | change where messages go, send what is batched | udp |
//! | [`Transport::connection`] | connection status and its events | quic |
//! | [`Transport::requests`] | requests and their answers, one stream each | quic |
//! | [`Transport::read_in_place`] | received messages in a ring another reader maps | udp, quic |
//! | [`Transport::link`] | the per-message calls, shareable across threads | udp, quic |
//! | [`Transport::loans`] | write a message in place | shm |

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use zerohop_shm::Segment;

use crate::endpoint::TransportKind;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::options::Settings;
use crate::status::{Status, StatusEvent};

/// What became of a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted: it will reach the receivers the transport's guarantees cover.
    Accepted,
    /// Discarded for some receiver by the `drop_new` policy, or (datagrams) with nowhere
    /// to go; counted.
    Dropped,
}

/// What a received item is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A published message.
    #[default]
    Message = 0,
    /// A request to answer ([`Requests::respond`]).
    Request = 1,
    /// The answer to one of our requests.
    Response = 2,
    /// One of our requests failed on the other side; the body says why.
    Failed = 3,
    /// The other side gave up on a request it sent us.
    Cancelled = 4,
}

impl Kind {
    pub fn from_u8(v: u8) -> Kind {
        match v {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Failed,
            4 => Kind::Cancelled,
            _ => Kind::Message,
        }
    }
}

/// Who a Unix socket peer is, as the kernel says (`SO_PEERCRED`, taken when it connected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Where a received message came from, and what came with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageInfo {
    /// The sender's address (network transports but Unix sockets).
    pub from: Option<SocketAddr>,
    /// Unix sockets: the sending process's credentials.
    pub credentials: Option<Credentials>,
    /// Transports whose receivers subscribe by pattern (`nats://`): the number of the
    /// subject it was published on; [`Transport::subject`] names it (0: none).
    pub subject: u32,
    /// When the kernel received it, in ns since the Unix epoch (UDP, when asked).
    pub timestamp_ns: Option<u64>,
    pub channel: u16,
    /// The sender's number on this hub (connection-oriented transports).
    pub peer: u32,
    pub kind: Kind,
    /// The key pairing a request, its answer and its cancellation.
    pub request: u64,
    /// When it stops being worth reading (`ttlMs`), in ns since the Unix epoch, where
    /// the transport tells (shared memory): what a bridge passes on with it.
    pub expiry_ns: Option<u64>,
}

/// A message transport behind a hub.
pub trait Transport: Send {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Largest message in bytes.
    fn max_message_size(&self) -> usize;

    /// Sends one message on `channel` to every receiver. Transports with one channel
    /// refuse any other with `ERR_BAD_OPTION`.
    fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery>;

    /// Moves the next message into `out`; `None` when none is waiting.
    fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<MessageInfo>>;

    /// Blocks until `try_recv` may return a message, or `timeout` passes (`Ok(false)`).
    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool>;

    /// Counters and the state of the transport.
    fn metrics(&self) -> Metrics;

    /// The options every hub has, with this transport's defaults filled in.
    fn settings(&self) -> Settings;

    /// The bound address (network transports).
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Waits up to `linger` until what was published has reached its receivers; true if
    /// it has. Transports that hand messages over at once have nothing to wait for.
    fn linger(&mut self, _linger: Duration) -> bool {
        true
    }

    /// Releases what the transport holds (sockets, threads, the segment). Idempotent;
    /// dropping the transport does it too.
    fn close(&mut self);

    /// Changes where messages go, where a transport sends to peers it is told.
    fn peers(&self) -> Option<&dyn Peers> {
        None
    }

    /// Sends what waits in a batch, where a transport batches publishes.
    fn batching(&self) -> Option<&dyn Batching> {
        None
    }

    /// The status of a transport that connects (without it: connected until closed).
    fn connection(&self) -> Option<&dyn Connection> {
        None
    }

    /// Requests with answers.
    fn requests(&self) -> Option<&dyn Requests> {
        None
    }

    /// The subject numbered `id` in a received message's [`MessageInfo::subject`], while
    /// the hub still knows it (transports whose receivers subscribe by pattern).
    fn subject(&self, id: u32) -> Option<String> {
        let _ = id;
        None
    }

    /// The ring received messages land in, for a reader with a cursor of its own (on
    /// any thread: the handle is shared).
    fn read_in_place(&self) -> Option<Arc<dyn ReadInPlace>> {
        None
    }

    /// The per-message calls as a handle other threads may share.
    fn link(&self) -> Option<Arc<dyn Link>> {
        None
    }

    /// Writing messages in place.
    fn loans(&mut self) -> Option<&mut dyn Loans> {
        None
    }

    /// Stops reading through [`try_recv`](Self::try_recv): another reader takes the
    /// receive ring ([`ReadInPlace`]) with this one's place in it, which it returns
    /// (`None` when the hub does not receive, or has none).
    fn detach_reader(&mut self) -> Option<RingPlace> {
        None
    }

    /// This hub is a side of a bridge: what it publishes came from elsewhere, and what
    /// it receives goes elsewhere. A transport whose messages carry no origin a bridge
    /// sets (shared memory) marks what the hub publishes as bridged, and the hub's
    /// reader passes over what is marked so (what another bridge brought in), so that
    /// no message goes round a cycle of bridges; others have their own way (NATS: an
    /// origin header) or nothing to do.
    fn set_bridge_side(&mut self) {}

    /// From now on, delivers each message it receives straight into `to`, on the
    /// transport's own thread, instead of into its ring (a bridge's direction without a
    /// thread of its own), counting in `counts`. `ERR_UNSUPPORTED_TRANSPORT` where the
    /// transport cannot: the caller forwards what it reads itself.
    fn forward_to(&self, to: Arc<dyn Link>, counts: Arc<ForwardCounts>) -> Result<()> {
        let _ = (to, counts);
        Err(Error::unsupported(self.kind().scheme(), "forwarding on its own thread"))
    }
}

/// What a forwarding (a bridge's direction) counted.
#[derive(Debug, Default)]
pub struct ForwardCounts {
    pub forwarded: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Messages the destination had no room for, dropped.
    pub dropped: AtomicU64,
}

impl ForwardCounts {
    /// Counts how the publish of a `len`-byte message into the destination went:
    /// whether the destination is still open.
    pub fn count(&self, published: Result<Delivery>, len: usize) -> bool {
        // Relaxed: counters, with no ordering to keep.
        match published {
            Ok(Delivery::Accepted) => {
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                self.forwarded_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(e) if e.code() == ErrorCode::Closed => return false,
            // Dropped for want of room within the destination's bound (or too large for it).
            Ok(Delivery::Dropped) | Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }
}

/// Peers a transport sends to because it is told (datagrams).
pub trait Peers: Send + Sync {
    /// Replaces where published messages go (`host:port` each).
    fn set_peers(&self, peers: &[String]) -> Result<()>;
}

/// Publishes that wait to go out together.
pub trait Batching: Send + Sync {
    /// Sends everything batched now.
    fn flush(&self) -> Result<()>;
    /// Whether a caller with turns (an event loop) should call [`flush`](Self::flush)
    /// at the end of each turn it published in; without that a batch goes out by
    /// itself, after a short wait.
    fn flushes_at_end_of_turn(&self) -> bool;
    /// The caller promises that flush at the end of each turn: batches then wait for it
    /// (or for their size), not for a timer, which spares the transport's I/O thread a
    /// wake-up per batch. Transports without such a timer ignore it.
    fn set_caller_flushes(&self) {}
}

/// Connection status.
pub trait Connection: Send + Sync {
    /// The status now: of the connection (connecting side) or of the hub (listening).
    fn status(&self) -> Status;
    /// Whether the hub connects to one server (its status is that connection's), or
    /// accepts peers (its status is its own, and events with a peer are that peer's).
    fn connects(&self) -> bool;
    /// Status events since the last call (the most recent ones, if many).
    fn take_status_events(&self) -> Vec<StatusEvent>;
    /// Calls `listener` with the status events not taken yet (see
    /// [`take_status_events`](Self::take_status_events)), then (on the transport's
    /// thread) with every one from now on: none falls between the two.
    fn set_status_listener(&self, listener: Option<StatusListener>);
}

/// Called with each status event.
pub type StatusListener = Arc<dyn Fn(&StatusEvent) + Send + Sync>;

/// Requests and answers, each on a stream of its own.
pub trait Requests: Send + Sync {
    /// Sends a request; its answer arrives as a message of kind `Response` (or
    /// `Failed`) with the key returned here.
    fn request(&self, body: &[u8]) -> Result<u64>;
    /// Gives up on request `key` (the other side sees it cancelled); false if it had ended.
    fn cancel(&self, key: u64) -> bool;
    /// Answers request `key` (received with kind `Request`); false if it is gone.
    fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool;
}

/// A hub's transport as a handle other threads (and JavaScript) share: publishing,
/// reading the socket on the caller's thread, and waiting for what was published to arrive.
pub trait Link: Send + Sync {
    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery>;
    /// Publishes `payload` with the time after which it is not worth reading (`ttlMs`:
    /// ns since the Unix epoch); receivers pass over it after that, and count it
    /// (`ERR_BAD_OPTION` where the transport cannot carry it).
    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery>;
    /// Publishes `packed.len() / size` messages of `size` bytes laid end to end (at once
    /// where the transport can); how many were accepted.
    fn publish_packed(&self, channel: u16, packed: &[u8], size: usize) -> Result<usize>;
    /// Reads what waits on the socket into the receive ring, on this thread (if no
    /// other thread is at it); how much was read.
    fn pump(&self) -> Result<usize>;
    /// [`pump`](Self::pump), then `reader` (the reader taking what was delivered, and
    /// perhaps answering it), then what the transport had left to do: acknowledgements
    /// and timers wait until the answer is on its way, and may ride along with it.
    fn pump_then(&self, reader: &mut dyn FnMut()) -> Result<usize>;
    /// Sends what is batched now ([`Batching::flush`]; nothing where nothing batches).
    fn flush(&self) -> Result<()>;
    /// The caller calls [`flush`](Self::flush) after each batch it publishes (a bridge):
    /// the transport may hold what it would send or ring until then
    /// ([`Batching::set_caller_flushes`]; shared memory wakes its parked readers once a
    /// batch, not once a message).
    fn set_caller_flushes(&self) {}
    /// [`Transport::linger`], from any thread.
    fn linger(&self, linger: Duration) -> bool;
    /// Waits until the hub receives what others publish: a hub whose server keeps
    /// nothing for a subscriber it does not know yet (NATS) waits for its first
    /// connection, and fails with what ended it; the others are ready when open.
    fn wait_open(&self) -> Result<()> {
        Ok(())
    }
    /// Whether [`wait_open`](Self::wait_open) may wait (so that a caller need not ask
    /// another thread to, where it would not).
    fn waits_open(&self) -> bool {
        false
    }
    /// Whether a `len`-byte message on `channel` would find room now: publishing it
    /// would neither wait nor be dropped or refused for want of room (what an
    /// asynchronous send waits for).
    fn has_room(&self, _channel: u16, _len: usize) -> bool {
        true
    }
    /// Waits up to `timeout` for [`has_room`](Self::has_room); whether there is room.
    /// (This default looks every 200 µs; a transport that knows when room is made
    /// wakes the caller then.)
    fn wait_room(&self, channel: u16, len: usize, timeout: Duration) -> bool {
        poll_room(|| self.has_room(channel, len), timeout)
    }
    /// Sets what rings, on whichever thread may have made room, once after each
    /// [`want_room`](Self::want_room): what a waiter that must not block (an event
    /// loop's asynchronous send) waits on. False where the transport cannot tell when it
    /// makes room: the waiter looks again by the clock.
    fn set_room_bell(&self, _bell: Option<Doorbell>) -> bool {
        false
    }
    /// Asks for one ring of the room bell. Ask first, then look at
    /// [`has_room`](Self::has_room): room made in between rings.
    fn want_room(&self) {}
}

/// Looks whether `room()` every 200 µs, up to `timeout`.
pub fn poll_room(room: impl Fn() -> bool, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if room() {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_micros(200)));
    }
}

/// Called when an armed reader may have something to read.
pub type Doorbell = Arc<dyn Fn() + Send + Sync>;

/// A reader's place in a receive ring ([`Transport::detach_reader`]): its entry in the
/// segment's subscriber table, which stays claimed for the reader that takes it, and
/// the next message it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPlace {
    pub entry: u32,
    pub cursor: u64,
}

/// A receive ring with the shared-memory layout, each message after an envelope
/// (`zerohop_net::envelope`), read by another reader with a cursor of its own.
pub trait ReadInPlace: Send + Sync {
    /// The ring.
    fn segment(&self) -> &Arc<Segment>;
    /// The bytes of a message too large for its slot (its envelope gives the key).
    fn take_spilled(&self, key: u64) -> Option<Vec<u8>>;
    /// What runs (on the delivering thread) when an armed reader may have something to read.
    fn set_doorbell(&self, doorbell: Option<Doorbell>);
    /// Rings the doorbell once the ring's tail passes `cursor` (at once if it has).
    /// `watched`: the reader's own event loop watches [`readiness_fd`](Self::readiness_fd)
    /// meanwhile and pumps ([`Link::pump`]) when it is readable, so the transport leaves
    /// the socket to it (and rings only for what other threads deliver).
    fn arm(&self, cursor: u64, watched: bool);
    /// Cancels an `arm`; true if it was still armed (no ring had taken it).
    fn disarm(&self) -> bool;
    /// The reader's event loop stopped watching (see [`arm`](Self::arm)): the transport
    /// reads the socket itself again.
    fn unwatch(&self);
    /// A descriptor that polls readable when [`Link::pump`] has something to read.
    fn readiness_fd(&self) -> RawFd;
}

/// Writing a message in place.
pub trait Loans: Send {
    /// Hands `fill` the next slot; it writes the message and returns its length.
    fn publish_in_place(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<Delivery>;
}
