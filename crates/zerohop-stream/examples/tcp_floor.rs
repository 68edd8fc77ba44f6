//! Loopback TCP bulk floor: a sender writing 256 KiB chunks, a receiver reading 64 KiB.
//! COPY=1 adds one 4 KiB copy per message on each side into a 16 MiB buffer.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let copy = std::env::var("COPY").is_ok();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    if unsafe { libc::fork() } == 0 {
        pin(1);
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut ring = vec![0u8; 16 << 20];
        let mut at = 0;
        let mut total = 0u64;
        let t = Instant::now();
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 { break; }
            total += n as u64;
            if copy {
                for c in buf[..n].chunks(4096) {
                    if at + c.len() > ring.len() { at = 0; }
                    ring[at..at + c.len()].copy_from_slice(c);
                    at += c.len();
                }
            }
        }
        println!("{:.0} MB/s", total as f64 / t.elapsed().as_secs_f64() / 1e6);
        std::process::exit(0);
    }
    pin(0);
    let mut s = TcpStream::connect(addr).unwrap();
    let msg = vec![1u8; 4096];
    let mut queue = vec![0u8; 16 << 20];
    let mut at = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if copy {
            if at + (256 << 10) > queue.len() { at = 0; }
            for i in 0..64 { queue[at + i * 4096..at + (i + 1) * 4096].copy_from_slice(&msg); }
            s.write_all(&queue[at..at + (256 << 10)]).unwrap();
            at += 256 << 10;
        } else {
            s.write_all(&queue[..256 << 10]).unwrap();
        }
    }
    drop(s);
    let mut st = 0;
    unsafe { libc::wait(&mut st) };
}
