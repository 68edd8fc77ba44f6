//! The floor under one-way `tcp://` throughput: what loopback TCP carries on this
//! machine with no messaging on top. A sender on CPU 0 writes 1 MiB at a time (as a
//! `tcp://` burst goes out), a receiver on CPU 1 reads 64 KiB at a time (as a `tcp://`
//! hub reads), for three seconds. With `COPY=1` each side also copies every 4 KiB
//! message once, as `tcp://` does (into its send queue, into its receive ring).
//!
//! `cargo run --release -p zerohop-stream --example tcp_floor` (then `COPY=1 …`)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MESSAGE: usize = 4096;
const WRITE: usize = 1 << 20;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; sched_setaffinity
    // reads `size_of` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Reads until the sender closes; MB/s.
fn receive(mut s: TcpStream, copy: bool) -> f64 {
    let mut buf = vec![0u8; 64 << 10];
    let mut ring = vec![0u8; 16 << 20];
    let (mut at, mut total) = (0, 0u64);
    let t = Instant::now();
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
        if copy {
            for m in buf[..n].chunks(MESSAGE) {
                if at + m.len() > ring.len() {
                    at = 0;
                }
                ring[at..at + m.len()].copy_from_slice(m);
                at += m.len();
            }
        }
    }
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let copy = std::env::var_os("COPY").is_some();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    // SAFETY: no other threads exist yet; the child only receives, then exits.
    if unsafe { libc::fork() } == 0 {
        pin(1);
        let (s, _) = listener.accept().expect("accept");
        println!("loopback TCP, {}: {:.0} MB/s", if copy { "one copy a side" } else { "no copy" }, receive(s, copy));
        std::process::exit(0);
    }
    pin(0);
    let mut s = TcpStream::connect(addr).expect("connect");
    let message = vec![1u8; MESSAGE];
    let mut queue = vec![0u8; 16 << 20];
    let mut at = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if copy {
            if at + WRITE > queue.len() {
                at = 0;
            }
            for m in queue[at..at + WRITE].chunks_mut(MESSAGE) {
                m.copy_from_slice(&message);
            }
        }
        s.write_all(&queue[at..at + WRITE]).expect("write");
        if copy {
            at += WRITE;
        }
    }
    drop(s);
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
    unsafe { libc::wait(&mut status) };
}
