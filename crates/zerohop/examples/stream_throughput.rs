//! One-way throughput of 4 KiB messages through `zerohop::Hub` in Rust: the hub's own
//! cost on a stream without JavaScript (compare the `tcp_floor` example of
//! `zerohop-stream` for the kernel's, and `npm run bench` for Node's). The sink listens
//! and reads until it has `count` messages; the source publishes them as fast as the
//! send queue takes them.
//!
//! ```text
//! taskset -c 1 cargo run --release -p zerohop --example stream_throughput -- sink tcp://127.0.0.1:7001 500000 &
//! taskset -c 0 cargo run --release -p zerohop --example stream_throughput -- source tcp://127.0.0.1:7001 500000
//! ```

use std::time::{Duration, Instant};

use zerohop::Hub;
use zerohop::options::{Options, Value};
use zerohop::status::Status;

const SIZE: usize = 4096;

fn main() -> zerohop::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, url, count) = match args.as_slice() {
        [m, u, n, ..] => (m.as_str(), u.as_str(), n.parse::<u64>().expect("a message count")),
        _ => {
            eprintln!("usage: stream_throughput sink <url> <count> | source <url> <count>");
            std::process::exit(2);
        }
    };
    if mode == "sink" {
        let mut hub = Hub::open_named(url, Options::new(vec![("listen".into(), Value::Bool(true))]))?;
        let mut out = Vec::with_capacity(SIZE);
        let mut start = None;
        for _ in 0..count {
            while hub.recv(&mut out, Some(Duration::from_secs(10)))?.is_none() {}
            start.get_or_insert_with(Instant::now);
        }
        let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        println!(
            "sink: {:.0} MB/s ({:.0} K msg/s)",
            count as f64 * SIZE as f64 / secs / 1e6,
            count as f64 / secs / 1e3
        );
        return Ok(());
    }
    let options = vec![("sendQueueBytes".into(), Value::Number(f64::from(16 << 20)))];
    let mut hub = Hub::open_named(url, Options::new(options))?;
    while hub.status() != Status::Connected {
        std::thread::sleep(Duration::from_millis(5));
    }
    let msg = [7u8; SIZE];
    for _ in 0..count {
        hub.publish(&msg)?;
    }
    hub.linger(Duration::from_secs(10));
    Ok(())
}
