//! The floor under one-way `tcp://` throughput: what loopback TCP carries on this
//! machine with no messaging on top. A sender on CPU 0 writes 1 MiB at a time (as a
//! `tcp://` burst goes out), a receiver on CPU 1 reads 64 KiB at a time (as a `tcp://`
//! hub reads), for three seconds. With `COPY=1` each side also copies every 4 KiB
//! message once, as `tcp://` does (into its send queue, into its receive ring). With
//! `SENDFILE=1` as well, the send queue is a memfd and goes out with sendfile(2): the
//! kernel takes its pages instead of copying them (what an acknowledged send queue
//! could do, since it keeps every byte until the receiver read it; here nothing waits
//! for acknowledgements, so the bytes received are not checked). Each side prints the
//! CPU time it spent per 4 KiB message.
//!
//! `cargo run --release -p zerohop-stream --example tcp_floor` (then `COPY=1 …`, then
//! `COPY=1 SENDFILE=1 …`)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use zerohop_test_support::bench::pin;

const MESSAGE: usize = 4096;
const WRITE: usize = 1 << 20;

/// CPU time (user and system) this process has spent, in µs.
fn cpu_us() -> f64 {
    // SAFETY: a zeroed rusage is valid, and getrusage writes within it.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(u.ru_utime) + us(u.ru_stime)
}

/// Reads until the sender closes; MB/s, and CPU µs per message.
fn receive(mut s: TcpStream, copy: bool) -> (f64, f64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut ring = vec![0u8; 16 << 20];
    let (mut at, mut total) = (0, 0u64);
    let t = Instant::now();
    let cpu = cpu_us();
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
    let messages = total as f64 / MESSAGE as f64;
    (total as f64 / t.elapsed().as_secs_f64() / 1e6, (cpu_us() - cpu) / messages)
}

/// A send queue of `len` bytes: memory of its own, or (`file`) a memfd's, mapped.
fn queue(len: usize, file: bool) -> (&'static mut [u8], Option<std::fs::File>) {
    if !file {
        return (vec![0u8; len].leak(), None);
    }
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name; the descriptor it returns is
    // owned by the File from here on.
    let f = unsafe { std::fs::File::from_raw_fd(libc::memfd_create(c"queue".as_ptr(), libc::MFD_CLOEXEC)) };
    f.set_len(len as u64).expect("memfd size");
    use std::os::fd::AsRawFd;
    // SAFETY: maps `len` bytes of a file that has them, shared, for the life of the
    // process (the mapping is never unmapped, so the slice stays valid).
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    // SAFETY: `p` is a fresh mapping of `len` bytes, readable and writable.
    (unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) }, Some(f))
}

/// Sends `len` bytes at `offset` of `file` to `s` with sendfile(2).
fn send_file(s: &TcpStream, file: &std::fs::File, offset: usize, len: usize) {
    use std::os::fd::AsRawFd;
    let (mut off, end) = (offset as libc::off_t, (offset + len) as libc::off_t);
    while off < end {
        // SAFETY: two valid descriptors and a valid offset pointer.
        let n = unsafe { libc::sendfile(s.as_raw_fd(), file.as_raw_fd(), &mut off, (end - off) as usize) };
        assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
    }
}

fn main() {
    let copy = std::env::var_os("COPY").is_some();
    let sendfile = copy && std::env::var_os("SENDFILE").is_some();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    // SAFETY: no other threads exist yet; the child only receives, then exits.
    if unsafe { libc::fork() } == 0 {
        pin(1);
        let (s, _) = listener.accept().expect("accept");
        let (mbps, us) = receive(s, copy);
        let how = match (copy, sendfile) {
            (false, _) => "no copy",
            (true, false) => "one copy a side",
            (true, true) => "one copy a side, sent with sendfile",
        };
        println!("loopback TCP, {how}: {mbps:.0} MB/s, receiver {us:.2} µs of CPU per 4 KiB message");
        std::process::exit(0);
    }
    pin(0);
    let mut s = TcpStream::connect(addr).expect("connect");
    let message = vec![1u8; MESSAGE];
    let (queue, file) = queue(16 << 20, sendfile);
    let (mut at, mut sent) = (0, 0u64);
    let t = Instant::now();
    let cpu = cpu_us();
    while t.elapsed() < Duration::from_secs(3) {
        if copy {
            if at + WRITE > queue.len() {
                at = 0;
            }
            for m in queue[at..at + WRITE].chunks_mut(MESSAGE) {
                m.copy_from_slice(&message);
            }
        }
        match &file {
            Some(f) => send_file(&s, f, at, WRITE),
            None => s.write_all(&queue[at..at + WRITE]).expect("write"),
        }
        sent += WRITE as u64;
        if copy {
            at += WRITE;
        }
    }
    let us = (cpu_us() - cpu) / (sent as f64 / MESSAGE as f64);
    drop(s);
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
    unsafe { libc::wait(&mut status) };
    println!("sender {us:.2} µs of CPU per 4 KiB message");
}
