//! Node.js bindings for zerohop, built by napi-rs.
//!
//! This crate translates between JavaScript and the Rust crates; it makes no decisions
//! of its own. The hot path does not come through here at all: [`ShmHandle::buffer`]
//! hands JavaScript one external `ArrayBuffer` over the shared segment, and the
//! TypeScript package publishes and receives by reading and writing it with
//! `Atomics`. JavaScript calls in only for the slow paths: claiming a subscriber
//! entry, waking parked peers, blocking for space, and parking a waiter thread whose
//! doorbell (one weak threadsafe function, at most one call queued) tells JavaScript
//! that its cursor has become readable.
//!
//! Every network hub (`udp://`, `quic://`) comes through one class, [`net::NetHandle`]:
//! publishing calls in once per message (through the link, [`fast`]) or per packed
//! buffer, received messages arrive in a ring with the shared-memory layout, read by
//! the same TypeScript code, and each capability a transport may lack is a method that
//! throws `ERR_UNSUPPORTED_TRANSPORT` there. Options pass as given ([`options`]): the
//! hub and its transport take their own.
//!
//! Errors cross as JavaScript errors whose message starts with the stable code
//! (`"ERR_TIMEOUT: …"`); the TypeScript package turns them into `ZerohopError`s.

mod bell;
pub mod bridge;
pub mod fast;
pub mod net;
mod options;
mod waiter;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use napi::JsValue;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use zerohop::{Endpoint, ErrorCode, Target};
use zerohop_shm::layout::offsets;
use zerohop_shm::registry::PublisherEntry;
use zerohop_shm::ring::{process_alive, table};
use zerohop_shm::{Published, Publisher, Segment, SegmentOptions, side};

use crate::bell::BellWatcher;
use crate::waiter::Waiter;
use zerohop_shm::ring::bell::Bell;

fn js_error(e: impl Into<zerohop::Error>) -> napi::Error {
    napi::Error::new(Status::GenericFailure, e.into().to_string())
}

fn closed() -> napi::Error {
    js_error(zerohop::Error::new(ErrorCode::Closed, "the hub is closed"))
}

/// Converts a JavaScript number holding a sequence number (exact below 2^53).
fn seq_from_js(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 { v as u64 } else { 0 }
}

fn duration_ms(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 { Duration::from_secs_f64(ms / 1000.0) } else { Duration::ZERO }
}

/// A stable error code and whether retrying can help.
#[napi(object)]
pub struct ErrorCodeInfo {
    pub code: String,
    pub retryable: bool,
}

/// Every error code the native layer can produce.
#[napi]
pub fn error_codes() -> Vec<ErrorCodeInfo> {
    ErrorCode::ALL.iter().map(|c| ErrorCodeInfo { code: c.as_str().to_owned(), retryable: c.retryable() }).collect()
}

/// A parsed endpoint URL.
#[napi(object)]
pub struct ParsedEndpoint {
    /// `shm`, `udp`, `kcp`, `quic`, `tcp`, `uds` or `nats`.
    pub transport: String,
    /// True when smart selection picked the transport (a bare name).
    pub selected_automatically: bool,
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub path: Option<String>,
    /// `nats://`: the subject (a pattern, with wildcards, for subscribing).
    pub subject: Option<String>,
    pub multicast: bool,
    /// Query parameters as `[key, value]` pairs.
    pub params: Vec<Vec<String>>,
}

/// Parses an endpoint URL; throws `ERR_BAD_URL` with the reason.
#[napi]
pub fn parse_endpoint(url: String) -> Result<ParsedEndpoint> {
    let e = Endpoint::parse(&url).map_err(js_error)?;
    let (name, host, port, path, subject) = match e.target() {
        Target::Name(n) => (Some(n.clone()), None, None, None, None),
        Target::Host { host, port } => (None, Some(host.clone()), Some(*port as u32), None, None),
        Target::Path(p) => (None, None, None, Some(p.clone()), None),
        Target::Subject { host, port, subject } => {
            (None, Some(host.clone()), Some(*port as u32), None, Some(subject.clone()))
        }
    };
    Ok(ParsedEndpoint {
        transport: e.kind().scheme().to_owned(),
        selected_automatically: e.selected_automatically(),
        name,
        host,
        port,
        path,
        subject,
        multicast: e.is_multicast(),
        params: e.params().iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect(),
    })
}

/// Byte offsets of the shared-memory header, and its sizes, so TypeScript never hard-codes them.
#[napi(object)]
pub struct ShmOffsets {
    pub tail_lo: u32,
    pub tail_hi: u32,
    pub repair_lock: u32,
    pub pool_head: u32,
    pub pool_unit: u32,
    /// The largest message a shared-memory hub takes unless told (past a slot or the
    /// pool if they are larger), and the most it can be told.
    pub default_max_message: u32,
    pub max_message_limit: u32,
    pub sub_pool_cursor: u32,
    /// A subscriber entry's work-group word (see `zerohop_shm::layout::offsets::SUB_GROUP`).
    pub sub_group: u32,
    pub claims: u32,
    pub claim_entry: u32,
    pub claim_first: u32,
    pub claim_count: u32,
    pub notify: u32,
    pub waiters: u32,
    pub bells: u32,
    pub space: u32,
    pub space_waiters: u32,
    pub credit_gen: u32,
    pub subscribers: u32,
    pub sub_entry: u32,
    pub sub_pid: u32,
    pub sub_cursor_lo: u32,
    pub sub_credited: u32,
    pub sub_credit_limit_lo: u32,
    pub slot_stamp: u32,
    pub slot_len: u32,
    pub slot_origin: u32,
    pub slot_expiry: u32,
    pub slot_payload: u32,
}

/// The shared-memory layout constants.
#[napi]
pub fn shm_offsets() -> ShmOffsets {
    let u = |v: usize| v as u32;
    ShmOffsets {
        tail_lo: u(offsets::TAIL_LO),
        tail_hi: u(offsets::TAIL_HI),
        repair_lock: u(offsets::REPAIR_LOCK),
        pool_head: u(offsets::POOL_HEAD),
        pool_unit: zerohop_shm::layout::POOL_UNIT,
        default_max_message: zerohop_shm::ring::DEFAULT_MAX_MESSAGE as u32,
        max_message_limit: zerohop_shm::ring::MAX_MESSAGE_LIMIT as u32,
        sub_pool_cursor: u(offsets::SUB_POOL_CURSOR),
        sub_group: u(offsets::SUB_GROUP),
        claims: u(offsets::CLAIMS),
        claim_entry: u(offsets::CLAIM_ENTRY),
        claim_first: u(offsets::CLAIM_FIRST),
        claim_count: u(offsets::CLAIM_COUNT),
        notify: u(offsets::NOTIFY),
        waiters: u(offsets::WAITERS),
        bells: u(offsets::BELLS),
        space: u(offsets::SPACE),
        space_waiters: u(offsets::SPACE_WAITERS),
        credit_gen: u(offsets::CREDIT_GEN),
        subscribers: u(offsets::SUBSCRIBERS),
        sub_entry: u(offsets::SUB_ENTRY),
        sub_pid: u(offsets::SUB_PID),
        sub_cursor_lo: u(offsets::SUB_CURSOR_LO),
        sub_credited: u(offsets::SUB_CREDITED),
        sub_credit_limit_lo: u(offsets::SUB_CREDIT_LIMIT_LO),
        slot_stamp: u(offsets::SLOT_STAMP),
        slot_len: u(offsets::SLOT_LEN),
        slot_origin: u(offsets::SLOT_ORIGIN),
        slot_expiry: u(offsets::SLOT_EXPIRY),
        slot_payload: u(offsets::SLOT_PAYLOAD),
    }
}

/// Byte offsets of the envelope before each message in a network transport's receive
/// ring (see `zerohop_net::envelope`).
#[napi(object)]
pub struct EnvelopeLayout {
    pub len: u32,
    pub timestamp: u32,
    pub expiry: u32,
    pub seq: u32,
    pub request: u32,
    pub spill_key: u32,
    pub spilled_len: u32,
    pub peer: u32,
    pub address: u32,
    pub port: u32,
    pub channel: u32,
    pub family: u32,
    pub placement: u32,
    pub kind: u32,
    pub priority: u32,
}

/// The envelope's layout, so TypeScript never hard-codes it.
#[napi]
pub fn envelope_layout() -> EnvelopeLayout {
    use zerohop::envelope;
    let u = |v: usize| v as u32;
    EnvelopeLayout {
        len: u(envelope::LEN),
        timestamp: u(envelope::TIMESTAMP),
        expiry: u(envelope::EXPIRY),
        seq: u(envelope::SEQ),
        request: u(envelope::REQUEST),
        spill_key: u(envelope::SPILL_KEY),
        spilled_len: u(envelope::SPILLED_LEN),
        peer: u(envelope::PEER),
        address: u(envelope::ADDRESS),
        port: u(envelope::PORT),
        channel: u(envelope::CHANNEL),
        family: u(envelope::FAMILY),
        placement: u(envelope::PLACEMENT),
        kind: u(envelope::KIND),
        priority: u(envelope::PRIORITY),
    }
}

/// Whether a process exists (for dead-peer checks).
#[napi(object)]
pub struct IoUringOperation {
    pub name: String,
    pub used_for: String,
    pub supported: bool,
}

/// The io_uring operations zerohop uses and whether this kernel has each (`zerohop doctor`).
#[napi]
pub fn io_uring_operations() -> Result<Vec<IoUringOperation>> {
    let ops = zerohop::probe_uring_operations().map_err(|e| Error::from_reason(format!("io_uring: {e}")))?;
    Ok(ops
        .into_iter()
        .map(|o| IoUringOperation { name: o.name.to_owned(), used_for: o.used_for.to_owned(), supported: o.supported })
        .collect())
}

#[napi]
pub fn is_process_alive(pid: u32) -> bool {
    process_alive(pid)
}

/// The options every hub has, as its transport resolved them (defaults filled in).
#[napi(object)]
pub struct HubSettings {
    /// `pubsub`, `publisher` or `subscriber`.
    pub role: String,
    /// `drop_old`, `drop_new`, `block` or `fail_fast`.
    pub backpressure: String,
    pub publish_timeout_ms: f64,
    pub spin_us: f64,
    /// The rate limit: messages and bytes a second, and the burst (ms at the rate).
    pub rate_limit: Option<f64>,
    pub rate_limit_bytes: Option<f64>,
    pub rate_burst_ms: Option<f64>,
    /// The time to live of every message published without one of its own.
    pub ttl_ms: Option<f64>,
}

impl From<zerohop::Settings> for HubSettings {
    fn from(s: zerohop::Settings) -> Self {
        HubSettings {
            role: match s.role {
                zerohop::Role::PubSub => "pubsub",
                zerohop::Role::Publisher => "publisher",
                zerohop::Role::Subscriber => "subscriber",
            }
            .to_owned(),
            backpressure: zerohop::options::policy_name(s.backpressure).to_owned(),
            publish_timeout_ms: s.publish_timeout.as_secs_f64() * 1000.0,
            spin_us: s.spin.as_secs_f64() * 1e6,
            rate_limit: s.rate.and_then(|r| r.messages),
            rate_limit_bytes: s.rate.and_then(|r| r.bytes),
            rate_burst_ms: s.rate.map(|r| r.burst.as_secs_f64() * 1000.0),
            ttl_ms: s.ttl.map(|t| t.as_secs_f64() * 1000.0),
        }
    }
}

/// A live shared-memory segment of this host (`Hub.list()`).
#[napi(object)]
pub struct ShmSegmentInfo {
    pub name: String,
    pub path: String,
    pub slot_size: u32,
    pub capacity: u32,
    pub max_subscribers: u32,
    pub bytes: f64,
    pub creator_pid: u32,
    /// Messages published so far.
    pub tail: f64,
    pub publishers: Vec<u32>,
    pub subscribers: Vec<ShmSubscriberInfo>,
}

/// One reader of a [`ShmSegmentInfo`].
#[napi(object)]
pub struct ShmSubscriberInfo {
    pub pid: u32,
    pub entry: u32,
    pub lag: f64,
}

/// Every live shared-memory segment of this host (the segments' directory), stale ones
/// removed first.
#[napi]
pub fn list_segments() -> Vec<ShmSegmentInfo> {
    let dir = zerohop_shm::segment::segment_dir(&SegmentOptions::default());
    zerohop_shm::registry::list(&dir)
        .into_iter()
        .map(|c| ShmSegmentInfo {
            name: c.name,
            path: c.path.to_string_lossy().into_owned(),
            slot_size: c.layout.slot_size,
            capacity: c.layout.capacity,
            max_subscribers: c.layout.max_subscribers,
            bytes: c.bytes as f64,
            creator_pid: c.creator_pid,
            tail: c.tail as f64,
            publishers: c.publishers,
            subscribers: c
                .subscribers
                .into_iter()
                .map(|s| ShmSubscriberInfo { pid: s.pid, entry: s.entry, lag: s.lag as f64 })
                .collect(),
        })
        .collect()
}

/// The shape of an open segment.
#[napi(object)]
pub struct ShmLayoutInfo {
    pub header_len: u32,
    pub slot_size: u32,
    pub capacity: u32,
    pub slot_stride: u32,
    pub max_subscribers: u32,
    /// Bytes of the payload pool (0: none), and where it starts.
    pub pool_size: u32,
    pub pool_offset: u32,
    pub segment_len: f64,
    /// True if this handle created the segment.
    pub created: bool,
    pub path: String,
}

/// How a waiting reader is woken.
enum Wakeup {
    /// Its bell, polled by its event loop; at a hole (which no publish may ring for), a
    /// waiter thread that rings the bell, started the first time one is met.
    Bell { watcher: BellWatcher, at_holes: Option<Waiter>, seg: Arc<Segment>, entry: u32 },
    /// A thread that parks on the segment's futex for it.
    Thread(Waiter),
}

/// One process's handle on a shared-memory segment.
#[napi]
pub struct ShmHandle {
    segment: Option<Arc<Segment>>,
    /// What the hub's URL and options resolved to: settings, water marks, heartbeat,
    /// the publisher's (a network hub's ring has none).
    spec: Option<zerohop::shm::ShmSpec>,
    /// How the reader is woken once it waits (set with the doorbell).
    wakeup: Option<Wakeup>,
    entry: Option<u32>,
    /// The work group's entry, for a member of one.
    group: Option<u32>,
    /// Where `entry`'s reader starts, until `claim_subscriber` hands it out (an entry a
    /// network hub's reader held: see `from_segment`).
    handed: Option<u64>,
    /// The Rust publisher behind `publish_packed` and messages longer than a slot
    /// (JavaScript publishes the others itself; both claim through the hub's claim line).
    publisher: Option<Publisher>,
    /// A pooled loan open: its sequence number, pool unit and length.
    pooled_loan: Option<(u64, u32, usize)>,
    /// A publishing hub's line in the segment's publisher table (`Hub.list()`).
    listed: Option<PublisherEntry>,
    /// Who comes and goes, once someone listens.
    events: Option<Arc<zerohop::shm_events::MemberEvents>>,
}

impl ShmHandle {
    /// A handle on a segment opened elsewhere (a network transport's receive ring),
    /// with the place in it that the hub's own reader left (`claim_subscriber` gives it).
    pub(crate) fn from_segment(segment: Arc<Segment>, place: Option<zerohop::RingPlace>) -> ShmHandle {
        ShmHandle {
            segment: Some(segment),
            spec: None,
            wakeup: None,
            entry: place.map(|p| p.entry),
            group: None,
            handed: place.map(|p| p.cursor),
            publisher: None,
            pooled_loan: None,
            listed: None,
            events: None,
        }
    }

    fn seg(&self) -> Result<&Arc<Segment>> {
        self.segment.as_ref().ok_or_else(closed)
    }
}

#[napi]
impl ShmHandle {
    /// Opens or creates the segment `url` (`shm://name`, or a bare name) names, with
    /// `options` by name (the hub's and shared memory's; any other is an error).
    #[napi(factory, ts_args_type = "url: string, options?: object")]
    pub fn open(env: Env, url: String, options: Unknown) -> Result<ShmHandle> {
        // SAFETY: `options` is an argument of this call, on its env.
        let named = unsafe { options::from_js(env.raw(), options.raw()) }.map_err(js_error)?;
        let endpoint = Endpoint::parse(&url).map_err(js_error)?;
        let mut hub = zerohop::HubOptions::from_named(named).map_err(js_error)?;
        hub.add_named(zerohop::Options::from_query(endpoint.params())).map_err(js_error)?;
        let spec = zerohop::shm::resolve(&endpoint, &mut hub).map_err(js_error)?;
        let segment = Arc::new(spec.open_segment().map_err(js_error)?);
        let listed = spec.settings.role.publishes().then(|| PublisherEntry::join(segment.clone()));
        Ok(ShmHandle {
            segment: Some(segment),
            spec: Some(spec),
            wakeup: None,
            entry: None,
            group: None,
            handed: None,
            publisher: None,
            pooled_loan: None,
            listed,
            events: None,
        })
    }

    /// The hub's settings, with shared memory's defaults filled in.
    #[napi]
    pub fn settings(&self) -> Result<HubSettings> {
        self.spec.as_ref().map(|s| HubSettings::from(s.settings)).ok_or_else(closed)
    }

    /// The segment's layout.
    #[napi]
    pub fn layout(&self) -> Result<ShmLayoutInfo> {
        let seg = self.seg()?;
        let l = seg.layout();
        Ok(ShmLayoutInfo {
            header_len: l.header_len() as u32,
            slot_size: l.slot_size,
            capacity: l.capacity,
            slot_stride: l.slot_stride() as u32,
            max_subscribers: l.max_subscribers,
            pool_size: l.pool_size,
            pool_offset: l.pool_offset() as u32,
            segment_len: seg.len() as f64,
            created: seg.created(),
            path: seg.path().to_string_lossy().into_owned(),
        })
    }

    /// One `ArrayBuffer` over the whole segment. Call once per handle and build views
    /// from it. Throws `ERR_UNSUPPORTED_TRANSPORT` where the runtime refuses external
    /// buffers (Electron) and would silently copy.
    #[napi]
    pub fn buffer<'env>(&self, env: &'env Env) -> Result<ArrayBuffer<'env>> {
        let seg = self.seg()?.clone();
        let (ptr, len) = (seg.as_ptr(), seg.len());
        // SAFETY: `ptr..ptr+len` is the segment's mapping, which stays mapped while
        // any Arc<Segment> lives; the finalizer owns one such Arc, so the memory
        // outlives the ArrayBuffer. Each handle maps the segment at its own address,
        // so no other ArrayBuffer shares this backing store.
        let buffer = unsafe { ArrayBuffer::from_external(env, ptr, len, seg, |_env, seg| drop(seg)) }?;
        if !std::ptr::eq(buffer.as_ptr(), ptr) {
            return Err(js_error(zerohop::Error::new(
                ErrorCode::UnsupportedTransport,
                "this runtime copies external ArrayBuffers (Electron?), so shm:// cannot share memory here",
            )));
        }
        Ok(buffer)
    }

    /// The water marks, `[high, low]` (`null` for a network hub's ring).
    #[napi]
    pub fn water_marks(&self) -> Option<Vec<f64>> {
        self.spec.as_ref().map(|s| vec![s.water.high, s.water.low])
    }

    /// This handle's subscriber entry grants `n` more credits (see
    /// `zerohop_shm::ring::table::grant`); what it has left.
    #[napi]
    pub fn grant_credits(&self, n: u32) -> Result<f64> {
        let entry = self.entry.ok_or_else(|| js_error(zerohop::Error::role("receive")))?;
        if self.group.is_some() {
            return Err(js_error(zerohop::Error::new(
                ErrorCode::InvalidState,
                "a work group's member grants no credits: its group reads at one place, for all its members",
            )));
        }
        Ok(table::grant(self.seg()?, entry, n) as f64)
    }

    /// The credits this handle's subscriber entry has left; `null` if it never granted any.
    #[napi]
    pub fn credits(&self) -> Result<Option<f64>> {
        Ok(self.entry.and_then(|e| table::credits(self.seg().ok()?, e)).map(|c| c as f64))
    }

    /// Claims a subscriber entry that starts at the current tail, or the one the
    /// hub's reader handed over, where it was: `[index, cursor]`; for a member of a
    /// work group (the `group` option), `[index, cursor, group entry]`, the cursor its
    /// group's (see `zerohop_shm::ring::table::claim_member`).
    #[napi]
    pub fn claim_subscriber(&mut self) -> Result<Vec<f64>> {
        if let (Some(index), Some(cursor)) = (self.entry, self.handed.take()) {
            return Ok(vec![index as f64, cursor as f64]);
        }
        if self.entry.is_some() {
            return Err(js_error(zerohop::Error::new(ErrorCode::InvalidState, "subscriber already claimed")));
        }
        if let Some(name) = self.spec.as_ref().and_then(|s| s.group.clone()) {
            let (index, group, cursor) = table::claim_member(self.seg()?, &name).map_err(js_error)?;
            self.entry = Some(index);
            self.group = Some(group);
            return Ok(vec![index as f64, cursor as f64, group as f64]);
        }
        let (index, tail) = table::claim(self.seg()?).map_err(js_error)?;
        self.entry = Some(index);
        Ok(vec![index as f64, tail as f64])
    }

    /// Calls `callback` (on the JavaScript thread) with the status events of the
    /// segment's other members, looked at every `heartbeatMs`: who opened it, closed it,
    /// or died (see `zerohop::shm_events`). Nothing with `heartbeatMs: 0`.
    #[napi]
    pub fn on_status(&mut self, callback: Function<crate::net::NetStatusEvent, ()>) -> Result<()> {
        let seg = self.seg()?.clone();
        if self.events.is_none() {
            let heartbeat = self.spec.as_ref().and_then(|s| s.heartbeat);
            self.events = zerohop::shm::member_events(&seg, heartbeat, self.listed.as_ref(), self.entry);
        }
        if let Some(events) = &self.events {
            events.set_listener(Some(crate::net::status_listener(callback)?));
        }
        Ok(())
    }

    /// The next sequence number to be published.
    #[napi]
    pub fn tail(&self) -> Result<f64> {
        Ok(table::tail(self.seg()?) as f64)
    }

    /// Wakes subscribers parked on the segment.
    #[napi]
    pub fn notify(&self) -> Result<()> {
        table::notify(self.seg()?);
        Ok(())
    }

    /// Wakes publishers blocked for space.
    #[napi]
    pub fn notify_space(&self) -> Result<()> {
        table::notify_space(self.seg()?);
        Ok(())
    }

    /// Slow path of the repair lock, which a publisher without a claim line holds from
    /// its claim to its commit: waits up to `timeout_ms`, stealing the lock from a dead
    /// holder. Throws `ERR_TIMEOUT`.
    #[napi]
    pub fn lock_repair(&self, pid: u32, timeout_ms: f64) -> Result<()> {
        table::lock_repair(self.seg()?, pid, duration_ms(timeout_ms)).map_err(js_error)
    }

    /// This hub's claim line (its publisher table entry), `null` when it is unlisted.
    #[napi]
    pub fn publisher_line(&self) -> Option<u32> {
        self.listed.as_ref().and_then(PublisherEntry::index)
    }

    /// Claims sequence number `tail` by moving the whole 64-bit tail (a JavaScript
    /// publisher whose 32-bit claim would wrap the low word). False if the tail moved.
    #[napi]
    pub fn claim_wrapping(&self, tail: f64) -> Result<bool> {
        Ok(table::claim_wrapping(self.seg()?, seq_from_js(tail)))
    }

    /// Slow path of taking claimed slot `seq` whose earlier lap is unfinished: waits up
    /// to `timeout_ms` (repairing a dead writer). Throws `ERR_TIMEOUT`, after which the
    /// claim is no longer announced.
    #[napi]
    pub fn take_slot(&self, seq: f64, timeout_ms: f64) -> Result<()> {
        table::take_slot(self.seg()?, seq_from_js(seq), duration_ms(timeout_ms), self.publisher_line())
            .map_err(js_error)
    }

    /// How many messages the slowest live subscriber (other than `exclude`) is behind `tail`.
    #[napi]
    pub fn slowest_lag(&self, tail: f64, exclude: Option<u32>) -> Result<f64> {
        Ok(table::slowest_lag(self.seg()?, seq_from_js(tail), exclude) as f64)
    }

    /// `block` backpressure: waits (blocking this thread) until message `tail` can be
    /// written. Returns whether it had to wait; throws `ERR_TIMEOUT`.
    #[napi]
    pub fn wait_for_space(&self, tail: f64, timeout_ms: f64, exclude: Option<u32>) -> Result<bool> {
        table::wait_for_space(self.seg()?, seq_from_js(tail), duration_ms(timeout_ms), exclude).map_err(js_error)
    }

    /// Sets up the Rust publisher (`publish_packed`, messages longer than a slot) with
    /// the hub's settings and its own subscriber entry (which backpressure ignores).
    #[napi]
    pub fn attach_publisher(&mut self, own_entry: Option<u32>) -> Result<()> {
        let spec = self.spec.as_ref().ok_or_else(closed)?;
        self.publisher = Some(spec.publisher(self.seg()?, self.publisher_line(), own_entry));
        Ok(())
    }

    /// The largest message the hub publishes (longer than the pool: the side path).
    #[napi]
    pub fn max_message_size(&self) -> Result<f64> {
        let spec = self.spec.as_ref().ok_or_else(closed)?;
        Ok(spec.max_message_size(self.seg()?.layout()) as f64)
    }

    /// Waits up to `timeout_ms` (blocking this thread) until subscribers have read what
    /// the Rust publisher sent on the side path; whether they have.
    #[napi]
    pub fn linger(&self, timeout_ms: f64) -> bool {
        self.publisher.as_ref().is_none_or(|p| p.linger(duration_ms(timeout_ms)))
    }

    /// Side-path message `seq`, `len` bytes, from the publisher whose token is
    /// `token_lo`/`token_hi` (see `zerohop_shm::side`): an `ArrayBuffer` over a private
    /// mapping of it, `null` if its publisher no longer holds it.
    #[napi]
    pub fn fetch_side<'env>(
        &self,
        env: &'env Env,
        seq: f64,
        token_lo: u32,
        token_hi: u32,
        len: u32,
    ) -> Result<Option<ArrayBuffer<'env>>> {
        let Some(dir) = self.seg()?.dir() else { return Ok(None) };
        let token = u64::from(token_lo) | u64::from(token_hi) << 32;
        let Some(message) = side::fetch(dir, token, seq_from_js(seq), len as usize) else { return Ok(None) };
        let Ok(mapping) = message.map() else {
            // (A kernel that maps no such file privately: a copy.)
            let mut copy = Vec::new();
            message
                .read_into(&mut copy)
                .map_err(|e| js_error(zerohop_shm::ShmError::Io { op: "read a side-path message", source: e }))?;
            return Ok(Some(ArrayBuffer::from_data(env, copy)?));
        };
        let (ptr, len) = (mapping.as_ptr(), mapping.len());
        // SAFETY: `ptr..ptr+len` is the private mapping `mapping` owns; the finalizer
        // owns `mapping`, so the memory outlives the ArrayBuffer, and nothing else uses it.
        let buffer = unsafe {
            ArrayBuffer::from_external(env, ptr, len, mapping, |env, m| {
                let _ = env.adjust_external_memory(-(m.len() as i64));
                drop(m);
            })
        }?;
        // (So that V8 collects unread mappings as it would buffers that size.)
        env.adjust_external_memory(len as i64)?;
        Ok(Some(buffer))
    }

    /// Publishes `data.len() / size` messages of `size` bytes laid end to end: one call,
    /// one lock, one wake-up. Returns how many were accepted.
    #[napi]
    pub fn publish_packed(&mut self, data: &[u8], size: u32) -> Result<u32> {
        let publisher = self.publisher.as_mut().ok_or_else(closed)?;
        publisher.publish_packed(data, size as usize).map(|n| n as u32).map_err(js_error)
    }

    /// Publishes one message longer than a slot, through the payload pool or the side
    /// path (the Rust publisher copies it there), with `expiry` in its slot (`ttlMs`:
    /// `zerohop_shm::ring::expiry_in`'s word; 0 or none: never). False when `drop_new`
    /// dropped it.
    #[napi]
    pub fn publish_large(&mut self, data: &[u8], expiry: Option<u32>) -> Result<bool> {
        let publisher = self.publisher.as_mut().ok_or_else(closed)?;
        publisher.set_expiry(expiry.unwrap_or(0));
        let published = publisher.publish(data);
        publisher.set_expiry(0);
        match published.map_err(js_error)? {
            Published::Sent(_) => Ok(true),
            Published::Dropped => Ok(false),
        }
    }

    /// Opens a loan of `len` bytes in the payload pool: `[seq, byteOffset]` (the bytes to
    /// write lie at `byteOffset` of the segment), `null` when `drop_new` dropped it.
    /// Commit with `commit_pooled` or give it up with `abort_pooled`.
    #[napi]
    pub fn loan_pooled(&mut self, len: u32) -> Result<Option<Vec<f64>>> {
        if self.pooled_loan.is_some() {
            return Err(js_error(zerohop::Error::new(ErrorCode::InvalidState, "a loan is open on this hub")));
        }
        let layout = *self.seg()?.layout();
        let publisher = self.publisher.as_mut().ok_or_else(closed)?;
        let Some((seq, unit)) = publisher.begin_pooled(len as usize).map_err(js_error)? else {
            return Ok(None);
        };
        self.pooled_loan = Some((seq, unit, len as usize));
        Ok(Some(vec![seq as f64, layout.pool_unit_offset(unit) as f64]))
    }

    /// Commits the open pooled loan with its first `len` bytes.
    #[napi]
    pub fn commit_pooled(&mut self, len: u32) -> Result<()> {
        let (seq, unit, max) = self.pooled_loan.take().ok_or_else(closed)?;
        let publisher = self.publisher.as_mut().ok_or_else(closed)?;
        if len as usize > max {
            publisher.abandon_pooled(seq);
            return Err(js_error(zerohop::Error::new(
                ErrorCode::MessageTooLarge,
                format!("commit of {len} bytes exceeds the loan's {max}"),
            )));
        }
        publisher.commit_pooled(seq, unit, len as usize);
        Ok(())
    }

    /// Gives the open pooled loan up: its slot is passed over.
    #[napi]
    pub fn abort_pooled(&mut self) -> Result<()> {
        if let (Some((seq, _, _)), Some(publisher)) = (self.pooled_loan.take(), self.publisher.as_mut()) {
            publisher.abandon_pooled(seq);
        }
        Ok(())
    }

    /// Installs the doorbell: `callback` runs on the JS thread when an armed cursor
    /// becomes readable. The reader's bell rings it where the segment has a directory
    /// that takes one (its event loop polls the bell); elsewhere a waiter thread parks
    /// for the reader.
    #[napi]
    pub fn set_doorbell(&mut self, env: Env, callback: Function<u32, ()>) -> Result<()> {
        let seg = self.seg()?.clone();
        if let Some(entry) = self.entry
            // (A directory that takes no FIFO: the waiter thread, as without a directory.)
            && let Ok(Some(bell)) = Bell::new(seg.clone(), entry)
            // SAFETY: `callback` is a function argument of this call, on its env.
            && let Some(watcher) = unsafe { BellWatcher::new(env.raw(), callback.raw(), bell) }
        {
            self.wakeup = Some(Wakeup::Bell { watcher, at_holes: None, seg, entry });
            return Ok(());
        }
        let tsfn = callback.build_threadsafe_function::<u32>().weak::<true>().max_queue_size::<1>().build()?;
        let waiter = Waiter::spawn(seg, self.entry, tsfn).map_err(|e| napi::Error::from_reason(e.to_string()))?;
        self.wakeup = Some(Wakeup::Thread(waiter));
        Ok(())
    }

    /// Whether the doorbell comes from the reader's bell on its own event loop: then an
    /// armed doorbell keeps the loop alive, and a reader spins on its own thread before
    /// it arms (nobody else spins for it).
    #[napi]
    pub fn rings_bell(&self) -> bool {
        matches!(self.wakeup, Some(Wakeup::Bell { .. }))
    }

    /// Asks for the doorbell once `cursor` is readable; a waiter thread spins for
    /// `spin_us` microseconds before it parks.
    #[napi]
    pub fn arm(&mut self, cursor: f64, spin_us: f64) -> Result<()> {
        let (cursor, spin) = (seq_from_js(cursor), Duration::from_nanos((spin_us.max(0.0) * 1000.0) as u64));
        match self.wakeup.as_mut().ok_or_else(closed)? {
            Wakeup::Bell { watcher, at_holes, seg, entry } => {
                if !watcher.arm(cursor) {
                    if at_holes.is_none() {
                        let spawned =
                            watcher.ringer().and_then(|ring| Waiter::ringing(seg.clone(), Some(*entry), ring));
                        *at_holes = Some(spawned.map_err(|e| napi::Error::from_reason(e.to_string()))?);
                    }
                    if let Some(w) = at_holes {
                        w.arm(cursor, spin);
                    }
                }
            }
            Wakeup::Thread(w) => w.arm(cursor, spin),
        }
        Ok(())
    }

    /// Cancels an armed wait.
    #[napi]
    pub fn disarm(&mut self) {
        match &mut self.wakeup {
            Some(Wakeup::Bell { watcher, at_holes, .. }) => {
                watcher.disarm();
                if let Some(w) = at_holes {
                    w.disarm();
                }
            }
            Some(Wakeup::Thread(w)) => w.disarm(),
            None => {}
        }
    }

    /// Closes the handle: stops the waiter, frees the subscriber entry, detaches
    /// `buffer` (every view of it becomes empty), and unlinks the segment if this was
    /// its last user. Idempotent.
    #[napi]
    pub fn close(&mut self, buffer: Option<ArrayBuffer>) -> Result<()> {
        // (Before the entry goes: its bell or its waiter is the entry's.)
        self.wakeup = None;
        if let Some(events) = self.events.take() {
            events.stop();
        }
        self.publisher = None;
        self.listed = None;
        if let Some(seg) = self.segment.take() {
            if let Some(index) = self.entry.take() {
                table::release(&seg, index);
            }
            if let Some(b) = buffer
                && !b.is_detached()?
            {
                b.detach()?;
            }
            seg.release();
        }
        Ok(())
    }
}

impl Drop for ShmHandle {
    fn drop(&mut self) {
        // Collected without close(): free what other processes can see.
        self.wakeup = None;
        if let (Some(seg), Some(index)) = (&self.segment, self.entry) {
            table::release(seg, index);
        }
    }
}
