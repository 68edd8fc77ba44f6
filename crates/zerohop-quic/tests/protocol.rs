//! `QuicProtocol` on loopback: channels both ways, datagrams, status events, and no message
//! lost when the listener goes away and a new one takes its port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerohop_net::ring::{Inbound, Sink};
use zerohop_proto::lifecycle::Status;
use zerohop_proto::session::{StreamHeader, StreamKind};
use zerohop_quic::{PublishError, QuicConfig, QuicProtocol, Sent, Side};
use zerohop_transport::{ErrorCode, Kind, StatusEvent};

/// An application queue: messages land in a Vec, and `read` moves the read position.
#[derive(Default)]
struct TestInbox {
    messages: Mutex<Vec<(u16, SocketAddr, Vec<u8>)>>,
    read: Mutex<u64>,
    /// Refuse deliveries beyond this many unread (a slow application).
    room: Option<usize>,
    /// An application that reads each message as soon as it lands.
    eager: bool,
    events: Mutex<Vec<StatusEvent>>,
    /// Requests, replies and cancellations: kind, key, body.
    exchanges: Mutex<Vec<(Kind, u64, Vec<u8>)>>,
}

impl Sink for TestInbox {
    fn deliver(&self, m: &Inbound<'_>) -> Option<u64> {
        if m.kind != Kind::Message {
            self.exchanges.lock().unwrap().push((m.kind, m.request, m.body.to_vec()));
        }
        let mut all = self.messages.lock().unwrap();
        if let Some(room) = self.room
            && all.len() as u64 - *self.read.lock().unwrap() >= room as u64
        {
            return None;
        }
        all.push((m.channel, m.from, m.body.to_vec()));
        Some(all.len() as u64 - 1)
    }
    fn consumed(&self) -> u64 {
        if self.eager {
            return self.messages.lock().unwrap().len() as u64;
        }
        *self.read.lock().unwrap()
    }
    fn status(&self, e: StatusEvent) {
        self.events.lock().unwrap().push(e);
    }
}

impl TestInbox {
    fn read_all(&self) {
        *self.read.lock().unwrap() = self.messages.lock().unwrap().len() as u64;
    }
    fn bodies(&self, channel: u16) -> Vec<Vec<u8>> {
        self.messages.lock().unwrap().iter().filter(|m| m.0 == channel).map(|m| m.2.clone()).collect()
    }
    fn statuses(&self) -> Vec<Status> {
        self.events.lock().unwrap().iter().map(|e| e.status).collect()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn listen(addr: &str) -> (QuicProtocol, Arc<TestInbox>) {
    listen_with(addr, |_| {})
}

fn listen_with(addr: &str, tweak: impl FnOnce(&mut QuicConfig)) -> (QuicProtocol, Arc<TestInbox>) {
    let inbox = Arc::new(TestInbox::default());
    let mut config = QuicConfig::new(Side::Listen, addr.parse().unwrap());
    tweak(&mut config);
    (QuicProtocol::start(config, inbox.clone()).unwrap(), inbox)
}

fn connect(addr: SocketAddr, tweak: impl FnOnce(&mut QuicConfig)) -> (QuicProtocol, Arc<TestInbox>) {
    let inbox = Arc::new(TestInbox::default());
    let mut config = QuicConfig::new(Side::Connect { server_name: "localhost".into() }, addr);
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(100);
    tweak(&mut config);
    (QuicProtocol::start(config, inbox.clone()).unwrap(), inbox)
}

#[test]
fn channels_both_ways_in_order_and_acknowledged_once_read() {
    let (server, s_in) = listen("127.0.0.1:0");
    let addr = server.local_addr();
    let (client, c_in) = connect(addr, |_| {});
    // Published before the connection exists: queued, then sent.
    for i in 0..500u32 {
        client.publish((i % 3) as u16, &i.to_le_bytes()).unwrap();
    }
    client.publish(1, &vec![7u8; 3 << 20]).unwrap();
    wait_until("the server to get everything", || s_in.messages.lock().unwrap().len() == 501);
    for ch in 0..3u16 {
        let want: Vec<Vec<u8>> =
            (0..500u32).filter(|i| (i % 3) as u16 == ch).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut got = s_in.bodies(ch);
        if ch == 1 {
            assert_eq!(got.pop().unwrap().len(), 3 << 20);
        }
        assert_eq!(got, want, "channel {ch} in order");
    }
    assert!(client.metrics().unacked_bytes > 0, "nothing was read yet");
    s_in.read_all();
    wait_until("acks", || client.metrics().unacked_bytes == 0);
    assert!(client.linger(Duration::from_millis(10)));

    server.publish(2, b"from the server").unwrap();
    wait_until("the client to get it", || c_in.bodies(2) == vec![b"from the server".to_vec()]);
    assert_eq!(client.metrics().peers, 1);
    assert!(client.metrics().rtt > Duration::ZERO);
    assert_eq!(c_in.statuses()[..2], [Status::Connecting, Status::Connected]);
    let s_events = s_in.events.lock().unwrap().clone();
    assert_eq!(s_events[0].status, Status::Connected);
    assert_eq!(s_events[1].peer, Some(client.local_addr().to_string()));

    assert_eq!(client.publish(99, b"x"), Err(PublishError::BadChannel { channel: 99, max: 16 }));
    assert!(matches!(client.publish(0, &vec![0; (16 << 20) + 1]), Err(PublishError::TooLarge { .. })));
    client.close();
    assert_eq!(client.publish(0, b"x"), Err(PublishError::Closed));
    assert_eq!(c_in.statuses().last(), Some(&Status::Closed));
}

#[test]
fn requests_are_answered_and_cancelled_on_streams_of_their_own() {
    let (server, s_in) = listen("127.0.0.1:0");
    let (client, c_in) = connect(server.local_addr(), |_| {});
    wait_until("connected", || client.metrics().peers == 1);
    let key = client.request(b"21").unwrap();
    wait_until("the request", || s_in.exchanges.lock().unwrap().len() == 1);
    let (kind, server_key, body) = s_in.exchanges.lock().unwrap()[0].clone();
    assert_eq!((kind, body.as_slice()), (Kind::Request, &b"21"[..]));
    assert!(server.respond(server_key, true, b"42"));
    assert!(!server.respond(server_key, true, b"again"), "answered once");
    wait_until("the reply", || c_in.exchanges.lock().unwrap().len() == 1);
    assert_eq!(c_in.exchanges.lock().unwrap()[0], (Kind::Response, key, b"42".to_vec()));
    // A failed answer, and a cancelled request the server hears about.
    let failing = client.request(b"x").unwrap();
    wait_until("the second request", || s_in.exchanges.lock().unwrap().len() == 2);
    let second = s_in.exchanges.lock().unwrap()[1].1;
    assert!(server.respond(second, false, b"no"));
    wait_until("the failure", || c_in.exchanges.lock().unwrap().len() == 2);
    assert_eq!(c_in.exchanges.lock().unwrap()[1], (Kind::Failed, failing, b"no".to_vec()));
    let cancelled = client.request(b"slow").unwrap();
    wait_until("the third request", || s_in.exchanges.lock().unwrap().len() == 3);
    assert!(client.cancel(cancelled));
    wait_until("the cancellation", || s_in.exchanges.lock().unwrap().len() == 4);
    let (kind, third, _) = s_in.exchanges.lock().unwrap()[3].clone();
    assert_eq!((kind, third), (Kind::Cancelled, s_in.exchanges.lock().unwrap()[2].1));
    assert!(!server.respond(third, true, b"late"), "a cancelled request cannot be answered");
    let (c, s) = (client.metrics(), server.metrics());
    assert_eq!((c.requests_pending, s.answers_pending), (0, 0), "nothing left behind");
    assert!(matches!(server.request(b"?"), Err(PublishError::NotConnected)), "listeners do not request");
    // An answer given right before a close still arrives: `linger` waits for it.
    let last = client.request(b"last").unwrap();
    wait_until("the last request", || s_in.exchanges.lock().unwrap().len() == 5);
    let fifth = s_in.exchanges.lock().unwrap()[4].1;
    assert!(server.respond(fifth, true, b"bye"));
    assert!(server.linger(Duration::from_secs(5)));
    server.close();
    wait_until("the last reply", || c_in.exchanges.lock().unwrap().len() == 3);
    assert_eq!(c_in.exchanges.lock().unwrap()[2], (Kind::Response, last, b"bye".to_vec()));
}

#[test]
fn a_closed_listener_frees_its_port_at_once() {
    let (server, _) = listen("127.0.0.1:0");
    let addr = server.local_addr();
    server.close();
    let (again, _) = listen(&addr.to_string());
    assert_eq!(again.local_addr(), addr);
    drop(server);
}

#[test]
fn datagrams_are_counted_and_limited_to_the_path() {
    let (server, s_in) = listen("127.0.0.1:0");
    let (client, _c_in) = connect(server.local_addr(), |_| {});
    wait_until("connected", || client.metrics().peers == 1);
    for i in 0..100u8 {
        assert_eq!(client.publish_datagram(4, &[i; 100], None).unwrap(), Sent::Accepted);
    }
    wait_until("datagrams", || {
        let m = server.metrics();
        m.datagrams_received + m.datagrams_lost == 100
    });
    assert!(s_in.bodies(4).len() >= 90);
    // Above what path MTU discovery may reach (16 KiB).
    assert!(matches!(client.publish_datagram(0, &[0; 20_000], None), Err(PublishError::TooLarge { .. })));
    assert_eq!(client.metrics().datagrams_sent, 100);
}

#[test]
fn a_restarted_listener_gets_everything_the_old_one_had_not_handed_over() {
    let (server, s_in) = listen("127.0.0.1:0");
    let addr = server.local_addr();
    let (client, c_in) = connect(addr, |_| {});
    for i in 0..100u32 {
        client.publish(0, &i.to_le_bytes()).unwrap();
    }
    wait_until("delivery", || s_in.messages.lock().unwrap().len() == 100);
    // The application read the first 40 only; then the server dies.
    *s_in.read.lock().unwrap() = 40;
    wait_until("the ack of 40", || client.metrics().unacked_bytes == 60 * 5);
    drop(server);
    wait_until("the client to notice", || c_in.statuses().iter().any(|s| matches!(s, Status::Reconnecting { .. })));
    for i in 100..150u32 {
        client.publish(0, &i.to_le_bytes()).unwrap();
    }
    // The old socket closes once its connections have drained (a few PTOs).
    let t = Instant::now();
    let (server2, s2_in) = loop {
        let inbox = Arc::new(TestInbox::default());
        match QuicProtocol::start(QuicConfig::new(Side::Listen, addr), inbox.clone()) {
            Ok(quic) => break (quic, inbox),
            Err(e) if t.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    };
    eprintln!("rebound after {:?}", t.elapsed());
    wait_until("replay", || s2_in.messages.lock().unwrap().len() == 110);
    let got: Vec<u32> = s2_in.bodies(0).iter().map(|b| u32::from_le_bytes(b[..4].try_into().unwrap())).collect();
    assert_eq!(got, (40..150).collect::<Vec<_>>(), "the unread 60, then the new 50, once each, in order");
    assert_eq!(client.metrics().reconnects, 1);
    let last = c_in.events.lock().unwrap().iter().rev().find(|e| e.error.is_some()).cloned().unwrap();
    assert_eq!(last.error.as_ref().map(|e| e.code()), Some(ErrorCode::ConnectionLost), "{last:?}");
    drop(server2);
}

#[test]
fn a_peer_that_does_not_read_is_disconnected_and_the_others_go_on() {
    let (server, _s_in) = listen_with("127.0.0.1:0", |c| {
        c.send_queue_bytes = 4 << 20;
        // Long enough for the fast peer to acknowledge even on a loaded machine.
        c.overflow = zerohop_quic::Overflow::Block(Duration::from_secs(2));
    });
    let addr = server.local_addr();
    // One client reads nothing (its inbox takes 10 messages), the other reads all.
    let slow_inbox = Arc::new(TestInbox { room: Some(10), ..TestInbox::default() });
    let mut slow_cfg = QuicConfig::new(Side::Connect { server_name: "localhost".into() }, addr);
    slow_cfg.backoff.max_attempts = Some(0);
    let slow = QuicProtocol::start(slow_cfg, slow_inbox.clone()).unwrap();
    let fast_in = Arc::new(TestInbox { eager: true, ..TestInbox::default() });
    let fast_cfg = QuicConfig::new(Side::Connect { server_name: "localhost".into() }, addr);
    let fast = QuicProtocol::start(fast_cfg, fast_in.clone()).unwrap();
    wait_until("both connected", || server.metrics().peers == 2);
    let big = vec![1u8; 256 << 10];
    let mut accepted = 0;
    for _ in 0..200 {
        if server.publish(0, &big).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 200, "the publish never fails for the fast peer");
    wait_until("the slow one to be dropped", || server.metrics().slow_consumers == 1);
    wait_until("the fast one to get all", || fast_in.bodies(0).len() == 200);
    wait_until("the slow one to hear why", || {
        slow_inbox
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.error.as_ref().is_some_and(|e| e.code() == ErrorCode::SlowConsumer))
    });
    drop((fast, slow));
}

#[test]
fn a_second_node_of_this_process_resumes_with_0rtt() {
    let (server, s_in) = listen("127.0.0.1:0");
    let addr = server.local_addr();
    let (first, _) = connect(addr, |_| {});
    first.publish(0, b"one").unwrap();
    wait_until("delivery", || s_in.messages.lock().unwrap().len() == 1);
    s_in.read_all();
    assert!(first.linger(Duration::from_secs(5)));
    assert!(!first.metrics().last_zero_rtt);
    first.close();
    let (second, _) = connect(addr, |_| {});
    second.publish(0, b"two").unwrap();
    wait_until("delivery", || s_in.messages.lock().unwrap().len() == 2);
    wait_until("the handshake", || second.metrics().zero_rtt_connections == 1);
    assert!(second.metrics().last_zero_rtt);
}

/// The loss test: a proxy of our own between client and server drops, reorders,
/// duplicates and delays datagrams (seeded, so a failure replays); every channel still
/// delivers everything once, in order, both ways.
#[test]
fn channels_deliver_everything_in_order_through_loss_reordering_duplication_and_delay() {
    let (server, s_in) = listen("127.0.0.1:0");
    let spec =
        zerohop_proto::chaos::ChaosSpec::parse("loss:0.1,reorder:0.05,reorder_by:1ms,dup:0.02,delay:2ms").unwrap();
    let seed = 11;
    let proxy =
        zerohop_test_support::chaos::ChaosProxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr(), spec, seed)
            .unwrap();
    let (client, c_in) = connect(proxy.local_addr(), |_| {});
    let message = |i: u32| i.to_le_bytes().repeat(1 + (i as usize % 300));
    for i in 0..3000u32 {
        client.publish((i % 3) as u16, &message(i)).unwrap();
    }
    wait_until("the server to read everything", || {
        s_in.read_all();
        s_in.messages.lock().unwrap().len() == 3000
    });
    for i in 0..300u32 {
        server.publish(1, &message(i)).unwrap();
    }
    wait_until("the client to read everything", || {
        c_in.read_all();
        c_in.messages.lock().unwrap().len() == 300
    });
    for ch in 0..3u16 {
        let want: Vec<Vec<u8>> = (0..3000u32).filter(|i| (i % 3) as u16 == ch).map(message).collect();
        assert_eq!(s_in.bodies(ch), want, "channel {ch}, seed {seed}");
    }
    assert_eq!(c_in.bodies(1), (0..300u32).map(message).collect::<Vec<_>>());
    wait_until("every ack", || client.metrics().unacked_bytes == 0 && server.metrics().unacked_bytes == 0);
    let stats = proxy.stop();
    assert!(stats.dropped > 0 && stats.duplicated > 0, "the proxy did interfere: {stats:?}");
    assert!(client.metrics().packets_lost > 0 || server.metrics().packets_lost > 0);
}

/// The first bytes of a stream from session 42.
fn stream_header(kind: StreamKind, channel: u16) -> Vec<u8> {
    let mut w = Vec::new();
    StreamHeader { kind, session: 42, channel, first_seq: 0, class: 0 }.encode(&mut w);
    w
}

/// A raw QUIC client of the listener (not zerohop's), to send what a broken or
/// hostile peer would.
async fn raw_client(addr: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    use quinn::crypto::rustls::QuicClientConfig;
    let tls = zerohop_quic::tls::client_config(&zerohop_quic::Trust::DangerouslyAcceptAnyServer, None).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap())));
    let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
    // Say hello like a zerohop hub does, so the listener takes it for a peer.
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&stream_header(StreamKind::Hello, 0)).await.unwrap();
    s.finish().unwrap();
    (ep, conn)
}

/// The application error code the listener closed `conn` with.
async fn closed_with(conn: &quinn::Connection) -> u64 {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other}"),
    }
}

#[test]
fn garbage_and_oversize_messages_close_that_peer_only() {
    let (server, s_in) = listen_with("127.0.0.1:0", |c| c.max_message = 1000);
    let addr = server.local_addr();
    let (good, _) = connect(addr, |_| {});
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // What each raw client writes on a stream, and the code its connection ends with.
        let too_long = {
            let mut w = stream_header(StreamKind::Channel, 0);
            // (A channel's stream is tagged: the length shifted, the low bit clear for a message.)
            zerohop_proto::stream::encode_prefix(1001 << 1, &mut w);
            w
        };
        let cases: [(&str, Vec<u8>, u64); 3] = [
            ("not a zerohop stream", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 1),
            ("a message above the limit", too_long, 2),
            ("a channel out of range", stream_header(StreamKind::Channel, 999), 1),
        ];
        for (what, bytes, code) in cases {
            let (_ep, conn) = raw_client(addr).await;
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            assert_eq!(closed_with(&conn).await, code, "{what}");
        }
        // Streams beyond the limit wait for credit instead of piling up on the listener.
        let (_ep, conn) = raw_client(addr).await;
        let mut open = Vec::new();
        for _ in 0..1000 {
            match tokio::time::timeout(Duration::from_millis(50), conn.open_bi()).await {
                Ok(Ok(pair)) => open.push(pair),
                _ => break,
            }
        }
        assert_eq!(open.len(), 16 + 256, "the listener grants its stream limit at once, no more");
    });
    assert_eq!(server.metrics().protocol_violations, 3);
    // The listener and its well-behaved peer go on.
    good.publish(0, b"still here").unwrap();
    wait_until("the good peer's message", || s_in.bodies(0).contains(&b"still here".to_vec()));
}
