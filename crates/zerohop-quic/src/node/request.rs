//! Requests: one stream each, the client's side (send, read the reply or reset on
//! cancel) and the server's (hand the request over, write the answer or report the
//! cancellation).

use super::*;

impl Shared {
    /// Runs one request: writes it, reads the reply into the inbox, or resets the stream
    /// when cancelled. Nothing of it is left when it returns.
    pub(super) async fn run_request(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        key: u64,
        wire: Vec<u8>,
        cancelled: tokio::sync::oneshot::Receiver<()>,
    ) {
        const CANCELLED: VarInt = VarInt::from_u32(1);
        enum Outcome {
            Reply(Vec<u8>),
            Failed(String),
            Cancelled,
        }
        let max = self.config.max_message + 6;
        let exchange = async {
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(pair) => pair,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
            let reply = async {
                send.write_all(&wire).await.map_err(|e| e.to_string())?;
                let _ = send.finish();
                recv.read_to_end(max).await.map_err(|e| e.to_string())
            };
            tokio::select! {
                r = reply => r.map_or_else(Outcome::Failed, Outcome::Reply),
                _ = cancelled => {
                    let _ = send.reset(CANCELLED);
                    let _ = recv.stop(CANCELLED);
                    Outcome::Cancelled
                }
            }
        };
        let outcome = exchange.await;
        lock(&self.requests).remove(&key);
        let (kind, body) = match &outcome {
            Outcome::Cancelled => return, // nobody waits for a reply
            Outcome::Reply(bytes) => match parse_reply(bytes) {
                Some((true, body)) => (Kind::Response, body),
                Some((false, body)) => (Kind::Failed, body),
                None => (Kind::Failed, &b"a malformed reply"[..]),
            },
            Outcome::Failed(why) => (Kind::Failed, why.as_bytes()),
        };
        let m = Inbound { peer: peer.id, from: conn.remote_address(), channel: 0, kind, request: key, body };
        self.deliver_surely(&m).await;
    }

    /// Delivers `m`, waiting for room: replies and cancellations are never dropped.
    pub(super) async fn deliver_surely(&self, m: &Inbound<'_>) {
        while self.inbox.deliver(m).is_none() {
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }

    /// Serves one request stream: hands the request to the application and writes its
    /// answer; if the client gives up first, tells the application so.
    pub(super) async fn serve_request(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        first_bytes: Bytes,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let max = self.config.max_message + 5;
        let mut request = first_bytes.to_vec();
        let rest = match recv.read_to_end(max.saturating_sub(request.len())).await {
            Ok(rest) => rest,
            Err(quinn::ReadToEndError::TooLong) => {
                return self.violation(&conn, CloseCode::TooLarge, "request above the limit");
            }
            Err(_) => return, // the client gave up before sending it whole
        };
        request.extend_from_slice(&rest);
        let Some((len, at)) = get_varint(&request).ok().flatten() else {
            return self.violation(&conn, CloseCode::Protocol, "malformed request");
        };
        if request.len() - at != len as usize {
            return self.violation(&conn, CloseCode::Protocol, "request length does not match");
        }
        let key = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        lock(&self.answers).insert(key, answer);
        let from = conn.remote_address();
        let m = Inbound { peer: peer.id, from, channel: 0, kind: Kind::Request, request: key, body: &request[at..] };
        self.deliver_surely(&m).await;
        tokio::select! {
            reply = answered => {
                if let Ok((ok, body)) = reply {
                    let mut wire = Vec::with_capacity(6 + body.len());
                    wire.push(u8::from(ok));
                    zerohop_proto::stream::encode_prefix(body.len(), &mut wire);
                    wire.extend_from_slice(&body);
                    if send.write_all(&wire).await.is_ok() {
                        let _ = send.finish();
                    }
                }
            }
            _ = send.stopped() => {
                // The client gave up (timeout, abort) or left: the handler may stop too.
                if lock(&self.answers).remove(&key).is_some() {
                    let m = Inbound { peer: peer.id, from, channel: 0, kind: Kind::Cancelled, request: key, body: &[] };
                    self.deliver_surely(&m).await;
                }
            }
        }
    }
}

/// A reply: a status byte (1 ok, 0 failed) and the framed body.
fn parse_reply(bytes: &[u8]) -> Option<(bool, &[u8])> {
    let (&status, rest) = bytes.split_first()?;
    let (len, at) = get_varint(rest).ok()??;
    (rest.len() - at == len as usize && status <= 1).then(|| (status == 1, &rest[at..]))
}
