//! Receiving: a connection's streams and datagrams into the inbox, with the
//! duplicate filter and the acknowledgements of what the application has read.

use super::*;

impl Shared {
    /// Reads the peer's streams and datagrams until the connection ends; returns why.
    pub(super) async fn serve_connection(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Connection) -> ConnectionError {
        let datagrams = {
            let (s, p, c) = (self.clone(), peer.clone(), conn.clone());
            self.runtime.handle().spawn(async move { s.read_datagrams(p, c).await })
        };
        let streams = {
            let (s, p, c) = (self.clone(), peer.clone(), conn.clone());
            self.runtime.handle().spawn(async move {
                while let Ok((send, recv)) = c.accept_bi().await {
                    s.counters.streams_accepted.fetch_add(1, Ordering::Relaxed);
                    let (s2, p2, c2) = (s.clone(), p.clone(), c.clone());
                    s.runtime.handle().spawn(async move { s2.read_stream(p2, c2, send, recv).await });
                }
            })
        };
        let reason = conn.closed().await;
        datagrams.abort();
        streams.abort();
        reason
    }

    pub(super) async fn read_datagrams(self: Arc<Self>, peer: Arc<Peer>, conn: Connection) {
        while let Ok(d) = conn.read_datagram().await {
            let Some((channel, seq, at)) = decode_datagram_head(&d) else {
                self.counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
            let expected = peer.datagram_next.load(Ordering::Relaxed);
            let gap = seq.wrapping_sub(expected);
            if gap < u32::MAX / 2 {
                self.counters.datagrams_lost.fetch_add(u64::from(gap), Ordering::Relaxed);
                peer.datagram_next.store(seq.wrapping_add(1), Ordering::Relaxed);
            }
            let m = Inbound::message(peer.id, conn.remote_address(), channel, &d[at..]);
            if self.inbox.deliver(&m).is_none() {
                // Unreliable: no room means lost, and counted as such.
                self.counters.datagrams_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) async fn read_stream(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        send: SendStream,
        mut recv: RecvStream,
    ) {
        let mut head = Vec::new();
        let (header, rest) = loop {
            match StreamHeader::decode(&head) {
                Ok(Some((h, n))) => break (h, Bytes::from(head.split_off(n))),
                Ok(None) if head.len() < StreamHeader::MAX_LEN => {}
                _ => return self.violation(&conn, CloseCode::Protocol, "not a zerohop stream"),
            }
            match recv.read_chunk(StreamHeader::MAX_LEN - head.len(), true).await {
                Ok(Some(c)) => head.extend_from_slice(&c.bytes),
                _ => return,
            }
        };
        match header.kind {
            StreamKind::Channel if header.channel < self.config.max_channels => {
                self.read_channel(peer, conn, header, rest, send, recv).await
            }
            StreamKind::Channel => self.violation(&conn, CloseCode::Protocol, "channel out of range"),
            StreamKind::Request if matches!(self.config.role, Role::Listen) => {
                self.serve_request(peer, conn, rest, send, recv).await
            }
            _ => self.violation(&conn, CloseCode::Protocol, "unexpected stream kind"),
        }
    }

    /// Delivers one channel stream's messages, acknowledging what the application read.
    pub(super) async fn read_channel(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        header: StreamHeader,
        first_bytes: Bytes,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let window = peer.window(header.session, header.channel);
        lock(&window).start_stream(header.first_seq);
        let from = conn.remote_address();
        let mut decoder = StreamDecoder::new(self.config.max_message);
        // Messages the inbox had no room for, end to end, and their lengths.
        let mut backlog: Vec<u8> = Vec::new();
        let mut lens: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
        let mut backlog_at = 0;
        let mut ack_buf: Vec<u8> = Vec::with_capacity(10);
        let mut input = Some(first_bytes);
        let mut ended = false;
        loop {
            // Offer what waits; then take new bytes only if nothing waits.
            while let Some(&len) = lens.front() {
                let m = Inbound::message(peer.id, from, header.channel, &backlog[backlog_at..backlog_at + len]);
                let Some(pos) = self.inbox.deliver(&m) else { break };
                lock(&window).delivered(pos);
                lens.pop_front();
                backlog_at += len;
            }
            if lens.is_empty() {
                backlog.clear();
                backlog_at = 0;
            }
            let ack = lock(&window).consumed(self.inbox.consumed());
            if let Some(ack) = ack {
                ack_buf.clear();
                put_varint(ack, &mut ack_buf);
                if send.write_all(&ack_buf).await.is_err() {
                    return;
                }
            }
            if let Some(bytes) = input.take() {
                let pushed = {
                    let mut w = lock(&window);
                    let inbox = &self.inbox;
                    decoder.push(&bytes, |body| {
                        if !w.accept() {
                            return;
                        }
                        if lens.is_empty() {
                            let m = Inbound::message(peer.id, from, header.channel, body);
                            if let Some(pos) = inbox.deliver(&m) {
                                w.delivered(pos);
                                return;
                            }
                        }
                        backlog.extend_from_slice(body);
                        lens.push_back(body.len());
                    })
                };
                match pushed {
                    Ok(()) => {}
                    Err(StreamError::TooLarge { .. }) => {
                        return self.violation(&conn, CloseCode::TooLarge, "message above the limit");
                    }
                    Err(StreamError::BadPrefix) => {
                        return self.violation(&conn, CloseCode::Protocol, "malformed length prefix");
                    }
                }
                continue;
            }
            let waiting = !lens.is_empty();
            let unread = lock(&window).has_unread();
            if ended && !waiting && !unread {
                let _ = send.finish();
                return;
            }
            if waiting || ended {
                tokio::select! {
                    _ = tokio::time::sleep(if waiting { ROOM_POLL } else { ACK_TICK }) => {}
                    _ = conn.closed() => return,
                }
                continue;
            }
            tokio::select! {
                chunk = recv.read_chunk(WRITE_CHUNK, true) => match chunk {
                    Ok(Some(c)) => input = Some(c.bytes),
                    Ok(None) => ended = true,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(ACK_TICK), if unread => {}
            }
        }
    }
}
