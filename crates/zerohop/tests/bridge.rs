//! A `Bridge` between a shared-memory hub and a NATS subject (a real server, see
//! `zerohop_test_support::nats`), both ways: each message crosses once, and nothing
//! comes back to where it started.

use std::time::Duration;

use zerohop::{Bridge, Direction, Hub, HubOptions, Options, Value};
use zerohop_test_support::nats::NatsServer;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A NATS server of the test's own, and the URLs of a segment and of a subject on it,
/// both named after `tag`.
fn site(tag: &str) -> (NatsServer, String, String) {
    let server = NatsServer::start(&[]);
    let shm = format!("shm://bridge-{tag}-{}", std::process::id());
    let remote = server.url(&format!("site.{tag}"));
    (server, shm, remote)
}

/// Waits (up to `within`) until `done`.
fn eventually(within: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn open_waiting(url: &str) -> Hub {
    let hub = Hub::open(url, HubOptions::default()).unwrap();
    hub.link().unwrap().wait_open().unwrap();
    hub
}

#[test]
fn a_bridge_carries_each_message_once_each_way_and_none_back() {
    let (_server, shm, remote) = site("feed");
    let mut bridge =
        Bridge::start(&shm, Options::default(), &remote, Options::default(), Direction::Both, None).unwrap();
    let mut local = Hub::open(&shm, HubOptions::default()).unwrap();
    let mut far = open_waiting(&remote);
    let mut out = Vec::new();
    for i in 0..100u32 {
        local.publish(&i.to_le_bytes()).unwrap();
    }
    for i in 0..100u32 {
        assert!(far.recv(&mut out, WAIT).unwrap().is_some(), "message {i} crossed");
        assert_eq!(out, i.to_le_bytes());
    }
    far.publish(b"back").unwrap();
    assert!(local.recv(&mut out, WAIT).unwrap().is_some());
    assert_eq!(out, b"back");
    std::thread::sleep(Duration::from_millis(200));
    assert!(local.try_recv(&mut out).unwrap().is_none(), "nothing came twice or looped");
    assert!(far.try_recv(&mut out).unwrap().is_none(), "nothing came twice or looped");
    let m = bridge.metrics();
    assert_eq!((m.out.forwarded, m.r#in.forwarded, m.out.dropped, m.r#in.dropped), (100, 1, 0, 0));
    bridge.close(Duration::from_secs(1));
}

#[test]
fn a_bridge_refuses_to_publish_on_a_pattern() {
    let (server, shm, _) = site("pattern");
    let e = Bridge::start(&shm, Options::default(), &server.url("a.>"), Options::default(), Direction::Out, None)
        .unwrap_err();
    assert_eq!(e.code(), zerohop::ErrorCode::BadOption);
    let ok = Bridge::start(&shm, Options::default(), &server.url("a.>"), Options::default(), Direction::In, None);
    assert!(ok.is_ok(), "a pattern is fine to receive from");
}

#[test]
fn bridges_in_a_cycle_carry_each_message_round_it_once() {
    // Two bridges between one segment and one subject, with origins of their own: a
    // cycle (what one brings into the segment, the other would take out again, and
    // the first bring back...). What a bridge brought in, no bridge takes out.
    let (_server, shm, remote) = site("cycle");
    let start = |origin: &str| {
        Bridge::start(&shm, Options::default(), &remote, Options::default(), Direction::Both, Some(origin.into()))
            .unwrap()
    };
    let (mut one, mut two) = (start("one"), start("two"));
    let mut local = Hub::open(&shm, HubOptions::default()).unwrap();
    let mut far = open_waiting(&remote);
    for i in 0..5u32 {
        local.publish(&i.to_le_bytes()).unwrap();
    }
    let count = |hub: &mut Hub| {
        let mut out = Vec::new();
        let mut n = 0;
        while hub.recv(&mut out, Some(Duration::from_millis(500))).unwrap().is_some() {
            n += 1;
        }
        n
    };
    assert_eq!(count(&mut far), 10, "each bridge took each message out once");
    assert_eq!(count(&mut local), 10, "each brought the other's copy in once, and took it no further");
    let (m1, m2) = (one.metrics(), two.metrics());
    assert_eq!((m1.out.forwarded, m1.r#in.forwarded, m2.out.forwarded, m2.r#in.forwarded), (5, 5, 5, 5));
    one.close(Duration::from_secs(1));
    two.close(Duration::from_secs(1));
}

#[test]
fn a_bridge_whose_server_is_gone_keeps_what_fits_and_drops_the_rest_counted() {
    let (server, shm, remote) = site("gone");
    let bounded = Options::new(vec![("sendQueueBytes".into(), Value::Number(8192.0))]);
    let mut bridge = Bridge::start(&shm, Options::default(), &remote, bounded, Direction::Out, None).unwrap();
    let mut local = Hub::open(&shm, HubOptions::default()).unwrap();
    drop(server);
    for i in 0..1000u32 {
        local.publish(&[i as u8; 64]).unwrap();
    }
    // The bridge waits for room a while (the server may be back), then gives up on what
    // finds none: every message is kept for the server or counted, none blocks the rest.
    eventually(Duration::from_secs(20), || {
        let m = bridge.metrics();
        m.out.forwarded + m.out.dropped == 1000
    });
    let m = bridge.metrics();
    assert_eq!(m.out.forwarded + m.out.dropped, 1000, "{m:?}");
    assert!(m.out.dropped > 0, "kept what fits in 8 KiB, dropped the rest: {m:?}");
    bridge.close(Duration::ZERO);
}

#[test]
fn a_bridge_passes_a_messages_time_to_live_on() {
    let (_server, shm, remote) = site("ttl");
    let mut bridge =
        Bridge::start(&shm, Options::default(), &remote, Options::default(), Direction::Out, None).unwrap();
    let mut far = open_waiting(&remote);
    let mut stale = Hub::open_named(&shm, Options::new(vec![("ttlMs".into(), Value::Number(150.0))])).unwrap();
    let mut fresh = Hub::open(&shm, HubOptions::default()).unwrap();
    for i in 0..3u8 {
        stale.publish(&[i]).unwrap();
    }
    eventually(Duration::from_secs(10), || bridge.metrics().out.forwarded >= 3);
    // Read only once their time to live ran out, on the far side of NATS.
    std::thread::sleep(Duration::from_millis(300));
    fresh.publish(b"fresh").unwrap();
    let mut out = Vec::new();
    assert!(far.recv(&mut out, WAIT).unwrap().is_some());
    assert_eq!(out, b"fresh", "what expired on its way was passed over");
    assert_eq!(far.metrics().expired, 3);
    bridge.close(Duration::from_secs(1));
}
