//! Making connections: the connecting side's attempts (backoff, 0-RTT, the hello) and
//! the listening side's peers (known by their hello, kept across reconnects, dropped
//! when too slow).

use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{ConnectionHandle, Dir};
use zerohop_proto::lifecycle::{Event as LifeEvent, Lifecycle, Status};
use zerohop_proto::session::{StreamHeader, StreamKind};

use super::*;
use super::{Conn, Engine, Peer};

/// The connecting side's state between and during attempts.
pub(crate) struct Connector {
    pub life: Lifecycle,
    pub server_name: String,
    pub ever_connected: bool,
    pub retry_at: Option<Instant>,
}

impl Engine {
    /// One connection attempt (the connecting side).
    pub(crate) fn connect(&mut self, now: Instant) {
        let Some(conn) = self.connector.as_mut() else { return };
        conn.retry_at = None;
        let server_name = conn.server_name.clone();
        let client = self.client.clone().expect("a connecting node has a client config");
        let addr = self.config.addr;
        match self.endpoint.connect(now, client, addr, &server_name) {
            Ok((ch, q)) => {
                let peer = self.peers.first().map(|p| p.id);
                let mut c = Box::new(Conn::new(q, peer));
                if c.q.has_0rtt() {
                    // Early data: the hello and every channel's backlog go in the first flight.
                    c.early = true;
                    self.send_hello(&mut c);
                    self.attach(ch, &mut c);
                }
                self.conns.insert(ch, c);
                self.mark(ch);
            }
            Err(e) => {
                let failure = Failure { kind: FailureKind::Lost, message: e.to_string() };
                self.counters.handshake_failures += 1;
                self.schedule_retry(now, failure, LifeEvent::Failed);
            }
        }
    }

    pub(crate) fn connected(&mut self, ch: ConnectionHandle, c: &mut Conn) {
        if c.early && c.q.accepted_0rtt() {
            self.counters.zero_rtt_connections += 1;
            self.counters.last_zero_rtt = true;
        } else {
            // No early data, or it was refused: what the first flight carried is gone.
            // The hello goes (again), and the channels start over from what is
            // unacknowledged.
            self.counters.last_zero_rtt = false;
            c.streams.clear();
            self.send_hello(c);
            self.attach(ch, c);
        }
        let Some(conn) = self.connector.as_mut() else { return };
        if conn.ever_connected {
            self.counters.reconnects += 1;
        }
        conn.ever_connected = true;
        conn.life.on(LifeEvent::Connected);
        let server = Some(self.config.addr);
        self.report(Status::Connected, server, None);
    }

    pub(crate) fn connect_failed(&mut self, c: &Conn, now: Instant, failure: Failure) {
        let event = if c.established { LifeEvent::Lost } else { LifeEvent::Failed };
        if !c.established {
            self.counters.handshake_failures += 1;
        }
        self.schedule_retry(now, failure, event);
    }

    pub(crate) fn schedule_retry(&mut self, now: Instant, failure: Failure, event: LifeEvent) {
        let Some(conn) = self.connector.as_mut() else { return };
        let next = if failure.is_permanent() {
            conn.life.on(LifeEvent::Close); // certificates do not fix themselves
            None
        } else {
            conn.life.on(event).retry_after
        };
        let status = match conn.life.status() {
            Status::Closed => Status::Disconnected,
            s => s,
        };
        conn.retry_at = next.map(|wait| now + wait);
        let server = Some(self.config.addr);
        self.report(status, server, Some(failure));
    }

    pub(crate) fn send_hello(&mut self, c: &mut Conn) {
        let Some(id) = c.q.streams().open(Dir::Uni) else { return };
        let mut hello = Vec::new();
        StreamHeader { kind: StreamKind::Hello, session: self.session, channel: 0, first_seq: 0, class: 0 }
            .encode(&mut hello);
        // A work group's member says which (its length, then its name).
        if let Some(group) = &self.config.group {
            hello.push(group.len() as u8);
            hello.extend_from_slice(group.as_bytes());
        }
        let mut s = c.q.send_stream(id);
        // A fresh stream takes a few bytes whatever the flow control.
        if s.write(&hello).is_ok_and(|n| n == hello.len()) {
            let _ = s.finish();
        }
    }

    /// Makes `c` its peer's connection, and starts every channel on it.
    pub(crate) fn attach(&mut self, ch: ConnectionHandle, c: &mut Conn) {
        let Some(id) = c.peer else { return };
        let addr = c.q.remote_address();
        if let Some(p) = self.peer(id) {
            p.addr = addr;
            p.conn = Some(ch);
            p.linger_until = None;
            for out in p.channels.iter_mut().flatten() {
                out.stream = None;
            }
        }
        self.write_channels(c);
    }

    /// The peer kept for `session` (a reconnect), or a new one; its id.
    pub(crate) fn peer_for(&mut self, session: u64, addr: SocketAddr, group: Option<usize>, now: Instant) -> u32 {
        if let Some(p) = self.peers.iter().find(|p| p.session == session) {
            let (id, old) = (p.id, p.conn);
            self.counters.reconnects += 1;
            if let Some(old) = old {
                // The same session on a new connection: the old one is dead (and not a
                // loss to report: the peer is back).
                if let Some(p) = self.peer(id) {
                    p.conn = None;
                }
                self.with_conn(old, |e, ch, c| e.close_conn(ch, c, now, CloseCode::Closed, "replaced by a reconnect"));
            }
            return id;
        }
        let id = self.next_peer;
        self.next_peer += 1;
        let mut peer = Peer::new(id, addr, ChannelClasses::new(self.config.priorities.clone()));
        peer.session = session;
        peer.group = group;
        self.peers.push(peer);
        id
    }

    /// A listener's peer said hello: it is known now.
    pub(crate) fn hello(
        &mut self,
        ch: ConnectionHandle,
        c: &mut Conn,
        session: u64,
        group: Option<usize>,
        now: Instant,
    ) {
        if c.peer.is_some() {
            return;
        }
        let addr = c.q.remote_address();
        let id = self.peer_for(session, addr, group, now);
        c.peer = Some(id);
        c.hello_by = None;
        self.attach(ch, c);
        self.report(Status::Connected, Some(addr), None);
        self.read_datagrams(c);
    }

    /// A listener's peer that does not read: closed, forgotten (so its queue no longer
    /// holds anyone up), and counted.
    pub(crate) fn disconnect_slow(&mut self, peer: u32, now: Instant) {
        self.counters.slow_consumers += 1;
        let Some(p) = self.peer(peer) else { return };
        let (addr, conn) = (p.addr, p.conn);
        self.forget(peer);
        if let Some(ch) = conn {
            self.with_conn(ch, |e, ch, c| {
                e.close_conn(ch, c, now, CloseCode::SlowConsumer, "slow consumer: did not read in time")
            });
        }
        let failure = Failure {
            kind: FailureKind::SlowConsumer { by_peer: false },
            message: "the peer did not read what it was sent in time".into(),
        };
        self.report(Status::Disconnected, Some(addr), Some(failure));
    }
}
