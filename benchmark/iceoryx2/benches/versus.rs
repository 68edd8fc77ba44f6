//! zerohop's shared-memory ring against iceoryx2's publish-subscribe (its `ipc`
//! service), side by side in one run, across real processes pinned to CPUs 0 and 1:
//!
//! - `rtt`: 64-byte ping-pong, both sides spinning. One peer echoes both (it polls the
//!   two in turn, so each pays the same for the other), and the pinger gives each
//!   TURN round trips at a time, so that both see the same moments of the machine;
//!   p50/p99/p99.9 of each.
//! - `stream`: one publisher streams 64-byte messages to one subscriber in another
//!   process, losing none (zerohop's `block`; iceoryx2's publisher blocks while the
//!   subscriber's buffer is full), both with 4096 slots; msg/s as the subscriber saw it.
//!   Who goes first alternates from run to run.
//!
//! Both copy a message in and out (zerohop's `publish` and `try_recv`, iceoryx2's
//! `send_copy` and a copy of the sample's payload). Each result is one JSON line on
//! stdout (`{"bench":…}`), which `npm run bench` folds into its table.
//!
//! `cargo bench --manifest-path benchmark/iceoryx2/Cargo.toml`; `ZEROHOP_BENCH_RUNS`
//! (default 3). The bench re-executes itself for the peers (`ZEROHOP_BENCH_ROLE`).

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use zerohop_shm::{Backpressure, Layout, Publisher, Segment, SegmentOptions, Subscriber};
use zerohop_test_support::bench::{pin, role, spawn_role};

const MSG: usize = 64;
const RTT_ROUNDS: usize = 100_000;
const RTT_WARMUP: usize = 10_000;
const TURN: usize = 1000;
const STREAM_MESSAGES: u64 = 10_000_000;
const SLOTS: u32 = 4096;

type Message = [u8; MSG];

fn main() {
    set_log_level(LogLevel::Error);
    match role().as_deref() {
        Some("echo") => echo(&arg(1)),
        Some("zerohop-sink") => zerohop_sink(&arg(1)),
        Some("iceoryx2-sink") => iceoryx2_sink(&arg(1)),
        _ => {
            let runs: usize = std::env::var("ZEROHOP_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
            for run in 1..=runs {
                rtt(run);
                for zerohop_first in [run % 2 == 1, run % 2 == 0] {
                    if zerohop_first {
                        zerohop_stream(run);
                    } else {
                        iceoryx2_stream(run);
                    }
                }
            }
        }
    }
}

fn arg(i: usize) -> String {
    std::env::args().nth(i).expect("missing argument")
}

fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One side of a ping-pong or stream, as both systems do it.
trait Link {
    fn send(&mut self, msg: &Message);
    /// Copies the next message into `out`, if there is one.
    fn try_recv(&mut self, out: &mut Message) -> bool;
}

struct Zerohop {
    tx: Publisher,
    rx: Subscriber,
    buf: Vec<u8>,
    /// The segment `tx` publishes into.
    out: Arc<Segment>,
}

fn zerohop_segment(name: &str) -> Arc<Segment> {
    let layout = Layout { slot_size: MSG as u32, capacity: SLOTS, max_subscribers: 8, pool_size: 0 };
    Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: None }).expect("open segment"))
}

impl Zerohop {
    /// Publishes into `<name>-<to>`, reads `<name>-<from>`.
    fn new(name: &str, to: &str, from: &str, policy: Backpressure) -> Zerohop {
        let out = zerohop_segment(&format!("{name}-{to}"));
        let mut tx = Publisher::new(out.clone(), policy);
        tx.set_timeout(Duration::from_secs(60));
        let rx = Subscriber::new(zerohop_segment(&format!("{name}-{from}"))).expect("subscriber");
        Zerohop { tx, rx, buf: Vec::with_capacity(MSG), out }
    }

    /// Whether the segment this side publishes into has `n` subscribers.
    fn subscribers(&self, n: u32) -> bool {
        zerohop_shm::ring::table::subscriber_count(&self.out) >= n
    }
}

impl Link for Zerohop {
    fn send(&mut self, msg: &Message) {
        self.tx.publish(msg).expect("publish");
    }

    fn try_recv(&mut self, out: &mut Message) -> bool {
        if self.rx.try_recv(&mut self.buf).is_none() {
            return false;
        }
        out.copy_from_slice(&self.buf);
        true
    }
}

struct Iceoryx2 {
    tx: iceoryx2::port::publisher::Publisher<ipc::Service, Message, ()>,
    rx: iceoryx2::port::subscriber::Subscriber<ipc::Service, Message, ()>,
    /// The services, kept open.
    _services: [iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Message, ()>; 2],
}

impl Iceoryx2 {
    /// Publishes into `<name>-<to>`, reads `<name>-<from>`; `lossless`: the publisher
    /// waits while the subscriber's buffer is full (else the oldest is overwritten).
    fn new(node: &Node<ipc::Service>, name: &str, to: &str, from: &str, lossless: bool) -> Iceoryx2 {
        let service = |side: &str| {
            node.service_builder(&ServiceName::new(&format!("{name}-{side}")).expect("service name"))
                .publish_subscribe::<Message>()
                .subscriber_max_buffer_size(SLOTS as usize)
                .history_size(0)
                .enable_safe_overflow(!lossless)
                .open_or_create()
                .expect("service")
        };
        let (out, inn) = (service(to), service(from));
        let strategy =
            if lossless { BackpressureStrategy::RetryUntilDelivered } else { BackpressureStrategy::DiscardData };
        let tx = out.publisher_builder().backpressure_strategy(strategy).create().expect("publisher");
        let rx = inn.subscriber_builder().create().expect("subscriber");
        Iceoryx2 { tx, rx, _services: [out, inn] }
    }

    /// Whether the service this side publishes into has `n` subscribers.
    fn subscribers(&self, n: usize) -> bool {
        self._services[0].dynamic_config().number_of_subscribers() >= n
    }
}

impl Link for Iceoryx2 {
    fn send(&mut self, msg: &Message) {
        self.tx.send_copy(*msg).expect("send");
    }

    fn try_recv(&mut self, out: &mut Message) -> bool {
        match self.rx.receive().expect("receive") {
            Some(sample) => {
                out.copy_from_slice(&*sample);
                true
            }
            None => false,
        }
    }
}

fn node() -> Node<ipc::Service> {
    NodeBuilder::new().create::<ipc::Service>().expect("iceoryx2 node")
}

fn rtt(run: usize) {
    let name = format!("bench-versus-{}", std::process::id());
    let node = node();
    let mut zh = Zerohop::new(&name, "ping", "pong", Backpressure::DropOld);
    let mut ice = Iceoryx2::new(&node, &name, "ping", "pong", false);
    pin(0);
    let mut peer = spawn_role("echo", std::slice::from_ref(&name), Stdio::null());
    until("the echo did not attach", || zh.subscribers(1) && ice.subscribers(1));
    handshake(&mut zh);
    handshake(&mut ice);
    let mut samples = [Vec::with_capacity(RTT_ROUNDS), Vec::with_capacity(RTT_ROUNDS)];
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    let mut round_trip = |link: &mut dyn Link| {
        let t = Instant::now();
        link.send(&msg);
        while !link.try_recv(&mut buf) {
            std::hint::spin_loop();
        }
        t.elapsed().as_nanos() as u64
    };
    for _ in 0..RTT_WARMUP {
        round_trip(&mut zh);
        round_trip(&mut ice);
    }
    for turn in 0..RTT_ROUNDS / TURN {
        for k in 0..2 {
            let which = (turn + k) % 2;
            let link: &mut dyn Link = if which == 0 { &mut zh } else { &mut ice };
            for _ in 0..TURN {
                samples[which].push(round_trip(link));
            }
        }
    }
    // A message of one byte's value 0 ends the echo.
    zh.send(&[0u8; MSG]);
    peer.wait().expect("echo exits");
    for (which, mut s) in samples.into_iter().enumerate() {
        s.sort_unstable();
        let p = |q: f64| s[((s.len() as f64 * q) as usize).min(s.len() - 1)] as f64 / 1000.0;
        let bench = if which == 0 { "zerohop_rtt_64" } else { "iceoryx2_rtt_64" };
        println!(
            "{{\"bench\":\"{bench}\",\"run\":{run},\"p50_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"samples\":{}}}",
            p(0.5),
            p(0.99),
            p(0.999),
            s.len()
        );
    }
}

/// Pings until a pong comes back (iceoryx2 connects a publisher to a new subscriber
/// on a later send, so the first may reach nobody), then lets the extra pongs come
/// and drops them.
fn handshake(link: &mut dyn Link) {
    let mut buf = [0u8; MSG];
    'pinging: for _ in 0..1000 {
        link.send(&[9u8; MSG]);
        let deadline = Instant::now() + Duration::from_millis(10);
        while Instant::now() < deadline {
            if link.try_recv(&mut buf) {
                break 'pinging;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    while link.try_recv(&mut buf) {}
}

/// Echoes both systems' pings until zerohop's ping is all zeros.
fn echo(name: &str) {
    pin(1);
    let node = node();
    let mut zh = Zerohop::new(name, "pong", "ping", Backpressure::DropOld);
    let mut ice = Iceoryx2::new(&node, name, "pong", "ping", false);
    let mut buf = [0u8; MSG];
    loop {
        if zh.try_recv(&mut buf) {
            if buf[0] == 0 {
                return;
            }
            zh.send(&buf);
        }
        if ice.try_recv(&mut buf) {
            ice.send(&buf);
        }
    }
}

fn zerohop_stream(run: usize) {
    let name = format!("bench-versus-stream-{}", std::process::id());
    let mut zh = Zerohop::new(&name, "data", "unused", Backpressure::Block);
    pin(0);
    let peer = spawn_role("zerohop-sink", std::slice::from_ref(&name), Stdio::piped());
    until("the sink did not attach", || zh.subscribers(1));
    stream_to(&mut zh, peer, "zerohop_stream_64", run);
}

fn iceoryx2_stream(run: usize) {
    let name = format!("bench-versus-stream-{}", std::process::id());
    let node = node();
    let mut ice = Iceoryx2::new(&node, &name, "data", "unused", true);
    pin(0);
    let peer = spawn_role("iceoryx2-sink", std::slice::from_ref(&name), Stdio::piped());
    until("the sink did not attach", || ice.subscribers(1));
    stream_to(&mut ice, peer, "iceoryx2_stream_64", run);
}

/// Streams to `peer`, a sink that counts the messages and prints its rate: first a
/// message of 2s it starts at (iceoryx2 connects a publisher to a new subscriber on a
/// later send: the pause lets it), then STREAM_MESSAGES.
fn stream_to(link: &mut dyn Link, peer: Child, bench: &str, run: usize) {
    link.send(&[2u8; MSG]);
    std::thread::sleep(Duration::from_millis(20));
    let msg = [1u8; MSG];
    for _ in 0..STREAM_MESSAGES {
        link.send(&msg);
    }
    let out = peer.wait_with_output().expect("sink exits");
    assert!(out.status.success(), "the sink failed");
    let rate = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("{{\"bench\":\"{bench}\",\"run\":{run},\"msgs_per_sec\":{rate},\"messages\":{STREAM_MESSAGES}}}");
}

/// Counts STREAM_MESSAGES after the first message of 2s; prints msg/s on stdout.
fn sink(link: &mut dyn Link) {
    let mut buf = [0u8; MSG];
    while !(link.try_recv(&mut buf) && buf[0] == 2) {
        std::hint::spin_loop();
    }
    let mut n = 0;
    let mut start = Instant::now();
    while n < STREAM_MESSAGES {
        if link.try_recv(&mut buf) {
            if buf[0] != 1 {
                continue;
            }
            if n == 0 {
                start = Instant::now();
            }
            n += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    println!("{:.0}", STREAM_MESSAGES as f64 / start.elapsed().as_secs_f64());
}

fn zerohop_sink(name: &str) {
    pin(1);
    let mut zh = Zerohop::new(name, "unused", "data", Backpressure::DropOld);
    sink(&mut zh);
}

fn iceoryx2_sink(name: &str) {
    pin(1);
    let node = node();
    let mut ice = Iceoryx2::new(&node, name, "unused", "data", true);
    sink(&mut ice);
}
