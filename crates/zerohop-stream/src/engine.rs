//! The engine of a hub that carries records: its connections, its peers and their
//! channels, moved on by the core's [`Driver`](zerohop_net::Driver) (see the crate
//! docs), over a [`Wire`] (sockets, or KCP conversations).
//!
//! Connections live in a slab, indexed by their wire's token; peers outlive connections
//! (a reconnecting peer finds its channels again by its session). Nothing here blocks.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::driver::{Drive, Ready};
use zerohop_net::ring::{Deliveries, Inbound, Sink, SinkDeliveries};
use zerohop_net::sending::{Burst, ReadLooks};
use zerohop_proto::compress::Compressor;
use zerohop_proto::lifecycle::{Event as LifeEvent, Lifecycle, Status};
use zerohop_proto::records::{Control, Record, RecordError, RecordReader, RecordWriter};
use zerohop_proto::session::{Numbering, ReceiveWindow, SendQueue};
use zerohop_proto::workgroup::{Member, Recipient, WorkGroups};
use zerohop_transport::metrics::GroupMetrics;
use zerohop_transport::{Credentials, Error, ErrorCode, Kind, StatusEvent, Value};

use crate::tls::{TlsContext, TlsSession, tls_lost};
use crate::transport::ReliableOptions;
use crate::wire::{Interest, Lost, Origin, Wire, WireEvent, WireWriter};
/// Bytes read per system call, into one reused buffer.
const READ_BUF: usize = 64 << 10;
/// Reads per connection per turn, so that one busy peer does not starve the others.
const READS_PER_TURN: usize = 16;
/// How often what the application read is acknowledged (one acknowledgement then covers
/// many messages; while it reads nothing the looks back off, see [`ReadLooks`]), and how
/// much may be read before one goes at once: a quarter of what
/// the sender keeps unacknowledged (its hello says), at most 2 MiB. Fewer
/// acknowledgements wake the sender less: 4 KB messages went 2-18 % faster with 2 MiB
/// than with 256 KiB on loopback (2026-12-04).
const ACK_TICK: Duration = ReadLooks::FIRST;
const ACK_BYTES_MAX: usize = 2 << 20;

/// How many bytes read call for an acknowledgement at once, for a sender that keeps
/// `queue_limit` bytes unacknowledged per channel.
fn ack_every(queue_limit: u64) -> usize {
    usize::try_from(queue_limit / 4).unwrap_or(usize::MAX).clamp(1, ACK_BYTES_MAX)
}

/// The same in messages, for a sender that keeps `queue_messages` unacknowledged.
fn ack_every_messages(queue_messages: u64) -> u64 {
    (queue_messages / 4).max(1)
}
/// A burst of publishes goes out once this much waits: large writes are what a byte
/// stream is fastest with (4 KB messages: 1.0 GB/s with 16 KiB, 1.6 with 64 KiB, 1.9
/// with 256 KiB on loopback, 2026-12-04; 1 MiB 9-26 % faster than 256 KiB in ten
/// interleaved rounds, 64-byte messages even, 2026-12-05), and a burst waits at most
/// microseconds anyway (or, from JavaScript, for the end of the event loop's turn).
const BURST_BYTES: usize = 1 << 20;
/// How often held messages try the receive ring again.
const ROOM_POLL: Duration = Duration::from_millis(1);
/// How long an accepted connection may take to say hello, at most (with heartbeats, a
/// peer silent for three of them is gone, hello or not).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest the housekeeping tick runs (hellos, lingering peers, heartbeats).
const TICK: Duration = Duration::from_millis(250);

/// How an engine runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// What the hub was opened with (its send queue at least one byte).
    pub options: ReliableOptions,
    /// TLS on every connection (`tcp://` with `tls` options).
    pub tls: Option<TlsContext>,
}

impl Origin {
    fn inbound<'a>(self, peer: u32, channel: u16, body: &'a [u8]) -> Inbound<'a> {
        Inbound { credentials: self.credentials, ..Inbound::message(peer, self.addr, channel, body) }
    }

    /// [`inbound`](Self::inbound) with the message's expiry (`ttlMs`), if it has one.
    fn expiring<'a>(self, peer: u32, channel: u16, body: &'a [u8], expiry_ns: Option<u64>) -> Inbound<'a> {
        Inbound { expiry_ns, ..self.inbound(peer, channel, body) }
    }
}

/// A TLS failure as a connection's end: a certificate (or a refusal), permanent, or a
/// broken TLS stream.
/// Messages read that the receive ring had no room for (accepted by their windows), in
/// order: their bytes end to end in one buffer, so that holding one costs a copy, not
/// an allocation. Reading stops while any are held, so this holds one read at most.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// Each one's channel, sequence number (its window gave it), length and expiry,
    /// oldest first; the oldest starts at `start`.
    messages: VecDeque<(u16, u64, usize, Option<u64>)>,
    start: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn push(&mut self, channel: u16, seq: u64, body: &[u8], expiry_ns: Option<u64>) {
        self.bytes.extend_from_slice(body);
        self.messages.push_back((channel, seq, body.len(), expiry_ns));
    }

    /// The oldest: its channel, sequence number, bytes and expiry.
    fn front(&self) -> Option<(u16, u64, &[u8], Option<u64>)> {
        let &(channel, seq, len, expiry) = self.messages.front()?;
        Some((channel, seq, &self.bytes[self.start..self.start + len], expiry))
    }

    fn pop_front(&mut self) {
        if let Some((_, _, len, _)) = self.messages.pop_front() {
            self.start += len;
        }
        if self.messages.is_empty() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.messages.clear();
        self.start = 0;
    }
}

/// A message to queue: as it is or compressed, with its expiry if it has one.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    message: &'a [u8],
    compressed: Option<&'a [u8]>,
    expiry_ns: Option<u64>,
}

/// One connection's state besides its reader.
struct ConnState {
    token: u64,
    from: Origin,
    writer: RecordWriter,
    peer: Option<u32>,
    /// A connect under way.
    connecting: bool,
    /// What the wire watches it for.
    interest: Interest,
    /// Messages waiting for room in the ring; the connection is not read meanwhile.
    held: Held,
    /// When the peer was last heard, to the housekeeping tick: a read sets `heard`,
    /// and the tick moves it here, so that reading reads no clock.
    last_heard: Instant,
    heard: bool,
    /// When we last sent, the same way (`sent` set by a write, dated by the tick).
    last_sent: Instant,
    sent: bool,
    hello_by: Option<Instant>,
    /// The peer sent `Close`.
    closed_by_peer: bool,
    /// Writing found the peer gone (`EPIPE`, `ECONNRESET`): nothing more is written, and
    /// what it sent before is read to its end before the connection is dropped.
    write_failed: bool,
    /// The last read filled half the buffer or more: the peer streams.
    streaming: bool,
}

struct Conn {
    reader: RecordReader,
    /// Between the wire and the records, with `tls` options.
    tls: Option<Box<TlsSession>>,
    s: ConnState,
}

/// A peer: what outlives its connections.
struct Peer {
    id: u32,
    from: Origin,
    conn: Option<u64>,
    queues: Vec<Option<SendQueue>>,
    /// The peer's session (from its hello), and our windows for it.
    session: u64,
    windows: Vec<(u16, ReceiveWindow)>,
    /// Bytes and messages delivered since the last acknowledgement, and how many of
    /// either call for one at once (from the peer's hello).
    delivered_bytes: usize,
    delivered_messages: u64,
    ack_every: usize,
    ack_every_messages: u64,
    linger_until: Option<Instant>,
    /// The work group it receives in (an index into `Engine::groups`), from its hello.
    group: Option<usize>,
}

impl Member for Peer {
    fn id(&self) -> u32 {
        self.id
    }

    fn group(&self) -> Option<usize> {
        self.group
    }

    fn connected(&self) -> bool {
        self.conn.is_some()
    }

    fn has_room(&self, channel: u16, len: usize) -> bool {
        Peer::has_room(self, channel, len)
    }

    fn queued(&self, channel: u16) -> usize {
        self.queues.get(usize::from(channel)).and_then(Option::as_ref).map_or(0, SendQueue::len)
    }
}

impl Peer {
    fn new(id: u32, from: Origin) -> Peer {
        Peer {
            id,
            from,
            conn: None,
            queues: Vec::new(),
            session: 0,
            windows: Vec::new(),
            delivered_bytes: 0,
            delivered_messages: 0,
            ack_every: ACK_BYTES_MAX,
            ack_every_messages: u64::MAX,
            linger_until: None,
            group: None,
        }
    }

    /// Whether a `len`-byte message fits in its queue for `channel` (what the kernel
    /// holds for the peer counts: it is unacknowledged too).
    fn has_room(&self, channel: u16, len: usize) -> bool {
        self.queues.get(usize::from(channel)).and_then(Option::as_ref).is_none_or(|q| q.has_room(len))
    }

    /// Whether what was delivered since the last acknowledgement calls for one now (a
    /// quarter of the peer's queue, in bytes or in messages).
    fn ack_due(&self) -> bool {
        self.delivered_bytes >= self.ack_every || self.delivered_messages >= self.ack_every_messages
    }

    /// Queues `message` on `channel` (its queue made on first use, bounded by `limit`
    /// bytes and `messages` messages), as it is or, `compressed`, as that body, with its
    /// expiry if it has one.
    fn queue(&mut self, channel: u16, message: Outgoing<'_>, limits: (usize, usize), number: u64) {
        self.queue_of(channel, limits, number).push_message(message.message, message.compressed, message.expiry_ns);
    }

    /// Its queue for `channel`, made if new (bounded by `limit` bytes and `messages`
    /// messages, numbered from `number`).
    fn queue_of(&mut self, channel: u16, (limit, messages): (usize, usize), number: u64) -> &mut SendQueue {
        let i = usize::from(channel);
        if self.queues.len() <= i {
            self.queues.resize_with(i + 1, || None);
        }
        self.queues[i].get_or_insert_with(|| SendQueue::tagged(limit).with_message_limit(messages).starting_at(number))
    }

    /// Whether what was delivered since the last acknowledgement is worth one when the
    /// reader has read everything: a sixteenth of what calls for one at once (a sender
    /// whose queue is full may be waiting on it; a ping-pong's few bytes stay on the
    /// clock), and something at all (a queue of a few bytes makes a sixteenth nothing).
    fn ack_worth_on_catch_up(&self) -> bool {
        self.delivered_messages > 0
            && (self.delivered_bytes >= self.ack_every / 16 || self.delivered_messages >= self.ack_every_messages / 16)
    }

    /// What the peer's hello says it keeps unacknowledged, in bytes and in messages:
    /// a quarter of either calls for an acknowledgement.
    fn set_queue_bounds(&mut self, queue_limit: u64, queue_messages: u64) {
        self.ack_every = ack_every(queue_limit);
        self.ack_every_messages = ack_every_messages(queue_messages);
    }

    /// Acknowledges, through `writer`, what the application consumed (up to ring
    /// position `consumed`) of the peer's channels: whether anything was, and whether
    /// any channel still has messages unread.
    fn acknowledge(&mut self, writer: &mut RecordWriter, consumed: u64) -> (bool, bool) {
        let (mut any, mut unread) = (false, false);
        for &mut (channel, ref mut w) in self.windows.iter_mut() {
            if let Some(ack) = w.consumed(consumed) {
                writer.control(&Control::Ack { channel, ack });
                any = true;
            }
            unread |= w.has_unread();
        }
        if any {
            self.delivered_bytes = 0;
            self.delivered_messages = 0;
        }
        (any, unread)
    }

    fn queued_messages(&self) -> u64 {
        self.queues.iter().flatten().map(|q| q.len() as u64).sum()
    }

    fn unacked_bytes(&self) -> u64 {
        self.queues.iter().flatten().map(|q| q.queued_bytes() as u64).sum()
    }
}

/// Our window for a peer's `channel` among its `windows`: they are few (the channels a
/// peer uses) and in the order of their channels, so a search costs less than a hash
/// (this runs for every message).
#[inline]
fn window(windows: &mut Vec<(u16, ReceiveWindow)>, channel: u16) -> &mut ReceiveWindow {
    let i = match windows.binary_search_by_key(&channel, |(c, _)| *c) {
        Ok(i) => i,
        Err(i) => {
            windows.insert(i, (channel, ReceiveWindow::default()));
            i
        }
    };
    &mut windows[i].1
}

/// Where peer `id` is in `peers`, which are kept in the order of their ids (they only
/// grow): looked up for every message, from any of a thousand peers.
fn find_peer(peers: &[Peer], id: u32) -> Option<usize> {
    peers.binary_search_by_key(&id, |p| p.id).ok()
}

/// A peer connected now, as metrics show it.
#[derive(Clone, Debug)]
pub struct ConnectedPeer {
    /// As `from` and status events name it.
    pub name: String,
    /// Who it is (Unix sockets).
    pub credentials: Option<Credentials>,
    /// What we keep for it until its application has read it (the kernel's part too).
    pub queued_bytes: u64,
    pub queued_messages: u64,
    /// Of that, what the wire holds, not yet taken by the peer (the kernel's socket
    /// buffer, `SIOCOUTQ`; or KCP's segments not yet acknowledged).
    pub unsent: u64,
    /// The work group it receives in, if any.
    pub group: Option<String>,
}

/// Counters (the rest of the metrics are read off the state).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamCounters {
    pub reconnects: u64,
    pub protocol_violations: u64,
    pub slow_consumers: u64,
    pub heartbeat_timeouts: u64,
    pub dropped: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// TLS handshakes that failed (certificates, or not TLS at all).
    pub handshake_failures: u64,
    /// Connections that ended in the middle of a record (a peer killed while writing,
    /// or one that sent a frame's beginning only): what there was of it is dropped.
    pub truncated_records: u64,
    /// Bytes LZ4 saved of the messages published (`compression: 'lz4'`).
    pub bytes_saved: u64,
}

/// A reply or cancellation that found the ring full: never dropped.
struct Undelivered {
    peer: u32,
    from: Origin,
    kind: Kind,
    request: u64,
    body: Vec<u8>,
}

/// The connecting side's plan.
struct Connector {
    life: Lifecycle,
    retry_at: Option<Instant>,
    /// The attempt under way must connect by then.
    attempt_by: Option<Instant>,
}

pub struct Engine<W: Wire> {
    pub config: Arc<Config>,
    sink: Arc<dyn Sink>,
    session: u64,
    wire: W,
    /// By their wire's token.
    conns: Vec<Option<Box<Conn>>>,
    /// How many there are.
    live: usize,
    peers: Vec<Peer>,
    next_peer: u32,
    connector: Option<Connector>,
    /// Our requests under way (connecting side).
    requests: HashMap<u64, ()>,
    next_request: u64,
    /// Requests to answer (listening side): our key → (peer, its key).
    answers: HashMap<u64, (u32, u64)>,
    next_answer: u64,
    undelivered: VecDeque<Undelivered>,
    pub counters: StreamCounters,
    /// `compression: 'lz4'`: compresses the message being published.
    compressor: Compressor,
    /// Where a peer's new queue of a channel starts numbering (see `Numbering`): a peer
    /// forgotten after its linger and back with the same session remembers the old
    /// numbers, and would drop new messages numbered like those it had.
    numbered: Numbering,
    /// The work groups its peers named (listening side).
    groups: WorkGroups,
    pub closing: bool,
    room_freed: bool,
    /// Connections with something to write.
    dirty: Vec<u64>,
    /// When what was published goes out (at once, or with the rest of its burst).
    burst: Burst,
    ack_at: Option<Instant>,
    /// Much was delivered since the last acknowledgement that left nothing unacknowledged
    /// (one was due by volume): the sender may be waiting for room on the rest, so the
    /// reader's catching up ([`Drive::caught_up`]) acknowledges it, not the next look by
    /// the clock (a full queue of 1 MiB otherwise moved once per look, 2 ms: 160 MB/s,
    /// 2026-12-05). A ping-pong's acknowledgements stay on the clock.
    owed: bool,
    /// How long after a look that found unread messages the next one comes.
    read_looks: ReadLooks,
    tick_at: Option<Instant>,
    held_at: Option<Instant>,
    read_buf: Vec<u8>,
    /// What TLS decrypts into (empty without TLS).
    plain_buf: Vec<u8>,
    events: Vec<WireEvent>,
    /// The connection that delivered last: a polling reader reads it first, without
    /// asking epoll (see `pump`).
    hot: Option<u64>,
    /// Pumps since the wire was last polled.
    pumps_since_poll: u32,
    /// Pumps in a row by a reader alone: one that spins only a little before it parks
    /// (`spinUs`) never reaches [`UNTRACK_AFTER`], and pays no epoll calls per message.
    alone_pumps: u32,
}

impl<W: Wire> Engine<W> {
    /// Starts on `wire` (bound, if listening), connecting if not; status events and
    /// messages go to `sink`.
    pub fn start(config: Config, wire: W, sink: Arc<dyn Sink>, session: u64) -> Engine<W> {
        let config = Arc::new(config);
        let now = Instant::now();
        let mut e = Engine {
            config: config.clone(),
            sink,
            session,
            wire,
            conns: Vec::new(),
            live: 0,
            peers: Vec::new(),
            next_peer: 1,
            connector: None,
            requests: HashMap::new(),
            next_request: 1,
            answers: HashMap::new(),
            next_answer: 1,
            undelivered: VecDeque::new(),
            counters: StreamCounters::default(),
            compressor: Compressor::default(),
            numbered: Numbering::default(),
            groups: WorkGroups::default(),
            closing: false,
            room_freed: false,
            dirty: Vec::new(),
            burst: Burst::new(now, BURST_BYTES),
            ack_at: None,
            owed: false,
            read_looks: ReadLooks::new(),
            tick_at: None,
            held_at: None,
            read_buf: vec![0; READ_BUF],
            plain_buf: if config.tls.is_some() { vec![0; READ_BUF] } else { Vec::new() },
            events: Vec::with_capacity(64),
            hot: None,
            pumps_since_poll: 0,
            alone_pumps: 0,
        };
        if config.options.listen {
            e.report(Status::Connected, None, None);
        } else {
            e.peers.push(Peer::new(1, e.wire.server()));
            e.next_peer = 2;
            e.connector = Some(Connector {
                life: Lifecycle::new(config.options.reconnect, session),
                retry_at: None,
                attempt_by: None,
            });
            e.report(Status::Connecting, e.wire.server().name(1), None);
            e.connect(now);
        }
        e
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.wire.local_addr()
    }

    fn report(&self, status: Status, peer: Option<String>, error: Option<Error>) {
        self.sink.status(StatusEvent { status, peer, error });
    }

    fn peer_index(&self, id: u32) -> Option<usize> {
        find_peer(&self.peers, id)
    }

    // ---- connections -------------------------------------------------------------------

    /// Keeps `conn` as connection `token` (the wire's).
    fn insert(&mut self, token: u64, mut conn: Conn) {
        let i = token as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        conn.s.token = token;
        self.conns[i] = Some(Box::new(conn));
        self.live += 1;
    }

    /// A new connection's state, from `from`: our hello waits in its writer.
    fn new_conn(&self, from: Origin, connecting: bool, now: Instant) -> Result<Conn, rustls::Error> {
        let mut writer = RecordWriter::new().with_priorities(self.config.options.priorities.clone());
        let queue_limit = self.config.options.send_queue_bytes as u64;
        let queue_messages = u64::try_from(self.config.options.send_queue_messages).unwrap_or(u64::MAX);
        let group = self.config.options.group.as_deref().map_or(&[][..], str::as_bytes);
        writer.control(&Control::Hello { session: self.session, queue_limit, queue_messages, group });
        let tls = match &self.config.tls {
            Some(t) => Some(Box::new(t.session()?)),
            None => None,
        };
        Ok(Conn {
            reader: RecordReader::new(self.config.options.max_message, self.config.options.channels),
            tls,
            s: ConnState {
                token: 0,
                from,
                writer,
                peer: None,
                connecting,
                interest: Interest { read: !connecting, write: connecting },
                held: Held::default(),
                last_heard: now,
                heard: false,
                last_sent: now,
                sent: false,
                hello_by: Some(
                    now + self.config.options.heartbeat.map_or(HELLO_TIMEOUT, |h| (h * 3).min(HELLO_TIMEOUT)),
                ),
                closed_by_peer: false,
                write_failed: false,
                streaming: false,
            },
        })
    }

    /// Starts an attempt to connect (connecting side).
    fn connect(&mut self, now: Instant) {
        let timeout = self.config.options.connect_timeout;
        let Some(c) = self.connector.as_mut() else { return };
        c.retry_at = None;
        c.attempt_by = Some(now + timeout);
        let token = match self.wire.connect(now) {
            Ok(t) => t,
            Err(e) => return self.attempt_failed(now, Lost::io(&e)),
        };
        match self.new_conn(self.wire.server(), true, now) {
            Ok(conn) => self.insert(token, conn),
            Err(e) => {
                self.wire.close(token);
                self.attempt_failed(now, tls_lost(&e));
            }
        }
    }

    /// An attempt failed (or the connection was lost): plan the next one.
    fn attempt_failed(&mut self, now: Instant, lost: Lost) {
        let server = self.peers.first().map_or_else(|| self.wire.server(), |p| p.from);
        let addr = server.name(1);
        let Some(c) = self.connector.as_mut() else { return };
        c.attempt_by = None;
        let was_connected = c.life.status() == Status::Connected;
        let next = if lost.permanent {
            c.life.on(LifeEvent::Close) // certificates do not fix themselves
        } else {
            c.life.on(if was_connected { LifeEvent::Lost } else { LifeEvent::Failed })
        };
        c.retry_at = next.retry_after.map(|d| now + d);
        let status = match c.life.status() {
            Status::Closed => Status::Disconnected,
            s => s,
        };
        if was_connected {
            self.counters.reconnects += 1;
        }
        if next.changed || was_connected || lost.permanent {
            self.report(status, addr, Some(Error::new(lost.code, lost.why)));
        }
        // Our requests die with the connection.
        let requests = std::mem::take(&mut self.requests);
        self.delivering(|e, d| {
            for key in requests.into_keys() {
                e.deliver_surely(d, 1, server, Kind::Failed, key, b"the connection was lost");
            }
        });
    }

    /// A listener's new connection `token`, from `from`: our hello goes at once.
    fn accepted(&mut self, token: u64, from: Origin, now: Instant) {
        match self.new_conn(from, false, now) {
            Ok(conn) => {
                self.insert(token, conn);
                self.dirty.push(token);
                self.schedule_tick(now);
            }
            Err(_) => {
                self.counters.handshake_failures += 1;
                self.wire.close(token);
            }
        }
    }

    fn drop_conn(&mut self, token: u64) {
        if self.conns.get_mut(token as usize).and_then(Option::take).is_some() {
            self.forget_conn(token);
        }
    }

    /// Connection `token`, taken out of `conns`, goes: closed, its token free.
    fn forget_conn(&mut self, token: u64) {
        self.wire.close(token);
        self.live -= 1;
    }

    /// Connection `token`, taken out of `conns`, ended: its peer is told, kept for a
    /// while, or forgotten.
    fn lost(&mut self, token: u64, now: Instant, lost: Lost) {
        let Some(c) = self.conns.get_mut(token as usize).and_then(Option::take) else { return };
        self.forget_conn(token);
        let by_peer = lost.by_peer || c.s.closed_by_peer;
        let Some(id) = c.s.peer else {
            if self.connector.is_some() {
                self.attempt_failed(now, lost);
            }
            return;
        };
        let Some(i) = self.peer_index(id) else { return };
        if self.peers[i].conn != Some(token) {
            return; // replaced by its reconnect
        }
        self.peers[i].conn = None;
        if self.connector.is_some() {
            if !self.closing {
                self.attempt_failed(now, lost);
            }
            return;
        }
        let from = self.peers[i].from;
        // Its requests to us end: the handler may stop.
        let cancelled: Vec<u64> = self.answers.iter().filter(|(_, (p, _))| *p == id).map(|(k, _)| *k).collect();
        self.delivering(|e, d| {
            for key in cancelled {
                e.answers.remove(&key);
                e.deliver_surely(d, id, from, Kind::Cancelled, key, &[]);
            }
        });
        if self.closing {
            return;
        }
        if by_peer {
            self.report(Status::Disconnected, from.name(id), None);
            self.forget(id);
        } else {
            self.report(Status::Disconnected, from.name(id), Some(Error::new(lost.code, lost.why)));
            self.peers[i].linger_until = Some(now + self.config.options.peer_linger);
            // A work group's member away: what it never got goes to the others now.
            self.reroute(i, false);
            self.schedule_tick(now);
        }
    }

    fn forget(&mut self, id: u32) {
        if let Some(i) = self.peer_index(id) {
            // A work group's member given up on: what it did not acknowledge goes to the others.
            self.reroute(i, true);
        }
        self.peers.retain(|p| p.id != id);
        self.room_freed = true;
    }

    /// Moves what member `i` of a work group holds to the other members: what no
    /// connection of it carried whole, or (`given_up`) everything it did not
    /// acknowledge. While it may come back, only to a member that is connected.
    fn reroute(&mut self, i: usize, given_up: bool) {
        let Some(g) = self.peers[i].group else { return };
        let id = self.peers[i].id;
        if !given_up && !WorkGroups::others_connected(&self.peers, g, id) {
            return;
        }
        let queues = self.peers[i].queues.iter_mut().enumerate().filter_map(|(c, q)| Some((c as u16, q.as_mut()?)));
        let moved = WorkGroups::taken(queues, given_up);
        let limits = (self.config.options.send_queue_bytes, self.config.options.send_queue_messages);
        for (channel, framed) in moved {
            // (Whatever its room: they were accepted, and go before anything new.)
            let Some(j) = self.groups.reroute_to(&self.peers, g, channel, framed.len(), id) else { continue };
            let number = self.numbered.next(channel);
            self.peers[j].queue_of(channel, limits, number).push_framed(&framed);
            if let Some(t) = self.peers[j].conn {
                self.dirty.push(t);
            }
        }
    }

    // ---- reading -----------------------------------------------------------------------

    /// Acts on what the wire reported; whether it was a connection to read.
    fn on_event(&mut self, ev: WireEvent, now: Instant) -> bool {
        match ev {
            WireEvent::Accepted { token, from } => self.accepted(token, from, now),
            WireEvent::Connected { token, from } => self.connected(token, from, now),
            WireEvent::Readable(token) => {
                if self.conns.get(token as usize).is_some_and(|c| c.as_ref().is_some_and(|c| !c.s.connecting)) {
                    self.read(token, &mut Clock::at(now));
                    return true;
                }
            }
            WireEvent::Writable(token) => self.dirty.push(token),
            WireEvent::Ended { token, lost } => self.lost(token, now, lost),
        }
        false
    }

    /// The connect under way on `token` is done.
    fn connected(&mut self, token: u64, from: Origin, now: Instant) {
        let Some(c) = self.conns.get_mut(token as usize).and_then(|c| c.as_mut()) else { return };
        c.s.connecting = false;
        c.s.interest = Interest { read: true, write: false };
        c.s.last_heard = now;
        c.s.from = from;
        // The peer is ours at once: what waits in its channels goes with the hello.
        c.s.peer = Some(1);
        let interest = c.s.interest;
        self.wire.watch(token, interest);
        if let Some(p) = self.peers.first_mut() {
            p.conn = Some(token);
            p.from = from;
        }
        if let Some(k) = self.connector.as_mut() {
            k.attempt_by = None;
        }
        self.dirty.push(token);
        self.schedule_tick(now);
    }

    /// Reads what connection `token` has (unless messages wait for room).
    fn read(&mut self, token: u64, clock: &mut Clock) -> usize {
        let Some(mut c) = self.conns.get_mut(token as usize).and_then(Option::take) else { return 0 };
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut plain = std::mem::take(&mut self.plain_buf);
        let mut total = 0;
        let mut ended = None;
        // What this read delivers goes in as one set of deliveries, opened once there is
        // something (an empty poll takes no hold of the sink).
        let sink = std::cell::OnceCell::new();
        let mut deliveries: Option<SinkDeliveries<'_>> = None;
        for _ in 0..READS_PER_TURN {
            if !c.s.held.is_empty() {
                break;
            }
            // A connection that streams reads straight into the receive ring's memory
            // where it can (see `ReadWindow`): one copy of each large message fewer.
            let window = if c.s.streaming && c.tls.is_none() && W::READS_DIRECTLY {
                let lead = c.reader.awaiting().unwrap_or(0);
                deliveries
                    .get_or_insert_with(|| sink.get_or_init(|| self.sink.clone()).deliveries())
                    .window(lead, READ_BUF)
            } else {
                None
            };
            let into: &mut [u8] = match window {
                // SAFETY: the window lasts until the next one opens (the next time round)
                // or `deliveries` are dropped (after the loop), and `into` is not used
                // past this time round; nothing else refers to its bytes meanwhile.
                Some(w) => unsafe { w.bytes() },
                None => &mut buf,
            };
            match self.wire.recv(token, into) {
                Ok(0) => {
                    ended = Some(Lost::closed());
                    break;
                }
                Ok(n) => {
                    total += n;
                    c.s.streaming = n >= READ_BUF / 2;
                    self.hot = Some(token);
                    c.s.heard = true;
                    self.counters.bytes_received += n as u64;
                    let Conn { reader, tls, s } = &mut *c;
                    let d = deliveries.get_or_insert_with(|| sink.get_or_init(|| self.sink.clone()).deliveries());
                    let mut violation = None;
                    let mut records = |bytes: &[u8]| {
                        if violation.is_some() {
                            return;
                        }
                        let pushed = reader.push(bytes, |rec| {
                            if violation.is_none()
                                && let Err(e) = self.on_record(&mut *d, s, rec, clock)
                            {
                                violation = Some(e);
                            }
                        });
                        if let Err(e) = pushed {
                            violation.get_or_insert(e);
                        }
                    };
                    let decrypted = match tls {
                        Some(t) => t.received(&into[..n], &mut plain, &mut records),
                        None => {
                            records(&into[..n]);
                            Ok(())
                        }
                    };
                    if let Err(e) = decrypted {
                        ended = Some(self.tls_failed(token, &mut c, &e));
                        break;
                    }
                    if let Some(e) = violation {
                        ended = Some(Lost::protocol(e));
                        break;
                    }
                    if n < into.len() {
                        break; // the connection is empty now
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    ended = Some(Lost::io(&e));
                    break;
                }
            }
        }
        if !W::REPORTS_END && c.s.closed_by_peer && ended.is_none() {
            ended = Some(Lost::closed()); // its goodbye was its last word
        }
        if let Some(lost) = ended.as_mut().filter(|l| l.code == ErrorCode::Io && !c.reader.at_boundary()) {
            // Closed or reset (a killed peer's socket is reset when it had unread data).
            self.counters.truncated_records += 1;
            lost.why.push_str(" in the middle of a record (what there was of it is dropped)");
        }
        self.read_buf = buf;
        self.plain_buf = plain;
        drop(deliveries);
        // Messages wait for room: stop reading this connection until they are taken.
        let want_read = c.s.held.is_empty();
        if c.s.interest.read != want_read {
            c.s.interest.read = want_read;
            self.wire.watch(token, c.s.interest);
            if !want_read {
                self.held_at.get_or_insert_with(|| clock.now() + ROOM_POLL);
            }
        }
        // TLS may have something to say (its handshake) or have let our records go.
        let dirty = c.s.writer.control_pending() > 0 || c.tls.is_some();
        self.conns[token as usize] = Some(c);
        if dirty {
            self.dirty.push(token);
        }
        if let Some(mut lost) = ended {
            if matches!(lost.code, ErrorCode::Protocol) {
                self.counters.protocol_violations += 1;
            }
            if self.conns[token as usize].as_ref().is_some_and(|c| c.s.closed_by_peer) {
                lost.by_peer = true;
            }
            self.lost(token, clock.now(), lost);
        }
        total
    }

    /// TLS broke on connection `token` (`c`): the alert rustls made goes out, and the
    /// failure is counted (a failed handshake) and returned.
    fn tls_failed(&mut self, token: u64, c: &mut Conn, e: &rustls::Error) -> Lost {
        if let Some(t) = c.tls.as_mut() {
            if t.is_handshaking() {
                self.counters.handshake_failures += 1;
            }
            let _ = t.flush(&mut WireWriter { wire: &mut self.wire, token });
        }
        tls_lost(e)
    }

    fn on_record(
        &mut self,
        d: &mut dyn Deliveries,
        s: &mut ConnState,
        rec: Record<'_>,
        clock: &mut Clock,
    ) -> Result<(), RecordError> {
        let bad = |why| Err(RecordError::Malformed(why));
        match rec {
            Record::Control(Control::Hello { session, queue_limit, queue_messages, group }) => {
                self.hello(s, session, queue_limit, queue_messages, group)
            }
            Record::Control(Control::Start { channel, first_seq }) => {
                if let Some(p) = s.peer.and_then(|id| self.peer_index(id)) {
                    window(&mut self.peers[p].windows, channel).start_stream(first_seq);
                }
                Ok(())
            }
            Record::Message { channel, payload, expiry_ns } => {
                let Some(i) = s.peer.and_then(|id| self.peer_index(id)) else { return bad("a message from nobody") };
                let Some(seq) = window(&mut self.peers[i].windows, channel).accept() else {
                    return Ok(()); // delivered before the reconnect
                };
                if self.config.options.relay {
                    self.relay(channel, payload, expiry_ns, self.peers[i].id);
                }
                let p = &mut self.peers[i];
                let w = window(&mut p.windows, channel);
                if s.held.is_empty() {
                    let m = p.from.expiring(p.id, channel, payload, expiry_ns);
                    if let Some(pos) = d.deliver(&m) {
                        w.delivered(pos, seq);
                        p.delivered_bytes += payload.len();
                        p.delivered_messages += 1;
                        self.ack_at.get_or_insert_with(|| clock.now() + ACK_TICK);
                        return Ok(());
                    }
                }
                s.held.push(channel, seq, payload, expiry_ns);
                Ok(())
            }
            Record::Control(Control::Ack { channel, ack }) => {
                let Some(i) = s.peer.and_then(|id| self.peer_index(id)) else { return Ok(()) };
                let q = self.peers[i].queues.get_mut(usize::from(channel)).and_then(Option::as_mut);
                if q.is_some_and(|q| q.ack(ack).is_ok()) {
                    self.room_freed = true;
                    return Ok(());
                }
                bad("an acknowledgement of messages never sent")
            }
            Record::Control(Control::Request { key, body }) => {
                if !self.config.options.listen {
                    return bad("a request to a connecting hub");
                }
                let Some(id) = s.peer else { return bad("a request from nobody") };
                let local = self.next_answer;
                self.next_answer += 1;
                self.answers.insert(local, (id, key));
                let m = Inbound { kind: Kind::Request, request: local, ..s.from.inbound(id, 0, body) };
                if self.undelivered.is_empty() && d.deliver(&m).is_some() {
                    return Ok(());
                }
                self.undelivered.push_back(Undelivered {
                    peer: id,
                    from: s.from,
                    kind: Kind::Request,
                    request: local,
                    body: body.to_vec(),
                });
                self.held_at.get_or_insert_with(|| clock.now() + ROOM_POLL);
                Ok(())
            }
            Record::Control(Control::Reply { key, body }) | Record::Control(Control::Fail { key, reason: body }) => {
                if self.config.options.listen {
                    return bad("a reply to a listening hub");
                }
                let kind =
                    if matches!(rec, Record::Control(Control::Reply { .. })) { Kind::Response } else { Kind::Failed };
                if self.requests.remove(&key).is_some() {
                    self.deliver_surely(d, 1, s.from, kind, key, body);
                }
                Ok(())
            }
            Record::Control(Control::Cancel { key }) => {
                let Some(id) = s.peer else { return Ok(()) };
                let local = self.answers.iter().find(|(_, (p, k))| *p == id && *k == key).map(|(l, _)| *l);
                if let Some(local) = local {
                    self.answers.remove(&local);
                    self.deliver_surely(d, id, s.from, Kind::Cancelled, local, &[]);
                }
                Ok(())
            }
            Record::Control(Control::Ping) => {
                s.writer.control(&Control::Pong);
                Ok(())
            }
            Record::Control(Control::Pong) => Ok(()),
            Record::Control(Control::Close { .. }) => {
                s.closed_by_peer = true;
                Ok(())
            }
            // (Both handled by the reader: a switch, and a compressed message it hands on.)
            Record::Control(Control::Select { .. } | Control::Compressed { .. }) => Ok(()),
        }
    }

    /// The peer said who it is.
    fn hello(
        &mut self,
        s: &mut ConnState,
        session: u64,
        queue_limit: u64,
        queue_messages: u64,
        group: &[u8],
    ) -> Result<(), RecordError> {
        s.hello_by = None;
        if !self.config.options.listen {
            // Our server: connected.
            let addr = self.peers.first().map_or_else(|| self.wire.server(), |p| p.from).name(1);
            if let Some(p) = self.peers.first_mut()
                && p.session != session
            {
                // Another run of the server: its numbering starts over, and what we knew
                // of the last one's (what to drop as already delivered) means nothing.
                p.session = session;
                p.windows.clear();
                p.delivered_bytes = 0;
                p.delivered_messages = 0;
            }
            if let Some(p) = self.peers.first_mut() {
                p.set_queue_bounds(queue_limit, queue_messages);
            }
            if let Some(k) = self.connector.as_mut()
                && k.life.on(LifeEvent::Connected).changed
            {
                self.report(Status::Connected, addr, None);
            }
            return Ok(());
        }
        // A returning peer (same session, within its linger) finds its channels again.
        let i = match self.peers.iter().position(|p| p.session == session) {
            Some(i) => {
                if let Some(old) = self.peers[i].conn.take() {
                    self.drop_conn(old);
                }
                i
            }
            None => {
                let group = self.groups.named(group).map_err(|_| RecordError::Malformed("too many work groups"))?;
                let id = self.next_peer;
                self.next_peer += 1;
                let mut p = Peer::new(id, s.from);
                p.session = session;
                p.group = group;
                self.peers.push(p);
                self.peers.len() - 1
            }
        };
        let p = &mut self.peers[i];
        p.conn = Some(s.token);
        p.from = s.from;
        p.set_queue_bounds(queue_limit, queue_messages);
        p.linger_until = None;
        s.peer = Some(p.id);
        let name = p.from.name(p.id);
        self.report(Status::Connected, name, None);
        self.dirty.push(s.token);
        Ok(())
    }

    /// Runs `f` with deliveries into the sink open (see [`Sink::deliveries`]).
    fn delivering<R>(&mut self, f: impl FnOnce(&mut Self, &mut dyn Deliveries) -> R) -> R {
        let sink = self.sink.clone();
        let mut d = sink.deliveries();
        f(self, &mut d)
    }

    /// Delivers a reply, failure or cancellation, or keeps it until there is room.
    fn deliver_surely(
        &mut self,
        d: &mut dyn Deliveries,
        peer: u32,
        from: Origin,
        kind: Kind,
        request: u64,
        body: &[u8],
    ) {
        if self.undelivered.is_empty() {
            let m = Inbound { kind, request, ..from.inbound(peer, 0, body) };
            if d.deliver(&m).is_some() {
                return;
            }
        }
        self.undelivered.push_back(Undelivered { peer, from, kind, request, body: body.to_vec() });
        self.held_at.get_or_insert(Instant::now() + ROOM_POLL);
    }

    /// Offers what waits for room again; true if nothing waits any more.
    fn retry_held(&mut self, now: Instant) -> bool {
        self.delivering(|e, d| e.retry_held_into(d, now))
    }

    fn retry_held_into(&mut self, d: &mut dyn Deliveries, now: Instant) -> bool {
        while let Some(u) = self.undelivered.front() {
            let m = Inbound { kind: u.kind, request: u.request, ..u.from.inbound(u.peer, 0, &u.body) };
            if d.deliver(&m).is_none() {
                return false;
            }
            self.undelivered.pop_front();
        }
        let mut all = true;
        for t in 0..self.conns.len() {
            let Some(c) = self.conns[t].as_mut() else { continue };
            if c.s.held.is_empty() {
                continue;
            }
            match c.s.peer.and_then(|id| find_peer(&self.peers, id)) {
                Some(i) => {
                    let p = &mut self.peers[i];
                    while let Some((channel, seq, body, expiry_ns)) = c.s.held.front() {
                        let w = window(&mut p.windows, channel);
                        // (Unless a newer connection of the peer's delivered it meanwhile.)
                        if !w.is_stale(seq) {
                            let m = p.from.expiring(p.id, channel, body, expiry_ns);
                            let Some(pos) = d.deliver(&m) else { break };
                            // Acknowledged by the number it came with, not the window's last.
                            w.delivered(pos, seq);
                            p.delivered_bytes += body.len();
                            p.delivered_messages += 1;
                        }
                        c.s.held.pop_front();
                    }
                }
                None => c.s.held.clear(),
            }
            if c.s.held.is_empty() {
                // Reading goes on: what the kernel holds is read at the next turn.
                c.s.interest.read = true;
                self.wire.watch(t as u64, c.s.interest);
                self.ack_at.get_or_insert(now + ACK_TICK);
            } else {
                all = false;
            }
        }
        all
    }

    // ---- writing -----------------------------------------------------------------------

    /// Writes what connection `token` has to send, as far as the wire takes it.
    fn write(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(token as usize).and_then(|c| c.as_mut()) else { return };
        if c.s.connecting || c.s.write_failed {
            return;
        }
        let mut none: [Option<SendQueue>; 0] = [];
        // Channels go to a peer only once it is known (a listener learns it from the hello).
        let queues = match c.s.peer.and_then(|id| find_peer(&self.peers, id)).map(|i| &mut self.peers[i]) {
            Some(p) if p.conn == Some(token) => {
                // What the application read since the last acknowledgement rides along:
                // an answer carries the acknowledgement of the question (one segment,
                // not two, and nothing left for the timer), where the wire wants it.
                if W::PIGGYBACK_ACKS && p.delivered_messages > 0 {
                    p.acknowledge(&mut c.s.writer, self.sink.consumed());
                }
                &mut p.queues[..]
            }
            _ => &mut none[..],
        };
        let mut out = WireWriter { wire: &mut self.wire, token };
        let Written { bytes, blocked, failed } = match c.tls.as_mut() {
            Some(tls) => write_tls(&mut out, tls, &mut c.s.writer, queues),
            None => write_plain(&mut out, &mut c.s.writer, queues),
        };
        if bytes > 0 {
            c.s.sent = true;
            self.counters.bytes_sent += bytes as u64;
        }
        let gone = failed
            .as_ref()
            .is_some_and(|e| matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset));
        if gone {
            // The peer is gone, but what it sent before it went may still wait in the
            // socket (its last messages, or a record cut short): reading finds them, and
            // then the end, which drops the connection.
            c.s.write_failed = true;
        }
        let write = blocked && !gone;
        if c.s.interest.write != write {
            c.s.interest.write = write;
            self.wire.watch(token, c.s.interest);
        }
        if let Some(e) = failed.filter(|_| !gone) {
            self.lost(token, Instant::now(), Lost::io(&e));
        }
    }

    /// Writes every connection that has something to send.
    fn write_dirty(&mut self) {
        while let Some(t) = self.dirty.pop() {
            self.write(t);
        }
        self.wire.flush();
    }

    // ---- publishing and requests --------------------------------------------------------

    /// Whether every peer (of a work group: one member) has room for a `len`-byte
    /// message on `channel`.
    pub fn all_have_room(&self, channel: u16, len: usize) -> bool {
        self.groups.all_have_room(&self.peers, channel, len)
    }

    /// Peers, and work groups, without room for a `len`-byte message on `channel`.
    pub fn full_targets(&self, channel: u16, len: usize) -> Vec<Recipient> {
        self.groups.full(&self.peers, channel, len)
    }

    /// Whether `target` has room (see `WorkGroups::has_room`).
    pub fn has_room(&self, target: Recipient, channel: u16, len: usize) -> bool {
        WorkGroups::has_room(&self.peers, target, channel, len)
    }

    /// Queues `message` for every peer but `skip`, and sends it (in a burst, soon);
    /// `expiry_ns` is when it stops being worth reading (`ttlMs`), if ever. `start`
    /// reads when the publish started (see [`Burst::published`]).
    pub fn publish(
        &mut self,
        channel: u16,
        message: &[u8],
        expiry_ns: Option<u64>,
        skip: &[Recipient],
        start: impl FnOnce() -> Instant,
    ) {
        let (limit, messages) = (self.config.options.send_queue_bytes, self.config.options.send_queue_messages);
        // Compressed once for every peer, when that shrinks it (a few bytes never do).
        let compressed = if self.config.options.compression { self.compressor.compress(message) } else { None };
        if let Some(body) = compressed {
            self.counters.bytes_saved += (message.len() - body.len()) as u64;
        }
        let out = Outgoing { message, compressed, expiry_ns };
        let number = self.numbered.next(channel);
        for p in self.peers.iter_mut().filter(|p| p.group.is_none() && !skip.contains(&Recipient::Peer(p.id))) {
            p.queue(channel, out, (limit, messages), number);
        }
        for g in 0..self.groups.len() {
            if skip.contains(&Recipient::Group(g)) {
                continue;
            }
            if let Some(i) = self.groups.member_for(&self.peers, g, channel, message.len(), None) {
                self.peers[i].queue(channel, out, (limit, messages), number);
            }
        }
        if self.burst.published(message.len(), start).sends() {
            self.flush();
        }
        self.burst.returned();
    }

    /// A relaying listener passes `message`, which peer `from` published, on to every
    /// other peer; one without room for it is a slow consumer, disconnected.
    fn relay(&mut self, channel: u16, message: &[u8], expiry_ns: Option<u64>, from: u32) {
        let (limit, messages) = (self.config.options.send_queue_bytes, self.config.options.send_queue_messages);
        let mut slow = None;
        let number = self.numbered.next(channel);
        for g in 0..self.groups.len() {
            let out = Outgoing { message, compressed: None, expiry_ns };
            match self.groups.member_for(&self.peers, g, channel, message.len(), Some(from)) {
                Some(i) if self.peers[i].has_room(channel, message.len()) => {
                    self.peers[i].queue(channel, out, (limit, messages), number);
                    if let Some(t) = self.peers[i].conn {
                        self.dirty.push(t);
                    }
                }
                Some(_) => self.counters.dropped += 1, // (every member is a queue behind)
                None => {}
            }
        }
        for p in self.peers.iter_mut().filter(|p| p.id != from && p.group.is_none()) {
            if !p.has_room(channel, message.len()) {
                slow.get_or_insert_with(Vec::new).push(p.id);
                continue;
            }
            p.queue(channel, Outgoing { message, compressed: None, expiry_ns }, (limit, messages), number);
            if let Some(t) = p.conn {
                self.dirty.push(t);
            }
        }
        for peer in slow.into_iter().flatten() {
            self.disconnect_slow(peer);
        }
    }

    /// Writes what every peer's channels hold.
    pub fn flush(&mut self) {
        self.burst.flushed();
        for p in &self.peers {
            if let Some(t) = p.conn {
                self.dirty.push(t);
            }
        }
        self.write_dirty();
    }

    /// The caller flushes at the end of each turn it published in (see [`Burst`]).
    pub fn flush_by_caller(&mut self) {
        self.burst.flush_by_caller();
    }

    /// Writes what a burst holds, if anything.
    pub fn flush_pending(&mut self) {
        if self.burst.pending() {
            self.flush();
        }
    }

    /// Counts one message dropped for a peer without room.
    pub fn count_dropped(&mut self) {
        self.counters.dropped += 1;
    }

    /// A listener's peer too slow to read what it is sent: disconnected.
    pub fn disconnect_slow(&mut self, peer: u32) {
        self.counters.slow_consumers += 1;
        let Some(i) = self.peer_index(peer) else { return };
        let from = self.peers[i].from;
        if let Some(t) = self.peers[i].conn.take() {
            self.drop_conn(t);
        }
        self.report(
            Status::Disconnected,
            from.name(peer),
            Some(Error::new(ErrorCode::SlowConsumer, "too slow to read what it was sent: disconnected")),
        );
        self.forget(peer);
    }

    /// Sends a request to the server; its key.
    pub fn request(&mut self, body: &[u8]) -> Result<u64, Error> {
        if self.config.options.listen {
            return Err(Error::new(
                ErrorCode::UnsupportedTransport,
                "a listening hub answers requests; connect to send them",
            ));
        }
        let Some(t) = self.peers.first().and_then(|p| p.conn) else {
            return Err(Error::new(
                ErrorCode::ConnectionLost,
                "not connected to the server now (it reconnects by itself)",
            ));
        };
        let key = self.next_request;
        self.next_request += 1;
        self.requests.insert(key, ());
        if let Some(c) = self.conns.get_mut(t as usize).and_then(|c| c.as_mut()) {
            c.s.writer.control(&Control::Request { key, body });
        }
        self.dirty.push(t);
        self.write_dirty();
        Ok(key)
    }

    pub fn cancel(&mut self, key: u64) -> bool {
        if self.requests.remove(&key).is_none() {
            return false;
        }
        if let Some(t) = self.peers.first().and_then(|p| p.conn)
            && let Some(c) = self.conns.get_mut(t as usize).and_then(|c| c.as_mut())
        {
            c.s.writer.control(&Control::Cancel { key });
            self.dirty.push(t);
            self.write_dirty();
        }
        true
    }

    pub fn respond(&mut self, key: u64, ok: bool, body: &[u8]) -> bool {
        let Some((peer, remote)) = self.answers.remove(&key) else { return false };
        let Some(t) = self.peers.iter().find(|p| p.id == peer).and_then(|p| p.conn) else { return false };
        let Some(c) = self.conns.get_mut(t as usize).and_then(|c| c.as_mut()) else { return false };
        if ok {
            c.s.writer.control(&Control::Reply { key: remote, body });
        } else {
            c.s.writer.control(&Control::Fail { key: remote, reason: body });
        }
        self.dirty.push(t);
        self.write_dirty();
        true
    }

    // ---- timers --------------------------------------------------------------------------

    /// How often housekeeping runs.
    fn tick_every(&self) -> Duration {
        self.config.options.heartbeat.map_or(TICK, |h| (h / 2).min(TICK)).max(Duration::from_millis(1))
    }

    fn schedule_tick(&mut self, now: Instant) {
        let every = self.tick_every();
        self.tick_at.get_or_insert(now + every);
    }

    /// Acknowledges what the application read since the last look.
    fn acknowledge(&mut self, now: Instant) {
        // By the clock, or because enough was delivered (then at every read).
        let timed = self.ack_at.is_some_and(|t| t <= now);
        let by_volume = self.peers.iter().any(Peer::ack_due);
        self.ack_at = None;
        let consumed = self.sink.consumed();
        let mut again = false;
        for p in &mut self.peers {
            let Some(t) = p.conn else { continue };
            let Some(c) = self.conns.get_mut(t as usize).and_then(|c| c.as_mut()) else { continue };
            let (any, unread) = p.acknowledge(&mut c.s.writer, consumed);
            again |= unread;
            if any {
                self.dirty.push(t);
            }
        }
        let next = self.read_looks.looked(consumed, timed);
        self.owed = by_volume || (self.owed && again);
        if again {
            self.ack_at = Some(now + next);
        }
    }

    /// The reader read all that was delivered: what it read is acknowledged now if a
    /// sender may be waiting for it (see `owed`); whether anything was sent.
    fn settle_owed(&mut self, clock: &mut Clock) -> bool {
        if !self.owed && !self.peers.iter().any(Peer::ack_worth_on_catch_up) {
            return false;
        }
        self.acknowledge(clock.now());
        self.write_dirty();
        true
    }

    /// Hellos overdue, heartbeats, lingering peers.
    fn housekeeping(&mut self, now: Instant) {
        self.tick_at = None;
        let hb = self.config.options.heartbeat;
        let since_last_tick = now.checked_sub(self.tick_every()).unwrap_or(now);
        let mut lost = Vec::new();
        for (t, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            if c.s.hello_by.is_some_and(|by| by <= now) {
                lost.push((t as u64, Lost::new(ErrorCode::Protocol, "no hello in time")));
                continue;
            }
            let Some(hb) = hb else { continue };
            if c.s.connecting {
                continue;
            }
            if !c.s.interest.read {
                // Reading waits for room: what the peer says waits in the kernel, unheard
                // but not silence.
                c.s.last_heard = now;
            } else if c.s.heard {
                // Heard since the last tick: taken as heard when it ran, so that a peer
                // gone silent is found as soon as before.
                c.s.last_heard = c.s.last_heard.max(since_last_tick);
            }
            if c.s.sent {
                // Likewise: a ping is sent no later than before.
                c.s.last_sent = c.s.last_sent.max(since_last_tick);
            }
            (c.s.heard, c.s.sent) = (false, false);
            if now.saturating_duration_since(c.s.last_heard) >= hb * 3 {
                self.counters.heartbeat_timeouts += 1;
                lost.push((
                    t as u64,
                    Lost::new(ErrorCode::ConnectionLost, format!("no heartbeat for {} ms", (hb * 3).as_millis())),
                ));
            } else if now.saturating_duration_since(c.s.last_sent) >= hb {
                c.s.writer.control(&Control::Ping);
                self.dirty.push(t as u64);
            }
        }
        for (t, why) in lost {
            if why.code == ErrorCode::Protocol {
                self.counters.protocol_violations += 1;
            }
            self.lost(t, now, why);
        }
        let expired: Vec<u32> = self
            .peers
            .iter()
            .filter(|p| p.conn.is_none() && p.linger_until.is_some_and(|t| t <= now))
            .map(|p| p.id)
            .collect();
        for id in expired {
            self.forget(id);
        }
        let busy = self.conns.iter().any(Option::is_some) || self.peers.iter().any(|p| p.linger_until.is_some());
        if busy {
            self.schedule_tick(now);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if self.held_at.is_some_and(|t| t <= now) {
            self.held_at = None;
            if !self.retry_held(now) {
                self.held_at = Some(now + ROOM_POLL);
            }
        }
        if let Some(k) = self.connector.as_ref() {
            if k.retry_at.is_some_and(|t| t <= now) {
                self.connect(now);
            } else if k.attempt_by.is_some_and(|t| t <= now) {
                let connecting: Vec<u64> =
                    self.conns.iter().flatten().filter(|c| c.s.connecting).map(|c| c.s.token).collect();
                let why = format!("no connection within {} ms", self.config.options.connect_timeout.as_millis());
                if connecting.is_empty() {
                    self.attempt_failed(now, Lost::new(ErrorCode::Timeout, why));
                } else {
                    for t in connecting {
                        self.lost(t, now, Lost::new(ErrorCode::Timeout, why.clone()));
                    }
                }
            }
        }
        if self.ack_at.is_some_and(|t| t <= now) || self.peers.iter().any(Peer::ack_due) {
            self.acknowledge(now);
        }
        if self.tick_at.is_some_and(|t| t <= now) {
            self.housekeeping(now);
        }
        if self.burst.due().is_some_and(|t| t <= now) {
            self.flush();
        }
    }

    /// The earliest moment something is due.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let wire = self.wire.deadline();
        let k = self.connector.as_ref();
        [
            wire,
            self.burst.due(),
            self.ack_at,
            self.tick_at,
            self.held_at,
            k.and_then(|k| k.retry_at),
            k.and_then(|k| k.attempt_by),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Reads what every ready connection has, runs what is due, writes what waits; how
    /// many connections were read.
    pub fn turn(&mut self, now: Instant, readable: bool) -> usize {
        let mut read = 0;
        let mut events = std::mem::take(&mut self.events);
        for _ in 0..4 {
            let more = self.wire.poll(now, readable, &mut events);
            for ev in events.drain(..) {
                read += usize::from(self.on_event(ev, now));
            }
            if !more {
                break;
            }
        }
        self.events = events;
        self.run_timers(now);
        self.write_dirty();
        read
    }

    /// Whether everything accepted reached its peers' applications (acknowledged) and
    /// every answer went out.
    pub fn drained(&self) -> bool {
        self.peers.iter().all(|p| p.unacked_bytes() == 0)
            && self.conns.iter().flatten().all(|c| c.s.writer.control_pending() == 0)
    }

    /// Says goodbye on every connection (written now, as far as the kernel takes it).
    pub fn close(&mut self) {
        self.closing = true;
        for t in 0..self.conns.len() {
            if let Some(c) = self.conns[t].as_mut()
                && !c.s.connecting
            {
                c.s.writer.control(&Control::Close { code: 0, reason: b"closed" });
                self.dirty.push(t as u64);
            }
        }
        self.write_dirty();
        self.connector = None;
    }

    /// Counters and gauges for metrics.
    pub fn snapshot(&self) -> (StreamCounters, u64, u64, u64, u64) {
        let peers = self.peers.iter().filter(|p| p.conn.is_some()).count() as u64;
        let unacked = self.peers.iter().map(Peer::unacked_bytes).sum();
        (self.counters, peers, unacked, self.requests.len() as u64, self.answers.len() as u64)
    }

    /// The wire's own counters.
    pub fn wire_details(&self) -> Vec<(&'static str, Value)> {
        self.wire.details()
    }

    pub fn wire_chaos(&self) -> Option<zerohop_transport::chaos::ChaosReport> {
        self.wire.chaos()
    }

    /// The peers connected now.
    pub fn connected_peers(&self) -> Vec<ConnectedPeer> {
        self.peers
            .iter()
            .filter_map(|p| {
                let t = p.conn?;
                Some(ConnectedPeer {
                    name: p.from.name(p.id).unwrap_or_default(),
                    credentials: p.from.credentials,
                    queued_bytes: p.unacked_bytes(),
                    queued_messages: p.queued_messages(),
                    unsent: self.wire.unsent(t),
                    group: p.group.map(|g| String::from_utf8_lossy(&self.groups.get(g).name).into_owned()),
                })
            })
            .collect()
    }

    /// The work groups its peers named, with their members and what moved between them.
    pub fn groups(&self) -> Vec<GroupMetrics> {
        GroupMetrics::of(&self.groups, self.peers.iter().map(|p| p.group))
    }

    pub fn take_room_freed(&mut self) -> bool {
        std::mem::take(&mut self.room_freed)
    }
}

/// What writing a connection came to.
struct Written {
    /// Bytes the wire took.
    bytes: usize,
    /// The connection is full: wait until it is writable.
    blocked: bool,
    failed: Option<io::Error>,
}

/// Writes what `writer` plans (records and the channels' messages) to `out`, one
/// write a plan, until the connection is full or nothing is left.
fn write_plain<W: Wire>(
    out: &mut WireWriter<'_, W>,
    writer: &mut RecordWriter,
    queues: &mut [Option<SendQueue>],
) -> Written {
    let mut w = Written { bytes: 0, blocked: false, failed: None };
    while let Some(plan) = writer.plan(queues) {
        let slices = writer.slices(&plan, queues);
        match out.wire.send(out.token, &slices) {
            Ok(n) => {
                writer.wrote(&plan, n, queues);
                w.bytes += n;
                if n < plan.len() {
                    w.blocked = true;
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                w.blocked = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                w.failed = Some(e);
                break;
            }
        }
    }
    w
}

/// [`write_plain`] through TLS: the plan goes into rustls as plaintext and its records
/// out, until the connection is full or nothing is left (or, before the handshake is
/// done, rustls holds all it may).
fn write_tls<W: Wire>(
    out: &mut WireWriter<'_, W>,
    tls: &mut TlsSession,
    writer: &mut RecordWriter,
    queues: &mut [Option<SendQueue>],
) -> Written {
    let mut w = Written { bytes: 0, blocked: false, failed: None };
    loop {
        match tls.flush(out) {
            Ok((n, done)) => {
                w.bytes += n;
                if !done {
                    w.blocked = true;
                    break;
                }
            }
            Err(e) => {
                w.failed = Some(e);
                break;
            }
        }
        let Some(plan) = writer.plan(queues) else { break };
        let slices = writer.slices(&plan, queues);
        let n = tls.send(&slices);
        writer.wrote(&plan, n, queues);
        if n == 0 {
            break;
        }
    }
    w
}

/// The time, read from the clock the first time something needs it: a poll that finds
/// nothing (most of a spinning reader's) reads no clock.
#[derive(Default)]
struct Clock(Option<Instant>);

impl Clock {
    fn at(now: Instant) -> Clock {
        Clock(Some(now))
    }

    fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// How many pumps in a row a reader spins alone before the wire may stop watching its
/// connection (a socket leaves epoll: see [`Wire::read_directly`]), about a millisecond.
const UNTRACK_AFTER: u32 = 1024;

/// How many polls may skip the wire's poll (for sockets, `epoll_wait`) while the
/// connection that spoke last is read directly (a listener's other connections and new
/// ones wait at most this many polls).
const DIRECT_POLLS: u32 = 8;
/// The same for a listener with one connection: only a new one waits (a turn with
/// epoll costs a spinning reader more than its poll).
const LONE_DIRECT_POLLS: u32 = 64;

impl<W: Wire> Drive for Engine<W> {
    fn readiness_fd(&self) -> std::os::fd::RawFd {
        self.wire.readiness_fd()
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.next_deadline()
    }

    fn drive(&mut self, now: Instant, ready: Ready) -> usize {
        self.turn(now, ready.readable)
    }

    /// A polling reader's look: on a wire that [reads directly](Wire::READS_DIRECTLY),
    /// the connection that delivered last is read directly (a client has only one; a
    /// conversation goes on where it was), which spares the wire's poll (`epoll_wait`)
    /// before each read. The wire is polled when that finds nothing now and then, and
    /// whenever there is no such connection, so that other peers, new ones and a
    /// connect under way are never left behind.
    fn pump(&mut self, alone: bool) -> usize {
        let mut clock = Clock::default();
        // The caller reads the ring: it may have made the room that messages wait for.
        if self.held_at.is_some() && self.retry_held(clock.now()) {
            self.held_at = None;
        }
        let hot = self.hot.filter(|t| {
            W::READS_DIRECTLY
                && self
                    .conns
                    .get(*t as usize)
                    .is_some_and(|c| c.as_ref().is_some_and(|c| !c.s.connecting && c.s.held.is_empty()))
        });
        // A caller that polls is not at the end of its turn: what it published goes now.
        self.burst.polled();
        self.flush_pending();
        if let Some(t) = hot {
            let only = !self.config.options.listen;
            // A client, or a listener with one connection.
            let lone = only || self.live == 1;
            self.alone_pumps = if alone { self.alone_pumps.saturating_add(1) } else { 0 };
            self.wire.read_directly(t, self.alone_pumps >= UNTRACK_AFTER && lone);
            if self.read(t, &mut clock) > 0 {
                // A caller that polls reads the ring empty before it pumps: what is due
                // to be acknowledged is read, and need not wait for the I/O thread.
                if self.peers.iter().any(Peer::ack_due) {
                    self.acknowledge(clock.now());
                }
                self.write_dirty();
                return 1;
            }
            // Nothing more to read: the reader has read the ring empty.
            self.settle_owed(&mut clock);
            self.pumps_since_poll += 1;
            let direct = if lone { LONE_DIRECT_POLLS } else { DIRECT_POLLS };
            if only || self.pumps_since_poll < direct {
                self.write_dirty();
                return 0;
            }
        }
        self.pumps_since_poll = 0;
        self.turn(clock.now(), true)
    }

    fn take_changed(&mut self) -> bool {
        self.take_room_freed()
    }

    fn caught_up(&mut self) -> bool {
        self.settle_owed(&mut Clock::default())
    }

    fn readiness_needed(&mut self) {
        self.alone_pumps = 0;
        self.wire.watch_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_messages_keep_their_order_in_one_buffer() {
        let mut h = Held::default();
        h.push(1, 7, b"ab", None);
        h.push(2, 3, b"", Some(9));
        h.push(1, 8, b"cde", None);
        assert_eq!(h.front(), Some((1, 7, &b"ab"[..], None)));
        h.pop_front();
        assert_eq!(h.front(), Some((2, 3, &b""[..], Some(9))), "with its expiry");
        h.pop_front();
        assert_eq!(h.front(), Some((1, 8, &b"cde"[..], None)));
        h.pop_front();
        assert!(h.is_empty() && h.front().is_none());
        assert!(h.bytes.is_empty(), "emptied, the buffer starts over");
    }

    #[test]
    fn acknowledgements_come_well_before_the_senders_queue_fills() {
        assert_eq!(ack_every(64 << 20), ACK_BYTES_MAX, "a large queue: at most 2 MiB");
        assert_eq!(ack_every(1 << 20), 256 << 10, "a quarter of a small one");
        assert_eq!(ack_every(0), 1);
        assert_eq!(ack_every(u64::MAX), ACK_BYTES_MAX);
        assert_eq!(ack_every_messages(4000), 1000, "a quarter of a bound in messages");
        assert_eq!(ack_every_messages(u64::MAX), u64::MAX / 4, "none: never by count");
        assert_eq!(ack_every_messages(0), 1);
    }
}
