//! The engine of a `nats://` hub: one connection to a NATS server on a socket wire,
//! driven by the core's [`Driver`](zerohop_net::Driver); the protocol itself is
//! [`zerohop_proto::nats::Session`]'s.
//!
//! What the server sends is read into one buffer and parsed in place; each message goes
//! straight into the receive ring with its subject's number ([`Subjects`]). A reader
//! that fell behind a full ring loses what comes meanwhile, counted (NATS is at most
//! once, and a client that stops reading would make the server drop it altogether): a
//! slow consumer, as NATS calls it, reported once per episode as `ERR_SLOW_CONSUMER`.
//!
//! Requests go out with a reply subject in this hub's inbox (`_INBOX.<random>.<key>`,
//! one wildcard subscription for all of them); a serving hub (`listen: true`) keeps the
//! reply subject of each request it delivers until it is answered.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::driver::{Drive, Ready};
use zerohop_net::ring::{Deliveries, Inbound, ReceiveRing, Sink};
use zerohop_proto::lifecycle::{Event as LifeEvent, Lifecycle};
use zerohop_proto::nats::{Event, Headers, NatsError, Session, decimal, header_value, json_string_field};
use zerohop_stream::wire::{Interest, Lost, Wire, WireEvent, WireWriter};
use zerohop_stream::{SocketWire, TlsContext, TlsSession, tls_lost};
use zerohop_transport::status::{Status, StatusEvent};
use zerohop_transport::{Error, ErrorCode, ForwardCounts, Kind, Link};

use crate::options::{NatsOptions, push_json_string};
use crate::subjects::Subjects;

/// Bytes read from the socket at a time, at least.
const READ_CHUNK: usize = 64 << 10;

/// Servers of a cluster a hub keeps to fail over to, at most.
const MAX_SERVERS: usize = 32;

/// Requests a serving hub keeps the reply subject of, waiting for their answers, at most.
const MAX_UNANSWERED: usize = 1 << 16;

/// `PING`s unanswered before the connection counts as stale.
const MAX_PINGS_OUT: u32 = 2;

/// The header that carries a message's time to live (`ttlMs`): when it stops being worth
/// reading, in ns since the Unix epoch. zerohop's own metadata travels in headers, so
/// that the body is the codec's bytes as they are.
pub const EXPIRY: &str = "Zerohop-Expiry";

/// The header that says which hub (a bridge) put a message on the server: a hub with an
/// `origin` drops what comes with its own, so that what a bridge forwarded never comes
/// back to it through another bridge.
pub const ORIGIN: &str = "Zerohop-Origin";

/// A hub's origin: its name, and the header block that carries it (encoded once).
struct Origin {
    name: String,
    block: Vec<u8>,
}

/// The header a failed answer carries (as NATS services say it), with the reason.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// What the engine counts, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub reconnects: u64,
    /// Messages that came while the receive ring was full (a slow consumer), dropped.
    pub slow_consumer_drops: u64,
    /// Publishes dropped for want of room to keep them (`drop_new`), or lost with a
    /// connection that had taken only part of them.
    pub dropped: u64,
    pub dropped_bytes: u64,
    /// `-ERR` from the server.
    pub server_errors: u64,
    /// Bytes from the server that were not the protocol (the connection was dropped).
    pub protocol_violations: u64,
    /// Answers that came for no request waiting (cancelled, or late).
    pub stray_answers: u64,
    /// Messages that came back with this hub's own origin (through another bridge): dropped.
    pub own_returned: u64,
    /// Requests never answered whose reply subjects were forgotten (past a bound).
    pub unanswered_forgotten: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// The receiving side: what a message read from the server becomes.
struct Inlet {
    ring: Arc<ReceiveRing>,
    subjects: Subjects,
    serve: bool,
    /// The subscription to the URL's subject, and to this hub's inbox.
    main_sid: Option<u64>,
    inbox_sid: Option<u64>,
    /// `_INBOX.<random>.`: a request's reply subject is this and its key.
    inbox: String,
    /// Requests waiting for their answer.
    requests: HashMap<u64, ()>,
    /// Requests delivered to this (serving) hub and not yet answered: their reply subject
    /// (in key order: the oldest are forgotten first, past [`MAX_UNANSWERED`]).
    answers: BTreeMap<u64, String>,
    /// Strings of answered requests, for the next ones (no allocation per request).
    spare: Vec<String>,
    next_key: u64,
    server: SocketAddr,
    /// The server's address, as status events name it.
    server_name: String,
    /// In a slow-consumer episode (reported once, until a message finds room again).
    slow: bool,
    /// Bytes held for the reader beyond the ring at most (`receiveQueueBytes`).
    pending: usize,
    /// The server confirmed the connection in this read.
    confirmed: bool,
    /// A slow-consumer episode began in this read: to be reported.
    tell_slow: bool,
    /// The last `-ERR` text, the reason a connection the server then closes ends with.
    server_error: Option<String>,
    /// This hub's origin, if it has one (see [`ORIGIN`]).
    origin: Option<String>,
    /// Where messages go instead of the ring (`Transport::forward_to`), and its counts.
    forward: Option<(Arc<dyn Link>, Arc<ForwardCounts>)>,
    /// Messages were forwarded in this turn: the destination is flushed after it, with
    /// the engine unlocked (`Drive::take_forwarded`).
    forwarded: bool,
    counters: Counters,
    delivered: usize,
}

impl Inlet {
    fn on(&mut self, event: Event<'_>, d: &mut dyn Deliveries) {
        match event {
            Event::Connected => self.confirmed = true,
            Event::ServerError(text) => {
                self.counters.server_errors += 1;
                self.server_error = Some(text.to_owned());
            }
            Event::Message { sid, subject, reply, headers, payload } => {
                if Some(sid) == self.inbox_sid {
                    self.answer(subject, headers, payload, d);
                } else if Some(sid) == self.main_sid {
                    if let Some(h) = headers
                        && self.origin.is_some()
                        && header_value(h, ORIGIN) == self.origin.as_deref()
                    {
                        self.counters.own_returned += 1;
                        return;
                    }
                    let expiry_ns = headers.and_then(|h| header_value(h, EXPIRY)).and_then(|v| v.parse().ok());
                    if let Some((to, counts)) = &self.forward
                        && (reply.is_none() || !self.serve)
                    {
                        // Straight on (a bridge's direction): no ring, no other thread.
                        let published = match expiry_ns {
                            Some(at) => to.publish_expiring(0, payload, at),
                            None => to.publish(0, payload),
                        };
                        if !counts.count(published, payload.len()) {
                            self.forward = None; // (the destination closed)
                        }
                        self.forwarded = true;
                        return;
                    }
                    let mut m = Inbound {
                        subject: self.subjects.number(subject),
                        expiry_ns,
                        ..Inbound::message(0, self.server, 0, payload)
                    };
                    let key = match reply {
                        Some(reply) if self.serve => {
                            let key = self.next_key;
                            self.next_key += 1;
                            m.kind = Kind::Request;
                            m.request = key;
                            Some((key, reply))
                        }
                        _ => None,
                    };
                    if self.offer(&m, d)
                        && let Some((key, reply)) = key
                    {
                        let mut s = self.spare.pop().unwrap_or_default();
                        s.clear();
                        s.push_str(reply);
                        self.answers.insert(key, s);
                        // Requests never answered (read by a plain reader, passed over)
                        // are forgotten, oldest first, past a bound.
                        if self.answers.len() > MAX_UNANSWERED
                            && let Some(oldest) = self.answers.keys().next().copied()
                        {
                            self.answers.remove(&oldest);
                            self.counters.unanswered_forgotten += 1;
                        }
                    }
                }
            }
        }
    }

    /// Delivers `m`; or, if the ring has no room, holds it within `pending` bytes until
    /// it has (as NATS clients keep a subscription's pending messages); or else drops it,
    /// counted, a slow consumer. Whether it was delivered or held.
    fn offer(&mut self, m: &Inbound<'_>, d: &mut dyn Deliveries) -> bool {
        if d.deliver_or_hold(m, self.pending) {
            self.slow = false;
            self.delivered += 1;
            return true;
        }
        self.counters.slow_consumer_drops += 1;
        if !self.slow {
            // Told once the deliveries are over (a listener may look at the ring).
            self.slow = true;
            self.tell_slow = true;
        }
        false
    }

    /// An answer on the inbox: to the request its subject names, if it still waits.
    fn answer(&mut self, subject: &str, headers: Option<&[u8]>, payload: &[u8], d: &mut dyn Deliveries) {
        let key = subject.strip_prefix(self.inbox.as_str()).and_then(|k| k.parse::<u64>().ok());
        let Some(key) = key.filter(|k| self.requests.remove(k).is_some()) else {
            self.counters.stray_answers += 1;
            return;
        };
        let headers = headers.and_then(|h| Headers::decode(h).ok());
        // A failed request's body says why: a zerohop server's own error (the JSON
        // `{code, message}` it answered with), a NATS service error as such a JSON, or,
        // where the request found nobody to answer it, plain text (as a lost connection's).
        let mut why = String::new();
        let (kind, body) = match headers.as_ref().map(|h| (h.status, h.get(SERVICE_ERROR))) {
            None | Some((None | Some(200..=299), None)) => (Kind::Response, payload),
            Some((Some(503), None)) => (Kind::Failed, &b"no responders: nobody serves this subject"[..]),
            Some((_, Some(_))) if payload.starts_with(b"{") => (Kind::Failed, payload),
            Some((status, message)) => {
                let message =
                    message.map_or_else(|| format!("the NATS server answered status {status:?}"), str::to_owned);
                why.push_str(r#"{"code":"ERR_REMOTE","message":"#);
                push_json_string(&mut why, &message);
                why.push('}');
                (Kind::Failed, why.as_bytes())
            }
        };
        let m = Inbound { kind, request: key, ..Inbound::message(0, self.server, 0, body) };
        // An answer is never dropped for a full ring: it is held until there is room.
        d.deliver_or_hold(&m, usize::MAX);
        self.delivered += 1;
    }
}

/// The read buffer: bytes read but not yet parsed are `buf[start..end]`.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// Appends `bytes` (decrypted ones).
    fn append(&mut self, bytes: &[u8]) {
        while self.buf.len() - self.end < bytes.len() {
            let _ = self.room();
            if self.buf.len() - self.end < bytes.len() {
                self.buf.resize(self.end + bytes.len() + READ_CHUNK, 0);
            }
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Room for at least [`READ_CHUNK`] more bytes (moving what waits to the front, or
    /// growing for a message larger than the buffer).
    fn room(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < READ_CHUNK {
                self.buf.resize(self.end + READ_CHUNK * 2, 0);
            }
        }
        &mut self.buf[self.end..]
    }
}

/// See the module docs.
pub struct Engine {
    options: NatsOptions,
    subject: String,
    wire: SocketWire,
    /// The servers it may connect to: the URL's first, then the others of its cluster
    /// that servers told of (`INFO`'s `connect_urls`), tried in turn after a loss.
    servers: Vec<SocketAddr>,
    /// Which of them the connection (or the attempt) is to.
    at: usize,
    /// The session's `INFO`s looked at for servers.
    infos_seen: u64,
    /// Servers the cluster told of that failed for good: not tried again.
    refused: Vec<SocketAddr>,
    session: Session,
    inlet: Inlet,
    read: ReadBuf,
    /// TLS, for the hubs that have it (`tls` options): what each connection's is made
    /// from, and the connection's once the server's `INFO` came.
    tls_context: Option<TlsContext>,
    tls: Option<Box<TlsSession>>,
    /// With TLS: what the socket read (encrypted), and a scratch buffer for what it
    /// decrypts to.
    raw: Vec<u8>,
    plain: Vec<u8>,
    /// The connection: its token on the wire, and whether the socket is up.
    token: Option<u64>,
    up: bool,
    /// The socket took less than it was offered: wait until it is writable.
    write_blocked: bool,
    life: Lifecycle,
    retry_at: Option<Instant>,
    attempt_by: Option<Instant>,
    ping_at: Option<Instant>,
    events: Vec<WireEvent>,
    /// The caller flushes at the end of each turn ([`Engine::flush_by_caller`]).
    caller_flushes: bool,
    /// The origin every publish carries, if the hub has one.
    origin: Option<Origin>,
    /// Room was made in what is kept for the server, or the connection changed.
    changed: bool,
    /// Messages wait in the ring's inlet for room (as of the end of the last turn).
    holding: bool,
    /// How the first attempt to connect ended (see `Link::wait_open`).
    pub first: Option<Result<(), Error>>,
    /// No connection will be tried again (see `lost`).
    gave_up: bool,
    pub closing: bool,
}

impl Engine {
    /// Starts connecting to the server `wire` dials.
    pub fn start(
        options: NatsOptions,
        tls: Option<TlsContext>,
        subject: &str,
        receives: bool,
        wire: SocketWire,
        ring: Arc<ReceiveRing>,
        session_id: u64,
    ) -> Result<Engine, NatsError> {
        let server = wire.server().addr;
        let mut session = Session::new(options.connect_json());
        if let Some(nkey) = &options.nkey {
            session.sign_nonce_with(nkey.signer());
        }
        let main_sid = if receives && options.subscribe {
            Some(session.subscribe(subject, options.group.as_deref())?)
        } else {
            None
        };
        let inlet = Inlet {
            ring,
            subjects: Subjects::default(),
            serve: options.listen,
            main_sid,
            inbox_sid: None,
            inbox: format!("_INBOX.{session_id:016x}{:08x}.", std::process::id()),
            requests: HashMap::new(),
            answers: BTreeMap::new(),
            spare: Vec::new(),
            next_key: 1,
            server,
            server_name: server.to_string(),
            slow: false,
            pending: options.receive_queue_bytes,
            confirmed: false,
            tell_slow: false,
            server_error: None,
            origin: options.origin.clone(),
            forward: None,
            forwarded: false,
            counters: Counters::default(),
            delivered: 0,
        };
        let mut e = Engine {
            life: Lifecycle::new(options.reconnect, session_id),
            subject: subject.to_owned(),
            servers: vec![server],
            at: 0,
            infos_seen: 0,
            refused: Vec::new(),
            wire,
            session,
            inlet,
            read: ReadBuf { buf: vec![0; READ_CHUNK * 2], start: 0, end: 0 },
            raw: if tls.is_some() { vec![0; READ_CHUNK] } else { Vec::new() },
            plain: if tls.is_some() { vec![0; READ_CHUNK] } else { Vec::new() },
            tls_context: tls,
            tls: None,
            token: None,
            up: false,
            write_blocked: false,
            retry_at: None,
            attempt_by: None,
            ping_at: None,
            events: Vec::with_capacity(8),
            caller_flushes: false,
            origin: options.origin.as_ref().map(|name| {
                let mut h = Headers::default();
                h.insert(ORIGIN, name).expect("checked with the options");
                Origin { name: name.clone(), block: h.encode() }
            }),
            changed: false,
            holding: false,
            first: None,
            gave_up: false,
            closing: false,
            options,
        };
        e.report(Status::Connecting, None);
        e.connect(Instant::now());
        Ok(e)
    }

    fn report(&self, status: Status, error: Option<Error>) {
        self.inlet.ring.report(StatusEvent { status, peer: Some(self.inlet.server_name.clone()), error });
    }

    // ---- the connection ----------------------------------------------------------------

    fn connect(&mut self, now: Instant) {
        self.retry_at = None;
        let server = self.servers[self.at];
        if server != self.inlet.server {
            self.wire.retarget(server);
            self.inlet.server = server;
            self.inlet.server_name = server.to_string();
        }
        self.attempt_by = Some(now + self.options.connect_timeout);
        match self.wire.connect(now) {
            Ok(token) => self.token = Some(token),
            Err(e) => self.lost(now, Lost::io(&e)),
        }
    }

    /// The connection (or the attempt) ended: plan the next.
    fn lost(&mut self, now: Instant, lost: Lost) {
        if let Some(t) = self.token.take() {
            self.wire.close(t);
        }
        self.up = false;
        self.write_blocked = false;
        self.tls = None;
        self.read.start = 0;
        self.read.end = 0;
        self.attempt_by = None;
        self.ping_at = None;
        let partial = self.session.reset(true);
        if partial > 0 {
            self.inlet.counters.dropped += 1;
            self.inlet.counters.dropped_bytes += partial as u64;
        }
        self.changed = true;
        if self.closing {
            return;
        }
        let was_connected = self.life.status() == Status::Connected;
        // The next attempt goes to the next server of the cluster, if it has others. One
        // the cluster told of that this hub cannot use for good (TLS it does not have, a
        // certificate for another name) is forgotten, not the hub's end.
        let permanent = if lost.permanent && self.at != 0 {
            let refused = self.servers.remove(self.at);
            self.refused.push(refused);
            self.at %= self.servers.len();
            false
        } else {
            self.at = (self.at + 1) % self.servers.len();
            lost.permanent
        };
        let next = if permanent {
            self.life.on(LifeEvent::Close) // (certificates and options do not fix themselves)
        } else {
            self.life.on(if was_connected { LifeEvent::Lost } else { LifeEvent::Failed })
        };
        self.retry_at = next.retry_after.map(|d| now + d);
        if was_connected {
            self.inlet.counters.reconnects += 1;
        }
        if self.retry_at.is_none() {
            // Given up (attempts used up, or a permanent failure): what waits for a
            // connection never goes; it is dropped, counted, and publishing is refused.
            self.gave_up = true;
            let dropped = self.session.reset(false);
            if dropped > 0 {
                self.inlet.counters.dropped += 1;
                self.inlet.counters.dropped_bytes += dropped as u64;
            }
        }
        let (code, why) = match self.inlet.server_error.take() {
            Some(text) if text.to_ascii_lowercase().contains("authorization") => {
                (ErrorCode::Protocol, format!("the NATS server refused the credentials: {text}"))
            }
            Some(text) => (lost.code, format!("{}; the server said: {text}", lost.why)),
            None => (lost.code, lost.why),
        };
        let error = Error::new(code, why);
        if self.first.is_none() {
            self.first = Some(Err(error.clone()));
        }
        let status = match self.life.status() {
            Status::Closed => Status::Disconnected,
            s => s,
        };
        if next.changed || was_connected {
            self.report(status, Some(error));
        }
    }

    /// Takes note of the servers of the cluster the server says clients may use (IP
    /// addresses: names are not resolved on the I/O thread), at most [`MAX_SERVERS`].
    fn learn_servers(&mut self) {
        for url in &self.session.server().connect_urls {
            let Ok(addr) = url.parse::<SocketAddr>() else { continue };
            if self.servers.len() < MAX_SERVERS && !self.servers.contains(&addr) && !self.refused.contains(&addr) {
                self.servers.push(addr);
            }
        }
    }

    /// The server confirmed the connection (its `PONG` to our first `PING`).
    fn confirmed(&mut self, now: Instant) {
        self.attempt_by = None;
        self.ping_at = Some(now + self.options.ping_interval);
        self.first.get_or_insert(Ok(()));
        if self.life.on(LifeEvent::Connected).changed {
            self.report(Status::Connected, None);
        }
        self.changed = true;
    }

    /// Reads what the server sent and delivers it.
    fn read(&mut self, now: Instant) {
        let Some(token) = self.token else { return };
        let ring = self.inlet.ring.clone();
        let mut d = (&*ring as &dyn Sink).deliveries();
        let ended = loop {
            // Plain, the socket is read into the parse buffer; with TLS, into `raw`, and
            // what it decrypts to is appended to the parse buffer.
            let got = match self.tls {
                None => self.wire.recv(token, self.read.room()).inspect(|&n| self.read.end += n),
                Some(_) => self.wire.recv(token, &mut self.raw),
            };
            match got {
                Ok(0) => break Some(Lost::closed()),
                Ok(n) => {
                    self.inlet.counters.bytes_received += n as u64;
                    if let Some(t) = &mut self.tls {
                        let read = &mut self.read;
                        if let Err(e) = t.received(&self.raw[..n], &mut self.plain, |p| read.append(p)) {
                            break Some(tls_lost(&e));
                        }
                    }
                    let inlet = &mut self.inlet;
                    let unparsed = &self.read.buf[self.read.start..self.read.end];
                    match self.session.read(unparsed, |ev| inlet.on(ev, &mut d)) {
                        Ok(used) => self.read.start += used,
                        Err(e) => {
                            self.inlet.counters.protocol_violations += 1;
                            break Some(Lost::new(ErrorCode::Protocol, format!("from the NATS server: {e}")));
                        }
                    }
                    if let Some(lost) = self.start_tls() {
                        break Some(lost);
                    }
                    if n < READ_CHUNK {
                        // A short read: most likely nothing more now (saves a read that
                        // would only say so).
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Lost::io(&e)),
            }
        };
        drop(d);
        if std::mem::take(&mut self.inlet.tell_slow) {
            self.report(
                Status::Connected,
                Some(Error::new(
                    ErrorCode::SlowConsumer,
                    "the reader fell behind: messages from the NATS server are dropped until it catches up",
                )),
            );
        }
        if std::mem::take(&mut self.inlet.confirmed) {
            self.confirmed(now);
        }
        if self.session.infos() != self.infos_seen {
            self.infos_seen = self.session.infos();
            self.learn_servers();
        }
        if let Some(lost) = ended {
            self.lost(now, lost);
        }
    }

    /// Once the server's `INFO` came (in the clear), TLS starts if the hub has it; a
    /// server that requires TLS from a hub without it is refused with why.
    fn start_tls(&mut self) -> Option<Lost> {
        if self.tls.is_some() || !self.session.greeted() {
            return None;
        }
        let server = self.session.server();
        match &self.tls_context {
            Some(_) if !server.tls_required && !server.tls_available => {
                return Some(Lost {
                    permanent: true,
                    ..Lost::new(ErrorCode::BadOption, "the NATS server offers no TLS: open it without tls options")
                });
            }
            Some(context) => match context.session() {
                Ok(session) => self.tls = Some(Box::new(session)),
                Err(e) => return Some(tls_lost(&e)),
            },
            None if server.tls_required => {
                return Some(Lost {
                    permanent: true,
                    ..Lost::new(ErrorCode::BadOption, "the NATS server requires TLS: give the hub tls options")
                });
            }
            None => {}
        }
        None
    }

    /// Writes what the session has for the server, as far as the socket takes it (with
    /// TLS: through it, handshake first).
    fn write(&mut self, now: Instant) {
        let Some(token) = self.token else { return };
        if !self.up || self.write_blocked || !self.session.greeted() {
            return;
        }
        if let Some(t) = &mut self.tls {
            // Records out, plaintext in, until the socket is full or nothing is left (or,
            // during the handshake, rustls holds all it may).
            loop {
                match t.flush(&mut WireWriter { wire: &mut self.wire, token }) {
                    Ok((n, all)) => {
                        self.inlet.counters.bytes_sent += n as u64;
                        if !all {
                            self.write_blocked = true;
                            self.wire.watch(token, Interest { read: true, write: true });
                            return;
                        }
                    }
                    Err(e) => return self.lost(now, Lost::io(&e)),
                }
                if self.session.output().is_empty() {
                    return;
                }
                let mut parts: [&[u8]; 3] = [&[]; 3];
                let n = self.session.output_parts(&mut parts);
                let taken = t.send(&parts[..n]);
                if taken == 0 {
                    return;
                }
                self.session.written(taken);
                self.changed = true;
            }
        }
        loop {
            // (Three pieces: what one vectored write of the wire takes.)
            let mut parts: [&[u8]; 3] = [&[]; 3];
            let n = self.session.output_parts(&mut parts);
            if n == 0 {
                break;
            }
            match self.wire.send(token, &parts[..n]) {
                Ok(n) => {
                    self.session.written(n);
                    self.inlet.counters.bytes_sent += n as u64;
                    self.changed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    self.wire.watch(token, Interest { read: true, write: true });
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(now, Lost::io(&e)),
            }
        }
    }

    /// One turn: what the wire reports, what is due, what waits to be written.
    fn turn(&mut self, now: Instant, readable: bool) -> usize {
        self.inlet.delivered = 0;
        // What waits for room first: it came before what is read now.
        if self.holding {
            self.inlet.ring.deliver_held();
        }
        let mut events = std::mem::take(&mut self.events);
        loop {
            let more = self.wire.poll(now, readable, &mut events);
            for ev in events.drain(..) {
                match ev {
                    WireEvent::Connected { token, .. } if Some(token) == self.token => {
                        self.up = true;
                        self.wire.watch(token, Interest { read: true, write: false });
                    }
                    WireEvent::Readable(token) if Some(token) == self.token => self.read(now),
                    WireEvent::Writable(token) if Some(token) == self.token => {
                        self.write_blocked = false;
                        self.wire.watch(token, Interest { read: true, write: false });
                    }
                    WireEvent::Ended { token, lost } if Some(token) == self.token => self.lost(now, lost),
                    _ => {}
                }
            }
            if !more {
                break;
            }
        }
        self.events = events;
        if self.retry_at.is_some_and(|t| t <= now) && !self.closing {
            self.connect(now);
        }
        if self.attempt_by.is_some_and(|t| t <= now) {
            let lost = Lost::new(ErrorCode::Timeout, "the NATS server did not answer within connectTimeoutMs");
            self.lost(now, lost);
        }
        if self.ping_at.is_some_and(|t| t <= now) {
            if self.session.tick(MAX_PINGS_OUT) {
                self.ping_at = Some(now + self.options.ping_interval);
            } else {
                self.lost(now, Lost::new(ErrorCode::Timeout, "the NATS server did not answer two pings"));
            }
        }
        self.write(now);
        self.holding = self.inlet.ring.held().0 > 0;
        self.inlet.delivered
    }

    // ---- what the hub asks ---------------------------------------------------------------

    /// Whether `len` more bytes may be kept for the server now.
    pub fn has_room(&self, len: usize) -> bool {
        // (A hub that gave up has room: its publishes are refused at once, not waited.)
        self.gave_up
            || self.session.pending_bytes() == 0
            || self.session.pending_bytes() + len <= self.options.send_queue_bytes
    }

    /// Writes what was just queued, unless the caller flushes at the end of its turn.
    fn queued(&mut self) {
        if !self.caller_flushes {
            self.write(Instant::now());
        }
    }

    /// Refuses what would wait for a connection that will not come.
    fn open(&self) -> Result<(), Error> {
        if self.gave_up {
            return Err(Error::new(
                ErrorCode::ConnectionLost,
                "the hub gave up connecting to the NATS server (see its status events)",
            ));
        }
        Ok(())
    }

    /// Publishes on the hub's subject (with its origin, if it has one).
    pub fn publish(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.open()?;
        queue(&mut self.session, &self.subject, None, self.origin.as_ref().map(|o| &o.block[..]), payload)?;
        self.queued();
        Ok(())
    }

    /// Publishes on the hub's subject, with when it stops being worth reading.
    pub fn publish_expiring(&mut self, payload: &[u8], expiry_ns: u64) -> Result<(), Error> {
        self.open()?;
        let mut h = Headers::default();
        if let Some(o) = &self.origin {
            h.insert(ORIGIN, &o.name).map_err(|e| Error::bad_option(e.to_string()))?;
        }
        h.insert(EXPIRY, decimal(expiry_ns, &mut [0; 20])).expect("a valid header");
        queue(&mut self.session, &self.subject, None, Some(&h.encode()), payload)?;
        self.queued();
        Ok(())
    }

    /// Counts a publish dropped for want of room.
    pub fn count_dropped(&mut self, len: usize) {
        self.inlet.counters.dropped += 1;
        self.inlet.counters.dropped_bytes += len as u64;
    }

    /// Sends a request on the hub's subject: its key.
    pub fn request(&mut self, body: &[u8]) -> Result<u64, Error> {
        self.open()?;
        if self.inlet.inbox_sid.is_none() {
            let inbox = format!("{}*", self.inlet.inbox);
            let sid = self.session.subscribe(&inbox, None).map_err(|e| Error::bad_option(e.to_string()))?;
            self.inlet.inbox_sid = Some(sid);
        }
        let key = self.inlet.next_key;
        self.inlet.next_key += 1;
        let mut reply = std::mem::take(&mut self.inlet.inbox);
        let base = reply.len();
        reply.push_str(decimal(key, &mut [0; 20]));
        let r = queue(&mut self.session, &self.subject, Some(&reply), None, body);
        reply.truncate(base);
        self.inlet.inbox = reply;
        r?;
        self.queued();
        self.inlet.requests.insert(key, ());
        Ok(key)
    }

    pub fn cancel(&mut self, key: u64) -> bool {
        self.inlet.requests.remove(&key).is_some()
    }

    /// Answers request `key` (delivered to this serving hub): on its reply subject, the
    /// body as it is, or a failure in the header NATS services use.
    pub fn respond(&mut self, key: u64, ok: bool, body: &[u8]) -> bool {
        let Some(reply) = self.inlet.answers.remove(&key) else { return false };
        let too_large = ok && body.len() > self.session.server().max_payload;
        let (ok, body) = if too_large {
            // The requester learns why rather than waiting for its timeout.
            (false, &br#"{"code":"ERR_MESSAGE_TOO_LARGE","message":"the answer is larger than the NATS server takes (max_payload)"}"#[..])
        } else {
            (ok, body)
        };
        let r = if ok {
            queue(&mut self.session, &reply, None, None, body)
        } else {
            // `body` is the JSON `{code, message}` of a zerohop server's error: it goes as
            // the body (for zerohop clients) and its message in the header (for the rest).
            let mut h = Headers::default();
            let why = json_string_field(body, "message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            let why = why.replace(['\r', '\n'], " ");
            let inserted = h.insert(SERVICE_ERROR, &why).and_then(|()| h.insert(SERVICE_ERROR_CODE, "500"));
            inserted
                .map_err(|e| Error::bad_option(e.to_string()))
                .and_then(|()| queue(&mut self.session, &reply, None, Some(&h.encode()), body))
        };
        self.inlet.spare.push(reply);
        if r.is_ok() {
            self.queued();
        }
        r.is_ok() && !too_large
    }

    /// Messages received go into `to` from now on (see `Transport::forward_to`).
    pub fn forward_to(&mut self, to: Arc<dyn Link>, counts: Arc<ForwardCounts>) {
        self.inlet.forward = Some((to, counts));
    }

    /// The caller flushes at the end of each turn: publishes wait for it.
    pub fn flush_by_caller(&mut self) {
        self.caller_flushes = true;
    }

    /// Writes what waits.
    pub fn flush(&mut self) {
        self.write(Instant::now());
    }

    pub fn connect_timeout(&self) -> Duration {
        self.options.connect_timeout
    }

    /// Whether everything published was written to the server (through TLS too).
    pub fn drained(&self) -> bool {
        self.session.pending_bytes() == 0 && self.tls.as_ref().is_none_or(|t| !t.wants_write())
    }

    /// The subject numbered `n` in an envelope.
    pub fn subject_name(&self, n: u32) -> Option<String> {
        self.inlet.subjects.name(n).map(str::to_owned)
    }

    pub fn counters(&self) -> Counters {
        self.inlet.counters
    }

    /// Gauges: bytes kept for the server, requests waiting, requests to answer, subjects known.
    pub fn gauges(&self) -> (usize, usize, usize, usize) {
        (self.session.pending_bytes(), self.inlet.requests.len(), self.inlet.answers.len(), self.inlet.subjects.len())
    }

    /// The server's id and largest message, once it greeted a connection, and how many
    /// servers of its cluster the hub knows (the URL's among them).
    pub fn server(&self) -> (String, usize, usize) {
        let s = self.session.server();
        (s.server_id.clone(), s.max_payload, self.servers.len())
    }

    pub fn close(&mut self) {
        self.write(Instant::now());
        self.closing = true;
        self.retry_at = None;
        self.attempt_by = None;
        self.ping_at = None;
        if let Some(t) = self.token.take() {
            self.wire.close(t);
        }
        self.life.on(LifeEvent::Close);
    }
}

/// Queues a message for the server in `session`.
fn queue(
    session: &mut Session,
    subject: &str,
    reply: Option<&str>,
    block: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), Error> {
    session.publish_with_block(subject, reply, block, payload).map_err(|e| match e {
        NatsError::PayloadTooLarge(n) => Error::too_large("message", n, session.server().max_payload),
        e => Error::bad_option(e.to_string()),
    })
}

impl Drive for Engine {
    fn readiness_fd(&self) -> RawFd {
        self.wire.readiness_fd()
    }

    fn deadline(&mut self) -> Option<Instant> {
        // While messages are held, look for room again soon. (A flag, not the ring's
        // lock: every publish asks for the deadline.)
        let held = self.holding.then(|| Instant::now() + HELD_POLL);
        [self.retry_at, self.attempt_by, self.ping_at, self.wire.deadline(), held].into_iter().flatten().min()
    }

    fn drive(&mut self, now: Instant, ready: Ready) -> usize {
        self.turn(now, ready.readable)
    }

    fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn readiness_needed(&mut self) {
        self.wire.watch_all();
    }

    fn take_forwarded(&mut self) -> Option<Arc<dyn Link>> {
        let forwarded = std::mem::take(&mut self.inlet.forwarded);
        self.inlet.forward.as_ref().filter(|_| forwarded).map(|(to, _)| to.clone())
    }
}

/// How often messages held for want of room are offered to the ring again.
const HELD_POLL: Duration = Duration::from_millis(1);

/// How long a `block` publisher waits at a time before it looks again.
pub const ROOM_POLL: Duration = Duration::from_millis(10);
