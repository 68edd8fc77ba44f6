//! What only `quic://` does, at the transport: messages larger than a ring slot spill,
//! channels, TLS failures with their codes, options that cannot work. The contract every
//! transport shares is crates/zerohop/tests/conformance.rs; the protocol itself is
//! tested in protocol.rs.

use std::time::{Duration, Instant};

use zerohop_net::NetTransport;
use zerohop_proto::lifecycle::Status;
use zerohop_quic::{QuicOptions, QuicProtocol, open_quic, tls::TlsOptions};
use zerohop_transport::{Backpressure, Endpoint, ErrorCode, HubOptions, MessageInfo, Transport, TransportKind};

fn open(url: &str, options: HubOptions) -> zerohop_transport::Result<NetTransport<QuicProtocol>> {
    open_quic(&Endpoint::parse(url)?, &mut options.clone())
}

fn listen() -> HubOptions {
    HubOptions::default().with(QuicOptions { listen: true, ..Default::default() })
}

fn client() -> HubOptions {
    HubOptions::default().with(QuicOptions {
        tls: TlsOptions { dangerously_accept_any_server: true, ..Default::default() },
        ..Default::default()
    })
}

fn recv(t: &mut dyn Transport) -> (Vec<u8>, MessageInfo) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        if let Some(info) = t.try_recv(&mut out).unwrap() {
            return (out, info);
        }
        assert!(Instant::now() < deadline, "nothing arrived");
        t.wait_readable(Some(Duration::from_millis(50))).unwrap();
    }
}

#[test]
fn small_and_spilled_messages_arrive_with_their_channel_and_sender() {
    let mut server = open("quic://127.0.0.1:0", listen()).unwrap();
    let port = server.local_addr().unwrap().port();
    let mut client = open(&format!("quic://127.0.0.1:{port}"), client()).unwrap();
    let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    client.publish_on(0, b"hello").unwrap();
    client.publish_on(3, &big).unwrap();
    let (small, info) = recv(&mut server);
    assert_eq!(small, b"hello");
    assert_eq!((info.channel, info.from.unwrap().port()), (0, client.local_addr().unwrap().port()));
    let (large, info) = recv(&mut server);
    assert_eq!(info.channel, 3);
    assert!(large == big, "the spilled message arrives whole");
    server.publish_on(0, b"welcome").unwrap();
    assert_eq!(recv(&mut client).0, b"welcome");
    assert_eq!(client.connection().unwrap().status(), Status::Connected);
    assert!(client.linger(Duration::from_secs(5)), "the server read everything");
    let m = server.metrics();
    assert_eq!(
        (m.received, m.received_bytes, m.published, m.transport),
        (2, 5 + big.len() as u64, 1, TransportKind::Quic)
    );
    assert_eq!(client.publish_on(16, b"x").unwrap_err().code(), ErrorCode::BadOption, "16 channels by default");
}

#[test]
fn options_that_cannot_work_are_refused() {
    let code = |url: &str, o: HubOptions| open(url, o).err().unwrap().code();
    assert_eq!(
        code("quic://127.0.0.1:4433", HubOptions::default()),
        ErrorCode::BadOption,
        "no way to verify the server"
    );
    let drop_old = HubOptions { backpressure: Some(Backpressure::DropOld), ..listen() };
    assert_eq!(code("quic://127.0.0.1:0", drop_old), ErrorCode::BadOption);
    assert_eq!(code("quic://127.0.0.1:0", client()), ErrorCode::BadUrl, "connect to port 0");
    let half = HubOptions::default().with(QuicOptions {
        listen: true,
        tls: TlsOptions { cert: Some("/x.pem".into()), ..Default::default() },
        ..Default::default()
    });
    assert_eq!(code("quic://127.0.0.1:0", half), ErrorCode::BadOption);
    let missing = HubOptions::default().with(QuicOptions {
        listen: true,
        tls: TlsOptions {
            cert: Some("/nonexistent.pem".into()),
            key: Some("/nonexistent.key".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(code("quic://127.0.0.1:0", missing), ErrorCode::BadOption);
}

#[test]
fn an_untrusted_server_fails_with_a_tls_code_and_no_retry() {
    let server = open("quic://127.0.0.1:0", listen()).unwrap();
    let port = server.local_addr().unwrap().port();
    let ca = std::env::temp_dir().join(format!("zerohop-quic-ca-{}.pem", std::process::id()));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["zerohop test CA".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let trusting_another = HubOptions::default()
        .with(QuicOptions { tls: TlsOptions { ca: Some(ca.clone()), ..Default::default() }, ..Default::default() });
    let client = open(&format!("quic://127.0.0.1:{port}"), trusting_another).unwrap();
    let connection = client.connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connection.status() != Status::Disconnected {
        assert!(Instant::now() < deadline, "status {:?}", connection.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    let failure = connection.take_status_events().into_iter().find_map(|e| e.error).unwrap();
    assert_eq!(failure.code(), ErrorCode::TlsUntrusted, "{failure}");
    let _ = std::fs::remove_file(ca);
}
