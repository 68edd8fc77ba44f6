//! The engine: one QUIC hub's whole state (quinn-proto's endpoint and connections, our
//! peers, channels and requests) and the single-threaded code that moves it on.
//!
//! Nothing here blocks or spawns. Whoever holds the engine's lock drives it: the node's
//! I/O thread when the socket is readable or a timer is due, and the caller's thread when
//! it publishes (the message leaves at once, with no thread hop) or polls for messages
//! ([`Engine::drive`]). Every entry point ends by sending what the connections it
//! touched have to send.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionError, ConnectionHandle, DatagramEvent, Dir, Event, StreamEvent, StreamId};
use zerohop_proto::compress::Compressor;
use zerohop_proto::lifecycle::Status;
use zerohop_proto::qos::{CLASSES, ChannelClasses, LOWER_SHARE, Priorities};
use zerohop_proto::session::{Numbering, ReceiveWindow};
use zerohop_proto::workgroup::{Member, Recipient, WorkGroups};
use zerohop_transport::metrics::GroupMetrics;

use zerohop_net::driver::{Drive, Ready, Timers};
use zerohop_net::fastmap::IntMap;
use zerohop_net::ring::{Inbound, Sink};
use zerohop_net::sending::{Burst, Go, ReadLooks};
use zerohop_transport::{Error, Kind, StatusEvent};

mod channel;
pub(crate) mod connect;
pub(crate) mod io;
mod request;

use crate::config::*;
use crate::datagram::decode_datagram_head;
use channel::{InChannel, OutChannel};
use connect::Connector;
use io::{Datagram, Net, Socket, ecn};

/// How often streams whose messages wait for room in the receive ring are looked at
/// again (those whose messages wait for the application to read them, to acknowledge:
/// see [`ReadLooks`]).
const ROOM_POLL: Duration = Duration::from_millis(1);
/// A burst of publishes goes out once this much waits (quinn packs it into packets).
const BURST_BYTES: usize = 16 << 10;
/// The most a peer may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `ch` to the connections with something to do (once).
pub(crate) fn mark(dirty: &mut Vec<ConnectionHandle>, ch: ConnectionHandle) {
    if !dirty.contains(&ch) {
        dirty.push(ch);
    }
}

/// A stream of a connection, by what it carries.
pub(crate) enum Stream {
    /// Accepted, its header not complete yet (`bi`: bidirectional).
    Opening { head: Vec<u8>, bi: bool },
    /// One of our channels to the connection's peer: we write messages, it writes
    /// acknowledgements.
    ChannelOut { channel: u16, acks: Vec<u8> },
    /// One of the peer's channels to us.
    ChannelIn(Box<InChannel>),
    /// Our request `key`: the rest of it to write, and the reply so far.
    RequestOut { key: u64, wire: Vec<u8>, at: usize, reply: Vec<u8> },
    /// A request to us: its bytes until complete, then its key; the answer to write.
    RequestIn { key: Option<u64>, body: Vec<u8>, answer: Vec<u8>, at: usize },
}

/// One QUIC connection and what rides on it.
pub(crate) struct Conn {
    pub q: quinn_proto::Connection,
    /// The peer it belongs to: known at once when connecting, after the hello when
    /// listening.
    pub peer: Option<u32>,
    pub streams: IntMap<StreamId, Stream>,
    /// The handshake is complete.
    pub established: bool,
    /// Connecting: data went out in the first flight (0-RTT).
    pub early: bool,
    /// Listening: when the hello must have come.
    pub hello_by: Option<Instant>,
    /// The loss was handled (reported, the peer detached).
    pub lost: bool,
}

impl Conn {
    pub fn new(q: quinn_proto::Connection, peer: Option<u32>) -> Conn {
        Conn { q, peer, streams: IntMap::default(), established: false, early: false, hello_by: None, lost: false }
    }
}

/// A peer: what outlives its connections.
pub(crate) struct Peer {
    pub id: u32,
    pub addr: SocketAddr,
    pub conn: Option<ConnectionHandle>,
    pub channels: Vec<Option<OutChannel>>,
    /// Listening: the peer's session (from its hello).
    pub session: u64,
    /// The peer's session our receive windows are for, and the windows.
    pub inbound_session: u64,
    pub windows: IntMap<u16, ReceiveWindow>,
    pub datagram_seq: u32,
    pub datagram_next: u32,
    /// Listening: when a disconnected peer is forgotten (unless it comes back).
    pub linger_until: Option<Instant>,
    /// The channels' priority classes, and which goes first next (`priorities`).
    pub classes: ChannelClasses,
    /// Listening: the work group it receives in (an index into `Engine::groups`).
    pub group: Option<usize>,
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
        self.channels.get(usize::from(channel)).and_then(Option::as_ref).map_or(0, |c| c.queue.len())
    }
}

impl Peer {
    pub fn new(id: u32, addr: SocketAddr, classes: ChannelClasses) -> Peer {
        Peer {
            id,
            addr,
            conn: None,
            classes,
            channels: Vec::new(),
            session: 0,
            inbound_session: 0,
            windows: IntMap::default(),
            datagram_seq: 0,
            datagram_next: 0,
            linger_until: None,
            group: None,
        }
    }

    /// Priority channels (`priorities`): before channels are written (a flush, or room
    /// on a stream: a turn), the class that goes first ([`ChannelClasses`]: the highest
    /// waiting, or a lower one that earned its share) gets quinn's highest stream
    /// priority, the others theirs by class, so quinn fills packets with it first until
    /// the next turn. Flat classes leave every stream alike.
    fn prioritize(&mut self, q: &mut quinn_proto::Connection) {
        let Peer { classes, channels, .. } = self;
        if classes.is_flat() {
            return;
        }
        let waiting = channels.iter().flatten().filter(|c| !c.queue.unsent().is_empty()).map(|c| usize::from(c.index));
        let first = classes.next(waiting);
        for out in channels.iter_mut().flatten() {
            let class = usize::from(out.class);
            // (quinn sends the highest number first.)
            let priority = if Some(class) == first { CLASSES as i32 } else { (CLASSES - 1 - class) as i32 };
            out.set_priority(q, priority);
        }
    }

    /// Our channel `index` to this peer, if anything was ever published on it.
    pub fn out(&mut self, index: u16) -> Option<&mut OutChannel> {
        self.channels.get_mut(usize::from(index)).and_then(Option::as_mut)
    }

    /// Whether channel `index` has room for a message of `len` bytes.
    pub fn has_room(&self, index: u16, len: usize) -> bool {
        self.channels.get(usize::from(index)).and_then(Option::as_ref).is_none_or(|c| c.queue.has_room(len))
    }

    pub fn unacked_bytes(&self) -> u64 {
        self.channels.iter().flatten().map(|c| c.queue.queued_bytes() as u64).sum()
    }

    /// The receive window of `channel` for the peer's `session` (a new session voids
    /// what we knew of the old one).
    pub fn window(&mut self, session: u64, channel: u16) -> &mut ReceiveWindow {
        if self.inbound_session != session {
            self.inbound_session = session;
            self.windows.clear();
        }
        self.windows.entry(channel).or_default()
    }
}

/// A reply or cancellation that found the receive ring full: these are never dropped.
pub(crate) struct Undelivered {
    pub peer: u32,
    pub from: SocketAddr,
    pub kind: Kind,
    pub request: u64,
    pub body: Vec<u8>,
}

pub(crate) struct Engine {
    pub config: Arc<QuicConfig>,
    pub sink: Arc<dyn Sink>,
    pub session: u64,
    pub net: Net,
    pub endpoint: quinn_proto::Endpoint,
    pub client: Option<quinn_proto::ClientConfig>,
    /// Boxed: a quinn connection is kilobytes, and each is taken out of the map and put
    /// back whenever it is processed.
    pub conns: IntMap<ConnectionHandle, Box<Conn>>,
    pub peers: Vec<Peer>,
    pub next_peer: u32,
    pub connector: Option<Connector>,
    /// Our requests under way (connecting side) and requests to answer (listening).
    pub requests: HashMap<u64, (ConnectionHandle, StreamId)>,
    pub answers: HashMap<u64, (ConnectionHandle, StreamId)>,
    pub next_request: u64,
    pub undelivered: VecDeque<Undelivered>,
    /// Inbound channel streams with messages waiting for room, or delivered and not yet
    /// read (to acknowledge once they are).
    pub attention: Vec<(ConnectionHandle, StreamId)>,
    pub attention_at: Option<Instant>,
    /// How soon streams with unread messages are looked at again.
    read_looks: ReadLooks,
    /// Which class of the streams waiting for room is read first (see
    /// [`Engine::attention_order`]).
    read_turns: Priorities,
    /// Connections with something to do.
    pub dirty: Vec<ConnectionHandle>,
    /// The counting fields of the metrics (the rest are read off the connections).
    pub counters: QuicMetrics,
    pub closing: bool,
    /// Acknowledgements freed room in a send queue (blocked publishers may go on).
    pub room_freed: bool,
    /// When what was published goes out (at once, or with the rest of its burst).
    pub burst: Burst,
    received: Vec<Datagram>,
    /// `compression: 'lz4'`: compresses the message being published; and a compressed
    /// one received, decompressed.
    compressor: Compressor,
    /// Where a peer's new queue of a channel starts numbering (see `Numbering`): a peer
    /// forgotten after its linger and back with the same session remembers the old
    /// numbers, and would drop new messages numbered like those it had.
    numbered: Numbering,
    /// Listening: the work groups its peers named.
    pub groups: WorkGroups,
    decompressed: Vec<u8>,
    /// A reader's pump is under way: connections keep what they have to send (see
    /// `Drive::settle`), in `held`.
    holding: bool,
    held: Vec<ConnectionHandle>,
}

impl Engine {
    pub fn new(
        config: Arc<QuicConfig>,
        sink: Arc<dyn Sink>,
        socket: Socket,
        endpoint: quinn_proto::Endpoint,
        client: Option<quinn_proto::ClientConfig>,
        session: u64,
    ) -> std::io::Result<Engine> {
        let now = Instant::now();
        let net = Net::new(socket, config.chaos)?;
        Ok(Engine {
            config,
            sink,
            session,
            net,
            endpoint,
            client,
            conns: IntMap::default(),
            peers: Vec::new(),
            next_peer: 1,
            connector: None,
            requests: HashMap::new(),
            answers: HashMap::new(),
            next_request: 1,
            undelivered: VecDeque::new(),
            attention: Vec::new(),
            attention_at: None,
            read_looks: ReadLooks::new(),
            read_turns: Priorities::new(CLASSES, LOWER_SHARE),
            dirty: Vec::new(),
            counters: QuicMetrics::default(),
            closing: false,
            room_freed: false,
            burst: Burst::new(now, BURST_BYTES),
            received: Vec::new(),
            compressor: Compressor::default(),
            numbered: Numbering::default(),
            groups: WorkGroups::default(),
            decompressed: Vec::new(),
            holding: false,
            held: Vec::new(),
        })
    }

    /// Tells the sink of a change of status, with the failure as a stable error.
    pub fn report(&self, status: Status, peer: Option<SocketAddr>, failure: Option<Failure>) {
        let error = failure.map(|f| Error::new(f.code(), f.message));
        self.sink.status(StatusEvent { status, peer: peer.map(|p| p.to_string()), error });
    }

    pub fn peer(&mut self, id: u32) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    pub fn mark(&mut self, ch: ConnectionHandle) {
        mark(&mut self.dirty, ch);
    }

    /// Reads the socket (if `readable`), runs what is due, and sends what is pending.
    /// Returns how many datagrams were read.
    pub fn turn(&mut self, now: Instant, readable: bool) -> usize {
        let read = if readable || self.net.received_due(now) { self.receive(now) } else { 0 };
        self.net.release_sent(now);
        if self.net.disconnect_due(now) {
            self.drop_connections(now);
        }
        self.run_timers(now);
        self.process_dirty(now);
        read
    }

    /// Reads what waits on the socket, and processes it (delivering what it carried);
    /// how many datagrams were read.
    fn receive(&mut self, now: Instant) -> usize {
        let mut read = 0;
        // A few batches per turn, so timers are not starved by a flood.
        for _ in 0..8 {
            let mut received = std::mem::take(&mut self.received);
            let n = self.net.recv(|d| received.push(d));
            for d in received.drain(..) {
                self.on_datagram(now, d);
            }
            self.received = received;
            read += n;
            if n == 0 {
                break;
            }
            self.process_dirty(now);
            if self.net.drained() {
                break; // a short batch emptied the socket
            }
        }
        read
    }

    /// Closes every connection (chaos: `disconnect`); a connecting hub reconnects.
    fn drop_connections(&mut self, now: Instant) {
        let all: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in all {
            self.with_conn(ch, |e, ch, c| e.close_conn(ch, c, now, CloseCode::Reset, "chaos: disconnect"));
        }
    }

    fn on_datagram(&mut self, now: Instant, d: Datagram) {
        let event = self.endpoint.handle(now, d.from, d.local_ip, ecn(d.ecn), d.data, &mut self.net.tx);
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.q.handle_event(ev);
                    self.mark(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(now, incoming),
            Some(DatagramEvent::Response(t)) => self.net.respond(t),
            None => {}
        }
    }

    fn on_incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming) {
        if self.closing || self.connector.is_some() {
            let t = self.endpoint.refuse(incoming, &mut self.net.tx);
            self.net.respond(t);
            return;
        }
        match self.endpoint.accept(incoming, now, &mut self.net.tx, None) {
            Ok((ch, q)) => {
                let mut c = Box::new(Conn::new(q, None));
                c.hello_by = Some(now + HELLO_TIMEOUT);
                self.conns.insert(ch, c);
                self.mark(ch);
            }
            Err(e) => {
                self.counters.handshake_failures += 1;
                if let Some(t) = e.response {
                    self.net.respond(t);
                }
            }
        }
    }

    /// Everything timed: connections' timers, reconnects, hellos, lingering peers,
    /// streams waiting for room or reads, and a burst's deferred send.
    fn run_timers(&mut self, now: Instant) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter_mut()
            .filter_map(|(ch, c)| c.q.poll_timeout().is_some_and(|t| t <= now).then_some(*ch))
            .collect();
        for ch in due {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.q.handle_timeout(now);
            }
            self.mark(ch);
        }
        let late_hellos: Vec<ConnectionHandle> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none() && !c.lost && c.hello_by.is_some_and(|t| t <= now))
            .map(|(ch, _)| *ch)
            .collect();
        for ch in late_hellos {
            self.with_conn(ch, |e, ch, c| e.violation(ch, c, now, CloseCode::Protocol, "no hello in time"));
        }
        if self.connector.as_ref().and_then(|c| c.retry_at).is_some_and(|t| t <= now) {
            self.connect(now);
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
        if self.attention_at.is_some_and(|t| t <= now) || self.ring_moved() {
            self.attention_at = None;
            // Due by the clock, or the ring moved (which the look sees).
            self.read_looks.looked(self.sink.consumed(), true);
            self.retry_undelivered();
            for (ch, id) in self.attention_order() {
                self.with_conn(ch, |e, ch, c| e.read_stream(ch, c, id, now));
            }
        }
        if self.burst.due().is_some_and(|t| t <= now) {
            self.flush(now);
        }
    }

    /// Whether the application read something since the streams whose messages wait for
    /// room in the ring were last looked at. (Acknowledging what it read can wait for
    /// the next tick: one acknowledgement then covers many messages, instead of a packet
    /// each way per message.)
    fn ring_moved(&self) -> bool {
        !self.attention.is_empty() && self.attention_at.is_some() && {
            // Cheap: an atomic load and a lock in the receive ring.
            let consumed = self.sink.consumed();
            self.attention.iter().any(|(ch, id)| {
                matches!(
                    self.conns.get(ch).and_then(|c| c.streams.get(id)),
                    Some(Stream::ChannelIn(i)) if i.waiting() && i.acked < consumed
                )
            })
        }
    }

    /// The earliest moment something is due.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let mut at = [
            self.net.chaos_due(),
            self.burst.due(),
            self.attention_at,
            self.connector.as_ref().and_then(|c| c.retry_at),
            (!self.undelivered.is_empty()).then(|| Instant::now() + ROOM_POLL),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut earlier = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for c in self.conns.values_mut() {
            earlier(c.q.poll_timeout());
            if c.peer.is_none() && !c.lost {
                earlier(c.hello_by);
            }
        }
        for p in &self.peers {
            if p.conn.is_none() {
                earlier(p.linger_until);
            }
        }
        at
    }

    /// Runs `f` on connection `ch` taken out of the map (so `f` may use the rest of the
    /// engine), then processes it.
    pub fn with_conn(&mut self, ch: ConnectionHandle, f: impl FnOnce(&mut Engine, ConnectionHandle, &mut Conn)) {
        let Some(mut c) = self.conns.remove(&ch) else { return };
        f(self, ch, &mut c);
        self.conns.insert(ch, c);
        self.mark(ch);
    }

    /// Processes every connection marked dirty: events, stream work, sending.
    pub fn process_dirty(&mut self, now: Instant) {
        while let Some(ch) = self.dirty.pop() {
            self.process(ch, now);
        }
    }

    fn process(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(mut c) = self.conns.remove(&ch) else { return };
        loop {
            while let Some(ev) = c.q.poll_endpoint_events() {
                let drained = ev.is_drained();
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    c.q.handle_event(back);
                }
                if drained {
                    if !c.lost {
                        self.on_lost(ch, &mut c, now, ConnectionError::LocallyClosed);
                    }
                    return; // gone for good
                }
            }
            let Some(event) = c.q.poll() else { break };
            self.on_event(ch, &mut c, now, event);
        }
        self.accept_streams(ch, &mut c, now);
        if self.holding {
            mark(&mut self.held, ch);
        } else {
            self.net.transmit(&mut c.q, now);
        }
        let more = c.q.poll_endpoint_events();
        self.conns.insert(ch, c);
        if let Some(ev) = more {
            // Rare (new connection ids after sending): hand it over and go round again.
            if let Some(back) = self.endpoint.handle_event(ch, ev)
                && let Some(c) = self.conns.get_mut(&ch)
            {
                c.q.handle_event(back);
            }
            self.mark(ch);
        }
    }

    fn on_event(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant, event: Event) {
        match event {
            Event::HandshakeDataReady => {}
            Event::Connected => {
                c.established = true;
                if self.connector.is_some() {
                    self.connected(ch, c);
                }
            }
            Event::ConnectionLost { reason } => {
                if !c.lost {
                    self.on_lost(ch, c, now, reason);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read_stream(ch, c, id, now),
            Event::Stream(StreamEvent::Writable { id }) => self.write_stream(c, id),
            Event::Stream(StreamEvent::Stopped { id, .. }) => self.stream_stopped(c, id),
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.write_channels(c),
            Event::Stream(StreamEvent::Finished { id }) => {
                // All of an answer arrived: nothing of it is left to drain.
                if matches!(c.streams.get(&id), Some(Stream::RequestIn { key: Some(_), .. })) {
                    c.streams.remove(&id);
                    self.room_freed = true;
                }
            }
            Event::Stream(_) => {}
            Event::DatagramReceived => self.read_datagrams(c),
            Event::DatagramsUnblocked => {}
        }
    }

    /// Takes the streams the peer opened, once we may hear it: after its hello for
    /// channels and requests, and with mutual TLS only after the handshake.
    fn accept_streams(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant) {
        if c.lost || (self.config.client_ca.is_some() && !c.established) {
            return;
        }
        while let Some(id) = c.q.streams().accept(Dir::Uni) {
            c.streams.insert(id, Stream::Opening { head: Vec::new(), bi: false });
            self.read_stream(ch, c, id, now);
        }
        if c.peer.is_none() {
            return;
        }
        while let Some(id) = c.q.streams().accept(Dir::Bi) {
            self.counters.streams_accepted += 1;
            c.streams.insert(id, Stream::Opening { head: Vec::new(), bi: true });
            self.read_stream(ch, c, id, now);
        }
    }

    /// Closes `c` for breaking the protocol.
    pub fn violation(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant, code: CloseCode, why: &str) {
        self.counters.protocol_violations += 1;
        self.close_conn(ch, c, now, code, why);
    }

    /// Closes `c` with `code` (the close goes out with the next send) and handles the
    /// loss as ours.
    pub fn close_conn(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant, code: CloseCode, why: &str) {
        c.q.close(now, code.varint(), Bytes::copy_from_slice(why.as_bytes()));
        if !c.lost {
            self.on_lost(ch, c, now, ConnectionError::LocallyClosed);
        }
    }

    /// A connection ended: its requests fail, its peer is detached, and the connecting
    /// side plans its next attempt.
    fn on_lost(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant, reason: ConnectionError) {
        c.lost = true;
        self.attention.retain(|(a, _)| *a != ch);
        let from = c.q.remote_address();
        let why = reason.to_string();
        let peer = c.peer.unwrap_or(0);
        for stream in c.streams.drain().map(|(_, s)| s) {
            match stream {
                Stream::RequestOut { key, .. } if self.requests.remove(&key).is_some() => {
                    self.deliver_surely(peer, from, Kind::Failed, key, why.as_bytes());
                }
                Stream::RequestIn { key: Some(key), .. } if self.answers.remove(&key).is_some() => {
                    self.deliver_surely(peer, from, Kind::Cancelled, key, &[]);
                }
                _ => {}
            }
        }
        let Some(peer_id) = c.peer else {
            if !c.established {
                self.counters.handshake_failures += 1;
            }
            return;
        };
        let current = self.peer(peer_id).is_some_and(|p| p.conn == Some(ch));
        if current && let Some(p) = self.peer(peer_id) {
            p.conn = None;
            for out in p.channels.iter_mut().flatten() {
                out.stream = None;
            }
        }
        if self.closing {
            return;
        }
        let failure = Failure::of(&reason);
        if self.connector.is_some() {
            self.connect_failed(c, now, failure);
            return;
        }
        if !current {
            return; // replaced by its reconnect, or forgotten (slow consumer)
        }
        if failure.kind == FailureKind::ClosedByPeer {
            // It left on purpose: nothing to keep for its return, and no failure to name.
            self.report(Status::Disconnected, Some(from), None);
            self.forget(peer_id);
            return;
        }
        self.report(Status::Disconnected, Some(from), Some(failure));
        // Keep what it has not acknowledged for a while, in case it comes back.
        let linger = self.config.peer_linger;
        if let Some(p) = self.peer(peer_id) {
            p.linger_until = Some(now + linger);
        }
        // A work group's member away: what it never got goes to the others now.
        self.reroute(peer_id, false, now);
    }

    /// Whether everything accepted has reached its peer: every channel's messages read
    /// (acknowledged), and every answer received.
    pub fn drained(&self) -> bool {
        self.peers.iter().all(|p| p.unacked_bytes() == 0)
            && self.conns.values().all(|c| {
                c.lost
                    || !c.streams.values().any(|s| matches!(s, Stream::RequestIn { answer, .. } if !answer.is_empty()))
            })
    }

    /// Drops a peer and everything queued for it (a work group's member: what it did
    /// not acknowledge goes to the others).
    pub fn forget(&mut self, id: u32) {
        self.reroute(id, true, Instant::now());
        self.peers.retain(|p| p.id != id);
        self.room_freed = true;
    }

    /// Moves what work-group member `id` holds to the other members: what no connection
    /// of it carried whole, or (`given_up`) everything it did not acknowledge. While it
    /// may come back, only to a member that is connected.
    fn reroute(&mut self, id: u32, given_up: bool, now: Instant) {
        let Some(i) = self.peers.iter().position(|p| p.id == id) else { return };
        let Some(g) = self.peers[i].group else { return };
        if !given_up && !WorkGroups::others_connected(&self.peers, g, id) {
            return;
        }
        let queues = self.peers[i].channels.iter_mut().flatten().map(|out| (out.index, &mut out.queue));
        let moved = WorkGroups::taken(queues, given_up);
        if moved.is_empty() {
            return;
        }
        let limits = (self.config.send_queue_bytes, self.config.send_queue_messages);
        for (channel, framed) in moved {
            // (Whatever its room: they were accepted, and go before anything new.)
            let Some(j) = self.groups.reroute_to(&self.peers, g, channel, framed.len(), id) else { continue };
            let number = self.numbered.next(channel);
            let p = &mut self.peers[j];
            let class = p.classes.class(usize::from(channel));
            OutChannel::of(&mut p.channels, channel, class, limits, number).queue.push_framed(&framed);
        }
        self.flush(now);
    }

    // ---- delivery --------------------------------------------------------------------

    /// Delivers a reply or cancellation, or keeps it until there is room.
    pub fn deliver_surely(&mut self, peer: u32, from: SocketAddr, kind: Kind, request: u64, body: &[u8]) {
        if self.undelivered.is_empty() {
            let m = Inbound { kind, request, ..Inbound::message(peer, from, 0, body) };
            if self.sink.deliver(&m).is_some() {
                return;
            }
        }
        self.undelivered.push_back(Undelivered { peer, from, kind, request, body: body.to_vec() });
    }

    fn retry_undelivered(&mut self) {
        while let Some(u) = self.undelivered.front() {
            let m = Inbound { kind: u.kind, request: u.request, ..Inbound::message(u.peer, u.from, 0, &u.body) };
            if self.sink.deliver(&m).is_none() {
                break;
            }
            self.undelivered.pop_front();
        }
    }

    /// Looks at `(ch, id)` again in a while.
    /// The streams waiting for room in the ring, in the order to read them now (the
    /// first may fill it): their senders' priority classes ([`StreamHeader::class`]),
    /// the class whose turn it is first (a lower one keeps its share, as a sender's
    /// does), then the others by class; within a class in turns (the first of one round
    /// goes last in the next), so that no channel's stream starves another's.
    fn attention_order(&mut self) -> Vec<(ConnectionHandle, StreamId)> {
        let mut list = std::mem::take(&mut self.attention);
        if list.len() < 2 {
            return list;
        }
        list.rotate_left(1);
        let conns = &self.conns;
        let class_of = |(ch, id): &(ConnectionHandle, StreamId)| match conns.get(ch).and_then(|c| c.streams.get(id)) {
            Some(Stream::ChannelIn(i)) => i.class(),
            _ => 0,
        };
        let mut waiting = [false; CLASSES];
        for s in &list {
            waiting[class_of(s)] = true;
        }
        let first = self.read_turns.next(&waiting);
        list.sort_by_key(|s| {
            let class = class_of(s);
            (Some(class) != first, class)
        });
        list
    }

    pub fn needs_attention(&mut self, ch: ConnectionHandle, id: StreamId, waiting: bool, now: Instant) {
        if !self.attention.contains(&(ch, id)) {
            self.attention.push((ch, id));
        }
        let at = now + if waiting { ROOM_POLL } else { self.read_looks.every() };
        self.attention_at = Some(self.attention_at.map_or(at, |a| a.min(at)));
    }

    pub fn read_datagrams(&mut self, c: &mut Conn) {
        let Some(peer) = c.peer else { return }; // after the hello
        let from = c.q.remote_address();
        while let Some(d) = c.q.datagrams().recv() {
            let Some(head) = decode_datagram_head(&d) else {
                self.counters.protocol_violations += 1;
                continue;
            };
            self.counters.datagrams_received += 1;
            if let Some(p) = self.peers.iter_mut().find(|p| p.id == peer) {
                let gap = head.seq.wrapping_sub(p.datagram_next);
                if gap < u32::MAX / 2 {
                    self.counters.datagrams_lost += u64::from(gap);
                    p.datagram_next = head.seq.wrapping_add(1);
                }
            }
            let m = Inbound {
                seq: u64::from(head.seq),
                expiry_ns: head.expiry_ns,
                ..Inbound::message(peer, from, head.channel, &d[head.len..])
            };
            if self.sink.deliver(&m).is_none() {
                // Unreliable: no room means lost, and counted as such.
                self.counters.datagrams_lost += 1;
            }
        }
    }

    // ---- publishing ------------------------------------------------------------------

    /// Queues `message` on `channel` for every peer that has room; the ids of those
    /// without room (nothing is queued for anyone then).
    pub fn publish(
        &mut self,
        channel: u16,
        message: &[u8],
        expiry_ns: Option<u64>,
        start: impl FnOnce() -> Instant,
    ) -> Result<(Timers, Go), Vec<Recipient>> {
        let len = message.len();
        let full = self.groups.full(&self.peers, channel, len);
        if !full.is_empty() {
            return Err(full);
        }
        self.queue_all(channel, message, expiry_ns, &[]);
        Ok(self.sent(message.len(), start))
    }

    /// The work groups its peers named, with their members and what moved between them.
    pub fn groups(&self) -> Vec<GroupMetrics> {
        GroupMetrics::of(&self.groups, self.peers.iter().map(|p| p.group))
    }

    /// Which peer (index) of each work group a datagram on `channel` goes to now.
    pub fn datagram_members(&mut self, channel: u16) -> Vec<usize> {
        (0..self.groups.len()).filter_map(|g| self.groups.member_for(&self.peers, g, channel, 0, None)).collect()
    }

    /// Whether `r` has room (see `WorkGroups::has_room`).
    pub fn has_room(&self, r: Recipient, channel: u16, len: usize) -> bool {
        WorkGroups::has_room(&self.peers, r, channel, len)
    }

    /// Queues `message` on `channel` for every peer but `skip` (whatever their room),
    /// compressed once when `compression` is on and that shrinks it, with its expiry if
    /// it has one; [`flush`](Self::flush) writes it to the peers' streams.
    pub fn queue_all(&mut self, channel: u16, message: &[u8], expiry_ns: Option<u64>, skip: &[Recipient]) {
        let (send_queue, messages) = (self.config.send_queue_bytes, self.config.send_queue_messages);
        let body = if self.config.compression { self.compressor.compress(message) } else { None };
        if let Some(body) = body {
            self.counters.bytes_saved += (message.len() - body.len()) as u64;
        }
        let numbered = self.numbered.next(channel);
        // Everyone not in a work group, and one member of each group.
        let mut members = Vec::new();
        for g in 0..self.groups.len() {
            if !skip.contains(&Recipient::Group(g))
                && let Some(i) = self.groups.member_for(&self.peers, g, channel, message.len(), None)
            {
                members.push(i);
            }
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            if if p.group.is_none() { skip.contains(&Recipient::Peer(p.id)) } else { !members.contains(&i) } {
                continue;
            }
            let class = p.classes.class(usize::from(channel));
            let q = &mut OutChannel::of(&mut p.channels, channel, class, (send_queue, messages), numbered).queue;
            q.push_message(message, body, expiry_ns);
        }
    }

    /// Writes what every channel holds unsent to its stream, and sends. Written in one
    /// piece per channel, so that a burst of small messages costs QUIC one chunk, not
    /// one per message.
    pub fn flush(&mut self, now: Instant) {
        self.burst.flushed();
        let Engine { peers, conns, dirty, counters, session, .. } = self;
        for p in peers.iter_mut() {
            let Some(c) = p.conn.and_then(|ch| conns.get_mut(&ch).map(|c| (ch, c))) else { continue };
            let (ch, c) = c;
            let mut wrote = false;
            p.prioritize(&mut c.q);
            for out in p.channels.iter_mut().flatten() {
                wrote |= out.write(&mut c.q, &mut c.streams, *session, counters);
            }
            if wrote {
                mark(dirty, ch);
            }
        }
        self.process_dirty(now);
    }

    /// Sends what a burst holds, if anything (the caller's flush at the end of its turn).
    pub fn flush_pending(&mut self, now: Instant) {
        if self.burst.pending() {
            self.flush(now);
        }
    }

    /// After a publish of `len` bytes that started at `start`: sends now, or (in a
    /// burst) soon (see [`Burst`]). What that did to the timers: none earlier (it
    /// queued into a burst), any (it sent: the connections' timers moved), or a burst's
    /// deadline, met by the time returned at the latest; and how it went.
    pub fn sent(&mut self, len: usize, start: impl FnOnce() -> Instant) -> (Timers, Go) {
        let due = self.burst.due();
        let mut started = None;
        let go = self.burst.published(len, || *started.insert(start()));
        if go.sends() {
            self.flush(started.unwrap_or_else(Instant::now));
        }
        self.burst.returned();
        let timers = match self.burst.late_by() {
            _ if go.sends() => Timers::Moved,
            Some(latest) if self.burst.due() != due => Timers::DueBy(latest),
            _ => Timers::Kept,
        };
        (timers, go)
    }

    /// Writes what every channel of `c`'s peer has unsent.
    pub fn write_channels(&mut self, c: &mut Conn) {
        let Some(id) = c.peer else { return };
        let session = self.session;
        let Some(p) = self.peers.iter_mut().find(|p| p.id == id) else { return };
        p.prioritize(&mut c.q);
        for out in p.channels.iter_mut().flatten() {
            out.write(&mut c.q, &mut c.streams, session, &mut self.counters);
        }
    }

    fn write_stream(&mut self, c: &mut Conn, id: StreamId) {
        match c.streams.get_mut(&id) {
            Some(Stream::ChannelOut { channel, .. }) => {
                let channel = *channel;
                let Engine { peers, counters, session, .. } = self;
                if let Some(p) = c.peer.and_then(|id| peers.iter_mut().find(|p| p.id == id)) {
                    p.prioritize(&mut c.q);
                    if let Some(out) = p.out(channel) {
                        out.write(&mut c.q, &mut c.streams, *session, counters);
                    }
                }
            }
            Some(Stream::RequestOut { wire, at, .. }) => {
                request::write_rest(&mut c.q, id, wire, at);
            }
            Some(Stream::RequestIn { answer, at, .. }) if !answer.is_empty() => {
                request::write_rest(&mut c.q, id, answer, at);
            }
            _ => {}
        }
    }

    fn stream_stopped(&mut self, c: &mut Conn, id: StreamId) {
        match c.streams.get(&id) {
            Some(Stream::RequestIn { key, .. }) => {
                // The client gave up (timeout, abort): the handler may stop too.
                let key = *key;
                c.streams.remove(&id);
                if let Some(key) = key
                    && self.answers.remove(&key).is_some()
                {
                    let (peer, from) = (c.peer.unwrap_or(0), c.q.remote_address());
                    self.deliver_surely(peer, from, Kind::Cancelled, key, &[]);
                }
            }
            Some(Stream::ChannelOut { channel, .. }) => {
                let channel = *channel;
                c.streams.remove(&id);
                if let Some(out) = c.peer.and_then(|peer| self.peer(peer)).and_then(|p| p.out(channel))
                    && out.stream == Some(id)
                {
                    out.stream = None;
                }
            }
            _ => {}
        }
    }

    /// The socket has room again: what waited goes, then what every connection has.
    pub fn on_writable(&mut self) {
        if self.net.unblock() {
            let all: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
            for ch in all {
                self.mark(ch);
            }
        }
    }

    /// Closes every connection (the close frames go out now).
    pub fn close(&mut self, now: Instant) {
        self.closing = true;
        self.connector = None;
        let all: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in all {
            self.with_conn(ch, |e, ch, c| e.close_conn(ch, c, now, CloseCode::Closed, "closed"));
        }
        self.peers.clear();
        self.process_dirty(now);
        self.room_freed = true;
    }
}

impl Drive for Engine {
    fn readiness_fd(&self) -> std::os::fd::RawFd {
        self.net.fd()
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.next_deadline()
    }

    fn wants_write(&self) -> bool {
        self.net.blocked.is_some()
    }

    fn drive(&mut self, now: Instant, ready: Ready) -> usize {
        if ready.writable {
            self.on_writable();
        }
        self.turn(now, ready.readable)
    }

    /// Reads and delivers; what the connections have to send in answer (their
    /// acknowledgements) and the timers wait for `settle`, after the reader's turn.
    fn pump(&mut self, _alone: bool) -> usize {
        self.holding = true;
        let read = self.receive(Instant::now());
        self.holding = false;
        for ch in std::mem::take(&mut self.held) {
            self.mark(ch); // whoever processes the engine next sends for them
        }
        read
    }

    fn settle(&mut self) {
        let now = Instant::now();
        self.run_timers(now);
        self.process_dirty(now);
    }

    fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.room_freed)
    }
}
