//! `kcp://` end to end in one process: a listener and its peers over loopback, through
//! the chaos proxy, and against datagrams that are not KCP or not ours.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use zerohop_kcp::KcpOptions;
use zerohop_proto::chaos::ChaosSpec;
use zerohop_proto::kcp::Mode;
use zerohop_stream::ReliableOptions;
use zerohop_test_support::chaos::ChaosProxy;
use zerohop_test_support::next_within;
use zerohop_transport::{Endpoint, HubOptions, Transport, Value};

fn open(url: &str, options: KcpOptions) -> Box<dyn Transport> {
    zerohop_kcp::open(&Endpoint::parse(url).unwrap(), HubOptions::default().with(options)).unwrap()
}

fn listening(options: KcpOptions) -> (Box<dyn Transport>, SocketAddr) {
    let options = KcpOptions { reliable: ReliableOptions { listen: true, ..options.reliable }, ..options };
    let l = open("kcp://127.0.0.1:0", options);
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn next(t: &mut dyn Transport) -> Vec<u8> {
    next_within(t, Duration::from_secs(10)).expect("a message within 10 s")
}

/// A number among the hub's metrics.
fn kcp_metric(t: &dyn Transport, name: &str) -> f64 {
    match t.metrics().details.into_iter().find(|(k, _)| *k == name) {
        Some((_, Value::Number(n))) => n,
        other => panic!("no {name}: {other:?}"),
    }
}

/// A message of `len` bytes that says which it is.
fn message(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

#[test]
fn a_listener_and_its_peer_exchange_messages_of_every_size_both_ways() {
    for stream in [false, true] {
        let kcp = zerohop_proto::kcp::KcpConfig { stream, ..Mode::Fast.config() };
        let (mut l, addr) = listening(KcpOptions { kcp, ..Default::default() });
        let mut c = open(&format!("kcp://{addr}"), KcpOptions { kcp, ..Default::default() });
        for (i, len) in [1usize, 100, 1376, 1377, 5_000, 200_000, 1 << 20].into_iter().enumerate() {
            let m = message(i as u32, len);
            c.publish_on(0, &m).unwrap();
            assert!(next(&mut *l) == m, "{len} bytes to the listener (stream {stream})");
            l.publish_on(0, &m).unwrap();
            assert!(next(&mut *c) == m, "{len} bytes back (stream {stream})");
        }
        assert_eq!(kcp_metric(&*l, "sessions"), 1.0);
    }
}

#[test]
fn every_mode_delivers_everything_once_and_in_order_through_loss_reordering_and_duplication() {
    for (name, mode) in Mode::ALL {
        let options = KcpOptions { mode, kcp: mode.config(), ..Default::default() };
        let (mut l, addr) = listening(options.clone());
        let spec = ChaosSpec::parse("loss:0.1,reorder:0.05,dup:0.02,delay:1ms").unwrap();
        let proxy = ChaosProxy::start("127.0.0.1:0".parse().unwrap(), addr, spec, 11).unwrap();
        let mut c = open(&format!("kcp://{}", proxy.local_addr()), options);
        const N: u32 = 300;
        for i in 0..N {
            c.publish_on(0, &message(i, 200 + (i as usize % 3) * 1000)).unwrap();
        }
        for i in 0..N {
            let got = next_within(&mut *l, Duration::from_secs(30)).unwrap_or_else(|| panic!("{name}: message {i}"));
            assert!(got == message(i, 200 + (i as usize % 3) * 1000), "{name}: message {i} in order");
        }
        assert!(next_within(&mut *l, Duration::from_millis(100)).is_none(), "{name}: nothing twice");
        let stats = proxy.stop();
        assert!(stats.dropped > 0 && stats.duplicated > 0, "{name}: the proxy did its work: {stats:?}");
        assert!(kcp_metric(&*c, "retransmits") > 0.0, "{name}: losses were repaired by resending");
    }
}

#[test]
fn datagrams_that_are_not_ours_are_counted_and_dropped() {
    let (mut l, addr) = listening(KcpOptions::default());
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(b"short", addr).unwrap();
    stranger.send_to(&[0xAB; 300], addr).unwrap();
    // A well-formed KCP data segment of an unknown conversation, not a hello.
    let mut push = Vec::new();
    let mut k = zerohop_proto::kcp::Kcp::new(77);
    k.set_nodelay(1, 10, 2, true);
    k.send(b"not a hello").unwrap();
    k.update(0, &mut |d: &[u8]| push.push(d.to_vec()));
    assert_eq!(push.len(), 1);
    for d in &push {
        stranger.send_to(d, addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while kcp_metric(&*l, "badDatagrams") + kcp_metric(&*l, "unknownConversation") < 3.0 {
        assert!(Instant::now() < deadline, "not counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(kcp_metric(&*l, "sessions"), 0.0, "no conversation for strangers");
    // The listener goes on serving peers.
    let mut c = open(&format!("kcp://{addr}"), KcpOptions::default());
    c.publish_on(0, b"still here").unwrap();
    assert_eq!(next(&mut *l), b"still here");
}

#[test]
fn a_listener_keeps_at_most_max_peers() {
    let (mut l, addr) = listening(KcpOptions { max_peers: 1, ..Default::default() });
    let url = format!("kcp://{addr}");
    let mut first = open(&url, KcpOptions::default());
    first.publish_on(0, b"first").unwrap();
    assert_eq!(next(&mut *l), b"first");
    let mut second = open(&url, KcpOptions::default());
    second.publish_on(0, b"second").unwrap();
    assert!(next_within(&mut *l, Duration::from_millis(300)).is_none(), "refused");
    assert!(kcp_metric(&*l, "refusedPeers") >= 1.0);
    drop(first); // says goodbye: its conversation ends at once, and the second gets in
    assert_eq!(next(&mut *l), b"second");
}

#[test]
fn a_peer_reconnects_to_a_restarted_listener_and_what_it_sent_arrives() {
    let fast = || KcpOptions {
        reliable: ReliableOptions {
            heartbeat: Some(Duration::from_millis(50)),
            reconnect: zerohop_proto::lifecycle::Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let (l, addr) = listening(fast());
    let mut c = open(&format!("kcp://{addr}"), fast());
    drop(l); // gone without reading anything
    for i in 0..20 {
        c.publish_on(0, &message(i, 100)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300)); // the peer notices
    let mut l = open(
        &format!("kcp://{addr}"),
        KcpOptions { reliable: ReliableOptions { listen: true, ..fast().reliable }, ..fast() },
    );
    for i in 0..20 {
        assert_eq!(next(&mut *l), message(i, 100), "message {i} after the restart");
    }
}

#[test]
fn a_conversation_that_goes_silent_is_reaped_after_idle_timeout() {
    let quiet = ReliableOptions { heartbeat: None, ..Default::default() };
    let options = KcpOptions { idle_timeout: Some(Duration::from_millis(200)), reliable: quiet, ..Default::default() };
    let (l, addr) = listening(options);
    // A peer that says hello (a conversation's first segment, our records' first bytes)
    // and then nothing more, not even an acknowledgement.
    let mut hello = zerohop_proto::records::RecordWriter::new();
    hello.control(&zerohop_proto::records::Control::Hello {
        session: 7,
        queue_limit: 1 << 20,
        queue_messages: 1 << 10,
        group: b"",
    });
    let plan = hello.plan(&mut []).unwrap();
    let bytes: Vec<u8> = hello.slices(&plan, &[]).concat();
    let mut k = zerohop_proto::kcp::Kcp::with_config(99, &Mode::Fastest.config()).unwrap();
    k.send(&bytes).unwrap();
    let mut out = Vec::new();
    k.update(0, &mut |d: &[u8]| out.push(d.to_vec()));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &out {
        stranger.send_to(d, addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while kcp_metric(&*l, "peers") < 1.0 {
        assert!(Instant::now() < deadline, "the hello made no peer");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(kcp_metric(&*l, "sessions"), 1.0);
    while kcp_metric(&*l, "sessions") > 0.0 {
        assert!(Instant::now() < deadline, "the silent conversation was kept");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kcp_metric(&*l, "deadLinks"), 1.0);
    assert_eq!(kcp_metric(&*l, "peers"), 0.0, "its peer is disconnected");
}
