//! A hub whose one peer went away. Its socket is connected to that peer, so the kernel
//! reports each ICMP "port unreachable" as an error on the socket, which poll keeps
//! reporting until a read clears it: the I/O thread must read it, not spin on it.
//! (A file of its own: the test reads the CPU time of the whole process.)

use std::time::{Duration, Instant};

use zerohop_transport::{Endpoint, HubOptions, Transport};
use zerohop_udp::transport::open_udp;
use zerohop_udp::{UdpOptions, UringMode};

/// CPU time this process used so far, every thread.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer to a rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

#[test]
fn a_peer_that_went_away_costs_no_cpu_and_the_hub_goes_on() {
    let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = gone.local_addr().unwrap();
    drop(gone);
    // recvmmsg: the I/O thread polls the socket itself (io_uring reports the error in a
    // completion instead).
    let options = UdpOptions {
        peers: vec![to.to_string()],
        flush_interval: Duration::ZERO,
        io_uring: UringMode::Off,
        ..Default::default()
    };
    let mut hub =
        open_udp(&Endpoint::parse("udp://127.0.0.1:0").unwrap(), &mut HubOptions::default().with(options)).unwrap();
    // The datagram comes back as an error, which the next send would report: there is
    // none, and the reader parks, so the I/O thread polls the socket meanwhile.
    hub.publish_on(0, b"anyone there?").unwrap();
    let (start, cpu) = (Instant::now(), cpu_time());
    assert!(!hub.wait_readable(Some(Duration::from_millis(400))).unwrap());
    let used = cpu_time() - cpu;
    assert!(used < Duration::from_millis(150), "{used:?} of CPU in {:?}", start.elapsed());

    // The peer comes back on its port: its messages arrive.
    let mut peer = open_udp(
        &Endpoint::parse(&format!("udp://{to}")).unwrap(),
        &mut HubOptions::default().with(UdpOptions {
            peers: vec![hub.local_addr().unwrap().to_string()],
            flush_interval: Duration::ZERO,
            ..Default::default()
        }),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    loop {
        peer.publish_on(0, b"back").unwrap();
        if hub.wait_readable(Some(Duration::from_millis(20))).unwrap() && hub.try_recv(&mut out).unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived after the peer came back");
    }
    assert_eq!(out, b"back");
}
