//! A `Bridge` between a shared-memory hub and a NATS subject (a real server, see
//! `zerohop_test_support::nats`), both ways: each message crosses once, and nothing
//! comes back to where it started.

use std::time::Duration;

use zerohop::{Bridge, Direction, Hub, HubOptions, Options};
use zerohop_test_support::nats::NatsServer;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn open_waiting(url: &str) -> Hub {
    let hub = Hub::open(url, HubOptions::default()).unwrap();
    hub.link().unwrap().wait_open().unwrap();
    hub
}

#[test]
fn a_bridge_carries_each_message_once_each_way_and_none_back() {
    let server = NatsServer::start(&[]);
    let shm = format!("shm://bridge-test-{}", std::process::id());
    let remote = server.url("site.feed");
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
    let server = NatsServer::start(&[]);
    let shm = format!("shm://bridge-pattern-{}", std::process::id());
    let e = Bridge::start(&shm, Options::default(), &server.url("a.>"), Options::default(), Direction::Out, None)
        .unwrap_err();
    assert_eq!(e.code(), zerohop::ErrorCode::BadOption);
    let ok = Bridge::start(&shm, Options::default(), &server.url("a.>"), Options::default(), Direction::In, None);
    assert!(ok.is_ok(), "a pattern is fine to receive from");
}
