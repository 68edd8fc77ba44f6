//! Records: everything a connection carries, on one byte stream (TCP, Unix sockets).
//!
//! A QUIC connection gives each channel and each request a stream of its own; a TCP
//! connection has one byte stream each way, so channels and control traffic take turns
//! on it as *records*. Each record is a tagged length prefix
//! ([`write_tagged_prefix`]) and its body: either a message of the current channel, or
//! a [`Control`] record (the hello, a channel's start on this connection, a switch of
//! channel, an acknowledgement, a request and its answer, a heartbeat, a close). A
//! message of the current channel sent LZ4-compressed (`compression: 'lz4'`) is a
//! control record too ([`COMPRESSED_KIND`], [`SendQueue::push_compressed`]): the
//! reader hands it on decompressed, as a message like any other, so a peer that does not
//! compress reads it all the same. So is a message with a time to live (`ttlMs`:
//! [`EXPIRING_KIND`], [`SendQueue::push_expiring`]), handed on with its expiry.
//!
//! Messages are framed by their channel's [`SendQueue`] ([`SendQueue::tagged`]) and kept
//! there until acknowledged, so they are written straight from it: [`RecordWriter`]
//! plans each write as at most three slices (one `writev`) and accounts for what the
//! kernel took, however little; [`RecordReader`] turns what arrives, in chunks of any
//! size, back into [`Record`]s.
//!
//! ```
//! use zerohop_proto::records::{Control, Record, RecordReader, RecordWriter};
//! use zerohop_proto::session::SendQueue;
//!
//! let mut queues = vec![Some(SendQueue::tagged(1 << 20))];
//! queues[0].as_mut().unwrap().push(b"hello");
//! let mut w = RecordWriter::new();
//! w.control(&Control::Hello { session: 7, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
//! let mut wire = Vec::new();
//! while let Some(plan) = w.plan(&mut queues) {
//!     let n = w.slices(&plan, &queues).iter().map(|s| { wire.extend_from_slice(s); s.len() }).sum();
//!     w.wrote(&plan, n, &mut queues);
//! }
//!
//! let mut r = RecordReader::new(1 << 20, 16);
//! let mut got = Vec::new();
//! r.push(&wire, |rec| got.push(format!("{rec:?}"))).unwrap();
//! assert_eq!(got, [
//!     "Control(Hello { session: 7, queue_limit: 1048576, queue_messages: 4096, group: [] })",
//!     "Control(Start { channel: 0, first_seq: 0 })",
//!     "Message { channel: 0, payload: [104, 101, 108, 108, 111], expiry_ns: None }",
//! ]);
//! ```

use crate::qos::ChannelClasses;
use crate::session::{HeaderError, SendQueue, get_varint};
use crate::stream::{
    MAX_PREFIX_LEN, MAX_VARINT_LEN, Piece, StreamDecoder, StreamError, write_tagged_prefix, write_varint,
};

/// The kind of the record that carries a message of the current channel compressed:
/// the body after the kind is [`crate::compress`]'s.
pub const COMPRESSED_KIND: u8 = 12;

/// The kind of the record that carries a message of the current channel with the time
/// after which it is not worth reading: `[EXPIRING_KIND][expiry: u64, ns since the Unix
/// epoch][flags: u8, 1 = compressed][the message, or its compressed body]`.
pub const EXPIRING_KIND: u8 = 13;
/// [`EXPIRING_KIND`]'s flag: the message is compressed.
pub const EXPIRING_COMPRESSED: u8 = 1;

/// A message a control record carried: its bytes and expiry, or why it is malformed.
pub type Carried<'a> = Result<(&'a [u8], Option<u64>), &'static str>;

/// A message a control record carries (compressed, or with an expiry): its bytes
/// (decompressed into `scratch` when they were compressed, up to `max`) and expiry;
/// `None` if `record` (from its kind on) is another control record.
pub fn carried_message<'a>(record: &'a [u8], max: usize, scratch: &'a mut Vec<u8>) -> Option<Carried<'a>> {
    let bad = "a compressed message that does not decompress";
    Some(match record {
        [COMPRESSED_KIND, body @ ..] => {
            crate::compress::decompress(body, max, scratch).map(|()| (&scratch[..], None)).map_err(|_| bad)
        }
        [EXPIRING_KIND, e0, e1, e2, e3, e4, e5, e6, e7, flags, body @ ..] => {
            let expiry = u64::from_le_bytes([*e0, *e1, *e2, *e3, *e4, *e5, *e6, *e7]);
            match *flags {
                0 => Ok((body, Some(expiry))),
                EXPIRING_COMPRESSED => crate::compress::decompress(body, max, scratch)
                    .map(|()| (&scratch[..], Some(expiry)))
                    .map_err(|_| bad),
                _ => Err("an expiring message with unknown flags"),
            }
        }
        [EXPIRING_KIND, ..] => Err("a truncated expiring message"),
        _ => return None,
    })
}

/// The bytes a control record adds to the body it carries (a request's, say): its kind
/// and two varints, at most.
pub const CONTROL_OVERHEAD: usize = 1 + 2 * MAX_VARINT_LEN;

/// What the hello starts with: the protocol and its version.
const MAGIC: [u8; 4] = *b"ZH1\x01";
/// The first bytes of every connection: the hello's prefix (a control record of
/// [`HELLO_LEN`] bytes, or more with a work group: see [`hello_prefix_ok`]), its kind and
/// the magic. Checked as they arrive, so that a peer speaking something else is refused
/// at its first bytes.
const PREAMBLE: [u8; 6] = [((HELLO_LEN as u8) << 1) | 1, 1, MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3]];
/// A hello's body: its kind, the magic number, the session and the queue's two limits;
/// then, from a hub in a work group, the name's length and the name.
const HELLO_LEN: usize = 1 + 4 + 8 + 8 + 8;
/// The longest work-group name, in bytes.
pub const MAX_GROUP_NAME: usize = 32;
// `Control::encode` builds a hello in its fixed part, the name's length included, and
// the longest hello's prefix is one byte.
const _: () = assert!(HELLO_LEN < CONTROL_OVERHEAD + 9);
const _: () = assert!((HELLO_LEN + 1 + MAX_GROUP_NAME) << 1 < 0x7f);

/// Whether `b` is the prefix of a hello: of [`HELLO_LEN`] bytes, or with a work group's
/// name of 1 to [`MAX_GROUP_NAME`] bytes.
fn hello_prefix_ok(b: u8) -> bool {
    let len = usize::from(b >> 1);
    b & 1 == 1 && (len == HELLO_LEN || (HELLO_LEN + 2..=HELLO_LEN + 1 + MAX_GROUP_NAME).contains(&len))
}

/// Whether `bytes` start a connection of records (a hello): how a listener that shares
/// one socket among its peers (KCP) tells a new peer from noise before it keeps
/// anything for it.
pub fn starts_records(bytes: &[u8]) -> bool {
    bytes.len() >= PREAMBLE.len() && hello_prefix_ok(bytes[0]) && bytes[1..PREAMBLE.len()] == PREAMBLE[1..]
}

/// A control record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control<'a> {
    /// The first record each way: the sender's session (a new one each time its hub
    /// opens, so that a restarted peer is told apart from one that reconnects), and the
    /// most it keeps unacknowledged per channel (its send queue), in bytes and in
    /// messages, so that the receiver acknowledges well before either fills.
    Hello {
        session: u64,
        queue_limit: u64,
        queue_messages: u64,
        /// The work group the sender receives in (a connecting hub's `group`): the
        /// listener sends each message to one member of the group. Empty: none.
        group: &'a [u8],
    },
    /// The messages that follow are `channel`'s, the first of them `first_seq` (the first
    /// on this connection; after a reconnect, the oldest unacknowledged one).
    Start {
        channel: u16,
        first_seq: u64,
    },
    /// The messages that follow are `channel`'s (started before on this connection).
    Select {
        channel: u16,
    },
    /// The receiver's application has read every message of `channel` below `ack`.
    Ack {
        channel: u16,
        ack: u64,
    },
    /// A request and its key (the requester's).
    Request {
        key: u64,
        body: &'a [u8],
    },
    /// The answer to request `key`.
    Reply {
        key: u64,
        body: &'a [u8],
    },
    /// Request `key` failed (the handler threw): why.
    Fail {
        key: u64,
        reason: &'a [u8],
    },
    /// The requester no longer waits for `key`.
    Cancel {
        key: u64,
    },
    /// A heartbeat, answered with [`Control::Pong`].
    Ping,
    Pong,
    /// The sender closes the connection: why (a [`crate::lifecycle`]-style reason).
    Close {
        code: u8,
        reason: &'a [u8],
    },
    /// A message of the current channel, compressed (see [`COMPRESSED_KIND`]); the
    /// reader hands it on as a [`Record::Message`], decompressed.
    Compressed {
        body: &'a [u8],
    },
}

/// Why the records on a connection cannot be read further: close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The framing is broken, or a record is above its limit.
    Stream(StreamError),
    /// A record that is not what this protocol sends: what is wrong with it.
    Malformed(&'static str),
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Stream(e) => e.fmt(f),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<StreamError> for RecordError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e)
    }
}

impl From<HeaderError> for RecordError {
    fn from(_: HeaderError) -> Self {
        Self::Malformed("malformed varint in a control record")
    }
}

impl Control<'_> {
    fn kind(&self) -> u8 {
        match self {
            Self::Hello { .. } => 1,
            Self::Start { .. } => 2,
            Self::Select { .. } => 3,
            Self::Ack { .. } => 4,
            Self::Request { .. } => 5,
            Self::Reply { .. } => 6,
            Self::Fail { .. } => 7,
            Self::Cancel { .. } => 8,
            Self::Ping => 9,
            Self::Pong => 10,
            Self::Close { .. } => 11,
            Self::Compressed { .. } => COMPRESSED_KIND,
        }
    }

    /// Appends the record (prefix and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // The fixed part on the stack, then what it carries.
        let mut head = [0u8; CONTROL_OVERHEAD + 9];
        head[0] = self.kind();
        let mut at = 1;
        let varint = |v: u64, head: &mut [u8; CONTROL_OVERHEAD + 9], at: &mut usize| {
            let mut b = [0u8; MAX_VARINT_LEN];
            let n = write_varint(v, &mut b);
            head[*at..*at + n].copy_from_slice(&b[..n]);
            *at += n;
        };
        let tail: &[u8] = match *self {
            Self::Hello { session, queue_limit, queue_messages, group } => {
                debug_assert!(group.len() <= MAX_GROUP_NAME, "a work group's name is {MAX_GROUP_NAME} bytes at most");
                head[1..5].copy_from_slice(&MAGIC);
                head[5..13].copy_from_slice(&session.to_le_bytes());
                head[13..21].copy_from_slice(&queue_limit.to_le_bytes());
                head[21..29].copy_from_slice(&queue_messages.to_le_bytes());
                at = HELLO_LEN;
                if !group.is_empty() {
                    head[at] = group.len() as u8;
                    at += 1;
                }
                group
            }
            Self::Start { channel, first_seq } => {
                varint(u64::from(channel), &mut head, &mut at);
                varint(first_seq, &mut head, &mut at);
                &[]
            }
            Self::Select { channel } => {
                varint(u64::from(channel), &mut head, &mut at);
                &[]
            }
            Self::Ack { channel, ack } => {
                varint(u64::from(channel), &mut head, &mut at);
                varint(ack, &mut head, &mut at);
                &[]
            }
            Self::Request { key, body } | Self::Reply { key, body } | Self::Fail { key, reason: body } => {
                varint(key, &mut head, &mut at);
                body
            }
            Self::Cancel { key } => {
                varint(key, &mut head, &mut at);
                &[]
            }
            Self::Ping | Self::Pong => &[],
            Self::Close { code, reason } => {
                head[1] = code;
                at = 2;
                reason
            }
            Self::Compressed { body } => body,
        };
        let mut prefix = [0u8; MAX_PREFIX_LEN];
        let n = write_tagged_prefix(at + tail.len(), true, &mut prefix);
        out.extend_from_slice(&prefix[..n]);
        out.extend_from_slice(&head[..at]);
        out.extend_from_slice(tail);
    }

    /// Reads a control record's body.
    pub fn decode(body: &[u8]) -> Result<Control<'_>, RecordError> {
        decode_control(body)
    }
}

/// [`Control::decode`].
fn decode_control(body: &[u8]) -> Result<Control<'_>, RecordError> {
    let (&kind, rest) = body.split_first().ok_or(RecordError::Malformed("an empty control record"))?;
    let mut at = 0;
    let mut varint = |rest: &[u8]| -> Result<u64, RecordError> {
        let (v, n) = get_varint(&rest[at..])?.ok_or(RecordError::Malformed("a control record cut short"))?;
        at += n;
        Ok(v)
    };
    let channel = |v: u64| u16::try_from(v).map_err(|_| RecordError::Malformed("a channel above 65535"));
    let c = match kind {
        1 => {
            if rest.len() < HELLO_LEN - 1 || rest[..4] != MAGIC {
                return Err(RecordError::Malformed("not a zerohop/1 hello"));
            }
            let group = match rest[HELLO_LEN - 1..] {
                [] => &[][..],
                [n, ref name @ ..] if usize::from(n) == name.len() && (1..=MAX_GROUP_NAME).contains(&name.len()) => {
                    name
                }
                _ => return Err(RecordError::Malformed("a hello's work group is malformed")),
            };
            let word = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().expect("8 bytes"));
            return Ok(Control::Hello { session: word(4), queue_limit: word(12), queue_messages: word(20), group });
        }
        2 => Control::Start { channel: channel(varint(rest)?)?, first_seq: varint(rest)? },
        3 => Control::Select { channel: channel(varint(rest)?)? },
        4 => Control::Ack { channel: channel(varint(rest)?)?, ack: varint(rest)? },
        5..=7 => {
            let key = varint(rest)?;
            let body = &rest[at..];
            return Ok(match kind {
                5 => Control::Request { key, body },
                6 => Control::Reply { key, body },
                _ => Control::Fail { key, reason: body },
            });
        }
        8 => Control::Cancel { key: varint(rest)? },
        9 => Control::Ping,
        10 => Control::Pong,
        11 => {
            let (&code, reason) = rest.split_first().ok_or(RecordError::Malformed("a close without its code"))?;
            return Ok(Control::Close { code, reason });
        }
        COMPRESSED_KIND => return Ok(Control::Compressed { body: rest }),
        _ => return Err(RecordError::Malformed("an unknown control record")),
    };
    if at != rest.len() {
        return Err(RecordError::Malformed("trailing bytes in a control record"));
    }
    Ok(c)
}

/// What [`RecordReader`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message of `channel`, and when it stops being worth reading (ns since the
    /// Unix epoch), if it has a time to live.
    Message { channel: u16, payload: &'a [u8], expiry_ns: Option<u64> },
    /// A control record; [`Control::Select`] is handled by the reader and not passed on.
    Control(Control<'a>),
}

/// Reads the records of one direction of one connection.
#[derive(Debug)]
pub struct RecordReader {
    decoder: StreamDecoder,
    max_channels: u16,
    hello: bool,
    /// How many bytes of [`PREAMBLE`] were checked.
    preamble: usize,
    /// The channel of the messages that come now.
    channel: Option<u16>,
    /// Which channels were started on this connection.
    started: Vec<bool>,
    /// The largest message, and a compressed one decompressed.
    max_message: usize,
    scratch: Vec<u8>,
}

impl RecordReader {
    /// A reader that refuses messages above `max_message` bytes and channels from
    /// `max_channels` on.
    pub fn new(max_message: usize, max_channels: u16) -> Self {
        Self {
            decoder: StreamDecoder::tagged(max_message, max_message.saturating_add(CONTROL_OVERHEAD)),
            max_channels,
            hello: false,
            preamble: 0,
            channel: None,
            started: Vec::new(),
            max_message,
            scratch: Vec::new(),
        }
    }

    /// Whether the hello came.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// Whether the bytes so far end on a record's boundary.
    pub fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
    }

    /// The length of the message the bytes so far began and did not finish, if any.
    pub fn awaiting(&self) -> Option<usize> {
        self.decoder.awaiting()
    }

    /// Feeds the next bytes; calls `each` with every record, in order. After an error
    /// the connection is unusable.
    pub fn push(&mut self, bytes: &[u8], mut each: impl FnMut(Record<'_>)) -> Result<(), RecordError> {
        let check = (PREAMBLE.len() - self.preamble).min(bytes.len());
        // (The first byte is the hello's length: with a work group's name, longer.)
        let ok = (self.preamble..self.preamble + check)
            .zip(bytes)
            .all(|(i, &b)| if i == 0 { hello_prefix_ok(b) } else { b == PREAMBLE[i] });
        if !ok {
            return Err(RecordError::Malformed("not a zerohop/1 connection"));
        }
        self.preamble += check;
        let mut failed = None;
        let Self { decoder, max_channels, hello, channel, started, max_message, scratch, .. } = self;
        decoder.push_pieces(bytes, |piece| {
            if failed.is_some() {
                return;
            }
            if let Piece::Control(body) = piece
                && let Some(carried) = carried_message(body, *max_message, scratch)
            {
                // A message, compressed or with an expiry: handed on as it was sent.
                let record = match (*channel, carried) {
                    (Some(channel), Ok((payload, expiry_ns))) if *hello => {
                        Ok(Record::Message { channel, payload, expiry_ns })
                    }
                    (_, Err(why)) => Err(RecordError::Malformed(why)),
                    _ => Err(RecordError::Malformed("a message before its channel started")),
                };
                match record {
                    Ok(r) => each(r),
                    Err(e) => failed = Some(e),
                }
                return;
            }
            let record = match piece {
                Piece::Message(payload) => match *channel {
                    Some(channel) if *hello => Ok(Some(Record::Message { channel, payload, expiry_ns: None })),
                    _ => Err(RecordError::Malformed("a message before its channel started")),
                },
                Piece::Control(body) => Control::decode(body).and_then(|c| match c {
                    Control::Hello { .. } if *hello => Err(RecordError::Malformed("a second hello")),
                    Control::Hello { .. } => {
                        *hello = true;
                        Ok(Some(Record::Control(c)))
                    }
                    _ if !*hello => Err(RecordError::Malformed("a record before the hello")),
                    Control::Start { channel: ch, .. } | Control::Select { channel: ch } if ch >= *max_channels => {
                        Err(RecordError::Malformed("a channel out of range"))
                    }
                    Control::Start { channel: ch, .. } => {
                        let i = usize::from(ch);
                        if started.len() <= i {
                            started.resize(i + 1, false);
                        }
                        if std::mem::replace(&mut started[i], true) {
                            return Err(RecordError::Malformed("a channel started twice"));
                        }
                        *channel = Some(ch);
                        Ok(Some(Record::Control(c)))
                    }
                    Control::Select { channel: ch } => {
                        if !started.get(usize::from(ch)).copied().unwrap_or(false) {
                            return Err(RecordError::Malformed("a switch to a channel never started"));
                        }
                        *channel = Some(ch);
                        Ok(None)
                    }
                    _ => Ok(Some(Record::Control(c))),
                }),
            };
            match record {
                Ok(Some(r)) => each(r),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One write a [`RecordWriter`] planned: the rest of a message the last write cut
/// (`first`), the control records waiting, then one channel's unsent messages (`then`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    first: Option<(u16, usize)>,
    control: usize,
    then: Option<(u16, usize)>,
}

impl Plan {
    /// Bytes planned.
    pub fn len(&self) -> usize {
        self.first.map_or(0, |f| f.1) + self.control + self.then.map_or(0, |t| t.1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Plans the writes of one direction of one connection (see the module docs).
///
/// The stream's state rides on the order of the bytes, so each write keeps it whole: a
/// message the kernel took part of is finished before anything else, and a channel is
/// started (or switched to) by a control record written just before its messages.
#[derive(Debug, Default)]
pub struct RecordWriter {
    /// Control records to write; the first `control_at` bytes are written.
    control: Vec<u8>,
    control_at: usize,
    /// The channel the peer will take messages for once it has read what is planned.
    wire_channel: Option<u16>,
    /// Which channels were started on this connection.
    started: Vec<bool>,
    /// A channel whose message the last write cut.
    cut: Option<u16>,
    /// Where the search for a channel with something to send starts (they take turns).
    turn: usize,
    /// Priority classes: each channel's (0 first; channels past the list are in class
    /// 0), and the scheduler that picks the class to write next (`None`: every channel
    /// takes its turn alike).
    classes: ChannelClasses,
}

/// The most one turn writes of a channel when channels have priority classes.
pub const TURN_BYTES: usize = 64 << 10;

impl RecordWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes channels by priority class (`classes[channel]`, 0 first): of the channels
    /// with something to send, the highest class goes, except that each lower class
    /// waiting earns a share of a turn each time it is passed over ([`ChannelClasses`]).
    /// Within a class, channels take turns.
    pub fn with_priorities(mut self, classes: Vec<u8>) -> Self {
        self.classes = ChannelClasses::new(classes);
        self
    }

    /// Queues a control record (after those queued before).
    pub fn control(&mut self, c: &Control<'_>) {
        c.encode(&mut self.control);
    }

    /// Control bytes not yet written.
    pub fn control_pending(&self) -> usize {
        self.control.len() - self.control_at
    }

    /// Whether channel `channel` was started on this connection.
    pub fn started(&self, channel: u16) -> bool {
        self.started.get(usize::from(channel)).copied().unwrap_or(false)
    }

    /// Plans the next write over `queues` (one per channel, by index); `None` if there is
    /// nothing to write. A channel not started on this connection is rewound first
    /// ([`SendQueue::rewind`]): everything it holds unacknowledged goes again.
    pub fn plan(&mut self, queues: &mut [Option<SendQueue>]) -> Option<Plan> {
        let n = queues.len();
        // The class to write next, when channels have classes (a channel whose message
        // the last write cut waits if it has more than the rest of that message).
        let chosen = if self.classes.is_flat() {
            None
        } else {
            let (started, cut) = (&self.started, self.cut);
            let work = |(i, q): (usize, &Option<SendQueue>)| {
                let started = started.get(i).copied().unwrap_or(false);
                let work = q.as_ref().is_some_and(|q| match started {
                    true if Some(i as u16) == cut => q.unsent().len() > q.cut_rest(),
                    true => !q.unsent().is_empty(),
                    false => !q.is_empty(),
                });
                work.then_some(i)
            };
            self.classes.next(queues.iter().enumerate().filter_map(work))
        };
        // A message the last write cut goes on first: with the rest of its channel, unless
        // another class goes next (then alone).
        let first = self.cut.map(|c| {
            let q = queues[usize::from(c)].as_ref().expect("a cut channel has a queue");
            let alone = chosen.is_some_and(|class| self.classes.class(usize::from(c)) != class);
            (c, if alone { q.cut_rest() } else { q.unsent().len() })
        });
        let mut then = None;
        for k in 0..n {
            let i = (self.turn + k) % n;
            let channel = i as u16;
            if Some(channel) == self.cut || chosen.is_some_and(|c| self.classes.class(i) != c) {
                continue;
            }
            let Some(q) = queues[i].as_mut() else { continue };
            if self.started(channel) {
                if q.unsent().is_empty() {
                    continue;
                }
                if self.wire_channel != Some(channel) {
                    self.control(&Control::Select { channel });
                }
            } else {
                if q.is_empty() {
                    continue;
                }
                let first_seq = q.rewind();
                if self.started.len() <= i {
                    self.started.resize(i + 1, false);
                }
                self.started[i] = true;
                self.control(&Control::Start { channel, first_seq });
            }
            self.wire_channel = Some(channel);
            self.turn = i + 1;
            // With classes a turn is at most TURN_BYTES, so that shares of turns are
            // shares of bytes (a turn may end inside a message: the cut goes on first).
            let len = if self.classes.is_flat() { q.unsent().len() } else { q.unsent().len().min(TURN_BYTES) };
            then = Some((channel, len));
            break;
        }
        let plan = Plan { first, control: self.control_pending(), then };
        (!plan.is_empty()).then_some(plan)
    }

    /// The bytes of `plan`, in order (some may be empty).
    pub fn slices<'a>(&'a self, plan: &Plan, queues: &'a [Option<SendQueue>]) -> [&'a [u8]; 3] {
        let of = |c: Option<(u16, usize)>| {
            c.and_then(|(ch, len)| queues[usize::from(ch)].as_ref().map(|q| &q.unsent()[..len])).unwrap_or(&[])
        };
        [of(plan.first), &self.control[self.control_at..self.control_at + plan.control], of(plan.then)]
    }

    /// The kernel took the first `n` bytes of `plan`.
    pub fn wrote(&mut self, plan: &Plan, mut n: usize, queues: &mut [Option<SendQueue>]) {
        let mut take = |part: usize| {
            let t = part.min(n);
            n -= t;
            t
        };
        if let Some((ch, len)) = plan.first {
            let t = take(len);
            let q = queues[usize::from(ch)].as_mut().expect("a planned channel");
            q.mark_sent(t);
            if !q.cut() {
                self.cut = None;
            }
        }
        let t = take(plan.control);
        self.control_at += t;
        if self.control_at == self.control.len() {
            self.control.clear();
            self.control_at = 0;
        }
        if let Some((ch, len)) = plan.then {
            let t = take(len);
            let q = queues[usize::from(ch)].as_mut().expect("a planned channel");
            q.mark_sent(t);
            if q.cut() {
                self.cut = Some(ch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(wire: &[u8]) -> Vec<String> {
        let mut r = RecordReader::new(1 << 20, 16);
        let mut got = Vec::new();
        r.push(wire, |rec| got.push(format!("{rec:?}"))).unwrap();
        got
    }

    #[test]
    fn a_hello_names_its_work_group_and_a_bad_name_is_refused() {
        // A connection that opens with a group's hello is one of records (KCP's listener
        // looks at its first bytes), and the reader hands the name on.
        for group in [&b"workers"[..], &[b'x'; MAX_GROUP_NAME][..]] {
            let mut wire = Vec::new();
            Control::Hello { session: 9, queue_limit: 1, queue_messages: 1, group }.encode(&mut wire);
            assert!(starts_records(&wire));
            let mut reader = RecordReader::new(1 << 20, 4);
            let mut got = Vec::new();
            // (Byte by byte: the prefix is checked as it arrives.)
            for b in &wire {
                reader.push(std::slice::from_ref(b), |r| got.push(format!("{r:?}"))).unwrap();
            }
            assert_eq!(
                got,
                [format!("Control(Hello {{ session: 9, queue_limit: 1, queue_messages: 1, group: {group:?} }})")]
            );
        }
        // A name's length that disagrees with the record's, an empty or too long one.
        let mut hello = Vec::new();
        Control::Hello { session: 9, queue_limit: 1, queue_messages: 1, group: b"abc" }.encode(&mut hello);
        let body = |wire: &[u8]| wire[1..].to_vec();
        let mut bad = body(&hello);
        bad[HELLO_LEN] = 2;
        assert!(Control::decode(&bad).is_err());
        let mut empty = body(&hello)[..HELLO_LEN + 1].to_vec();
        empty[HELLO_LEN] = 0;
        assert!(Control::decode(&empty).is_err());
        let mut long = body(&hello)[..HELLO_LEN].to_vec();
        long.push(MAX_GROUP_NAME as u8 + 1);
        long.extend([b'y'; MAX_GROUP_NAME + 1]);
        assert!(Control::decode(&long).is_err());
        // The prefix of a hello with a group too long is not one of records.
        assert!(!starts_records(&[((HELLO_LEN + 2 + MAX_GROUP_NAME) as u8) << 1 | 1, 1, b'Z', b'H', b'1', 1]));
        assert!(!starts_records(&[((HELLO_LEN + 1) as u8) << 1 | 1, 1, b'Z', b'H', b'1', 1]));
    }

    #[test]
    fn every_control_record_reads_back() {
        let all = [
            Control::Hello { session: u64::MAX, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
            Control::Hello { session: 5, queue_limit: 1, queue_messages: 2, group: b"w" },
            Control::Hello { session: 5, queue_limit: 1, queue_messages: 2, group: &[b'g'; MAX_GROUP_NAME] },
            Control::Start { channel: 3, first_seq: 1 << 40 },
            Control::Select { channel: 3 },
            Control::Ack { channel: 3, ack: 99 },
            Control::Request { key: 1, body: b"q" },
            Control::Reply { key: 1, body: &[] },
            Control::Fail { key: 2, reason: b"no" },
            Control::Cancel { key: 3 },
            Control::Ping,
            Control::Pong,
            Control::Close { code: 4, reason: b"bye" },
        ];
        for c in all {
            let mut wire = Vec::new();
            c.encode(&mut wire);
            let mut d = StreamDecoder::tagged(0, 64);
            let mut bodies = Vec::new();
            d.push_pieces(&wire, |p| bodies.push(format!("{p:?}"))).unwrap();
            assert_eq!(bodies.len(), 1);
            let mut body = None;
            StreamDecoder::tagged(0, 64)
                .push_pieces(&wire, |p| {
                    if let Piece::Control(b) = p {
                        body = Some(b.to_vec())
                    }
                })
                .unwrap();
            assert_eq!(Control::decode(&body.unwrap()).unwrap(), c);
        }
    }

    #[test]
    fn a_connection_is_known_by_its_first_bytes() {
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 2, queue_messages: 3, group: b"" });
        let plan = w.plan(&mut []).unwrap();
        let first: Vec<u8> = w.slices(&plan, &[]).concat();
        assert!(starts_records(&first));
        assert!(!starts_records(&first[..5]), "too short to tell");
        let mut other = first.clone();
        other[3] ^= 1;
        assert!(!starts_records(&other), "another magic");
        let mut ping = Vec::new();
        Control::Ping.encode(&mut ping);
        assert!(!starts_records(&ping), "not a hello");
    }

    #[test]
    fn a_reader_refuses_what_breaks_the_protocol() {
        let cases: [(&[Control<'_>], &str); 5] = [
            (&[Control::Ping], "not a zerohop/1 connection"),
            (
                &[
                    Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
                    Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
                ],
                "a second hello",
            ),
            (
                &[
                    Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
                    Control::Select { channel: 0 },
                ],
                "a switch to a channel never started",
            ),
            (
                &[
                    Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
                    Control::Start { channel: 16, first_seq: 0 },
                ],
                "a channel out of range",
            ),
            (
                &[
                    Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" },
                    Control::Start { channel: 0, first_seq: 0 },
                    Control::Start { channel: 0, first_seq: 0 },
                ],
                "a channel started twice",
            ),
        ];
        for (records, why) in cases {
            let mut wire = Vec::new();
            for c in records {
                c.encode(&mut wire);
            }
            let mut r = RecordReader::new(100, 16);
            assert_eq!(r.push(&wire, |_| {}), Err(RecordError::Malformed(why)));
        }
        // A message before any channel.
        let mut wire = Vec::new();
        Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" }.encode(&mut wire);
        let mut q = SendQueue::tagged(1000);
        q.push(b"m");
        wire.extend_from_slice(q.unsent());
        assert_eq!(
            RecordReader::new(100, 16).push(&wire, |_| {}),
            Err(RecordError::Malformed("a message before its channel started"))
        );
        // Garbage where a hello should be.
        assert!(RecordReader::new(100, 16).push(b"GET / HTTP/1.1\r\n", |_| {}).is_err());
    }

    /// Everything `w` plans over `queues`, written whole.
    fn write_all(w: &mut RecordWriter, queues: &mut [Option<SendQueue>]) -> Vec<u8> {
        let mut wire = Vec::new();
        while let Some(plan) = w.plan(queues) {
            let slices = w.slices(&plan, queues);
            let n = slices.iter().map(|s| s.len()).sum();
            slices.iter().for_each(|s| wire.extend_from_slice(s));
            w.wrote(&plan, n, queues);
        }
        wire
    }

    #[test]
    fn compressed_messages_arrive_as_the_messages_they_were_in_order_and_bad_ones_are_refused() {
        let json = br#"{"sym":"BTC","px":50000,"sym2":"BTC","px2":50000}"#.repeat(10);
        let mut queues = vec![Some(SendQueue::tagged(1 << 20))];
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        let q = queues[0].as_mut().unwrap();
        let mut body = Vec::new();
        assert!(crate::compress::compress(&json, &mut body));
        assert_eq!((q.push(b"plain"), q.push_compressed(&body), q.push(b"after")), (0, 1, 2));
        let wire = write_all(&mut w, &mut queues);
        assert!(wire.len() < json.len(), "it went compressed");
        let mut got = Vec::new();
        RecordReader::new(1 << 20, 16)
            .push(&wire, |r| {
                if let Record::Message { payload, .. } = r {
                    got.push(payload.to_vec());
                }
            })
            .unwrap();
        assert_eq!(got, [b"plain".to_vec(), json.clone(), b"after".to_vec()]);
        // Larger than the reader's limit once decompressed, or not LZ4: refused.
        assert!(RecordReader::new(100, 16).push(&wire, |_| {}).is_err());
        let mut bad = Vec::new();
        Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" }.encode(&mut bad);
        Control::Start { channel: 0, first_seq: 0 }.encode(&mut bad);
        Control::Compressed { body: &[5, 0xff, 0xff] }.encode(&mut bad);
        assert_eq!(
            RecordReader::new(100, 16).push(&bad, |_| {}),
            Err(RecordError::Malformed("a compressed message that does not decompress"))
        );
    }

    #[test]
    fn expiring_messages_arrive_with_their_expiry_compressed_or_not_and_bad_ones_are_refused() {
        let json = br#"{"sym":"BTC","px":50000,"sym2":"BTC","px2":50000}"#.repeat(10);
        let mut body = Vec::new();
        assert!(crate::compress::compress(&json, &mut body));
        let mut queues = vec![Some(SendQueue::tagged(1 << 20))];
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        let q = queues[0].as_mut().unwrap();
        let seqs = (q.push(b"plain"), q.push_expiring(7, false, b"soon"), q.push_expiring(u64::MAX, true, &body));
        assert_eq!(seqs, (0, 1, 2));
        let wire = write_all(&mut w, &mut queues);
        let mut got = Vec::new();
        RecordReader::new(1 << 20, 16)
            .push(&wire, |r| {
                if let Record::Message { payload, expiry_ns, .. } = r {
                    got.push((payload.to_vec(), expiry_ns));
                }
            })
            .unwrap();
        assert_eq!(got, [(b"plain".to_vec(), None), (b"soon".to_vec(), Some(7)), (json.clone(), Some(u64::MAX))]);
        // The same on a stream of messages only (a QUIC channel's).
        let mut q = SendQueue::tagged(1 << 20);
        q.push_expiring(9, true, &body);
        q.push(b"x");
        let (mut d, mut scratch, mut got) =
            (StreamDecoder::tagged(1 << 20, (1 << 20) + CONTROL_OVERHEAD), Vec::new(), Vec::new());
        d.push_messages(q.unsent(), &mut scratch, |m, e| got.push((m.to_vec(), e))).unwrap();
        assert_eq!(got, [(json.clone(), Some(9)), (b"x".to_vec(), None)]);
        // Unknown flags, or cut short: refused.
        let mut scratch = Vec::new();
        let mut flags = vec![EXPIRING_KIND];
        flags.extend_from_slice(&[0; 8]);
        flags.extend_from_slice(&[2, 1, 2, 3]);
        assert_eq!(carried_message(&flags, 100, &mut scratch), Some(Err("an expiring message with unknown flags")));
        assert_eq!(carried_message(&flags[..5], 100, &mut scratch), Some(Err("a truncated expiring message")));
        assert_eq!(carried_message(&[3, 1, 2], 100, &mut scratch), None, "another control record");
    }

    #[test]
    fn a_higher_class_goes_first_and_a_lower_one_keeps_its_share() {
        // Channel 0 is class 1 (lower), channel 1 class 0; both have plenty to send over
        // a connection whose kernel takes a message's worth per write.
        let mut queues = vec![Some(SendQueue::tagged(1 << 20)), Some(SendQueue::tagged(1 << 20))];
        let mut w = RecordWriter::new().with_priorities(vec![1, 0]);
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        for q in queues.iter_mut().flatten() {
            for _ in 0..200 {
                q.push(&[7u8; 100]);
            }
        }
        let mut picks = Vec::new();
        for _ in 0..100 {
            let plan = w.plan(&mut queues).unwrap();
            if let Some((channel, _)) = plan.then {
                picks.push(channel);
            }
            // The kernel takes the controls and one whole message (a 2-byte prefix and 100).
            let one = if plan.then.is_some() { 102 } else { 0 };
            w.wrote(&plan, plan.first.map_or(0, |f| f.1) + plan.control + one, &mut queues);
        }
        let low = picks.iter().filter(|&&c| c == 0).count();
        assert_eq!(picks[0], 1, "the higher class first");
        // Passed over, the lower class earns a quarter of a turn each time: one in five.
        assert!((15..=25).contains(&low), "{low} of {} turns for the lower class", picks.len());
        // Without classes, the channels take turns.
        let mut plain = RecordWriter::new().with_priorities(vec![0, 0]);
        assert!(plain.classes.is_flat());
        plain.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
    }

    #[test]
    fn a_higher_class_goes_next_after_the_message_a_write_cut() {
        // The lower class (channel 0) fills the connection first; a write cuts one of its
        // messages; then the higher class (channel 1) has messages too.
        let mut queues = vec![Some(SendQueue::tagged(1 << 20)), Some(SendQueue::tagged(1 << 20))];
        let mut w = RecordWriter::new().with_priorities(vec![1, 0]);
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        for _ in 0..200 {
            queues[0].as_mut().unwrap().push(&[7u8; 100]);
        }
        let plan = w.plan(&mut queues).unwrap();
        w.wrote(&plan, plan.control + 102 * 5 + 40, &mut queues); // five messages and a bit
        for _ in 0..50 {
            queues[1].as_mut().unwrap().push(&[9u8; 100]);
        }
        let plan = w.plan(&mut queues).unwrap();
        assert_eq!(plan.first, Some((0, 62)), "the rest of the cut message, alone");
        assert_eq!(plan.then.map(|t| t.0), Some(1), "then the higher class");
        // Only the lower class left: its rest goes with the rest of its channel.
        let all = plan.len();
        w.wrote(&plan, all, &mut queues);
        let plan = w.plan(&mut queues).unwrap();
        assert_eq!(plan.then.map(|t| t.0), Some(0));
        w.wrote(&plan, plan.len() - 10, &mut queues);
        let plan = w.plan(&mut queues).unwrap();
        assert_eq!(plan.first, Some((0, 10)), "nothing else waits: its cut message");
        assert_eq!(plan.then, None);
    }

    #[test]
    fn a_cut_message_is_finished_before_anything_else() {
        let mut queues = vec![Some(SendQueue::tagged(1 << 20)), Some(SendQueue::tagged(1 << 20))];
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        queues[0].as_mut().unwrap().push(&[0xaa; 100]);
        let plan = w.plan(&mut queues).unwrap();
        let mut wire: Vec<u8> = w.slices(&plan, &queues).concat();
        // The kernel takes the hello, the start and half the message.
        let cut = plan.len() - 50;
        wire.truncate(cut);
        w.wrote(&plan, cut, &mut queues);
        // Meanwhile: an acknowledgement to send and a message on the other channel.
        w.control(&Control::Ack { channel: 0, ack: 5 });
        queues[1].as_mut().unwrap().push(b"other");
        while let Some(plan) = w.plan(&mut queues) {
            let n = plan.len();
            wire.extend(w.slices(&plan, &queues).concat());
            w.wrote(&plan, n, &mut queues);
        }
        assert_eq!(
            read_all(&wire),
            [
                "Control(Hello { session: 1, queue_limit: 1048576, queue_messages: 4096, group: [] })",
                "Control(Start { channel: 0, first_seq: 0 })",
                &format!("Message {{ channel: 0, payload: {:?}, expiry_ns: None }}", [0xaa_u8; 100]),
                "Control(Ack { channel: 0, ack: 5 })",
                "Control(Start { channel: 1, first_seq: 0 })",
                "Message { channel: 1, payload: [111, 116, 104, 101, 114], expiry_ns: None }",
            ]
        );
    }

    #[test]
    fn a_new_connection_replays_what_is_unacknowledged() {
        let mut queues = vec![Some(SendQueue::tagged(1 << 20))];
        let q = queues[0].as_mut().unwrap();
        q.push(b"a");
        q.push(b"b");
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        while let Some(plan) = w.plan(&mut queues) {
            w.wrote(&plan, plan.len(), &mut queues);
        }
        queues[0].as_mut().unwrap().ack(1).unwrap();
        // The connection breaks; the next starts from "b".
        let mut w = RecordWriter::new();
        w.control(&Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
        let mut wire = Vec::new();
        while let Some(plan) = w.plan(&mut queues) {
            wire.extend(w.slices(&plan, &queues).concat());
            w.wrote(&plan, plan.len(), &mut queues);
        }
        assert_eq!(
            read_all(&wire),
            [
                "Control(Hello { session: 1, queue_limit: 1048576, queue_messages: 4096, group: [] })",
                "Control(Start { channel: 0, first_seq: 1 })",
                "Message { channel: 0, payload: [98], expiry_ns: None }"
            ]
        );
    }

    proptest! {
        /// Whatever the kernel takes at each write and however the reader's chunks fall,
        /// every message arrives once, in order, on its channel, with the control records
        /// in between.
        #[test]
        fn any_partial_writes_and_reads_keep_the_stream_whole(
            ops in proptest::collection::vec((0u8..4, 0usize..300), 1..60),
            takes in proptest::collection::vec(0usize..200, 1..40),
            chunks in proptest::collection::vec(1usize..100, 1..40),
        ) {
            let mut queues: Vec<Option<SendQueue>> = (0..3).map(|_| Some(SendQueue::tagged(1 << 20))).collect();
            let mut w = RecordWriter::new();
            w.control(&Control::Hello { session: 9, queue_limit: 1 << 20, queue_messages: 4096, group: b"" });
            let mut expect: Vec<String> = vec!["Control(Hello { session: 9 })".into()];
            let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
            let mut pings = 0;
            let mut wire = Vec::new();
            let mut t = 0;
            for (i, (op, len)) in ops.iter().enumerate() {
                match op {
                    0..=2 => {
                        let m = vec![i as u8; *len];
                        queues[usize::from(*op)].as_mut().unwrap().push(&m);
                        sent[usize::from(*op)].push(m);
                    }
                    _ => {
                        w.control(&Control::Ping);
                        pings += 1;
                    }
                }
                // One write, of whatever the kernel takes.
                if let Some(plan) = w.plan(&mut queues) {
                    let n = takes[t % takes.len()].min(plan.len());
                    t += 1;
                    let bytes = w.slices(&plan, &queues).concat();
                    wire.extend_from_slice(&bytes[..n]);
                    w.wrote(&plan, n, &mut queues);
                }
            }
            while let Some(plan) = w.plan(&mut queues) {
                let n = plan.len();
                wire.extend(w.slices(&plan, &queues).concat());
                w.wrote(&plan, n, &mut queues);
            }
            let mut r = RecordReader::new(1 << 20, 3);
            let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
            let mut got_pings = 0;
            let mut at = 0;
            let mut k = 0;
            while at < wire.len() {
                let n = chunks[k % chunks.len()].min(wire.len() - at);
                k += 1;
                r.push(&wire[at..at + n], |rec| match rec {
                    Record::Message { channel, payload, .. } => got[usize::from(channel)].push(payload.to_vec()),
                    Record::Control(Control::Ping) => got_pings += 1,
                    Record::Control(c) => expect.retain(|e| *e != format!("{:?}", Record::Control(c))),
                }).unwrap();
                at += n;
            }
            prop_assert_eq!(got, sent);
            prop_assert_eq!(got_pings, pings);
            prop_assert!(r.at_boundary());
        }

        /// Anything after a proper hello (and anything at all): no panic, no record
        /// before the hello, channels in range, nothing above its limit.
        #[test]
        fn garbage_never_panics_nor_breaks_the_limits(bytes in proptest::collection::vec(any::<u8>(), 0..500), greet in any::<bool>()) {
            let mut wire = Vec::new();
            if greet {
                Control::Hello { session: 1, queue_limit: 1 << 20, queue_messages: 4096, group: b"" }.encode(&mut wire);
            }
            wire.extend_from_slice(&bytes);
            let mut r = RecordReader::new(100, 4);
            let mut first = true;
            let _ = r.push(&wire, |rec| {
                if first {
                    assert!(matches!(rec, Record::Control(Control::Hello { .. })));
                    first = false;
                }
                match rec {
                    Record::Message { channel, payload, .. } => assert!(channel < 4 && payload.len() <= 100),
                    Record::Control(Control::Start { channel, .. }) => assert!(channel < 4),
                    Record::Control(Control::Request { body, .. }) => assert!(body.len() <= 100 + CONTROL_OVERHEAD),
                    _ => {}
                }
            });
        }
    }
}
