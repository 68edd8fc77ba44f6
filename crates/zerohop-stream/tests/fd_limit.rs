//! Running out of file descriptors (its own test binary: it lowers the process's limit).
//! The connections the listener has no descriptor for are closed and counted, it does
//! not spin on them, and once descriptors are free again a client is served.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use zerohop_proto::records::Control;
use zerohop_proto::session::SendQueue;
use zerohop_stream::{ReliableOptions, StreamOptions};
use zerohop_transport::{Endpoint, HubOptions, Value};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn set_limit(n: u64) {
    let r = libc::rlimit { rlim_cur: n, rlim_max: libc::RLIM_INFINITY };
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to rlimit structs for the calls.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let r = libc::rlimit { rlim_max: old.rlim_max, ..r };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

#[test]
fn connections_beyond_the_descriptor_limit_are_closed_and_counted() {
    let mut original = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid pointer to an rlimit struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut original) };
    let options =
        HubOptions::default().with(StreamOptions::from(ReliableOptions { listen: true, ..Default::default() }));
    let mut l = zerohop_stream::open(&Endpoint::parse("tcp://127.0.0.1:0").unwrap(), options).unwrap();
    let addr = l.local_addr().unwrap();
    // Sockets made now, connected once the limit is down: connecting needs no descriptor.
    let clients: Vec<socket2::Socket> =
        (0..20).map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()).collect();
    set_limit(open_fds() + 1);
    for c in &clients {
        c.connect(&addr.into()).unwrap();
    }
    let count =
        |l: &dyn zerohop_transport::Transport| match l.metrics().details.iter().find(|(n, _)| *n == "acceptFailures") {
            Some((_, Value::Number(v))) => *v,
            _ => 0.0,
        };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&*l) < 5.0 {
        assert!(Instant::now() < deadline, "accept failures counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Those clients see their connection end.
    let mut closed = 0;
    for mut c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        // Ended (0 bytes, or reset); a timeout means it is still waiting in the backlog.
        match c.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                closed += 1
            }
            _ => {}
        }
    }
    assert!(closed >= 5, "{closed} closed");
    drop(clients);
    set_limit(original.rlim_cur);
    // Descriptors again: a client is served.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut wire = Vec::new();
    Control::Hello { session: 9, queue_limit: 1 << 20, queue_messages: u64::MAX, group: b"" }.encode(&mut wire);
    Control::Start { channel: 0, first_seq: 0 }.encode(&mut wire);
    let mut q = SendQueue::tagged(1 << 20);
    q.push(b"after");
    wire.extend_from_slice(q.unsent());
    s.write_all(&wire).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the client after was served");
        if l.wait_readable(Some(Duration::from_millis(100))).unwrap() && l.try_recv(&mut out).unwrap().is_some() {
            break;
        }
    }
    assert_eq!(out, b"after");
}
