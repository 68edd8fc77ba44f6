//! Round trips of 64-byte messages through `zerohop::Hub` in Rust, both sides spinning on
//! `try_recv`: the hub's own cost on a stream, without JavaScript (compare
//! `sockperf ping-pong --tcp --nonblocked` for the kernel's, and `npm run bench` for
//! Node's).
//!
//! ```text
//! taskset -c 1 cargo run --release -p zerohop --example stream_rtt -- echo tcp://127.0.0.1:7000 &
//! taskset -c 0 cargo run --release -p zerohop --example stream_rtt -- ping tcp://127.0.0.1:7000 100000
//! ```

use std::time::{Duration, Instant};

use zerohop::Hub;
use zerohop::options::{Options, Value};
use zerohop::status::Status;

fn main() -> zerohop::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, url) = match args.as_slice() {
        [m, u, ..] => (m.as_str(), u.as_str()),
        _ => {
            eprintln!("usage: stream_rtt echo <url> | ping <url> [round trips]");
            std::process::exit(2);
        }
    };
    let mut out = Vec::with_capacity(64);
    if mode == "echo" {
        let mut hub = Hub::open_named(url, Options::new(vec![("listen".into(), Value::Bool(true))]))?;
        println!("{}", hub.local_addr().map_or_else(|| url.to_owned(), |a| a.to_string()));
        loop {
            while hub.try_recv(&mut out)?.is_none() {}
            if out.len() == 1 {
                hub.linger(Duration::from_millis(100));
                return Ok(());
            }
            hub.publish(&out)?;
        }
    }
    let rounds: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let mut hub = Hub::open_named(url, Options::new(Vec::new()))?;
    while hub.status() != Status::Connected {
        std::thread::sleep(Duration::from_millis(5));
    }
    let msg = [7u8; 64];
    let warmup = rounds / 10;
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t = Instant::now();
        hub.publish(&msg)?;
        while hub.try_recv(&mut out)?.is_none() {}
        if i >= warmup {
            samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    hub.publish(&[0])?;
    hub.linger(Duration::from_millis(100));
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!("p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs", q(0.5), q(0.99), q(0.999));
    if std::env::var("QUANTILES").is_ok() {
        println!("q {:.2} {:.2} {:.2} {:.2} {:.2} {:.2}", q(0.05), q(0.1), q(0.25), q(0.5), q(0.75), q(0.9));
    }
    Ok(())
}
