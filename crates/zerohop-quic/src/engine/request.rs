//! Requests: one stream each. The client writes the request and reads the reply (or
//! resets the stream on cancel); the server hands the request to the application and
//! writes its answer, or reports that the client gave up.

use quinn_proto::{ConnectionHandle, Dir, StreamId, VarInt};
use zerohop_proto::session::{StreamHeader, StreamKind, get_varint};

use super::channel::read_into;
use super::*;
use super::{Conn, Engine, Stream};

/// The error code of a cancelled request's stream.
const CANCELLED: VarInt = VarInt::from_u32(1);

/// Writes what is left of `wire` (from `at`) to stream `id`, and finishes the stream
/// once all of it is written.
pub(crate) fn write_rest(q: &mut quinn_proto::Connection, id: StreamId, wire: &[u8], at: &mut usize) {
    let mut s = q.send_stream(id);
    while *at < wire.len() {
        match s.write(&wire[*at..]) {
            Ok(n) => *at += n,
            Err(_) => return, // blocked (a Writable event continues), or gone
        }
    }
    let _ = s.finish();
}

impl Engine {
    /// Sends a request on a stream of its own; its key.
    pub fn request(&mut self, body: &[u8], now: std::time::Instant) -> Result<u64, PublishError> {
        if self.connector.is_none() {
            return Err(PublishError::NotConnected); // a listener has no server to ask
        }
        let peer = self.peers.first().ok_or(PublishError::NotConnected)?;
        let (peer_id, ch) = (peer.id, peer.conn.ok_or(PublishError::NotConnected)?);
        let c = self.conns.get_mut(&ch).filter(|c| c.established && !c.lost).ok_or(PublishError::NotConnected)?;
        let id = c.q.streams().open(Dir::Bi).ok_or(PublishError::Full)?;
        self.counters.streams_opened += 1;
        let key = self.next_request;
        self.next_request += 1;
        let mut wire = Vec::with_capacity(StreamHeader::MAX_LEN + 5 + body.len());
        StreamHeader { kind: StreamKind::Request, session: self.session, channel: 0, first_seq: key, class: 0 }
            .encode(&mut wire);
        zerohop_proto::stream::encode_prefix(body.len(), &mut wire);
        wire.extend_from_slice(body);
        let mut at = 0;
        write_rest(&mut c.q, id, &wire, &mut at);
        c.streams.insert(id, Stream::RequestOut { key, wire, at, reply: Vec::new() });
        self.requests.insert(key, (ch, id));
        let _ = peer_id;
        self.mark(ch);
        self.process_dirty(now);
        Ok(key)
    }

    /// Gives up on request `key`: its stream is reset both ways.
    pub fn cancel(&mut self, key: u64, now: std::time::Instant) -> bool {
        let Some((ch, id)) = self.requests.remove(&key) else { return false };
        if let Some(c) = self.conns.get_mut(&ch) {
            let _ = c.q.send_stream(id).reset(CANCELLED);
            let _ = c.q.recv_stream(id).stop(CANCELLED);
            c.streams.remove(&id);
            self.mark(ch);
            self.process_dirty(now);
        }
        true
    }

    /// Writes the answer to request `key`; false if it is gone.
    pub fn respond(&mut self, key: u64, ok: bool, body: &[u8], now: std::time::Instant) -> bool {
        let Some((ch, id)) = self.answers.remove(&key) else { return false };
        let Some(c) = self.conns.get_mut(&ch) else { return false };
        let Some(Stream::RequestIn { answer, at, .. }) = c.streams.get_mut(&id) else { return false };
        answer.reserve(6 + body.len());
        answer.push(u8::from(ok));
        zerohop_proto::stream::encode_prefix(body.len(), answer);
        answer.extend_from_slice(body);
        // The stream is kept until the client has acknowledged the whole answer
        // (`StreamEvent::Finished`): `linger` waits for that.
        write_rest(&mut c.q, id, answer, at);
        self.mark(ch);
        self.process_dirty(now);
        true
    }

    /// The client side: the reply, once complete, goes to the receive ring.
    pub(crate) fn read_reply(&mut self, c: &mut Conn, id: StreamId) -> Result<(), ()> {
        let Some(Stream::RequestOut { key, reply, .. }) = c.streams.get_mut(&id) else { return Ok(()) };
        let key = *key;
        let max = self.config.max_message + 6;
        let mut finished = false;
        let read = read_into(&mut c.q, id, reply, max + 1, &mut finished);
        let outcome = match read {
            Err(()) => Some(Err("the server reset the request".to_string())),
            Ok(()) if reply.len() > max => Some(Err("the reply is above the limit".to_string())),
            Ok(()) if finished => Some(Ok(std::mem::take(reply))),
            Ok(()) => None,
        };
        let Some(outcome) = outcome else { return Ok(()) };
        c.streams.remove(&id);
        if self.requests.remove(&key).is_none() {
            return Ok(()); // cancelled: nobody waits for it
        }
        let (peer, from) = (c.peer.unwrap_or(0), c.q.remote_address());
        match &outcome {
            Ok(bytes) => match parse_reply(bytes) {
                Some((true, body)) => self.deliver_surely(peer, from, Kind::Response, key, body),
                Some((false, body)) => self.deliver_surely(peer, from, Kind::Failed, key, body),
                None => self.deliver_surely(peer, from, Kind::Failed, key, b"a malformed reply"),
            },
            Err(why) => self.deliver_surely(peer, from, Kind::Failed, key, why.as_bytes()),
        }
        Ok(())
    }

    /// The server side: the request, once complete, goes to the application. `ended`:
    /// the stream's end was read already (with its header).
    pub(crate) fn read_request(
        &mut self,
        ch: ConnectionHandle,
        c: &mut Conn,
        id: StreamId,
        ended: bool,
    ) -> Result<(), CloseCode> {
        let Some(Stream::RequestIn { key: None, body, .. }) = c.streams.get_mut(&id) else { return Ok(()) };
        let max = self.config.max_message + 5;
        let mut finished = ended;
        if !ended && read_into(&mut c.q, id, body, max + 1, &mut finished).is_err() {
            c.streams.remove(&id); // the client gave up before sending it whole
            return Ok(());
        }
        if body.len() > max {
            return Err(CloseCode::TooLarge);
        }
        if !finished {
            return Ok(());
        }
        let Some((len, at)) = get_varint(body).ok().flatten() else { return Err(CloseCode::Protocol) };
        if body.len() - at != len as usize {
            return Err(CloseCode::Protocol);
        }
        let key = self.next_request;
        self.next_request += 1;
        let request = std::mem::take(body);
        if let Some(Stream::RequestIn { key: k, .. }) = c.streams.get_mut(&id) {
            *k = Some(key);
        }
        self.answers.insert(key, (ch, id));
        let (peer, from) = (c.peer.unwrap_or(0), c.q.remote_address());
        self.deliver_surely(peer, from, Kind::Request, key, &request[at..]);
        Ok(())
    }
}

/// A reply: a status byte (1 ok, 0 failed) and the framed body.
fn parse_reply(bytes: &[u8]) -> Option<(bool, &[u8])> {
    let (&status, rest) = bytes.split_first()?;
    let (len, at) = get_varint(rest).ok()??;
    (rest.len() - at == len as usize && status <= 1).then(|| (status == 1, &rest[at..]))
}
