//! quinn on loopback with this crate's runtime and TLS: framed messages on a stream,
//! datagrams, a client that does not trust the server failing with a TLS error, and a
//! stream that still delivers everything, in order, through a lossy chaos proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use zerohop_proto::stream::{StreamDecoder, encode_prefix};
use zerohop_quic::{Identity, SharedRuntime, Trust, tls};

fn server(rt: &SharedRuntime) -> quinn::Endpoint {
    let tls = tls::server_config(&Identity::SelfSigned { names: vec!["localhost".into()] }, None).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let _guard = rt.handle().enter();
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client(rt: &SharedRuntime, trust: &Trust) -> quinn::Endpoint {
    let tls = tls::client_config(trust, None).unwrap();
    let _guard = rt.handle().enter();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap())));
    ep
}

/// Sends `messages` framed on one new stream, then finishes it.
async fn write_messages(conn: &quinn::Connection, messages: &[Vec<u8>]) {
    let mut send = conn.open_uni().await.unwrap();
    let mut wire = Vec::new();
    for m in messages {
        wire.clear();
        encode_prefix(m.len(), &mut wire);
        wire.extend_from_slice(m);
        send.write_all(&wire).await.unwrap();
    }
    send.finish().unwrap();
}

/// Reads the framed messages of the peer's next stream, to its end.
async fn read_messages(conn: &quinn::Connection) -> Vec<Vec<u8>> {
    let mut recv = conn.accept_uni().await.unwrap();
    let mut decoder = StreamDecoder::new(1 << 20);
    let mut got = Vec::new();
    while let Some(chunk) = recv.read_chunk(64 << 10, true).await.unwrap() {
        decoder.push(&chunk.bytes, |m| got.push(m.to_vec())).unwrap();
    }
    assert!(decoder.at_boundary(), "the stream ended mid-message");
    got
}

#[test]
fn framed_messages_on_a_stream_and_datagrams_both_ways() {
    let rt = SharedRuntime::get().unwrap();
    let server = server(&rt);
    let addr: SocketAddr = server.local_addr().unwrap();
    let client = client(&rt, &Trust::DangerouslyAcceptAnyServer);
    let messages: Vec<Vec<u8>> = (0..1000u32).map(|i| vec![(i % 251) as u8; (i as usize * 37) % 3000]).collect();
    let expected = messages.clone();
    let received = rt.handle().block_on(async move {
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            // The client's datagram, echoed.
            let d = conn.read_datagram().await.unwrap();
            conn.send_datagram(d).unwrap();
            read_messages(&conn).await
        });
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        conn.send_datagram(bytes::Bytes::from_static(b"ping")).unwrap();
        assert_eq!(&conn.read_datagram().await.unwrap()[..], b"ping");
        write_messages(&conn, &messages).await;
        let got = accept.await.unwrap();
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        got
    });
    assert_eq!(received, expected);
}

#[test]
fn a_client_that_trusts_another_ca_fails_the_handshake() {
    let rt = SharedRuntime::get().unwrap();
    let server = server(&rt);
    let addr = server.local_addr().unwrap();
    // A CA that signed nothing the server has.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere".into()]).unwrap();
    let ca = std::env::temp_dir().join(format!("zerohop-other-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let client = client(&rt, &Trust::Ca(ca.clone()));
    let err = rt.handle().block_on(async move {
        // quinn 0.11 starts a server handshake only once the incoming connection is accepted.
        let serve = tokio::spawn(async move {
            if let Some(incoming) = server.accept().await {
                let _ = incoming.await; // fails: the client refuses the certificate
            }
        });
        let err = client.connect(addr, "localhost").unwrap().await.unwrap_err();
        serve.abort();
        err
    });
    let _ = std::fs::remove_file(ca);
    // rustls names the reason (here: the certificate is not signed by the trusted CA).
    let text = err.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[test]
fn a_stream_delivers_everything_in_order_through_loss_reordering_and_duplication() {
    let rt = SharedRuntime::get().unwrap();
    let server = server(&rt);
    let spec = zerohop_proto::chaos::ChaosSpec::parse("loss:0.05,reorder:0.05,dup:0.02,delay:1ms").unwrap();
    let proxy =
        zerohop_udp::chaos::ChaosProxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap(), spec, 3)
            .unwrap();
    let via = proxy.local_addr();
    let client = client(&rt, &Trust::DangerouslyAcceptAnyServer);
    let messages: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().repeat(1 + (i as usize % 50))).collect();
    let expected = messages.clone();
    let received = rt.handle().block_on(async move {
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            read_messages(&conn).await
        });
        let conn = client.connect(via, "localhost").unwrap().await.unwrap();
        write_messages(&conn, &messages).await;
        let got = accept.await.unwrap();
        conn.close(0u32.into(), b"done");
        got
    });
    let stats = proxy.stop();
    assert_eq!(received, expected);
    assert!(stats.dropped > 0 && stats.duplicated > 0, "the proxy did interfere: {stats:?}");
}

#[test]
fn a_client_that_has_seen_the_server_sends_its_first_message_in_0rtt() {
    let rt = SharedRuntime::get().unwrap();
    let server = server(&rt);
    let addr = server.local_addr().unwrap();
    let client = client(&rt, &Trust::DangerouslyAcceptAnyServer);
    let (first_was_0rtt, second) = rt.handle().block_on(async move {
        let serve = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..2 {
                let incoming = server.accept().await.unwrap();
                // Accept 0.5-RTT so that the client's early stream is read at once.
                let (conn, _) = incoming.accept().unwrap().into_0rtt().unwrap();
                let mut recv = conn.accept_uni().await.unwrap();
                got.push(recv.read_to_end(1 << 10).await.unwrap());
                // Let the client collect its session ticket before it leaves.
                let _ = conn.closed().await;
            }
            got
        });
        // First contact: a full handshake; the session ticket arrives after it.
        let (first, conn) = match client.connect(addr, "localhost").unwrap().into_0rtt() {
            Ok((conn, _)) => (true, conn),
            Err(connecting) => (false, connecting.await.unwrap()),
        };
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(b"full handshake").await.unwrap();
        s.finish().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        conn.close(0u32.into(), b"bye");
        // Again: this time the first message goes in the first flight.
        let (conn, accepted) = client.connect(addr, "localhost").unwrap().into_0rtt().expect("a ticket to resume with");
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(b"early").await.unwrap();
        s.finish().unwrap();
        assert!(accepted.await, "the server took the early data");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        conn.close(0u32.into(), b"bye");
        let got = serve.await.unwrap();
        (first, got)
    });
    assert!(!first_was_0rtt, "no ticket yet on first contact");
    assert_eq!(second, vec![b"full handshake".to_vec(), b"early".to_vec()]);
}
