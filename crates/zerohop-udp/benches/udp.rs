//! UDP benchmarks across processes on loopback, this process on CPU 0 and the peer on
//! CPU 1. Each result is one JSON line (`{"bench":…}`) that `npm run bench` folds into
//! its table. Run with `cargo bench -p zerohop-udp --bench udp`.
//!
//! - `udp_rtt_std`: ping-pong of 64 bytes with plain blocking `std::net::UdpSocket`s,
//!   the floor a socket can do (what sockperf measures);
//! - `udp_rtt_{recvmmsg,io_uring}`: the same through `UdpPipeline` (framing, packing,
//!   sequence accounting), both sides spinning on `poll_recv`;
//! - `udp_stream_{recvmmsg,io_uring}`: one-way 64-byte messages as fast as the sender
//!   goes (packed, flushed every 32, and waiting where the receiver's window is full),
//!   as received, with what was lost.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zerohop_udp::group::pin_to as pin;
use zerohop_udp::{PipelineConfig, PublishError, UdpPipeline, UringMode};

const ROUNDS: usize = 50_000;
const WARMUP: usize = 5_000;
const STREAM: u64 = 2_000_000;

fn main() {
    match std::env::var("ZEROHOP_BENCH_ROLE").as_deref() {
        Ok("std-pong") => std_pong(),
        Ok("pong") => pong(mode(&arg(1)), arg(2).parse().expect("ping address")),
        Ok("sink") => sink(mode(&arg(1))),
        _ => {
            let runs: usize = std::env::var("ZEROHOP_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
            pin(0);
            for run in 1..=runs {
                rtt_std(run);
                for m in ["recvmmsg", "io_uring"] {
                    rtt(run, m);
                }
                for m in ["recvmmsg", "io_uring"] {
                    stream(run, m);
                }
            }
        }
    }
}

fn arg(i: usize) -> String {
    std::env::args().nth(i).expect("argument")
}

fn mode(name: &str) -> UringMode {
    if name == "io_uring" { UringMode::Force } else { UringMode::Off }
}

type Lines = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Starts the peer role; it prints its address on its first line, results later.
fn peer(role: &str, args: &[&str]) -> (Child, SocketAddr, Lines) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("ZEROHOP_BENCH_ROLE", role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let addr = lines.next().expect("peer address line").unwrap().trim().parse().expect("peer address");
    (child, addr, lines)
}

fn report_rtt(name: &str, run: usize, mut samples: Vec<u64>) {
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
    println!(
        "{{\"bench\":\"{name}\",\"run\":{run},\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2}}}",
        p(0.5),
        p(0.99),
        p(0.999)
    );
}

fn rtt_std(run: usize) {
    let (mut child, pong, _) = peer("std-pong", &[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(pong).unwrap();
    let msg = [7u8; 64];
    let mut buf = [0u8; 128];
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + WARMUP {
        let t = Instant::now();
        s.send(&msg).unwrap();
        s.recv(&mut buf).unwrap();
        if i >= WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    s.send(b"").unwrap(); // tells the pong to stop
    child.wait().unwrap();
    report_rtt("udp_rtt_std", run, samples);
}

fn std_pong() {
    pin(1);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    println!("{}", s.local_addr().unwrap());
    let mut buf = [0u8; 128];
    loop {
        let (n, from) = s.recv_from(&mut buf).unwrap();
        if n == 0 {
            return;
        }
        s.send_to(&buf[..n], from).unwrap();
    }
}

fn endpoint(mode: UringMode, peers: Vec<SocketAddr>) -> UdpPipeline {
    let config = PipelineConfig { io_uring: mode, ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), peers) };
    UdpPipeline::bind(config).unwrap()
}

fn rtt(run: usize, mode_name: &str) {
    let mut ep = endpoint(mode(mode_name), vec![]);
    let me = ep.local_addr().unwrap().to_string();
    let (mut child, pong, _) = peer("pong", &[mode_name, &me]);
    ep.set_peers(vec![pong]).unwrap();
    let msg = [7u8; 64];
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + WARMUP {
        let t = Instant::now();
        ep.publish(&msg).unwrap();
        ep.flush().unwrap();
        let mut got = 0;
        while got == 0 {
            ep.poll_recv(|_| got += 1).unwrap();
        }
        if i >= WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    ep.publish(b"stop").unwrap();
    ep.flush().unwrap();
    child.wait().unwrap();
    report_rtt(&format!("udp_rtt_{mode_name}"), run, samples);
}

fn pong(mode: UringMode, ping: SocketAddr) {
    pin(1);
    let mut ep = endpoint(mode, vec![ping]);
    println!("{}", ep.local_addr().unwrap());
    let mut replies: Vec<Vec<u8>> = Vec::new();
    loop {
        ep.poll_recv(|r| replies.push(r.message.to_vec())).unwrap();
        for m in replies.drain(..) {
            if m == b"stop" {
                return;
            }
            ep.publish(&m).unwrap();
            ep.flush().unwrap();
        }
    }
}

fn stream(run: usize, mode_name: &str) {
    let (mut child, sink, mut lines) = peer("sink", &[mode_name]);
    let mut ep = endpoint(UringMode::Off, vec![sink]);
    let msg = [1u8; 64];
    for i in 0..STREAM {
        // A peer's window full (flow control): its next report, read here, opens it.
        while let Err(e) = ep.publish(&msg) {
            assert!(matches!(e, PublishError::Full), "{e}");
            ep.flush().unwrap();
            ep.poll_recv(|_| {}).unwrap();
        }
        if i % 32 == 31 {
            ep.flush().unwrap();
        }
    }
    ep.flush().unwrap();
    let line = lines.next().expect("sink result").unwrap();
    child.wait().unwrap();
    println!("{{\"bench\":\"udp_stream_{mode_name}\",\"run\":{run},{line}}}");
}

fn sink(mode: UringMode) {
    pin(1);
    let mut ep = endpoint(mode, vec![]);
    println!("{}", ep.local_addr().unwrap());
    let mut received = 0u64;
    let mut start = None;
    let mut last = Instant::now();
    // Until the stream stops for 200 ms.
    loop {
        let n = ep.poll_recv(|_| received += 1).unwrap();
        if n > 0 {
            start.get_or_insert_with(Instant::now);
            last = Instant::now();
        } else if start.is_some() && last.elapsed() > Duration::from_millis(200) {
            break;
        }
    }
    let secs = last.duration_since(start.unwrap()).as_secs_f64().max(1e-9);
    let m = ep.metrics();
    println!("\"msgs_per_sec\":{:.0},\"received\":{received},\"lost\":{}", received as f64 / secs, m.lost);
}
