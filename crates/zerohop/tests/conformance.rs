//! The contract every transport fulfils, checked the same way for each (in the spirit
//! of iceoryx2's generic contract tests): one set of checks, generic over how a pair of
//! hubs that talk to each other is opened. A new transport adds its [`Pair`] to
//! [`pairs`] and passes them all; what only it does is tested in its own crate.
//!
//! The TypeScript suite (`__test__/conformance.spec.ts`) checks the same contract from
//! the public TypeScript API.

use std::time::Duration;

use zerohop::{
    Backpressure, Delivery, ErrorCode, Hub, HubOptions, KcpOptions, Options, QuicOptions, ReliableOptions, Result,
    Role, StreamOptions, TlsOptions, TransportKind, UdpOptions, Value,
};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// How to open two hubs of one transport that reach each other.
struct Pair {
    kind: TransportKind,
    /// The policies the transport applies; every other is `ERR_BAD_OPTION`.
    policies: &'static [Backpressure],
    open: fn(tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)>,
}

fn unique(tag: &str) -> String {
    format!("conformance-{tag}-{}-{:x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    h.finish() as u32
}

fn shm_pair(tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let url = format!("shm://{}", unique(tag));
    Ok((Hub::open(&url, a)?, Hub::open(&url, b)?))
}

fn udp_pair(_tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let now = || UdpOptions { flush_interval: Duration::ZERO, ..Default::default() };
    let a = Hub::open("udp://127.0.0.1:0", a.with(now()))?;
    let peers = vec![a.local_addr().unwrap().to_string()];
    let b = Hub::open("udp://127.0.0.1:0", b.with(UdpOptions { peers, ..now() }))?;
    a.peers()?.set_peers(&[b.local_addr().unwrap().to_string()])?;
    Ok((a, b))
}

fn quic_pair(_tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let a = Hub::open("quic://127.0.0.1:0", a.with(QuicOptions { listen: true, ..Default::default() }))?;
    let url = format!("quic://{}", a.local_addr().unwrap());
    let b = Hub::open(
        &url,
        b.with(QuicOptions {
            tls: TlsOptions { dangerously_accept_any_server: true, ..Default::default() },
            ..Default::default()
        }),
    )?;
    wait_for_peer(&a);
    Ok((a, b))
}

/// Waits until listener `a` has one connected peer (publishing reaches connected peers).
fn wait_for_peer(a: &Hub) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.metrics().detail("peers") != Some(&Value::Number(1.0)) {
        assert!(std::time::Instant::now() < deadline, "the client did not connect");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// tcp://, plain or (with the server's and the client's TLS options) with TLS.
fn tcp_pair_with(a: HubOptions, b: HubOptions, tls: Option<(TlsOptions, TlsOptions)>) -> Result<(Hub, Hub)> {
    let (server, client) = tls.map_or((None, None), |(s, c)| (Some(s), Some(c)));
    let a = Hub::open(
        "tcp://127.0.0.1:0",
        a.with(StreamOptions { tls: server, ..ReliableOptions { listen: true, ..Default::default() }.into() }),
    )?;
    let b = Hub::open(
        &format!("tcp://{}", a.local_addr().unwrap()),
        b.with(StreamOptions { tls: client, ..Default::default() }),
    )?;
    wait_for_peer(&a);
    Ok((a, b))
}

fn tcp_pair(_tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    tcp_pair_with(a, b, None)
}

/// tcp:// with TLS: a self-signed listener, and a client that accepts it.
fn tcp_tls_pair(_tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let dev = TlsOptions { dangerously_accept_any_server: true, ..Default::default() };
    tcp_pair_with(a, b, Some((TlsOptions::default(), dev)))
}

fn uds_pair(tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let url = format!("uds://@{}", unique(tag));
    let a = Hub::open(&url, a.with(StreamOptions::from(ReliableOptions { listen: true, ..Default::default() })))?;
    let b = Hub::open(&url, b)?;
    wait_for_peer(&a);
    Ok((a, b))
}

fn kcp_pair(_tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let a = Hub::open(
        "kcp://127.0.0.1:0",
        a.with(KcpOptions::from(ReliableOptions { listen: true, ..Default::default() })),
    )?;
    let b = Hub::open(&format!("kcp://{}", a.local_addr().unwrap()), b)?;
    wait_for_peer(&a);
    Ok((a, b))
}

fn nats_pair(tag: &str, a: HubOptions, b: HubOptions) -> Result<(Hub, Hub)> {
    let url = zerohop_test_support::nats::NatsServer::shared().url(&unique(tag));
    let (a, b) = (Hub::open(&url, a)?, Hub::open(&url, b)?);
    // At most once: a hub receives only once the server confirmed its subscription.
    for hub in [&a, &b] {
        hub.link()?.wait_open()?;
    }
    Ok((a, b))
}

fn pairs() -> [Pair; 8] {
    use Backpressure::*;
    [
        Pair { kind: TransportKind::Shm, policies: &[DropOld, DropNew, Block, FailFast], open: shm_pair },
        Pair { kind: TransportKind::Udp, policies: &[Block, DropNew, FailFast], open: udp_pair },
        Pair { kind: TransportKind::Quic, policies: &[Block, DropNew, FailFast], open: quic_pair },
        Pair { kind: TransportKind::Tcp, policies: &[Block, DropNew, FailFast], open: tcp_pair },
        Pair { kind: TransportKind::Tcp, policies: &[Block, DropNew, FailFast], open: tcp_tls_pair },
        Pair { kind: TransportKind::Uds, policies: &[Block, DropNew, FailFast], open: uds_pair },
        Pair { kind: TransportKind::Kcp, policies: &[Block, DropNew, FailFast], open: kcp_pair },
        Pair { kind: TransportKind::Nats, policies: &[Block, DropNew, FailFast], open: nats_pair },
    ]
}

fn recv(hub: &mut Hub) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(hub.recv(&mut out, WAIT).unwrap().is_some(), "nothing arrived");
    out
}

#[test]
fn messages_go_both_ways_in_order_and_say_where_they_came_from() {
    for p in pairs() {
        let (mut a, mut b) = (p.open)("both-ways", HubOptions::default(), HubOptions::default()).unwrap();
        for i in 0..100u32 {
            b.publish(&i.to_le_bytes()).unwrap();
        }
        for i in 0..100u32 {
            assert_eq!(recv(&mut a), i.to_le_bytes(), "{:?}", p.kind);
        }
        a.publish(b"back").unwrap();
        let mut out = Vec::new();
        let info = b.recv(&mut out, WAIT).unwrap().expect("an answer");
        assert_eq!(out, b"back");
        // Network transports say who sent it (Unix sockets by the process's credentials,
        // NATS by the subject it came on); shared memory has no address.
        let unix = p.kind == TransportKind::Uds;
        let nats = p.kind == TransportKind::Nats;
        assert_eq!(info.from.is_some(), p.kind != TransportKind::Shm && !unix && !nats, "{:?}", p.kind);
        assert_eq!(b.subject(info.subject).is_some(), nats, "{:?}", p.kind);
        assert_eq!(info.credentials.map(|c| c.pid), unix.then_some(std::process::id()), "{:?}", p.kind);
        assert_eq!(info.channel, 0);
    }
}

/// Sizes around the places a receiver keeps a message (network rings: in its slot up to
/// 184 bytes by default, then in the ring's aside area, then spilled past 4 MiB), each
/// several times in a row so that the aside area is reused, arrive whole and in order.
#[test]
fn messages_of_every_size_arrive_whole_and_in_order() {
    const SIZES: [usize; 9] = [1, 183, 184, 185, 1000, 4096, 65_000, 1 << 20, (4 << 20) + 1];
    for p in pairs() {
        let (mut a, mut b) = (p.open)("sizes", HubOptions::default(), HubOptions::default()).unwrap();
        let max = b.max_message_size().min(a.max_message_size());
        let sizes: Vec<usize> = SIZES.into_iter().filter(|&n| n <= max).collect();
        for round in 0..4u8 {
            for (i, &n) in sizes.iter().enumerate() {
                let m: Vec<u8> = (0..n).map(|j| (j as u8).wrapping_add(round).wrapping_add(i as u8)).collect();
                b.publish(&m).unwrap();
                let got = recv(&mut a);
                assert!(got == m, "{:?}: {n} bytes, round {round}: got {} bytes, or other ones", p.kind, got.len());
            }
        }
        // A burst of the sizes a ring's slots do not hold, read after it is all sent.
        let two: Vec<usize> = [1000, 4096].into_iter().filter(|&n| n <= max).collect();
        let burst: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; two[i as usize % two.len()]]).collect();
        for m in &burst {
            b.publish(m).unwrap();
        }
        for m in &burst {
            assert!(recv(&mut a) == *m, "{:?}: a burst's message of {} bytes", p.kind, m.len());
        }
    }
}

#[test]
fn a_hub_never_receives_what_it_published_itself() {
    for p in pairs() {
        let (mut a, mut b) = (p.open)("own", HubOptions::default(), HubOptions::default()).unwrap();
        a.publish(b"mine").unwrap();
        assert_eq!(recv(&mut b), b"mine");
        let mut out = Vec::new();
        assert!(a.recv(&mut out, Some(Duration::from_millis(50))).unwrap().is_none(), "{:?} echoed", p.kind);
    }
}

#[test]
fn waiting_times_out_empty() {
    for p in pairs() {
        let (mut a, _b) = (p.open)("timeout", HubOptions::default(), HubOptions::default()).unwrap();
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        assert!(a.recv(&mut out, Some(Duration::from_millis(30))).unwrap().is_none());
        assert!(t.elapsed() >= Duration::from_millis(30), "{:?}", p.kind);
    }
}

#[test]
fn roles_refuse_what_they_do_not_open() {
    for p in pairs() {
        let publisher = HubOptions { role: Role::Publisher, ..HubOptions::default() };
        let subscriber = HubOptions { role: Role::Subscriber, ..HubOptions::default() };
        let (mut a, mut b) = (p.open)("roles", subscriber, publisher).unwrap();
        let mut out = Vec::new();
        assert_eq!(b.try_recv(&mut out).unwrap_err().code(), ErrorCode::InvalidState, "{:?}", p.kind);
        assert_eq!(a.publish(b"x").unwrap_err().code(), ErrorCode::InvalidState, "{:?}", p.kind);
        b.publish(b"one way").unwrap();
        assert_eq!(recv(&mut a), b"one way");
    }
}

#[test]
fn an_oversize_message_is_refused_and_the_hub_goes_on() {
    for p in pairs() {
        let small = || HubOptions { slot_size: Some(1024), ..HubOptions::default() };
        let (mut a, mut b) = (p.open)("oversize", small(), small()).unwrap();
        let max = b.max_message_size();
        let err = b.publish(&vec![0; max + 1]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MessageTooLarge, "{:?}", p.kind);
        b.publish(b"after").unwrap();
        assert_eq!(recv(&mut a), b"after");
        // A channel the transport does not have is a bad option, not a crash.
        assert_eq!(b.publish_on(60_000, b"x").unwrap_err().code(), ErrorCode::BadOption, "{:?}", p.kind);
    }
}

#[test]
fn each_backpressure_policy_applies_or_is_refused_with_why() {
    for p in pairs() {
        for policy in [Backpressure::DropOld, Backpressure::DropNew, Backpressure::Block, Backpressure::FailFast] {
            let with = || HubOptions { backpressure: Some(policy), ..HubOptions::default() };
            match (p.open)("policy", with(), with()) {
                Ok((_a, b)) => {
                    assert!(p.policies.contains(&policy), "{:?} accepted {policy:?}", p.kind);
                    assert_eq!(b.settings().backpressure, policy, "{:?}", p.kind);
                }
                Err(e) => {
                    assert!(!p.policies.contains(&policy), "{:?} refused {policy:?}: {e}", p.kind);
                    assert_eq!(e.code(), ErrorCode::BadOption);
                    assert!(e.message().contains("does not apply to"), "{}", e.message());
                }
            }
        }
    }
}

#[test]
fn metrics_count_what_went_and_came() {
    for p in pairs() {
        let (mut a, mut b) = (p.open)("metrics", HubOptions::default(), HubOptions::default()).unwrap();
        for _ in 0..3 {
            assert_eq!(b.publish(b"12345").unwrap(), Delivery::Accepted);
        }
        for _ in 0..3 {
            recv(&mut a);
        }
        let (ma, mb) = (a.metrics(), b.metrics());
        assert_eq!((mb.transport, mb.published, mb.published_bytes), (p.kind, 3, 15), "{:?}", p.kind);
        assert_eq!((ma.received, ma.received_bytes, ma.lapped), (3, 15, 0), "{:?}", p.kind);
    }
}

#[test]
fn a_message_past_its_time_to_live_is_passed_over_and_counted() {
    let now_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for p in pairs() {
        let (mut a, b) = (p.open)("ttl", HubOptions::default(), HubOptions::default()).unwrap();
        let link = b.link().unwrap();
        link.publish_expiring(0, b"gone", now_ns() - 1).unwrap();
        link.publish_expiring(0, b"kept", now_ns() + 60_000_000_000).unwrap();
        link.publish(0, b"plain").unwrap();
        link.flush().unwrap();
        assert_eq!((recv(&mut a), recv(&mut a)), (b"kept".to_vec(), b"plain".to_vec()), "{:?}", p.kind);
        let m = a.metrics();
        assert_eq!((m.expired, m.received, m.received_bytes), (1, 2, 9), "{:?}", p.kind);
    }
}

#[test]
fn status_is_connected_until_closed_and_close_is_idempotent() {
    for p in pairs() {
        let (mut a, mut b) = (p.open)("close", HubOptions::default(), HubOptions::default()).unwrap();
        assert_eq!(a.status(), zerohop::Status::Connected, "{:?}", p.kind);
        b.publish(b"last").unwrap();
        assert_eq!(recv(&mut a), b"last");
        // Reliable transports hold what was published until the receiver's application
        // read it: read now, so the linger ends.
        assert!(b.linger(Duration::from_secs(5)), "{:?}: what was published reached its receiver", p.kind);
        b.close();
        b.close();
        assert_eq!(b.publish(b"x").unwrap_err().code(), ErrorCode::Closed, "{:?}", p.kind);
        let mut out = Vec::new();
        assert_eq!(b.try_recv(&mut out).unwrap_err().code(), ErrorCode::Closed, "{:?}", p.kind);
        a.close();
    }
}

#[test]
fn unknown_options_and_url_parameters_are_typed_errors() {
    for p in pairs() {
        let url = match p.kind {
            TransportKind::Shm => format!("shm://{}", unique("opts")),
            TransportKind::Udp => "udp://127.0.0.1:0".to_owned(),
            _ => "quic://127.0.0.1:0".to_owned(),
        };
        let named = Options::new(vec![("noSuchOption".into(), Value::Bool(true))]);
        let err = Hub::open_named(&url, named).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadOption, "{:?}", p.kind);
        assert!(err.message().contains("noSuchOption"), "{}", err.message());
        let err = Hub::open(&format!("{url}?noSuchParameter=1"), HubOptions::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadUrl, "{:?}", p.kind);
    }
}
