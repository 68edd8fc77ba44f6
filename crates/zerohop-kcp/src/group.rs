//! Reliable multicast groups, `kcp://239.x.y.z:port`: one sender (a hub opened with
//! `role: 'publisher'`), any number of members (`role: 'subscriber'`), every member
//! gets every message once and in order, repaired by NAKs
//! ([`zerohop_proto::multicast`], which says why NAKs rather than a session per member).
//!
//! The sender multicasts each message once and keeps it in a retransmit window
//! (`sendQueueBytes`, `sendQueueMessages`); after a burst it multicasts its next
//! number (a tail), soon and then less and less often, so that a member learns of a
//! loss at the end of a burst and that the sender lives. A member follows the first
//! sender it hears (another once that one has been silent for a second: a restarted
//! sender numbers anew), asks it where to start (so that it gets every message
//! published since it joined the group, the first ones too), unicasts NAKs for what it misses, and delivers in order. A
//! member the window has left behind (stopped, or far slower) is told what is gone,
//! counts what it lost, says so in a status event (`ERR_SLOW_CONSUMER`), and goes on;
//! nobody waits for it.
//!
//! A message larger than a datagram goes as fragments, each a message of the group
//! with a flags byte in front (first, last): the member puts them together in order,
//! and after a loss it could not repair drops fragments until the next first one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::driver::{Drive, Ready};
use zerohop_net::ring::{Inbound, ReceiveRing};
use zerohop_proto::lifecycle::Status;
use zerohop_proto::multicast::{self, DATA_HEADER, Member, MemberEvent, Sender, SenderLimits};
use zerohop_transport::{Error, ErrorCode, StatusEvent, Value};
use zerohop_udp::{Multicast, RecvBatch, SendBatch, SocketOptions};

/// A group message's flags byte: the first and the last fragment of a hub's message.
const FIRST: u8 = 1;
const LAST: u8 = 2;
/// The sender's tails: the first this soon after a message, then twice as late each
/// time up to the last (which is also how members know the sender lives).
const TAIL_FIRST_MS: u64 = 2;
const TAIL_MAX_MS: u64 = 200;
/// A member follows another sender once the one it follows was silent this long.
const SENDER_SILENT_MS: u64 = 1000;
/// Messages a member holds past a gap, waiting for the repair, at most.
const HOLD: usize = 65_536;
/// A sender is done lingering once it has published nothing and nobody asked for a
/// repair for this long (members NAK within milliseconds of a loss they see, and a
/// member that was busy needs a moment to get to it).
const QUIET_MS: u64 = 250;
const RECV_BATCH: usize = 64;

/// How a group hub runs.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The group's address and port.
    pub group: SocketAddr,
    /// This hub sends (else it is a member).
    pub sender: bool,
    /// Bytes of a datagram (as KCP's `mtu`).
    pub mtu: usize,
    pub max_message: usize,
    /// The sender's retransmit window.
    pub window_bytes: usize,
    pub window_messages: usize,
}

/// What a group hub counts.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    messages: u64,
    datagrams_in: u64,
    datagrams_out: u64,
    /// Not of the group's protocol, or of another sender.
    ignored: u64,
    /// A sender: NAKs and joins received.
    requests: u64,
    /// A member: times it fell behind, and the messages it lost then.
    fell_behind: u64,
    /// Fragments dropped because their message's start was lost.
    fragments_dropped: u64,
    send_dropped: u64,
}

enum Side {
    /// The sender, when its next tail goes and how far apart they are now, and when it
    /// last published or heard a NAK.
    Sender {
        sender: Sender,
        tail_at: u64,
        tail_every: u64,
        last_busy: u64,
    },
    Member(MemberSide),
}

struct MemberSide {
    /// This member's number (in its joins).
    id: u32,
    /// The sender followed, once one is heard: its group id, its address, and when it
    /// was last heard.
    member: Option<Member>,
    from: SocketAddr,
    heard: u64,
    /// The fragments of the message being put together; `skipping` after a loss until
    /// a first fragment.
    assembling: Vec<u8>,
    skipping: bool,
}

/// A group hub's engine: see the module docs.
pub struct GroupEngine {
    socket: UdpSocket,
    config: GroupConfig,
    ring: Arc<ReceiveRing>,
    recv: RecvBatch,
    out: SendBatch,
    epoch: Instant,
    side: Side,
    counters: Counters,
    /// A fragment being made (its flags byte, then its piece of the message).
    frag: Vec<u8>,
    pub closing: bool,
}

impl GroupEngine {
    /// Joins the group (a member: binds its port, shared with other members on this
    /// host) or gets ready to send to it. `id`, drawn at random, names a sender's group
    /// (its messages among other senders'), or a member (in its joins).
    pub fn new(config: GroupConfig, ring: Arc<ReceiveRing>, id: u32) -> std::io::Result<GroupEngine> {
        let unspecified = match config.group.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let multicast = Multicast::group(config.group.ip());
        let (bind, options) = if config.sender {
            (
                SocketAddr::new(unspecified, 0),
                SocketOptions { nonblocking: true, multicast: Some(multicast), ..Default::default() },
            )
        } else {
            let o =
                SocketOptions { nonblocking: true, reuse_port: true, multicast: Some(multicast), ..Default::default() };
            (SocketAddr::new(unspecified, config.group.port()), o)
        };
        let (socket, _) = zerohop_udp::bind(bind, &options)?;
        let limits = SenderLimits {
            window_messages: config.window_messages,
            window_bytes: config.window_bytes,
            ..SenderLimits::default()
        };
        let side = if config.sender {
            Side::Sender { sender: Sender::new(id, limits), tail_at: u64::MAX, tail_every: TAIL_FIRST_MS, last_busy: 0 }
        } else {
            // (Skipping until a first fragment: one that joins in the middle of a
            // message does not take its end for a whole one.)
            Side::Member(MemberSide {
                id,
                member: None,
                from: config.group,
                heard: 0,
                assembling: Vec::new(),
                skipping: true,
            })
        };
        ring.report(StatusEvent { status: Status::Connected, peer: None, error: None });
        Ok(GroupEngine {
            socket,
            recv: RecvBatch::new(RECV_BATCH, config.mtu),
            out: SendBatch::new(),
            epoch: Instant::now(),
            side,
            counters: Counters::default(),
            frag: Vec::new(),
            closing: false,
            config,
            ring,
        })
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// The sender: multicasts `message` (as fragments if it is longer than a datagram).
    pub fn publish(&mut self, message: &[u8]) {
        let now = self.ms(Instant::now());
        let Side::Sender { sender, tail_at, tail_every, last_busy } = &mut self.side else { return };
        *last_busy = now;
        let chunk = self.config.mtu - DATA_HEADER - 1;
        let count = message.len().div_ceil(chunk).max(1);
        let frag = &mut self.frag;
        for (i, piece) in message.chunks(chunk).chain((message.is_empty()).then_some(&[][..])).enumerate() {
            let flags = if i == 0 { FIRST } else { 0 } | if i + 1 == count { LAST } else { 0 };
            frag.clear();
            frag.push(flags);
            frag.extend_from_slice(piece);
            let d = sender.publish(now, frag);
            self.out.push(d, Some(self.config.group));
        }
        self.counters.messages += 1;
        *tail_every = TAIL_FIRST_MS;
        *tail_at = now + TAIL_FIRST_MS;
        self.send_out();
    }

    fn send_out(&mut self) {
        let before = self.out.len();
        while !self.out.is_empty() {
            match self.out.send(&self.socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.counters.datagrams_out += (before - self.out.len()) as u64;
        if self.out.len() > 4096 {
            // (Repairs and tails bring back what a full socket buffer lost.)
            self.counters.send_dropped += self.out.len() as u64;
            self.out.clear();
        }
    }

    /// Reads what waits: a sender, NAKs (answered at once); a member, the group's messages.
    fn receive(&mut self, now: u64) -> usize {
        let mut read = 0;
        loop {
            let n = self.recv.recv(&self.socket).unwrap_or_default();
            for d in self.recv.iter() {
                self.counters.datagrams_in += 1;
                let Some(from) = d.from.filter(|_| !d.truncated) else {
                    self.counters.ignored += 1;
                    continue;
                };
                match &mut self.side {
                    Side::Sender { sender, last_busy, .. } => {
                        let (out, group) = (&mut self.out, self.config.group);
                        let mut multicast = |r: &[u8]| out.push(r, Some(group));
                        if sender.on_request(now, d.bytes, &mut multicast) {
                            self.counters.requests += 1;
                            *last_busy = now;
                        } else {
                            self.counters.ignored += 1;
                        }
                    }
                    Side::Member(m) => {
                        let taken = member_receive(m, &self.ring, &mut self.counters, now, d.bytes, from);
                        if !taken {
                            self.counters.ignored += 1;
                        }
                    }
                }
            }
            read += n;
            if n < RECV_BATCH || !self.ring.has_room_for_a_batch() {
                return read;
            }
        }
    }

    /// Tails (a sender) and NAKs (a member) that are due.
    fn timers(&mut self, now: u64) {
        match &mut self.side {
            Side::Sender { sender, tail_at, tail_every, .. } => {
                if now >= *tail_at {
                    self.out.push(sender.tail(), Some(self.config.group));
                    *tail_every = (*tail_every * 2).min(TAIL_MAX_MS);
                    *tail_at = now + *tail_every;
                }
            }
            Side::Member(m) => {
                let MemberSide { member: Some(member), from, heard, assembling, skipping, .. } = m else { return };
                if member.waiting() && now.saturating_sub(*heard) >= SENDER_SILENT_MS {
                    // The sender is gone (or deaf): what it did not repair never comes.
                    let mut d = Delivering::new(&self.ring, &mut self.counters, *from, assembling, skipping);
                    member.give_up(&mut |e| d.on(e));
                    d.finish();
                } else if let Some(nak) = member.poll_nak(now) {
                    self.out.push(nak, Some(*from));
                }
            }
        }
    }

    /// A sender: whether it published nothing and nobody asked for a repair lately
    /// (what lingering waits for). A member has nothing to wait for.
    pub fn quiet(&self) -> bool {
        let now = self.ms(Instant::now());
        match &self.side {
            Side::Sender { last_busy, .. } => now.saturating_sub(*last_busy) >= QUIET_MS,
            Side::Member(_) => true,
        }
    }

    /// Counters for metrics.
    pub fn details(&self) -> Vec<(&'static str, Value)> {
        let c = self.counters;
        let n = |v: u64| Value::Number(v as f64);
        let mut d = vec![
            ("role", Value::Text(if self.config.sender { "sender" } else { "member" }.into())),
            ("messages", n(c.messages)),
            ("datagramsIn", n(c.datagrams_in)),
            ("datagramsOut", n(c.datagrams_out)),
            ("ignored", n(c.ignored)),
            ("sendDropped", n(c.send_dropped)),
        ];
        match &self.side {
            Side::Sender { sender, .. } => d.extend([
                ("naksReceived", n(c.requests - sender.joins)),
                ("joinsAnswered", n(sender.joins)),
                ("repairs", n(sender.repairs)),
                ("goneAnswers", n(sender.gone_answers)),
            ]),
            Side::Member(m) => {
                let member = m.member.as_ref();
                d.extend([
                    ("naksSent", n(member.map_or(0, |m| m.naks_sent))),
                    ("missing", n(member.map_or(0, Member::missing))),
                    ("duplicates", n(member.map_or(0, |m| m.duplicates))),
                    ("beforeJoin", n(member.map_or(0, |m| m.before_join))),
                    ("fellBehind", n(c.fell_behind)),
                    ("lostMessages", n(member.map_or(0, |m| m.lost))),
                    ("fragmentsDropped", n(c.fragments_dropped)),
                ]);
            }
        }
        d
    }
}

/// A member takes datagram `d` from `from`: follows its sender, delivers what is in
/// order. Whether it was the group's.
fn member_receive(
    m: &mut MemberSide,
    ring: &ReceiveRing,
    counters: &mut Counters,
    now: u64,
    d: &[u8],
    from: SocketAddr,
) -> bool {
    let Some(group) = multicast::sender_group(d) else { return false };
    let follow = match &m.member {
        None => true,
        // Another sender: followed once ours has been silent a while (it restarted).
        Some(ours) => group != ours.group() && now.saturating_sub(m.heard) >= SENDER_SILENT_MS,
    };
    if follow {
        // (Listening since the engine began, its clock's 0.)
        m.member = Some(Member::new(group, HOLD, 0, m.id));
        m.from = from;
        m.assembling.clear();
        m.skipping = true;
    }
    let MemberSide { member: Some(member), from: sender, heard, assembling, skipping, .. } = m else { return false };
    let mut delivering = Delivering::new(ring, counters, *sender, assembling, skipping);
    let taken = member.receive(now, d, &mut |e| delivering.on(e));
    delivering.finish();
    if taken {
        *heard = now;
    }
    taken
}

/// What a member does with what its [`Member`] hands on: puts fragments together and
/// delivers whole messages; counts a fall behind and says so once, at the end.
struct Delivering<'a> {
    ring: &'a ReceiveRing,
    counters: &'a mut Counters,
    from: SocketAddr,
    assembling: &'a mut Vec<u8>,
    skipping: &'a mut bool,
    fell: u64,
}

impl<'a> Delivering<'a> {
    fn new(
        ring: &'a ReceiveRing,
        counters: &'a mut Counters,
        from: SocketAddr,
        assembling: &'a mut Vec<u8>,
        skipping: &'a mut bool,
    ) -> Self {
        Delivering { ring, counters, from, assembling, skipping, fell: 0 }
    }

    fn on(&mut self, e: MemberEvent<'_>) {
        match e {
            MemberEvent::Message(bytes) => {
                let Some((&flags, piece)) = bytes.split_first() else { return };
                if flags & FIRST != 0 {
                    if !self.assembling.is_empty() {
                        self.counters.fragments_dropped += 1; // a message whose end was lost
                    }
                    self.assembling.clear();
                    *self.skipping = false;
                } else if *self.skipping {
                    self.counters.fragments_dropped += 1;
                    return;
                }
                if flags & LAST != 0 && self.assembling.is_empty() {
                    self.deliver(piece);
                    return;
                }
                self.assembling.extend_from_slice(piece);
                if flags & LAST != 0 {
                    let whole = std::mem::take(self.assembling);
                    self.deliver(&whole);
                    *self.assembling = whole;
                    self.assembling.clear();
                }
            }
            MemberEvent::FellBehind(lost) => {
                self.fell += lost;
                self.assembling.clear();
                *self.skipping = true;
            }
        }
    }

    fn deliver(&self, bytes: &[u8]) {
        self.ring.deliver_or_hold(&Inbound::message(1, self.from, 0, bytes));
    }

    fn finish(self) {
        if self.fell == 0 {
            return;
        }
        self.counters.fell_behind += 1;
        let why = format!("fell behind the sender: {} messages left its window before this member had them", self.fell);
        self.ring.report(StatusEvent {
            status: Status::Connected,
            peer: Some(self.from.to_string()),
            error: Some(Error::new(ErrorCode::SlowConsumer, why)),
        });
    }
}

impl Drive for GroupEngine {
    fn readiness_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn deadline(&mut self) -> Option<Instant> {
        let at = match &self.side {
            Side::Sender { tail_at, .. } => Some(*tail_at).filter(|t| *t != u64::MAX),
            // A NAK due, or giving up on a gap once the sender has been silent a while.
            Side::Member(m) => m.member.as_ref().and_then(|member| {
                let give_up = member.waiting().then_some(m.heard + SENDER_SILENT_MS);
                [member.nak_due(), give_up].into_iter().flatten().min()
            }),
        };
        at.map(|ms| self.epoch + Duration::from_millis(ms))
    }

    fn may_read(&self) -> bool {
        self.ring.has_room_for_a_batch()
    }

    fn drive(&mut self, now: Instant, ready: Ready) -> usize {
        self.ring.deliver_held();
        let ms = self.ms(now);
        let read = if ready.readable && self.ring.has_room_for_a_batch() { self.receive(ms) } else { 0 };
        self.timers(ms);
        self.send_out();
        read
    }
}
