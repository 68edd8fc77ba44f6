//! A listener under load and abuse, from raw sockets: a thousand clients at once (and
//! what an idle connection costs), garbage, silence. The listener goes on each time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use zerohop_proto::records::Control;
use zerohop_proto::session::SendQueue;
use zerohop_stream::{ReliableOptions, StreamOptions};
use zerohop_transport::{Endpoint, HubOptions, Transport, Value};

fn listener(heartbeat_ms: u64) -> Box<dyn Transport> {
    let options = HubOptions::default().with(StreamOptions::from(ReliableOptions {
        listen: true,
        heartbeat: Some(Duration::from_millis(heartbeat_ms)),
        ..Default::default()
    }));
    zerohop_stream::open(&Endpoint::parse("tcp://127.0.0.1:0").unwrap(), options).unwrap()
}

fn detail(t: &dyn Transport, name: &str) -> f64 {
    match t.metrics().details.iter().find(|(n, _)| *n == name) {
        Some((_, Value::Number(v))) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

/// What a client says first, and one message on channel 0.
fn hello_and_message(session: u64, message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    Control::Hello { session, queue_limit: 1 << 20, queue_messages: u64::MAX, group: b"" }.encode(&mut wire);
    Control::Start { channel: 0, first_seq: 0 }.encode(&mut wire);
    let mut q = SendQueue::tagged(1 << 20);
    q.push(message);
    wire.extend_from_slice(q.unsent());
    wire
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_thousand_clients_at_once_each_heard_and_what_an_idle_one_costs() {
    const N: usize = 1000;
    let mut l = listener(60_000);
    let addr = l.local_addr().unwrap();
    let before = rss_kib();
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&hello_and_message(1000 + i as u64, &(i as u32).to_le_bytes())).unwrap();
        clients.push(s);
    }
    let mut seen = vec![false; N];
    let mut out = Vec::new();
    for _ in 0..N {
        assert!(l.wait_readable(Some(Duration::from_secs(20))).unwrap(), "a message from every client");
        while l.try_recv(&mut out).unwrap().is_some() {
            seen[u32::from_le_bytes(out[..4].try_into().unwrap()) as usize] = true;
        }
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    assert!(seen.iter().all(|s| *s), "every client was heard");
    wait_until("every client connected", || detail(&*l, "peers") == N as f64);
    let per = (rss_kib().saturating_sub(before) * 1024) / N as u64;
    println!("{N} idle connections: about {per} bytes each on the listener (RSS)");
    // Every client got the listener's hello.
    let mut buf = [0u8; 64];
    for s in &mut clients {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    drop(clients);
    wait_until("every client gone", || detail(&*l, "peers") == 0.0);
}

#[test]
fn garbage_and_silence_close_that_connection_alone() {
    let mut l = listener(100);
    let addr = l.local_addr().unwrap();
    let good = std::sync::Arc::new(std::sync::Mutex::new(TcpStream::connect(addr).unwrap()));
    good.lock().unwrap().write_all(&hello_and_message(7, b"first")).unwrap();
    // A live client beats its heart (a raw one, by hand).
    let beat = {
        let good = good.clone();
        std::thread::spawn(move || {
            let mut ping = Vec::new();
            Control::Ping.encode(&mut ping);
            while good.lock().unwrap().write_all(&ping).is_ok() {
                std::thread::sleep(Duration::from_millis(30));
                if std::sync::Arc::strong_count(&good) == 1 {
                    break;
                }
            }
        })
    };
    let mut out = Vec::new();
    assert!(l.wait_readable(Some(Duration::from_secs(5))).unwrap());
    assert!(l.try_recv(&mut out).unwrap().is_some());
    assert_eq!(out, b"first");

    // Something else entirely: closed at its first bytes, and counted.
    let mut http = TcpStream::connect(addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = http.read_to_end(&mut sink); // ends: closed by the listener
    wait_until("the garbage counted", || detail(&*l, "protocolViolations") == 1.0);

    // A length prefix above the limit after a proper hello.
    let mut big = TcpStream::connect(addr).unwrap();
    let mut wire = Vec::new();
    Control::Hello { session: 8, queue_limit: 1 << 20, queue_messages: u64::MAX, group: b"" }.encode(&mut wire);
    Control::Start { channel: 0, first_seq: 0 }.encode(&mut wire);
    wire.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // a message of ~2 GiB
    big.write_all(&wire).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big.read_to_end(&mut sink);
    wait_until("the oversize prefix counted", || detail(&*l, "protocolViolations") == 2.0);

    // A frame's beginning only, then the connection ends (a peer killed while writing):
    // the part is dropped (the good client's next message is what arrives) and counted.
    let mut cut = TcpStream::connect(addr).unwrap();
    let wire = hello_and_message(9, &[7u8; 1000]);
    cut.write_all(&wire[..wire.len() - 10]).unwrap();
    drop(cut);
    wait_until("the truncated record counted", || detail(&*l, "truncatedRecords") == 1.0);

    // A client that connects and says nothing: gone after three heartbeats.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let _ = silent.read_to_end(&mut sink);
    assert!(t.elapsed() < Duration::from_secs(4), "closed after {:?}", t.elapsed());

    // The good client was never disturbed.
    let mut q = SendQueue::tagged(1 << 20);
    q.push(b"second");
    good.lock().unwrap().write_all(q.unsent()).unwrap();
    assert!(l.wait_readable(Some(Duration::from_secs(5))).unwrap());
    assert!(l.try_recv(&mut out).unwrap().is_some());
    assert_eq!(out, b"second");
    assert_eq!(detail(&*l, "peers"), 1.0);
    drop(good);
    beat.join().unwrap();
}

#[test]
fn a_unix_socket_file_is_private_replaces_a_stale_one_and_never_steals_a_live_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("zerohop-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let url = format!("uds://{}", path.display());
    let open = || {
        let options =
            HubOptions::default().with(StreamOptions::from(ReliableOptions { listen: true, ..Default::default() }));
        zerohop_stream::open(&Endpoint::parse(&url).unwrap(), options)
    };
    // A stale file: left by a process that died (nobody listens on it).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut live = open().expect("a stale socket file is replaced");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // A live one is not taken over.
    let err = open().err().expect("a live socket is not stolen");
    assert_eq!(err.code(), zerohop_transport::ErrorCode::BadUrl, "an address in use, as for every transport");
    assert!(err.message().contains("in use"), "{}", err.message());
    live.close();
    assert!(!path.exists(), "closing removes the socket file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_client_takes_a_restarted_servers_messages_from_its_first() {
    let open = |url: &str, listen: bool| {
        let options = HubOptions::default().with(StreamOptions::from(ReliableOptions {
            listen,
            reconnect: zerohop_proto::lifecycle::Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        }));
        zerohop_stream::open(&Endpoint::parse(url).unwrap(), options).unwrap()
    };
    let mut a = open("tcp://127.0.0.1:0", true);
    let url = format!("tcp://{}", a.local_addr().unwrap());
    let mut b = open(&url, false);
    wait_until("the client connected", || detail(&*a, "peers") == 1.0);
    let mut out = Vec::new();
    let recv = |b: &mut Box<dyn Transport>, out: &mut Vec<u8>| {
        assert!(b.wait_readable(Some(Duration::from_secs(10))).unwrap(), "a message came");
        b.try_recv(out).unwrap().is_some()
    };
    for i in 0..100u32 {
        a.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    for i in 0..100u32 {
        while !recv(&mut b, &mut out) {}
        assert_eq!(out, i.to_le_bytes());
    }
    a.close();
    // Another run of the server, on the same address: its numbering starts over.
    let mut a2 = open(&url, true);
    wait_until("the client came back", || detail(&*a2, "peers") == 1.0);
    for i in 0..10u32 {
        a2.publish_on(0, &(1000 + i).to_le_bytes()).unwrap();
    }
    for i in 0..10u32 {
        while !recv(&mut b, &mut out) {}
        assert_eq!(out, (1000 + i).to_le_bytes(), "not taken for what the old server sent");
    }
}

#[test]
fn allow_uids_admits_only_those_users() {
    // SAFETY: getuid cannot fail and touches no memory.
    let me = unsafe { libc::getuid() };
    let open = |name: &str, allow: Vec<u32>| {
        let options = HubOptions::default().with(StreamOptions {
            allow_uids: Some(allow),
            ..ReliableOptions { listen: true, ..Default::default() }.into()
        });
        zerohop_stream::open(&Endpoint::parse(&format!("uds://@{name}")).unwrap(), options)
    };
    let name = format!("zerohop-allow-{}", std::process::id());
    let connect = |name: &str| {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        std::os::unix::net::UnixStream::connect_addr(&a).unwrap()
    };
    // Someone else's users only: we are closed at once, and counted.
    let l = open(&format!("{name}-no"), vec![me.wrapping_add(1)]).unwrap();
    let mut s = connect(&format!("{name}-no"));
    s.write_all(&hello_and_message(1, b"hi")).unwrap_or(());
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut sink);
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(sink.is_empty(), "not even a hello");
    wait_until("refused", || detail(&*l, "refused") == 1.0);
    // Our own user: admitted.
    let mut l = open(&format!("{name}-yes"), vec![me]).unwrap();
    let mut s = connect(&format!("{name}-yes"));
    s.write_all(&hello_and_message(2, b"hi")).unwrap();
    let mut out = Vec::new();
    assert!(l.wait_readable(Some(Duration::from_secs(5))).unwrap());
    assert!(l.try_recv(&mut out).unwrap().is_some());
    assert_eq!(out, b"hi");
    // Over TCP nobody says who connects: the option is refused, not ignored.
    let options = HubOptions::default().with(StreamOptions {
        allow_uids: Some(vec![me]),
        ..ReliableOptions { listen: true, ..Default::default() }.into()
    });
    let err = zerohop_stream::open(&Endpoint::parse("tcp://127.0.0.1:0").unwrap(), options).err().unwrap();
    assert_eq!(err.code(), zerohop_transport::ErrorCode::BadOption);
}
