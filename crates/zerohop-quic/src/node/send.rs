//! Sending on channels: one writer per channel and connection, which writes what the
//! send queue holds and applies the peer's acknowledgements; and what a full queue
//! means (waiting publishers, slow consumers).

use super::*;

impl Shared {
    /// Runs one channel's stream on one connection: writes what is queued, reads the
    /// peer's acknowledgements. Ends with the connection.
    pub(super) async fn write_channel(self: Arc<Self>, conn: Connection, ch: Arc<OutChannel>, generation: u64) {
        loop {
            if !lock(&ch.state).claim(generation) {
                return;
            }
            let result = self.write_channel_once(&conn, &ch, generation).await;
            let mut st = lock(&ch.state);
            if st.owned_by(generation) {
                st.writer_active = false;
            } else {
                // A newer writer owns the queue; a wake-up this one took is its.
                ch.ready.notify_one();
            }
            drop(st);
            match result {
                // 0-RTT data was refused: the stream is gone, open it again (1-RTT).
                Err(quinn::WriteError::ZeroRttRejected) => continue,
                _ => return,
            }
        }
    }

    pub(super) async fn write_channel_once(
        self: &Arc<Self>,
        conn: &Connection,
        ch: &Arc<OutChannel>,
        generation: u64,
    ) -> Result<(), quinn::WriteError> {
        let Ok((mut send, recv)) = conn.open_bi().await else { return Ok(()) };
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut chunk = Vec::with_capacity(StreamHeader::MAX_LEN);
        {
            let mut st = lock(&ch.state);
            if !st.owned_by(generation) {
                return Ok(()); // a newer connection owns the queue
            }
            let first_seq = st.queue.rewind();
            StreamHeader { kind: StreamKind::Channel, session: self.session, channel: ch.index, first_seq }
                .encode(&mut chunk);
        }
        let acks = {
            let (s, ch) = (self.clone(), ch.clone());
            let conn = conn.clone();
            self.runtime.handle().spawn(async move { s.read_acks(conn, ch, recv).await })
        };
        let result = async {
            send.write_all(&chunk).await?;
            loop {
                chunk.clear();
                {
                    let st = lock(&ch.state);
                    if !st.owned_by(generation) {
                        return Ok(());
                    }
                    let unsent = st.queue.unsent();
                    chunk.extend_from_slice(&unsent[..unsent.len().min(WRITE_CHUNK)]);
                }
                if chunk.is_empty() {
                    tokio::select! {
                        _ = ch.ready.notified() => {}
                        _ = conn.closed() => return Ok(()),
                    }
                    continue;
                }
                send.write_all(&chunk).await?;
                let mut st = lock(&ch.state);
                if !st.owned_by(generation) {
                    return Ok(());
                }
                st.queue.mark_sent(chunk.len());
            }
        }
        .await;
        acks.abort();
        result
    }

    /// Applies the acknowledgements the peer writes back on a channel's stream.
    pub(super) async fn read_acks(self: Arc<Self>, conn: Connection, ch: Arc<OutChannel>, mut recv: RecvStream) {
        let mut pending: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = recv.read_chunk(4096, true).await {
            pending.extend_from_slice(&chunk.bytes);
            let mut at = 0;
            loop {
                match get_varint(&pending[at..]) {
                    Ok(Some((ack, n))) => {
                        at += n;
                        if lock(&ch.state).queue.ack(ack).is_err() {
                            self.violation(&conn, CloseCode::Protocol, "acknowledged a message never sent");
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.violation(&conn, CloseCode::Protocol, "malformed acknowledgement");
                        return;
                    }
                }
            }
            pending.drain(..at);
            self.room_freed();
        }
    }
}
