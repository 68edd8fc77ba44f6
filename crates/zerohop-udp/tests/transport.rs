//! What only `udp://` does, at the transport: peers, the flush timer, fragments into the
//! receive ring, flow control against a slow reader, receive threads on one port. The
//! contract every transport shares is crates/zerohop/tests/conformance.rs.

use std::time::{Duration, Instant};

use zerohop_transport::{Endpoint, ErrorCode, HubOptions, Transport, Value};
use zerohop_udp::UdpOptions;
use zerohop_udp::transport::open_udp;

fn open(url: &str, options: HubOptions) -> zerohop_net::NetTransport<zerohop_udp::UdpProtocol> {
    open_udp(&Endpoint::parse(url).unwrap(), &mut options.clone()).unwrap()
}

fn with(udp: UdpOptions) -> HubOptions {
    HubOptions::default().with(udp)
}

fn recv(t: &mut dyn Transport) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    loop {
        if t.try_recv(&mut out).unwrap().is_some() {
            return out;
        }
        assert!(Instant::now() < deadline, "nothing arrived");
        t.wait_readable(Some(Duration::from_millis(50))).unwrap();
    }
}

#[test]
fn a_lone_message_is_flushed_by_the_timer_and_says_who_sent_it_and_when() {
    let mut a = open("udp://127.0.0.1:0", with(UdpOptions { timestamps: true, ..Default::default() }));
    let to = a.local_addr().unwrap().to_string();
    let mut b = open("udp://127.0.0.1:0", with(UdpOptions { peers: vec![to], ..Default::default() }));
    // No flush: the I/O thread's deadline sends it within the interval.
    b.publish_on(0, b"ping").unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let info = loop {
        if let Some(info) = a.try_recv(&mut out).unwrap() {
            break info;
        }
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::yield_now();
    };
    assert_eq!((out.as_slice(), info.from), (&b"ping"[..], b.local_addr()));
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let ts = info.timestamp_ns.expect("a kernel timestamp");
    assert!(ts <= now_ns && now_ns - ts < 10_000_000_000, "{ts} vs {now_ns}");
    assert_eq!(a.metrics().detail("timestamps"), Some(&Value::Bool(true)));
}

#[test]
fn large_messages_are_fragmented_into_the_ring_and_oversize_ones_refused() {
    let big_slots = || HubOptions { slot_size: Some(1 << 20), ..HubOptions::default() };
    let mut rx = open("udp://127.0.0.1:0", big_slots());
    let to = rx.local_addr().unwrap().to_string();
    let mut tx = open("udp://127.0.0.1:0", big_slots().with(UdpOptions { peers: vec![to], ..Default::default() }));
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7) as u8).collect();
    tx.publish_on(0, &big).unwrap();
    assert_eq!(recv(&mut rx), big);
    let err = tx.publish_on(0, &vec![0; (1 << 20) + 1]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
}

#[test]
fn a_slow_reader_of_a_small_ring_loses_nothing_the_socket_buffer_can_hold() {
    let mut rx = open("udp://127.0.0.1:0", HubOptions { capacity: Some(16), ..HubOptions::default() });
    let to = rx.local_addr().unwrap().to_string();
    let mut tx = open("udp://127.0.0.1:0", with(UdpOptions { peers: vec![to], ..Default::default() }));
    for i in 0..3000u32 {
        tx.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    tx.batching().unwrap().flush().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // everything has arrived; the ring is full
    for i in 0..3000u32 {
        assert_eq!(recv(&mut rx), i.to_le_bytes());
    }
    let m = rx.metrics();
    assert_eq!((m.lapped, m.detail("lost")), (0, Some(&Value::Number(0.0))));
}

#[test]
fn two_receive_sockets_share_the_port() {
    let mut rx = open("udp://127.0.0.1:0", with(UdpOptions { receive_threads: 2, ..Default::default() }));
    let to = rx.local_addr().unwrap().to_string();
    let mut senders: Vec<_> = (0..6)
        .map(|_| open("udp://127.0.0.1:0", with(UdpOptions { peers: vec![to.clone()], ..Default::default() })))
        .collect();
    for (i, s) in senders.iter_mut().enumerate() {
        s.publish_on(0, &[i as u8]).unwrap();
        s.batching().unwrap().flush().unwrap();
    }
    let mut got: Vec<u8> = (0..6).map(|_| recv(&mut rx)[0]).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    assert_eq!(rx.metrics().detail("receiveSockets"), Some(&Value::Number(2.0)));
}

#[test]
fn bad_peers_and_urls_are_typed_errors() {
    let open_err = |url: &str, o: HubOptions| open_udp(&Endpoint::parse(url).unwrap(), &mut o.clone()).err().unwrap();
    let nope = with(UdpOptions { peers: vec!["nope".into()], ..Default::default() });
    assert_eq!(open_err("udp://127.0.0.1:0", nope).code(), ErrorCode::BadOption);
    assert_eq!(open_err("udp://239.1.2.3:0", HubOptions::default()).code(), ErrorCode::BadUrl);
    let taken = open("udp://127.0.0.1:0", HubOptions::default());
    let url = format!("udp://{}", taken.local_addr().unwrap());
    assert_eq!(open_err(&url, HubOptions::default()).code(), ErrorCode::BadUrl, "the address is in use");
    assert_eq!(taken.peers().unwrap().set_peers(&["127.0.0.1:x".into()]).unwrap_err().code(), ErrorCode::BadOption);
}
