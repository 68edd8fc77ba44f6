//! [`KcpWire`]: KCP conversations on one UDP socket, as the connections of a
//! records engine ([`zerohop_stream::wire`]).
//!
//! A listener's socket receives every peer's datagrams: each is sorted by its sender
//! and its conversation id to that conversation's [`Kcp`], and a datagram of no known
//! conversation starts one only if it is the first segment of a peer's first words
//! (data, sequence number 0, a hello of our records) and the listener keeps fewer than
//! `maxPeers`; anything else is counted and dropped, so a stranger costs nothing. A
//! connecting hub has one conversation at a time, with a new random id for each
//! attempt (the server tells a reconnect by the session in its hello, not by the id).
//!
//! Time is milliseconds since the wire began, on one [`Schedule`] for all
//! conversations: after each turn a busy conversation says when it next needs one
//! ([`Kcp::check`]), an idle one needs none. What the engine writes and what a datagram
//! calls for (acknowledgements) go out at once, at the end of the round of writes or
//! of the batch of datagrams ([`Wire::flush`]); every datagram out leaves in one
//! `sendmmsg` per round.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use zerohop_net::Faults;
use zerohop_net::waker::Waker;
use zerohop_proto::kcp::{Kcp, KcpConfig, KcpStats, OVERHEAD};
use zerohop_proto::records::starts_records;
use zerohop_proto::schedule::Schedule;
use zerohop_stream::wire::{Interest, Lost, Origin, Wire, WireEvent};
use zerohop_transport::chaos::{ChaosConfig, ChaosReport};
use zerohop_transport::{ErrorCode, Value};
use zerohop_udp::{RecvBatch, SendBatch};

/// Datagrams received per system call, and calls per poll at most (so that a flood
/// does not hold up the rest of the turn).
const RECV_BATCH: usize = 64;
const RECV_CALLS: usize = 16;
/// Datagrams waiting for room in the socket at most: beyond them the rest is dropped
/// (KCP sends again what was lost).
const SEND_BACKLOG: usize = 4096;
/// What a conversation may queue beyond its send window, in windows: more waits in
/// the engine's queues, and the engine learns to wait ([`WireEvent::Writable`]).
const QUEUE_WINDOWS: usize = 2;

/// How a KCP wire runs.
#[derive(Clone, Debug)]
pub struct KcpWireConfig {
    /// Every conversation's parameters.
    pub kcp: KcpConfig,
    /// The server (connecting), or `None` (listening).
    pub server: Option<SocketAddr>,
    pub idle_timeout: Option<Duration>,
    pub max_peers: usize,
    /// Faults injected into every datagram sent and received (`?chaos=`).
    pub chaos: Option<ChaosConfig>,
}

/// One conversation.
struct Conv {
    kcp: Kcp,
    peer: SocketAddr,
    interest: Interest,
    /// A message longer than the reader's buffer, taken from KCP whole, and how much of
    /// it the reader has had.
    partial: Vec<u8>,
    partial_at: usize,
    /// When the peer was last heard (ms).
    heard_ms: u64,
    /// In `to_flush`.
    flagged: bool,
    /// Reported readable (or writable) by the poll of this number already.
    readable_poll: u64,
    writable_poll: u64,
}

impl Conv {
    /// Segments it may still take from the engine.
    fn room(&self, window: usize) -> usize {
        (window * QUEUE_WINDOWS).saturating_sub(self.kcp.waiting())
    }

    fn has_unread(&self) -> bool {
        self.partial_at < self.partial.len() || self.kcp.peek_size().is_some()
    }
}

/// What only a KCP wire counts.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    datagrams_in: u64,
    /// Too short, garbled, or of no sender: dropped.
    bad_datagrams: u64,
    /// Of no conversation we keep, and not the start of one: dropped.
    unknown_conversation: u64,
    /// New peers beyond `maxPeers`: ignored.
    refused_peers: u64,
    /// Conversations ended for resending too often, or for silence.
    dead_links: u64,
    /// Datagrams dropped for want of room in the socket's send buffer.
    send_dropped: u64,
}

/// KCP conversations on one UDP socket: see the module docs.
pub struct KcpWire {
    socket: UdpSocket,
    /// What the driver and the reader's event loop wait on: the socket and the timers.
    waker: Waker,
    recv: RecvBatch,
    convs: Convs,
}

/// Everything but the socket and the receive batch (what a datagram is handed to).
struct Convs {
    config: KcpWireConfig,
    /// By token; `free` lists the tokens to reuse.
    slab: Vec<Option<Conv>>,
    free: Vec<u64>,
    live: usize,
    by_peer: HashMap<(SocketAddr, u32), u64>,
    schedule: Schedule,
    epoch: Instant,
    out: SendBatch,
    to_flush: Vec<u64>,
    /// Events for the next poll (a connect, reading resumed).
    pending: Vec<WireEvent>,
    polls: u64,
    next_idle_check: Option<u64>,
    counters: Counters,
    /// What ended conversations counted.
    ended_stats: KcpStats,
    /// Message mode: the pieces of one write, made one message.
    gather: Vec<u8>,
    /// Under `?chaos=`: what every datagram sent and received passes through.
    faults: Option<Box<Faults<SocketAddr>>>,
}

/// Queues datagram `d` to `peer`, through the faults if there are any.
fn emit(out: &mut SendBatch, faults: &mut Option<Box<Faults<SocketAddr>>>, now: Instant, d: &[u8], peer: SocketAddr) {
    match faults {
        None => out.push(d, Some(peer)),
        Some(f) => f.send(now, d, peer, |d, to| out.push(d, Some(to))),
    }
}

impl KcpWire {
    /// Binds `bind` (the listening address, or any port to connect from).
    pub fn new(bind: SocketAddr, config: KcpWireConfig) -> io::Result<KcpWire> {
        let options = zerohop_udp::SocketOptions { nonblocking: true, ..Default::default() };
        let (socket, _) = zerohop_udp::bind(bind, &options)?;
        let max_datagram = config.kcp.mtu;
        let epoch = Instant::now();
        Ok(KcpWire {
            waker: Waker::new(socket.as_raw_fd())?,
            socket,
            recv: RecvBatch::new(RECV_BATCH, max_datagram),
            convs: Convs {
                slab: Vec::new(),
                free: Vec::new(),
                live: 0,
                by_peer: HashMap::new(),
                schedule: Schedule::new(),
                epoch,
                out: SendBatch::new(),
                to_flush: Vec::new(),
                pending: Vec::new(),
                polls: 0,
                next_idle_check: None,
                counters: Counters::default(),
                ended_stats: KcpStats::default(),
                gather: Vec::new(),
                faults: config.chaos.map(|c| Box::new(Faults::new(c))),
                config,
            },
        })
    }

    /// Makes the readiness descriptor poll readable when the next timer is due (see
    /// [`Waker`]).
    fn arm(&mut self, now: Instant) {
        let c = &mut self.convs;
        let deadline = c.deadline_us();
        self.waker.arm(deadline, c.us(now));
    }

    /// Sends what waits (what the socket has no room for waits for the next round).
    fn send_out(&mut self) {
        let c = &mut self.convs;
        while !c.out.is_empty() {
            match c.out.send(&self.socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if c.out.len() > SEND_BACKLOG {
            c.counters.send_dropped += c.out.len() as u64;
            c.out.clear();
        }
    }
}

impl Convs {
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn conv(&mut self, token: u64) -> Option<&mut Conv> {
        self.slab.get_mut(token as usize).and_then(Option::as_mut)
    }

    fn insert(&mut self, conv: Conv) -> u64 {
        let key = (conv.peer, conv.kcp.conv());
        let token = match self.free.pop() {
            Some(t) => t,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u64
            }
        };
        self.slab[token as usize] = Some(conv);
        self.by_peer.insert(key, token);
        self.live += 1;
        if self.next_idle_check.is_none() {
            self.next_idle_check = self.config.idle_timeout.map(|_| 0);
        }
        token
    }

    fn new_conv(&self, id: u32, peer: SocketAddr, ms: u64, connecting: bool) -> Conv {
        let mut kcp = Kcp::with_config(id, &self.config.kcp).expect("checked by the options");
        kcp.set_now(ms as u32);
        Conv {
            kcp,
            peer,
            interest: Interest { read: !connecting, write: connecting },
            partial: Vec::new(),
            partial_at: 0,
            heard_ms: ms,
            flagged: false,
            readable_poll: 0,
            writable_poll: 0,
        }
    }

    /// Conversation `token` has more to read than its reader took (or reading resumed):
    /// it is reported readable at the next poll, once, as a socket's readiness would be.
    fn readable_again(&mut self, token: u64) {
        if !self.pending.iter().any(|e| matches!(e, WireEvent::Readable(t) if *t == token)) {
            self.pending.push(WireEvent::Readable(token));
        }
    }

    /// Marks conversation `token` to be flushed at the end of the round.
    fn flag(&mut self, token: u64) {
        if let Some(c) = self.slab.get_mut(token as usize).and_then(Option::as_mut)
            && !c.flagged
        {
            c.flagged = true;
            self.to_flush.push(token);
        }
    }

    /// A datagram from `from`: to its conversation, or the start of one, or dropped.
    fn on_datagram(&mut self, bytes: &[u8], from: Option<SocketAddr>, ms: u64, events: &mut Vec<WireEvent>) {
        self.counters.datagrams_in += 1;
        let (Some(from), true) = (from, bytes.len() >= OVERHEAD) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let token = match self.by_peer.get(&(from, id)) {
            Some(&t) => t,
            None => {
                let Some(first) = zerohop_proto::kcp::first_segment(bytes) else {
                    self.counters.bad_datagrams += 1;
                    return;
                };
                let listening = self.config.server.is_none();
                if !(listening && first.is_data && first.sn == 0 && starts_records(first.payload)) {
                    self.counters.unknown_conversation += 1;
                    return;
                }
                if self.live >= self.config.max_peers {
                    self.counters.refused_peers += 1;
                    return;
                }
                let token = self.insert(self.new_conv(id, from, ms, false));
                events.push(WireEvent::Accepted { token, from: Origin::at(from) });
                token
            }
        };
        let polls = self.polls;
        let window = self.config.kcp.send_window as usize;
        let Some(c) = self.conv(token) else { return };
        c.kcp.set_now(ms as u32);
        let taken = c.kcp.input(bytes);
        c.heard_ms = ms;
        let readable = c.interest.read && c.readable_poll != polls && c.has_unread();
        let writable = c.interest.write && c.writable_poll != polls && c.room(window) > 0;
        if readable {
            c.readable_poll = polls;
            events.push(WireEvent::Readable(token));
        }
        if writable {
            c.writable_poll = polls;
            events.push(WireEvent::Writable(token));
        }
        if taken.is_err() {
            self.counters.bad_datagrams += 1; // (what came before the bad segment counts)
        }
        self.flag(token);
    }

    /// Flushes the flagged conversations and sets their timers.
    fn flush(&mut self, now: Instant) {
        let ms = self.ms(now);
        let mut to_flush = std::mem::take(&mut self.to_flush);
        for token in to_flush.drain(..) {
            let Some(c) = self.slab.get_mut(token as usize).and_then(Option::as_mut) else { continue };
            c.flagged = false;
            c.kcp.set_now(ms as u32);
            let (out, faults, peer) = (&mut self.out, &mut self.faults, c.peer);
            c.kcp.flush(&mut |d: &[u8]| emit(out, faults, now, d, peer));
            self.schedule_turn(token, ms);
        }
        self.to_flush = to_flush;
    }

    /// Sets conversation `token`'s next turn: when it needs one, or none while idle.
    fn schedule_turn(&mut self, token: u64, ms: u64) {
        let Some(c) = self.slab.get(token as usize).and_then(Option::as_ref) else { return };
        if c.kcp.is_idle() {
            self.schedule.remove(token as u32);
        } else {
            let now = ms as u32;
            let at = ms + u64::from(c.kcp.check(now).wrapping_sub(now));
            self.schedule.set(token as u32, at);
        }
    }

    /// Runs the conversations' timers that are due, and the idle check.
    fn run_timers(&mut self, ms: u64, events: &mut Vec<WireEvent>) {
        while let Some(key) = self.schedule.pop_due(ms) {
            let token = u64::from(key);
            let Some(c) = self.slab.get_mut(token as usize).and_then(Option::as_mut) else { continue };
            let (out, faults, peer) = (&mut self.out, &mut self.faults, c.peer);
            let at = self.epoch + Duration::from_millis(ms);
            let now = ms as u32;
            let mut emit = |d: &[u8]| emit(out, faults, at, d, peer);
            c.kcp.update(now, &mut emit);
            if c.kcp.check(now) == now {
                // A resend due between two ticks of the interval (`update` flushes only
                // on them, and `check` says when a resend is due): sent now.
                c.kcp.flush(&mut emit);
            }
            if c.kcp.is_dead() {
                self.counters.dead_links += 1;
                let lost = Lost::new(ErrorCode::ConnectionLost, "the peer acknowledged nothing through every resend");
                events.push(WireEvent::Ended { token, lost });
                continue; // (the engine closes it)
            }
            self.schedule_turn(token, ms);
        }
        let Some(idle) = self.config.idle_timeout else { return };
        if self.next_idle_check.is_none_or(|at| at > ms) {
            return;
        }
        let idle_ms = idle.as_millis() as u64;
        for (t, c) in self.slab.iter().enumerate() {
            if let Some(c) = c
                && ms.saturating_sub(c.heard_ms) >= idle_ms
            {
                self.counters.dead_links += 1;
                let lost = Lost::new(ErrorCode::ConnectionLost, format!("nothing heard for {idle_ms} ms"));
                events.push(WireEvent::Ended { token: t as u64, lost });
            }
        }
        self.next_idle_check = (self.live > 0).then(|| ms + (idle_ms / 4).max(10));
    }

    /// The earliest deadline, in µs since the epoch.
    fn deadline_us(&mut self) -> Option<u64> {
        if !self.pending.is_empty() || !self.to_flush.is_empty() {
            return Some(0);
        }
        let faults = self.faults.as_ref().and_then(|f| f.due()).map(|at| self.us(at));
        let timers = [self.schedule.earliest(), self.next_idle_check].into_iter().flatten().min().map(|ms| ms * 1000);
        [timers, faults].into_iter().flatten().min()
    }
}

impl Wire for KcpWire {
    const REPORTS_END: bool = false;
    const PIGGYBACK_ACKS: bool = true;
    const UNSENT: &'static str = "kcpUnackedBytes";
    const READS_DIRECTLY: bool = false;

    fn readiness_fd(&self) -> RawFd {
        self.waker.fd()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    fn server(&self) -> Origin {
        Origin::at(self.convs.config.server.unwrap_or_else(zerohop_stream::wire::unspecified))
    }

    fn connect(&mut self, now: Instant) -> io::Result<u64> {
        let server = self.convs.config.server.ok_or(io::ErrorKind::Unsupported)?;
        let c = &mut self.convs;
        let ms = c.ms(now);
        // A new id for each attempt: what the last one left in flight is not taken for
        // this one's.
        let id = zerohop_net::session_id() as u32;
        let token = c.insert(c.new_conv(id, server, ms, true));
        c.pending.push(WireEvent::Connected { token, from: Origin::at(server) });
        Ok(token)
    }

    fn poll(&mut self, now: Instant, readable: bool, events: &mut Vec<WireEvent>) -> bool {
        events.clear();
        let c = &mut self.convs;
        c.polls += 1;
        events.append(&mut c.pending);
        let ms = c.ms(now);
        let mut more = false;
        // Under faults, what arrived goes through them (taken out meanwhile, since what
        // they let through goes to the conversations beside them).
        let mut faults = self.convs.faults.take();
        if let Some(f) = &mut faults {
            f.release_received(now, |d, from| self.convs.on_datagram(d, Some(from), ms, events));
        }
        if readable {
            for call in 0..RECV_CALLS {
                let n = self.recv.recv(&self.socket).unwrap_or_default();
                for d in self.recv.iter() {
                    match (&mut faults, d.from) {
                        (_, _) if d.truncated => self.convs.counters.bad_datagrams += 1,
                        (Some(f), Some(from)) => {
                            f.receive(now, d.bytes, from, |d, from| self.convs.on_datagram(d, Some(from), ms, events))
                        }
                        _ => self.convs.on_datagram(d.bytes, d.from, ms, events),
                    }
                }
                if n < RECV_BATCH {
                    break;
                }
                more = call + 1 == RECV_CALLS;
            }
        }
        if let Some(f) = &mut faults {
            let out = &mut self.convs.out;
            f.release_sent(now, |d, to| out.push(d, Some(to)));
        }
        self.convs.faults = faults;
        self.waker.take_fired(self.convs.us(now));
        self.convs.run_timers(ms, events);
        self.convs.flush(now);
        self.send_out();
        self.arm(now);
        more
    }

    fn deadline(&mut self) -> Option<Instant> {
        let c = &mut self.convs;
        c.deadline_us().map(|us| c.epoch + Duration::from_micros(us))
    }

    fn chaos(&self) -> Option<ChaosReport> {
        self.convs.faults.as_ref().map(|f| f.report())
    }

    fn recv(&mut self, token: u64, into: &mut [u8]) -> io::Result<usize> {
        let c = self.convs.conv(token).ok_or(io::ErrorKind::NotConnected)?;
        let mut n = 0;
        if c.partial_at < c.partial.len() {
            let take = (c.partial.len() - c.partial_at).min(into.len());
            into[..take].copy_from_slice(&c.partial[c.partial_at..c.partial_at + take]);
            c.partial_at += take;
            n = take;
        }
        while n < into.len() {
            let Some(size) = c.kcp.peek_size() else { break };
            if size <= into.len() - n {
                n += c.kcp.recv(&mut into[n..]).expect("peeked");
            } else if n == 0 {
                // Longer than the whole buffer: taken whole, handed on in pieces.
                c.partial.resize(size, 0);
                c.kcp.recv(&mut c.partial).expect("peeked");
                let take = into.len();
                into.copy_from_slice(&c.partial[..take]);
                c.partial_at = take;
                n = take;
            } else {
                break; // the next one starts the next read
            }
        }
        if c.partial_at >= c.partial.len() && !c.partial.is_empty() {
            c.partial.clear();
            c.partial_at = 0;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Reading makes room in the receive window, which the peer hears of at the end of
        // the round; what is left is reported again, as a socket's readiness would be.
        let unread = c.has_unread();
        self.convs.flag(token);
        if unread {
            self.convs.readable_again(token);
        }
        Ok(n)
    }

    fn send(&mut self, token: u64, parts: &[&[u8]]) -> io::Result<usize> {
        let config = &self.convs.config.kcp;
        let (window, mss, stream) = (config.send_window as usize, config.mtu - OVERHEAD, config.stream);
        let cs = &mut self.convs;
        let c = cs.slab.get_mut(token as usize).and_then(Option::as_mut).ok_or(io::ErrorKind::NotConnected)?;
        let room = c.room(window) * mss;
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        if stream {
            for p in parts {
                let take = p.len().min(room - taken);
                c.kcp.send(&p[..take]).expect("a stream takes any length");
                taken += take;
                if taken == room {
                    break;
                }
            }
        } else {
            // One write, one KCP message (as long as KCP reassembles): gathered first.
            let most = room.min(c.kcp.max_message());
            cs.gather.clear();
            for p in parts {
                let take = p.len().min(most - cs.gather.len());
                cs.gather.extend_from_slice(&p[..take]);
            }
            c.kcp.send(&cs.gather).expect("within max_message");
            taken = cs.gather.len();
        }
        cs.flag(token);
        Ok(taken)
    }

    fn flush(&mut self) {
        if !self.convs.to_flush.is_empty() {
            let now = Instant::now();
            self.convs.flush(now);
            self.arm(now);
        }
        if !self.convs.out.is_empty() {
            self.send_out();
        }
    }

    fn watch(&mut self, token: u64, interest: Interest) {
        let Some(c) = self.convs.conv(token) else { return };
        let resumed = interest.read && !c.interest.read && c.has_unread();
        c.interest = interest;
        if resumed {
            self.convs.readable_again(token);
        }
    }

    fn close(&mut self, token: u64) {
        let cs = &mut self.convs;
        let Some(c) = cs.slab.get_mut(token as usize).and_then(Option::take) else { return };
        cs.by_peer.remove(&(c.peer, c.kcp.conv()));
        cs.schedule.remove(token as u32);
        cs.pending.retain(|e| !matches!(e, WireEvent::Readable(t) | WireEvent::Writable(t) if *t == token));
        let s = c.kcp.stats();
        let e = &mut cs.ended_stats;
        e.retransmits += s.retransmits;
        e.fast_retransmits += s.fast_retransmits;
        e.duplicates += s.duplicates;
        e.datagrams_out += s.datagrams_out;
        e.tail_probes += s.tail_probes;
        cs.free.push(token);
        cs.live -= 1;
    }

    fn unsent(&self, token: u64) -> u64 {
        self.convs.slab.get(token as usize).and_then(Option::as_ref).map_or(0, |c| c.kcp.waiting_bytes() as u64)
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let cs = &self.convs;
        let mut total = cs.ended_stats;
        let (mut srtt, mut rto, mut cwnd, mut n) = (0u64, 0u64, 0u64, 0u64);
        for c in cs.slab.iter().flatten() {
            let s = c.kcp.stats();
            total.retransmits += s.retransmits;
            total.fast_retransmits += s.fast_retransmits;
            total.duplicates += s.duplicates;
            total.datagrams_out += s.datagrams_out;
            total.tail_probes += s.tail_probes;
            let (r, o) = c.kcp.rtt();
            (srtt, rto, cwnd, n) = (srtt + u64::from(r), rto + u64::from(o), cwnd + u64::from(c.kcp.cwnd()), n + 1);
        }
        let k = cs.counters;
        let num = |v: u64| Value::Number(v as f64);
        let avg = |v: u64| Value::Number(if n == 0 { 0.0 } else { v as f64 / n as f64 });
        vec![
            ("sessions", num(cs.live as u64)),
            ("rttMs", avg(srtt)),
            ("rtoMs", avg(rto)),
            ("window", avg(cwnd)),
            // Every segment sent again; of them, those sent again before their timeout
            // because later ones were acknowledged, those whose timeout passed (KCP
            // takes them for lost: its congestion window starts over), and tail probes.
            ("retransmits", num(total.retransmits + total.fast_retransmits + total.tail_probes)),
            ("fastRetransmits", num(total.fast_retransmits)),
            ("lostSegments", num(total.retransmits)),
            ("duplicateSegments", num(total.duplicates)),
            ("tailProbes", num(total.tail_probes)),
            ("datagramsIn", num(k.datagrams_in)),
            ("datagramsOut", num(total.datagrams_out)),
            ("badDatagrams", num(k.bad_datagrams)),
            ("unknownConversation", num(k.unknown_conversation)),
            ("refusedPeers", num(k.refused_peers)),
            ("deadLinks", num(k.dead_links)),
            ("sendDropped", num(k.send_dropped)),
        ]
    }
}
