//! Would an io_uring backend make a spinning TCP round trip faster than epoll and
//! `read`? The floor of each, without zerohop's records or ring: a 64-byte ping-pong
//! over loopback TCP between two processes (CPUs 0 and 1), the client polling either
//! with non-blocking `read` (what `tcp://` does, and `sockperf --nonblocked`) or with
//! one `recv` armed in an io_uring whose completion queue it watches in memory (no
//! system call per look). The echo always answers with `read`/`write`, so only the
//! client's way of waiting differs. Rounds alternate; p50/p99 per round.
//!
//! `cargo run --release -p zerohop-stream --example uring_probe [round trips]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::{IoUring, opcode, types};
use zerohop_test_support::bench::pin;

const MSG: usize = 64;

/// Reads exactly `buf.len()` bytes from a non-blocking socket, spinning on `read`.
fn read_spin(s: &mut TcpStream, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => std::process::exit(0),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn echo(listener: TcpListener) -> ! {
    pin(1);
    let (mut s, _) = listener.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; MSG];
    loop {
        read_spin(&mut s, &mut buf);
        s.write_all(&buf).expect("write");
    }
}

/// Round trips with the client spinning on `read`; µs each.
fn by_read(s: &mut TcpStream, n: usize) -> Vec<f64> {
    let mut buf = [0u8; MSG];
    (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(&buf).expect("write");
            read_spin(s, &mut buf);
            t.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect()
}

/// Round trips with the client's `recv` armed in `ring` before each send, and its
/// completion awaited by looking at the completion queue (no system call per look).
fn by_uring(ring: &mut IoUring, s: &mut TcpStream, n: usize) -> Vec<f64> {
    let mut buf = [0u8; MSG];
    let fd = types::Fd(s.as_raw_fd());
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut got = 0;
            let recv = opcode::Recv::new(fd, buf.as_mut_ptr(), MSG as u32).build().user_data(1);
            // SAFETY: `buf` outlives the request: we wait for its completion below.
            unsafe { ring.submission().push(&recv).expect("queue full") };
            ring.submit().expect("submit");
            s.write_all(&[0u8; MSG]).expect("write");
            while got < MSG {
                let Some(cqe) = ring.completion().next() else {
                    std::hint::spin_loop();
                    continue;
                };
                assert!(cqe.result() > 0, "recv: {}", cqe.result());
                got += cqe.result() as usize;
                if got < MSG {
                    let rest = opcode::Recv::new(fd, buf[got..].as_mut_ptr(), (MSG - got) as u32).build();
                    // SAFETY: as above.
                    unsafe { ring.submission().push(&rest).expect("queue full") };
                    ring.submit().expect("submit");
                }
            }
            t.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect()
}

fn percentiles(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!("p50 {:6.2} µs  p99 {:6.2} µs", at(0.5), at(0.99))
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(100_000, |a| a.parse().expect("round trips"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    // SAFETY: no other threads exist yet; the child only runs `echo`.
    if unsafe { libc::fork() } == 0 {
        echo(listener);
    }
    pin(0);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_nonblocking(true).expect("nonblocking");
    let mut ring = IoUring::new(8).expect("io_uring");
    by_read(&mut s, n / 10); // warm-up
    for round in 1..=3 {
        println!("round {round}  read (epoll-free spin): {}", percentiles(by_read(&mut s, n)));
        println!("round {round}  io_uring recv, CQ watched: {}", percentiles(by_uring(&mut ring, &mut s, n)));
    }
}
