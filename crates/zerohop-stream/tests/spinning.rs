//! A reader that spins on its only connection reads it without epoll (which would cost
//! the sending CPU a callback per packet), and runs its hub's timers while its I/O
//! thread leaves them to it; these check that nothing is missed when the reader stops
//! spinning, when another connection comes while it spins, when its writes wait for
//! room, or when only a timer sends something.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use zerohop_stream::{ReliableOptions, StreamOptions};
use zerohop_transport::{Backpressure, Endpoint, HubOptions, Transport, Value};

fn open(url: &str, listen: bool) -> Box<dyn Transport> {
    let options = HubOptions::default().with(StreamOptions::from(ReliableOptions { listen, ..Default::default() }));
    zerohop_stream::open(&Endpoint::parse(url).unwrap(), options).unwrap()
}

fn client(l: &dyn Transport) -> Box<dyn Transport> {
    open(&format!("tcp://{}", l.local_addr().unwrap()), false)
}

/// Spins on `t` until a message comes (or panics after 10 s).
fn spin_recv(t: &mut dyn Transport) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while t.try_recv(&mut out).unwrap().is_none() {
        assert!(Instant::now() < deadline, "no message while spinning");
    }
    out
}

/// Waits (parked, not spinning) for the next message: it must come within 150 ms, well
/// before anything else (a heartbeat's timeout, a reconnection) would bring it.
fn parked_recv(t: &mut dyn Transport) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_millis(150);
    let mut out = Vec::new();
    loop {
        if t.try_recv(&mut out).unwrap().is_some() {
            return out;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "a parked reader was not woken by what came");
        t.wait_readable(Some(left)).unwrap();
    }
}

/// A hello from `c` to `l`, then both ends spin through a ping-pong long enough for
/// their connections to leave epoll.
fn spin_both(l: &mut dyn Transport, c: &mut dyn Transport) {
    c.publish_on(0, b"hello").unwrap();
    assert_eq!(parked_recv(l), b"hello");
    for i in 0..3000u32 {
        c.publish_on(0, &i.to_le_bytes()).unwrap();
        assert_eq!(spin_recv(l), i.to_le_bytes());
        l.publish_on(0, &i.to_le_bytes()).unwrap();
        assert_eq!(spin_recv(c), i.to_le_bytes());
    }
}

/// Both ends spin through a ping-pong (long enough to leave epoll), then each parks in turn, the other answering from
/// its own thread only once the first waits (or has long stopped spinning).
#[test]
fn a_reader_that_stops_spinning_hears_what_comes_next() {
    let mut l = open("tcp://127.0.0.1:0", true);
    let mut c = client(&*l);
    spin_both(&mut *l, &mut *c);
    // The client parks right after spinning; the listener answers from another thread.
    let (go, went) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        went.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        l.publish_on(0, b"to the parked client").unwrap();
        // Now the listener parks after having spun, and the client answers.
        assert_eq!(parked_recv(&mut *l), b"to the parked listener");
        // And after a pause long enough for its I/O thread to take the socket back.
        assert_eq!(parked_recv(&mut *l), b"after a pause");
        l
    });
    go.send(()).unwrap();
    assert_eq!(parked_recv(&mut *c), b"to the parked client");
    std::thread::sleep(Duration::from_millis(20));
    c.publish_on(0, b"to the parked listener").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.publish_on(0, b"after a pause").unwrap();
    let _l = server.join().unwrap();
}

/// A listener spinning on its only client goes on hearing it, and hears a second client
/// that connects meanwhile, and the first again after it.
#[test]
fn a_listener_spinning_on_one_client_hears_a_second_one() {
    let mut l = open("tcp://127.0.0.1:0", true);
    let mut a = client(&*l);
    for i in 0..3000u32 {
        a.publish_on(0, &i.to_le_bytes()).unwrap();
        assert_eq!(spin_recv(&mut *l), i.to_le_bytes());
    }
    let mut b = client(&*l);
    b.publish_on(0, b"from b").unwrap();
    assert_eq!(spin_recv(&mut *l), b"from b");
    for i in 0..200u32 {
        let (x, y) = if i % 2 == 0 { (&mut a, b"a") } else { (&mut b, b"b") };
        x.publish_on(0, y).unwrap();
        assert_eq!(spin_recv(&mut *l), y);
    }
    drop(b);
    // Down to one client again, and parked: still heard.
    a.publish_on(0, b"a again").unwrap();
    assert_eq!(parked_recv(&mut *l), b"a again");
}

/// A client whose writes blocked (its peer read slowly) and that then only spins on
/// reading still sends the rest as the peer makes room: nobody else waits on its
/// socket's readiness while it spins, so its own polls must notice the room.
#[test]
fn a_spinning_client_sends_what_waited_for_room() {
    const COUNT: u32 = 4096;
    let mut options =
        HubOptions::default().with(StreamOptions::from(ReliableOptions { listen: true, ..Default::default() }));
    (options.capacity, options.slot_size) = (Some(64), Some(4096));
    let mut l = zerohop_stream::open(&Endpoint::parse("tcp://127.0.0.1:0").unwrap(), options).unwrap();
    let url = format!("tcp://{}", l.local_addr().unwrap());
    let options = HubOptions::default()
        .with(StreamOptions::from(ReliableOptions { send_queue_bytes: 64 << 20, ..Default::default() }));
    let mut c = zerohop_stream::open(&Endpoint::parse(&url).unwrap(), options).unwrap();
    spin_both(&mut *l, &mut *c);
    // 16 MiB: more than the listener's ring and both kernels' buffers hold.
    let mut m = vec![0u8; 4096];
    for i in 0..COUNT {
        m[..4].copy_from_slice(&i.to_le_bytes());
        c.publish_on(0, &m).unwrap();
    }
    let server = std::thread::spawn(move || {
        for i in 0..COUNT {
            let got = spin_recv(&mut *l);
            assert_eq!(got[..4], i.to_le_bytes());
        }
        l.publish_on(0, b"all here").unwrap();
        l
    });
    assert_eq!(spin_recv(&mut *c), b"all here");
    let _l = server.join().unwrap();
}

/// The number `name` says in `t`'s metrics.
fn detail(t: &dyn Transport, name: &str) -> f64 {
    match t.metrics().details.into_iter().find(|(k, _)| *k == name) {
        Some((_, Value::Number(n))) => n,
        other => panic!("{name} is not a number in a stream's metrics: {other:?}"),
    }
}

/// A client that spins keeps the timers of its hub running (its I/O thread leaves them
/// to it, and it reads its connection without asking epoll, whose turn would run them):
/// what it read is acknowledged, though far less than an acknowledgement's worth of
/// bytes came, so only the acknowledgement timer sends it.
#[test]
fn a_spinning_client_acknowledges_on_its_own_timers() {
    let mut l = open("tcp://127.0.0.1:0", true);
    let mut c = client(&*l);
    c.publish_on(0, b"hello").unwrap();
    assert_eq!(parked_recv(&mut *l), b"hello");
    // Long enough for the client's I/O thread to see the reader poll, and leave it be.
    let until = Instant::now() + Duration::from_millis(100);
    let mut out = Vec::new();
    while Instant::now() < until {
        l.publish_on(0, b"warm").unwrap();
        spin_recv(&mut *c);
    }
    for i in 0..100u32 {
        l.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(spin_recv(&mut *c), i.to_le_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while detail(&*l, "unackedBytes") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "nothing acknowledged while the client spun: {}",
            detail(&*l, "unackedBytes")
        );
        assert!(c.try_recv(&mut out).unwrap().is_none());
    }
}

/// A sender whose send queue is full waits on the reader's acknowledgement: a reader
/// that has read everything sends it then, not at its next look by the clock (which a
/// reader that spun keeps for itself, and hands back to its I/O thread only some 20 ms
/// after it stops). The client has room again long before that.
#[test]
fn a_reader_that_read_everything_acknowledges_it_at_once() {
    let mut l = open("tcp://127.0.0.1:0", true);
    let url = format!("tcp://{}", l.local_addr().unwrap());
    let mut options = HubOptions::default()
        .with(StreamOptions::from(ReliableOptions { send_queue_bytes: 64 << 10, ..Default::default() }));
    options.backpressure = Some(Backpressure::FailFast);
    let mut c = zerohop_stream::open(&Endpoint::parse(&url).unwrap(), options).unwrap();
    spin_both(&mut *l, &mut *c);
    let m = [7u8; 1024];
    let mut sent = 0;
    while c.publish_on(0, &m).is_ok() {
        sent += 1;
        assert!(sent < 1000, "a 64 KiB queue never filled");
    }
    for _ in 0..sent {
        assert_eq!(spin_recv(&mut *l), m);
    }
    // The listener finds nothing more (and stops there); the client polls until its
    // whole queue is free again (so all of it was acknowledged).
    assert!(l.try_recv(&mut Vec::new()).unwrap().is_none());
    let deadline = Instant::now() + Duration::from_millis(15);
    let mut again = 0;
    loop {
        let _ = c.try_recv(&mut Vec::new()).unwrap(); // reads acknowledgements
        while again < sent && c.publish_on(0, &m).is_ok() {
            again += 1;
        }
        if again == sent {
            break;
        }
        assert!(Instant::now() < deadline, "no acknowledgement from a reader that read everything: {again} of {sent}");
    }
}
