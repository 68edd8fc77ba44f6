//! What a receive ring costs per message on the receiving side, in one thread: a
//! protocol delivering 64-byte messages (with their envelope) in batches of a socket
//! read's worth, and a Rust reader taking them. The write alone is timed apart, since
//! the reader here (a copy out) is not JavaScript's (in place).
//!
//! Run with `cargo bench -p zerohop-net --bench ring`: one JSON line per run on stdout.

use std::hint::black_box;
use std::time::{Duration, Instant};

use zerohop_net::ring::{Deliveries, Inbound, ReceiveRing, RingOptions};
use zerohop_shm::Subscriber;

/// Messages per deliveries: what one 64 KiB read of 64-byte messages holds.
const BATCH: usize = 800;
const BATCHES: usize = 20_000;

fn main() {
    let ring = ReceiveRing::new(RingOptions::for_messages(None, None, 1 << 20, None), false).expect("a ring");
    let mut reader = Subscriber::new(ring.segment().clone()).expect("a reader");
    let from = "127.0.0.1:9".parse().expect("an address");
    let body = [7u8; 64];
    let mut out = Vec::with_capacity(256);
    for run in 0..5 {
        let (start, mut writing) = (Instant::now(), Duration::ZERO);
        for _ in 0..BATCHES {
            let t = Instant::now();
            let mut d = ring.deliveries();
            for _ in 0..BATCH {
                let m = Inbound::message(1, from, 0, &body);
                d.deliver(black_box(&m)).expect("room: the reader keeps up");
            }
            drop(d);
            writing += t.elapsed();
            while reader.try_recv(&mut out).is_some() {}
        }
        let per = |d: Duration| d.as_nanos() as f64 / (BATCHES * BATCH) as f64;
        println!(
            "{{\"bench\":\"receive ring, 64 B\",\"run\":{run},\"writeNs\":{:.1},\"writeAndReadNs\":{:.1}}}",
            per(writing),
            per(start.elapsed())
        );
    }
}
