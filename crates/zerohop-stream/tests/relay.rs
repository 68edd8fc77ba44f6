//! A relaying listener (`relay: true`) passes what each peer publishes on to every
//! other peer, never back to the one that published it, and receives it itself.

use std::time::{Duration, Instant};

use zerohop_stream::{ReliableOptions, StreamOptions};
use zerohop_transport::{Endpoint, ErrorCode, HubOptions, Transport, Value};

fn open(url: &str, options: StreamOptions) -> Box<dyn Transport> {
    zerohop_stream::open(&Endpoint::parse(url).unwrap(), HubOptions::default().with(options)).unwrap()
}

/// The next message within 2 s, or `None`.
fn next(t: &mut dyn Transport) -> Option<Vec<u8>> {
    zerohop_test_support::next_within(t, Duration::from_secs(2))
}

/// How many peers the relay has.
fn peers(t: &dyn Transport) -> f64 {
    match t.metrics().details.into_iter().find(|(k, _)| *k == "peers") {
        Some((_, Value::Number(n))) => n,
        other => panic!("no peer count: {other:?}"),
    }
}

#[test]
fn a_relay_passes_each_peers_messages_to_the_others() {
    let mut relay = open(
        "tcp://127.0.0.1:0",
        StreamOptions::from(ReliableOptions { listen: true, relay: true, ..Default::default() }),
    );
    let url = format!("tcp://{}", relay.local_addr().unwrap());
    let mut clients: Vec<_> = (0..3).map(|_| open(&url, StreamOptions::default())).collect();
    // The relay passes a message to the peers it has: wait for all three.
    let deadline = Instant::now() + Duration::from_secs(5);
    while peers(&*relay) < 3.0 {
        assert!(Instant::now() < deadline, "the clients did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    for round in 0..50u32 {
        let from = (round % 3) as usize;
        let m = round.to_le_bytes();
        clients[from].publish_on(0, &m).unwrap();
        assert_eq!(next(&mut *relay).unwrap(), m, "the relay receives it too");
        for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != from) {
            assert_eq!(next(&mut **c).unwrap(), m, "client {i} gets client {from}'s message {round}");
        }
    }
    // Never back to its publisher: only the relay's own message comes.
    relay.publish_on(0, b"from the relay").unwrap();
    for c in &mut clients {
        assert_eq!(next(&mut **c).unwrap(), b"from the relay");
    }
}

#[test]
fn relay_needs_listen() {
    let mut options = HubOptions::default();
    options.add_named(zerohop_transport::Options::from_query(&[("relay".to_owned(), "true".to_owned())])).unwrap();
    let e = zerohop_stream::open(&Endpoint::parse("tcp://127.0.0.1:1").unwrap(), options).err().expect("refused");
    assert_eq!(e.code(), ErrorCode::BadOption);
}
