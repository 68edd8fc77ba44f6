//! The NATS protocol core (`zerohop_proto::nats`) against a real server (see
//! `zerohop_test_support::nats`), with two clients on plain blocking sockets driving a
//! `Session` each.
//! The clients ask for pedantic checking, so a `CONNECT` or an operation the server
//! would merely tolerate fails here.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use zerohop_proto::nats::{Event, Headers, Session};
use zerohop_test_support::nats::NatsServer;

/// A client: its socket, its session and what it read but did not use yet.
struct Client {
    sock: TcpStream,
    session: Session,
    read: Vec<u8>,
}

impl Client {
    fn new(port: u16, session: Session) -> Client {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Client { sock, session, read: Vec::new() }
    }

    /// Writes what the session has to say, reads what came, hands events to `on`.
    fn turn(&mut self, on: &mut dyn FnMut(Event<'_>)) {
        while !self.session.output().is_empty() {
            let n = self.sock.write(self.session.output()).unwrap();
            self.session.written(n);
        }
        let mut chunk = [0u8; 4096];
        match self.sock.read(&mut chunk) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => self.read.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
        let used = self.session.read(&self.read, on).unwrap();
        self.read.drain(..used);
    }
}

#[test]
fn sessions_talk_to_a_real_nats_server() {
    let server = NatsServer::start(&[]);
    let connect = r#"{"verbose":false,"pedantic":true,"headers":true,"no_responders":true,"echo":false,"lang":"zerohop","version":"0"}"#;
    let mut publisher = Client::new(server.port, Session::new(connect));
    let mut subscriber = Client::new(server.port, Session::new(connect));
    subscriber.session.subscribe("prices.>", None).unwrap();
    subscriber.session.subscribe("jobs", Some("workers")).unwrap();
    let mut got = Vec::new();
    let mut errors = Vec::new();
    let mut published = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && Instant::now() < deadline {
        publisher.turn(&mut |e| {
            if let Event::ServerError(text) = e {
                errors.push(text.to_owned());
            }
        });
        subscriber.turn(&mut |e| match e {
            Event::Message { subject, reply, headers, payload, .. } => got.push((
                subject.to_owned(),
                reply.map(str::to_owned),
                headers.map(|h| Headers::decode(h).unwrap().get("Zerohop-Origin").map(str::to_owned)),
                payload.to_vec(),
            )),
            Event::ServerError(text) => errors.push(text.to_owned()),
            Event::Connected => {}
        });
        if publisher.session.is_connected() && subscriber.session.is_connected() && !published {
            published = true;
            assert!(publisher.session.server().headers);
            assert_eq!(publisher.session.server().max_payload, 1 << 20);
            publisher.session.publish("prices.eur", None, None, b"1.08").unwrap();
            let mut h = Headers::default();
            h.insert("Zerohop-Origin", "host-a").unwrap();
            publisher.session.publish("prices.usd.spot", None, Some(&h), br#"{"bid":1}"#).unwrap();
            publisher.session.publish("elsewhere", None, None, b"nobody listens").unwrap();
            publisher.session.publish("jobs", Some("_INBOX.a1"), None, b"job").unwrap();
        }
    }
    assert!(errors.is_empty(), "the server complained: {errors:?}");
    assert_eq!(
        got,
        [
            ("prices.eur".to_owned(), None, None, b"1.08".to_vec()),
            ("prices.usd.spot".to_owned(), None, Some(Some("host-a".to_owned())), br#"{"bid":1}"#.to_vec()),
            ("jobs".to_owned(), Some("_INBOX.a1".to_owned()), None, b"job".to_vec()),
        ]
    );
}
