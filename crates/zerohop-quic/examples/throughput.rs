//! Development aid: one-way throughput between two nodes of this process.
//! `cargo run --release -p zerohop-quic --example throughput -- <size> <count>`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zerohop_net::ring::{Inbound, Sink};
use zerohop_quic::{QuicConfig, QuicProtocol, Side, Trust};
use zerohop_transport::StatusEvent;

#[derive(Default)]
struct Counting {
    messages: AtomicU64,
}

impl Sink for Counting {
    fn deliver(&self, _m: &Inbound<'_>) -> Option<u64> {
        Some(self.messages.fetch_add(1, Ordering::Relaxed))
    }
    fn consumed(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    fn status(&self, _e: StatusEvent) {}
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map_or(65536, |a| a.parse().unwrap());
    let count: u64 = args.next().map_or(5000, |a| a.parse().unwrap());
    let sink = Arc::new(Counting::default());
    let server =
        QuicProtocol::start(QuicConfig::new(Side::Listen, "127.0.0.1:0".parse().unwrap()), sink.clone()).unwrap();
    let mut config = QuicConfig::new(Side::Connect { server_name: "localhost".into() }, server.local_addr());
    config.trust = Trust::DangerouslyAcceptAnyServer;
    let client = QuicProtocol::start(config, Arc::new(Counting::default())).unwrap();
    let message = vec![7u8; size];
    client.publish(0, &message).unwrap();
    while sink.messages.load(Ordering::Relaxed) < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    for _ in 0..count {
        client.publish(0, &message).unwrap();
    }
    let published = start.elapsed();
    while sink.messages.load(Ordering::Relaxed) < count + 1 {
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = start.elapsed();
    let mbps = (size as f64 * count as f64) / took.as_secs_f64() / 1e6;
    println!(
        "{count} × {size} B: published in {published:?}, received in {took:?}: {mbps:.0} MB/s, {:.0} msg/s",
        count as f64 / took.as_secs_f64()
    );
    let (c, s) = (client.metrics(), server.metrics());
    println!(
        "client sent {} B, lost {} packets, rtt {:?}, cwnd {}, mtu {}; server received {} B",
        c.bytes_sent, c.packets_lost, c.rtt, c.cwnd, c.mtu, s.bytes_received
    );
}
