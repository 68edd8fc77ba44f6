//! Channels: what we send on a peer's channel (a [`SendQueue`] written to a stream, and
//! the acknowledgements that come back on it), what we receive on one (framed messages
//! into the receive ring, through the duplicate filter, acknowledged once read), and the
//! reading of every stream kind.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{ConnectionHandle, Dir, ReadError, StreamId, WriteError};
use zerohop_proto::records::{CONTROL_OVERHEAD, MAX_GROUP_NAME};
use zerohop_proto::session::{SendQueue, StreamHeader, StreamKind, get_varint};
use zerohop_proto::stream::{MAX_VARINT_LEN, StreamDecoder, StreamError, write_varint};

use zerohop_net::ring::{Deliveries, Inbound, SinkDeliveries};

use super::*;
use super::{Conn, Engine, Stream};

/// One reliable channel to one peer: the queue outlives connections; the stream is the
/// current connection's.
pub(crate) struct OutChannel {
    pub index: u16,
    pub queue: SendQueue,
    pub stream: Option<StreamId>,
    /// Header bytes not yet written to the stream.
    head: Vec<u8>,
    /// quinn's priority for the stream (`priorities`; 0 for all without), and the
    /// channel's class (which the stream's header tells the receiver).
    priority: i32,
    pub class: u8,
}

impl OutChannel {
    /// Channel `index` in `channels`, made if new (in priority class `class`), its queue
    /// bounded by `send_queue` bytes and `messages` messages and numbered from
    /// `first_seq` (see `SendQueue::starting_at`).
    pub fn of(
        channels: &mut Vec<Option<OutChannel>>,
        index: u16,
        class: usize,
        (send_queue, messages): (usize, usize),
        first_seq: u64,
    ) -> &mut OutChannel {
        let i = usize::from(index);
        if channels.len() <= i {
            channels.resize_with(i + 1, || None);
        }
        channels[i].get_or_insert_with(|| OutChannel {
            index,
            queue: SendQueue::tagged(send_queue).with_message_limit(messages).starting_at(first_seq),
            stream: None,
            head: Vec::new(),
            priority: 0,
            class: class as u8,
        })
    }

    /// Sets the stream's priority in quinn (now, if it has one; else when it opens).
    pub fn set_priority(&mut self, q: &mut quinn_proto::Connection, priority: i32) {
        if priority != self.priority
            && let Some(id) = self.stream
        {
            let _ = q.send_stream(id).set_priority(priority); // (a stream just closed: no matter)
        }
        self.priority = priority;
    }

    /// Writes what is unsent to the stream (opened first, from the oldest unacknowledged
    /// message, if this connection has none yet); true if anything was written.
    pub fn write(
        &mut self,
        q: &mut quinn_proto::Connection,
        streams: &mut zerohop_net::fastmap::IntMap<StreamId, Stream>,
        session: u64,
        counters: &mut QuicMetrics,
    ) -> bool {
        let id = match self.stream {
            Some(id) => id,
            None => {
                if self.queue.queued_bytes() == 0 {
                    return false; // nothing to send: open the stream when there is
                }
                let Some(id) = q.streams().open(Dir::Bi) else { return false }; // at the limit
                counters.streams_opened += 1;
                let first_seq = self.queue.rewind();
                self.head.clear();
                StreamHeader { kind: StreamKind::Channel, session, channel: self.index, first_seq, class: self.class }
                    .encode(&mut self.head);
                streams.insert(id, Stream::ChannelOut { channel: self.index, acks: Vec::new() });
                self.stream = Some(id);
                if self.priority != 0 {
                    let _ = q.send_stream(id).set_priority(self.priority); // (just opened)
                }
                id
            }
        };
        let mut s = q.send_stream(id);
        let mut wrote = false;
        while !self.head.is_empty() {
            match s.write(&self.head) {
                Ok(n) => {
                    self.head.drain(..n);
                    wrote = true;
                }
                Err(WriteError::Blocked) => return wrote,
                Err(_) => {
                    self.stream = None;
                    return wrote;
                }
            }
        }
        loop {
            let unsent = self.queue.unsent();
            if unsent.is_empty() {
                return wrote;
            }
            match s.write(unsent) {
                Ok(n) => {
                    self.queue.mark_sent(n);
                    wrote = true;
                }
                Err(WriteError::Blocked) => return wrote,
                Err(_) => {
                    self.stream = None;
                    return wrote;
                }
            }
        }
    }
}

/// One of the peer's channels to us, on one stream.
pub(crate) struct InChannel {
    peer: u32,
    from: SocketAddr,
    header: StreamHeader,
    decoder: StreamDecoder,
    /// Messages the receive ring had no room for, end to end, and their sequence
    /// numbers and lengths.
    backlog: Vec<u8>,
    lens: VecDeque<(u64, usize, Option<u64>)>,
    backlog_at: usize,
    ended: bool,
    /// The highest acknowledgement written (what the application had read).
    pub acked: u64,
    /// An acknowledgement not written yet, and by when it must be. Acknowledgements wait
    /// a little so that one covers many messages: otherwise every message would cost a
    /// packet back (and a wake-up of the sender).
    pending_ack: Option<u64>,
    ack_by: Option<Instant>,
    /// Bytes delivered since the last acknowledgement written: many go out at once.
    unacked_bytes: usize,
}

impl InChannel {
    /// The channel's priority class at its sender.
    pub fn class(&self) -> usize {
        usize::from(self.header.class)
    }
}

/// How long an acknowledgement may wait for the next (the sender keeps what is
/// unacknowledged meanwhile: a short wait, next to its send queue).
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
/// Bytes of messages after which an acknowledgement goes at once.
const ACK_BYTES: usize = 256 << 10;

impl InChannel {
    /// Whether messages wait for room in the receive ring.
    pub fn waiting(&self) -> bool {
        !self.lens.is_empty()
    }
}

/// Why a stream's bytes were refused.
enum Refusal {
    /// Not ours to carry on (a closed stream): drop it quietly.
    Gone,
    Violation(CloseCode, &'static str),
}

impl Engine {
    /// Reads what stream `id` of `c` has, by its kind.
    pub fn read_stream(&mut self, ch: ConnectionHandle, c: &mut Conn, id: StreamId, now: Instant) {
        let result = match c.streams.get(&id) {
            None => return,
            Some(Stream::Opening { .. }) => self.read_opening(ch, c, id, now),
            Some(Stream::ChannelOut { .. }) => self.read_acks(c, id),
            Some(Stream::ChannelIn(_)) => self.read_channel(ch, c, id, now, None),
            Some(Stream::RequestOut { .. }) => self.read_reply(c, id).map_err(|()| Refusal::Gone),
            Some(Stream::RequestIn { .. }) => self.read_request(ch, c, id, false).map_err(request_refused),
        };
        match result {
            Ok(()) => {}
            Err(Refusal::Gone) => {
                c.streams.remove(&id);
            }
            Err(Refusal::Violation(code, why)) => self.violation(ch, c, now, code, why),
        }
    }

    /// A stream's header: what the stream is.
    fn read_opening(&mut self, ch: ConnectionHandle, c: &mut Conn, id: StreamId, now: Instant) -> Result<(), Refusal> {
        let Some(Stream::Opening { head, bi }) = c.streams.get_mut(&id) else { return Ok(()) };
        let bi = *bi;
        let mut finished = false;
        // (A hello may carry a work group's name after its header.)
        read_into(&mut c.q, id, head, StreamHeader::MAX_LEN + 1 + MAX_GROUP_NAME, &mut finished)
            .map_err(|_| Refusal::Gone)?;
        let (header, at) = match StreamHeader::decode(head) {
            Ok(Some(h)) => h,
            Ok(None) if head.len() < StreamHeader::MAX_LEN && !finished => return Ok(()),
            // Ended before it said what it is (a peer gave up, or closed unused streams).
            Ok(None) if head.len() < StreamHeader::MAX_LEN => return Err(Refusal::Gone),
            _ => return Err(Refusal::Violation(CloseCode::Protocol, "not a zerohop stream")),
        };
        if header.kind == StreamKind::Hello && !finished {
            return Ok(()); // (its work group, if it has one, is read whole once it ends)
        }
        let rest = head.split_off(at);
        match (header.kind, bi) {
            (StreamKind::Hello, false) if self.connector.is_none() => {
                let group = match rest[..] {
                    [] => &[][..],
                    [n, ref name @ ..]
                        if usize::from(n) == name.len() && (1..=MAX_GROUP_NAME).contains(&name.len()) =>
                    {
                        name
                    }
                    _ => return Err(Refusal::Violation(CloseCode::Protocol, "a hello's work group is malformed")),
                };
                let group = self
                    .groups
                    .named(group)
                    .map_err(|_| Refusal::Violation(CloseCode::Protocol, "too many work groups"))?;
                c.streams.remove(&id);
                self.hello(ch, c, header.session, group, now);
                Ok(())
            }
            (StreamKind::Channel, true) if header.channel < self.config.max_channels => {
                // Channels are accepted after the hello; a peer forgotten since (a slow
                // consumer) has nothing more to say.
                let peer = c.peer.ok_or(Refusal::Gone)?;
                self.peer(peer)
                    .ok_or(Refusal::Gone)?
                    .window(header.session, header.channel)
                    .start_stream(header.first_seq);
                let inbound = InChannel {
                    peer,
                    from: c.q.remote_address(),
                    header,
                    decoder: StreamDecoder::tagged(self.config.max_message, self.config.max_message + CONTROL_OVERHEAD),
                    backlog: Vec::new(),
                    lens: VecDeque::new(),
                    backlog_at: 0,
                    ended: false,
                    acked: 0,
                    pending_ack: None,
                    ack_by: None,
                    unacked_bytes: 0,
                };
                c.streams.insert(id, Stream::ChannelIn(Box::new(inbound)));
                self.read_channel(ch, c, id, now, Some(&rest))
            }
            (StreamKind::Channel, true) => Err(Refusal::Violation(CloseCode::Protocol, "channel out of range")),
            (StreamKind::Request, true) if self.connector.is_none() => {
                c.streams.insert(id, Stream::RequestIn { key: None, body: rest, answer: Vec::new(), at: 0 });
                self.read_request(ch, c, id, finished).map_err(request_refused)
            }
            _ => Err(Refusal::Violation(CloseCode::Protocol, "unexpected stream kind")),
        }
    }

    /// The acknowledgements the peer writes back on one of our channels.
    fn read_acks(&mut self, c: &mut Conn, id: StreamId) -> Result<(), Refusal> {
        let Some(Stream::ChannelOut { channel, acks }) = c.streams.get_mut(&id) else { return Ok(()) };
        let channel = *channel;
        let mut finished = false;
        read_into(&mut c.q, id, acks, usize::MAX, &mut finished).map_err(|_| Refusal::Gone)?;
        let Some(out) =
            c.peer.and_then(|peer| self.peers.iter_mut().find(|p| p.id == peer)).and_then(|p| p.out(channel))
        else {
            return Ok(());
        };
        let mut at = 0;
        loop {
            match get_varint(&acks[at..]) {
                Ok(Some((ack, n))) => {
                    at += n;
                    if out.stream == Some(id) && out.queue.ack(ack).is_err() {
                        return Err(Refusal::Violation(CloseCode::Protocol, "acknowledged a message never sent"));
                    }
                }
                Ok(None) => break,
                Err(_) => return Err(Refusal::Violation(CloseCode::Protocol, "malformed acknowledgement")),
            }
        }
        acks.drain(..at);
        if at > 0 {
            self.room_freed = true;
        }
        Ok(())
    }

    /// Delivers one channel stream's messages (`first` are bytes read with its header),
    /// and acknowledges what the application has read.
    fn read_channel(
        &mut self,
        ch: ConnectionHandle,
        c: &mut Conn,
        id: StreamId,
        now: Instant,
        first: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let Some(Stream::ChannelIn(inbound)) = c.streams.get_mut(&id) else { return Ok(()) };
        let Engine { sink, peers, decompressed, .. } = self;
        let p = peers.iter_mut().find(|p| p.id == inbound.peer).ok_or(Refusal::Gone)?;
        let window = p.window(inbound.header.session, inbound.header.channel);
        let InChannel {
            peer,
            from,
            header,
            decoder,
            backlog,
            lens,
            backlog_at,
            ended,
            acked,
            pending_ack,
            ack_by,
            unacked_bytes,
        } = &mut **inbound;
        // Messages go into the ring a few at a time: one lock and one wake-up for each
        // few (a fifth of a 64-byte stream's receiving went to one of each a message),
        // yet the reader never waits for a whole read to end.
        let mut batch = Batch::new(&**sink);
        // Offer what waits; then take new bytes only if nothing waits.
        while let Some(&(seq, len, expiry_ns)) = lens.front() {
            // (Unless another stream of the peer's delivered it meanwhile.)
            if !window.is_stale(seq) {
                let body = &backlog[*backlog_at..*backlog_at + len];
                let m = Inbound { expiry_ns, ..Inbound::message(*peer, *from, header.channel, body) };
                let Some(pos) = batch.deliver(&m) else { break };
                // Acknowledged by the number it came with, not the window's last.
                window.delivered(pos, seq);
                *unacked_bytes += len;
            }
            lens.pop_front();
            *backlog_at += len;
        }
        if lens.is_empty() {
            backlog.clear();
            *backlog_at = 0;
        }
        let lens_empty = lens.is_empty();
        // Decodes `bytes`; whether messages now wait for room.
        let mut decode = |bytes: &[u8]| -> Result<bool, StreamError> {
            decoder.push_messages(bytes, decompressed, |body, expiry_ns| {
                let Some(seq) = window.accept() else { return };
                if lens.is_empty() {
                    let m = Inbound { expiry_ns, ..Inbound::message(*peer, *from, header.channel, body) };
                    if let Some(pos) = batch.deliver(&m) {
                        window.delivered(pos, seq);
                        *unacked_bytes += body.len();
                        return;
                    }
                }
                backlog.extend_from_slice(body);
                lens.push_back((seq, body.len(), expiry_ns));
            })?;
            Ok(!lens.is_empty())
        };
        let mut result = first.map_or(Ok(!lens_empty), &mut decode);
        if result == Ok(false) && !*ended {
            match c.q.recv_stream(id).read(true) {
                Ok(mut chunks) => loop {
                    match chunks.next(usize::MAX) {
                        Ok(Some(chunk)) => {
                            result = decode(&chunk.bytes);
                            if result != Ok(false) {
                                break; // no room: let QUIC's flow control hold the sender back
                            }
                        }
                        Ok(None) => {
                            *ended = true;
                            break;
                        }
                        Err(ReadError::Blocked) => break,
                        Err(ReadError::Reset(_)) => {
                            *ended = true;
                            break;
                        }
                    }
                },
                Err(_) => *ended = true,
            }
        }
        drop(batch);
        match result {
            Ok(_) => {}
            Err(StreamError::TooLarge { .. }) => {
                return Err(Refusal::Violation(CloseCode::TooLarge, "message above the limit"));
            }
            Err(StreamError::BadPrefix) => {
                return Err(Refusal::Violation(CloseCode::Protocol, "malformed length prefix"));
            }
            Err(StreamError::Malformed(why)) => return Err(Refusal::Violation(CloseCode::Protocol, why)),
        }
        if let Some(ack) = window.consumed(sink.consumed()) {
            *pending_ack = Some(ack);
            ack_by.get_or_insert(now + ACK_DELAY);
        }
        if let Some(ack) = *pending_ack
            && (*ended || *unacked_bytes >= ACK_BYTES || ack_by.is_some_and(|t| t <= now))
        {
            let mut bytes = [0u8; MAX_VARINT_LEN];
            let n = write_varint(ack, &mut bytes);
            // Acknowledgements are tiny next to the window a stream starts with, and a
            // newer one covers an older one that could not be written.
            let _ = c.q.send_stream(id).write(&bytes[..n]);
            *acked = ack;
            (*pending_ack, *ack_by, *unacked_bytes) = (None, None, 0);
        }
        let waiting = !lens.is_empty();
        let unread = window.has_unread() || pending_ack.is_some();
        if *ended && !waiting && !unread {
            let _ = c.q.send_stream(id).finish();
            c.streams.remove(&id);
            return Ok(());
        }
        if waiting || unread {
            self.needs_attention(ch, id, waiting, now);
        }
        Ok(())
    }
}

fn request_refused(code: CloseCode) -> Refusal {
    let why = if code == CloseCode::TooLarge { "request above the limit" } else { "malformed request" };
    Refusal::Violation(code, why)
}

/// Appends what stream `id` has to `into`, up to `max` bytes in all; sets `finished`
/// at its end. An error if the stream is gone or was reset.
pub(crate) fn read_into(
    q: &mut quinn_proto::Connection,
    id: StreamId,
    into: &mut Vec<u8>,
    max: usize,
    finished: &mut bool,
) -> Result<(), ()> {
    let mut s = q.recv_stream(id);
    let mut chunks = s.read(true).map_err(|_| ())?;
    loop {
        let room = max.saturating_sub(into.len());
        if room == 0 {
            break;
        }
        match chunks.next(room) {
            Ok(Some(chunk)) => into.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                *finished = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(_)) => {
                let _ = chunks.finalize();
                return Err(());
            }
        }
    }
    let _ = chunks.finalize();
    Ok(())
}

/// Deliveries into a sink a few at a time (see `read_channel`).
struct Batch<'a> {
    sink: &'a dyn Sink,
    open: Option<SinkDeliveries<'a>>,
    taken: usize,
}

impl<'a> Batch<'a> {
    /// Messages a set of deliveries takes before it is closed (the reader sees them).
    const SIZE: usize = 32;

    fn new(sink: &'a dyn Sink) -> Self {
        Batch { sink, open: None, taken: 0 }
    }

    fn deliver(&mut self, m: &Inbound<'_>) -> Option<u64> {
        if self.taken == Self::SIZE {
            self.open = None;
            self.taken = 0;
        }
        self.taken += 1;
        self.open.get_or_insert_with(|| self.sink.deliveries()).deliver(m)
    }
}
