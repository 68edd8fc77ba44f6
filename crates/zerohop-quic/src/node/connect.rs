//! Making connections: the connecting side's loop (backoff, 0-RTT, hello) and the
//! listening side's accept path (handshake, hello, the peer kept for a reconnect).

use super::*;

impl Shared {
    pub(super) async fn connect_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let Role::Connect { server_name } = &self.config.role else { return };
        let mut life = Lifecycle::new(self.config.backoff, self.session);
        let server = Some(self.config.addr);
        self.inbox.status(StatusEvent { status: Status::Connecting, peer: server, error: None });
        let mut ever_connected = false;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let failure = match self.connect_once(&peer, server_name).await {
                Ok(conn) => {
                    if ever_connected {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    life.on(Event::Connected);
                    self.inbox.status(StatusEvent { status: Status::Connected, peer: server, error: None });
                    let reason = self.serve_connection(&peer, &conn).await;
                    self.detach(&peer, &conn);
                    if self.closing.load(Ordering::SeqCst) {
                        return;
                    }
                    (Failure::of(&reason), Event::Lost)
                }
                Err(f) => {
                    self.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    (f, Event::Failed)
                }
            };
            let (failure, event) = failure;
            let next = if failure.is_permanent() {
                life.on(Event::Close); // certificates do not fix themselves
                None
            } else {
                life.on(event).retry_after
            };
            let status = match (life.status(), next) {
                (Status::Closed, _) => Status::Disconnected,
                (s, _) => s,
            };
            self.inbox.status(StatusEvent { status, peer: server, error: Some(failure) });
            let Some(wait) = next else { return };
            if !self.sleep_unless_closed(wait).await {
                return;
            }
        }
    }

    pub(super) async fn connect_once(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        server_name: &str,
    ) -> Result<Connection, Failure> {
        let client = self.client.clone().expect("a connecting node has a client config");
        let connecting = self
            .endpoint
            .connect_with(client, self.config.addr, server_name)
            .map_err(|e| Failure { kind: FailureKind::Lost, message: e.to_string() })?;
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                // Early data: the hello and every channel's backlog go in the first flight.
                self.send_hello(&conn);
                self.attach(peer, &conn);
                if accepted.await {
                    self.counters.zero_rtt.fetch_add(1, Ordering::Relaxed);
                    self.counters.last_zero_rtt.store(true, Ordering::Relaxed);
                } else if let Some(reason) = conn.close_reason() {
                    self.detach(peer, &conn);
                    return Err(Failure::of(&reason));
                } else {
                    // Refused: what the first flight carried is gone. The hello goes again,
                    // and attaching again starts new writers that send everything
                    // unacknowledged from the start.
                    self.counters.last_zero_rtt.store(false, Ordering::Relaxed);
                    self.send_hello(&conn);
                    self.attach(peer, &conn);
                }
                Ok(conn)
            }
            Err(connecting) => match connecting.await {
                Ok(conn) => {
                    self.counters.last_zero_rtt.store(false, Ordering::Relaxed);
                    self.send_hello(&conn);
                    self.attach(peer, &conn);
                    Ok(conn)
                }
                Err(e) => Err(Failure::of(&e)),
            },
        }
    }

    pub(super) fn send_hello(self: &Arc<Self>, conn: &Connection) {
        let conn = conn.clone();
        let session = self.session;
        self.runtime.handle().spawn(async move {
            let Ok(mut send) = conn.open_uni().await else { return };
            let mut hello = Vec::new();
            StreamHeader { kind: StreamKind::Hello, session, channel: 0, first_seq: 0 }.encode(&mut hello);
            if send.write_all(&hello).await.is_ok() {
                let _ = send.finish();
            }
        });
    }

    pub(super) async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.closing.load(Ordering::SeqCst) {
                incoming.refuse();
                continue;
            }
            let s = self.clone();
            self.runtime.handle().spawn(async move { s.accept_one(incoming).await });
        }
    }

    pub(super) async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let failed = |s: &Self| {
            s.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
        };
        let Ok(connecting) = incoming.accept() else { return failed(&self) };
        // The server side may always read early data.
        let (conn, established) = match connecting.into_0rtt() {
            Ok((conn, established)) => (conn, Some(established)),
            Err(connecting) => match connecting.await {
                Ok(conn) => (conn, None),
                Err(_) => return failed(&self),
            },
        };
        // With mutual TLS nobody is heard before their certificate is checked; without
        // it there is nothing more to learn from the handshake, so 0-RTT data counts.
        // (`established` resolves once the handshake is over, to whether the client's
        // early data was taken: the outcome of the handshake is the close reason.)
        if self.config.client_ca.is_some()
            && let Some(established) = established
            && (established.await, conn.close_reason()).1.is_some()
        {
            return failed(&self);
        }
        let session = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&conn)).await {
            Ok(Ok(session)) => session,
            Ok(Err(_)) if conn.close_reason().is_some() => return failed(&self),
            Ok(Err(why)) => return self.violation(&conn, CloseCode::Protocol, why),
            Err(_) => return self.violation(&conn, CloseCode::Protocol, "no hello in time"),
        };
        let (peer, returning) = self.peer_for(session, conn.remote_address());
        if returning {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.attach(&peer, &conn);
        let addr = Some(conn.remote_address());
        self.inbox.status(StatusEvent { status: Status::Connected, peer: addr, error: None });
        let reason = self.serve_connection(&peer, &conn).await;
        self.detach(&peer, &conn);
        if self.closing.load(Ordering::SeqCst) || peer.gone.load(Ordering::SeqCst) {
            return;
        }
        let failure = Failure::of(&reason);
        if failure.kind == FailureKind::ClosedByPeer {
            // It left on purpose: nothing to keep for its return, and no failure to name.
            self.inbox.status(StatusEvent { status: Status::Disconnected, peer: addr, error: None });
            if lock(&peer.conn).0.is_none() {
                self.forget(&peer);
            }
            return;
        }
        self.inbox.status(StatusEvent { status: Status::Disconnected, peer: addr, error: Some(failure) });
        // Keep what it has not acknowledged for a while, in case it comes back.
        if !self.sleep_unless_closed(self.config.peer_linger).await {
            return;
        }
        if lock(&peer.conn).0.is_none() {
            self.forget(&peer);
        }
    }

    /// The peer kept for `session` (a reconnect), or a new one.
    pub(super) fn peer_for(&self, session: u64, addr: SocketAddr) -> (Arc<Peer>, bool) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.iter().find(|p| p.session.load(Ordering::Relaxed) == session) {
            if let Some(old) = p.connection() {
                // The same session on a new connection: the old one is dead.
                old.close(CloseCode::Closed.varint(), b"replaced by a reconnect");
            }
            return (p.clone(), true);
        }
        let peer = Peer::new(self.next_peer.fetch_add(1, Ordering::Relaxed), addr);
        peer.session.store(session, Ordering::Relaxed);
        peers.push(peer.clone());
        (peer, false)
    }
}

/// Reads the connecting side's hello: its session.
async fn read_hello(conn: &Connection) -> Result<u64, &'static str> {
    let mut recv = conn.accept_uni().await.map_err(|_| "connection closed before its hello")?;
    let bytes = recv.read_to_end(StreamHeader::MAX_LEN).await.map_err(|_| "hello too long or cut")?;
    match StreamHeader::decode(&bytes) {
        Ok(Some((h, _))) if h.kind == StreamKind::Hello => Ok(h.session),
        _ => Err("not a zerohop hello"),
    }
}
