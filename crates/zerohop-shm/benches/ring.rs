//! Rust-level ring benchmarks, across real processes: the floor under the
//! TypeScript numbers, so the cost of the JavaScript boundary is visible.
//!
//! - `rtt`: ping-pong of 64-byte messages between two processes pinned to CPUs 0 and
//!   1, both spinning on `try_recv`; p50/p99/p99.9 per run.
//! - `spsc` / `spmc3`: one publisher streams 64-byte messages with the `block` policy
//!   (lossless) to 1 or 3 subscriber processes; msg/s as seen by the slowest receiver.
//! - `mpsc3`: three publisher processes stream into one ring at once (`block`), one
//!   subscriber reads them all; msg/s of all three together as the subscriber saw
//!   it, to set beside `spsc`'s one publisher.
//! - `packed`: as `spsc`, the publisher publishing 64 messages at a time
//!   (`publish_packed`, what TypeScript's `publishPacked` calls): the most the ring
//!   carries from one CPU to the other, the ceiling of any receiver in any language.
//!
//! Run with `cargo bench -p zerohop-shm --bench ring`. Each result is one JSON line on
//! stdout (`{"bench":…}`), which `npm run bench` folds into its table. The bench
//! re-executes itself for the peer roles (`ZEROHOP_BENCH_ROLE`).

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use zerohop_shm::{Backpressure, Layout, Publisher, Segment, SegmentOptions, Subscriber};
use zerohop_test_support::bench::{pin, role, spawn_role};

const RTT_ROUNDS: usize = 200_000;
const RTT_WARMUP: usize = 20_000;
const STREAM_MESSAGES: u64 = 20_000_000;
const MSG: usize = 64;

fn main() {
    match role().as_deref() {
        Some("pong") => pong(&arg(1), arg(2).parse().expect("rounds")),
        Some("sink") => sink(&arg(1), arg(2).parse().expect("count")),
        Some("source") => source(&arg(1), arg(2).parse().expect("count")),
        _ => {
            // `cargo bench` passes `--bench`; ignore it and any filter.
            let runs: usize = std::env::var("ZEROHOP_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
            // ZEROHOP_BENCH_ONLY=rtt|spsc|spmc3|mpsc3|packed runs one case.
            let only = std::env::var("ZEROHOP_BENCH_ONLY").unwrap_or_default();
            for run in 1..=runs {
                if only.is_empty() || only == "rtt" {
                    rtt(run);
                }
                if only.is_empty() || only == "spsc" {
                    stream(run, 1, 1);
                }
                if only.is_empty() || only == "spmc3" {
                    stream(run, 3, 1);
                }
                if only.is_empty() || only == "mpsc3" {
                    many_publishers(run, 3);
                }
                if only.is_empty() || only == "packed" {
                    stream(run, 1, 64);
                }
            }
        }
    }
}

fn arg(i: usize) -> String {
    std::env::args().nth(i).expect("missing argument")
}

fn open(name: &str, capacity: u32) -> Arc<Segment> {
    let layout = Layout { slot_size: MSG as u32, capacity, max_subscribers: 8, pool_size: 0 };
    Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: None }).expect("open segment"))
}

fn wait_for_subscribers(seg: &Arc<Segment>, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while zerohop_shm::ring::table::subscriber_count(seg) < n {
        assert!(Instant::now() < deadline, "peers did not attach");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rtt(run: usize) {
    let name = format!("bench-rtt-{}", std::process::id());
    let ping = open(&format!("{name}-ping"), 1024);
    let pong_seg = open(&format!("{name}-pong"), 1024);
    let mut rx = Subscriber::new(pong_seg.clone()).expect("subscriber");
    let mut tx = Publisher::new(ping.clone(), Backpressure::DropOld);
    pin(0);
    let mut peer = spawn_role("pong", &[name.clone(), (RTT_ROUNDS + RTT_WARMUP).to_string()], Stdio::null());
    wait_for_subscribers(&ping, 1);
    let msg = [7u8; MSG];
    let mut buf = Vec::with_capacity(MSG);
    let mut samples = Vec::with_capacity(RTT_ROUNDS);
    for i in 0..RTT_ROUNDS + RTT_WARMUP {
        let t = Instant::now();
        tx.publish(&msg).expect("publish");
        while rx.try_recv(&mut buf).is_none() {
            std::hint::spin_loop();
        }
        if i >= RTT_WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    peer.wait().expect("pong exits");
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
    println!(
        "{{\"bench\":\"rust_rtt_64\",\"run\":{run},\"p50_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"samples\":{}}}",
        p(0.5),
        p(0.99),
        p(0.999),
        samples.len()
    );
}

fn pong(name: &str, rounds: usize) {
    pin(1);
    let ping = open(&format!("{name}-ping"), 1024);
    let pong_seg = open(&format!("{name}-pong"), 1024);
    let mut rx = Subscriber::new(ping).expect("subscriber");
    let mut tx = Publisher::new(pong_seg, Backpressure::DropOld);
    let mut buf = Vec::with_capacity(MSG);
    for _ in 0..rounds {
        while rx.try_recv(&mut buf).is_none() {
            std::hint::spin_loop();
        }
        tx.publish(&buf).expect("publish");
    }
}

/// Streams STREAM_MESSAGES to `subscribers` sinks, `batch` at a time (1: `publish`,
/// more: `publish_packed`).
fn stream(run: usize, subscribers: usize, batch: usize) {
    let name = format!("bench-stream-{}-{subscribers}-{batch}", std::process::id());
    let seg = open(&name, 65536);
    let mut tx = Publisher::new(seg.clone(), Backpressure::Block);
    tx.set_timeout(Duration::from_secs(60));
    pin(0);
    let mut peers: Vec<Child> = (0..subscribers)
        .map(|_| spawn_role("sink", &[name.clone(), STREAM_MESSAGES.to_string()], Stdio::null()))
        .collect();
    wait_for_subscribers(&seg, subscribers as u32);
    let packed = vec![1u8; MSG * batch];
    let t = Instant::now();
    let mut sent = 0;
    while sent < STREAM_MESSAGES {
        sent += if batch == 1 {
            tx.publish(&packed).expect("publish");
            1
        } else {
            tx.publish_packed(&packed, MSG).expect("publish") as u64
        };
    }
    for p in &mut peers {
        assert!(p.wait().expect("sink exits").success());
    }
    let secs = t.elapsed().as_secs_f64();
    let kind = match (subscribers, batch) {
        (1, 1) => "spsc",
        (_, 1) => "spmc3",
        _ => "packed",
    };
    println!(
        "{{\"bench\":\"rust_{kind}_64\",\"run\":{run},\"msgs_per_sec\":{:.0},\"messages\":{sent}}}",
        sent as f64 / secs
    );
}

/// `publishers` processes publish STREAM_MESSAGES between them into one ring, read by
/// this process (pinned to CPU 1, the publishers sharing CPU 0).
fn many_publishers(run: usize, publishers: u64) {
    let name = format!("bench-mpsc-{}-{publishers}", std::process::id());
    let seg = open(&name, 65536);
    let mut rx = Subscriber::new(seg.clone()).expect("subscriber");
    pin(1);
    let each = STREAM_MESSAGES / publishers;
    let mut peers: Vec<Child> =
        (0..publishers).map(|_| spawn_role("source", &[name.clone(), each.to_string()], Stdio::null())).collect();
    let cancel = AtomicBool::new(false);
    let mut buf = Vec::with_capacity(MSG);
    let mut n = 0;
    let mut t = None;
    while n < each * publishers {
        if rx.try_recv(&mut buf).is_some() {
            // From the first message on: the publishers start at once, this one is ready.
            t.get_or_insert_with(Instant::now);
            n += 1;
        } else {
            assert!(rx.wait(Duration::from_micros(50), Some(Duration::from_secs(60)), &cancel), "publishers stalled");
        }
    }
    let secs = t.expect("received").elapsed().as_secs_f64();
    for p in &mut peers {
        assert!(p.wait().expect("source exits").success());
    }
    assert_eq!(rx.stats().lapped, 0, "block policy must not lap");
    println!(
        "{{\"bench\":\"rust_mpsc{publishers}_64\",\"run\":{run},\"msgs_per_sec\":{:.0},\"messages\":{n}}}",
        n as f64 / secs
    );
}

/// One of `many_publishers`' publishers: `count` messages, `block`.
fn source(name: &str, count: u64) {
    pin(0);
    let seg = open(name, 65536);
    wait_for_subscribers(&seg, 1);
    let mut tx = Publisher::new(seg, Backpressure::Block);
    tx.set_timeout(Duration::from_secs(60));
    let msg = [3u8; MSG];
    for _ in 0..count {
        tx.publish(&msg).expect("publish");
    }
}

fn sink(name: &str, count: u64) {
    pin(1);
    let seg = open(name, 65536);
    let mut rx = Subscriber::new(seg).expect("subscriber");
    let cancel = AtomicBool::new(false);
    let mut buf = Vec::with_capacity(MSG);
    let mut n = 0;
    while n < count {
        if rx.try_recv(&mut buf).is_some() {
            n += 1;
        } else {
            rx.wait(Duration::from_micros(50), Some(Duration::from_secs(30)), &cancel);
        }
    }
    assert_eq!(rx.stats().lapped, 0, "block policy must not lap");
}
