//! Times how long a connection takes on loopback (development aid).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerohop_net::ring::{Inbound, Sink};
use zerohop_quic::{QuicConfig, QuicProtocol, Side};
use zerohop_transport::StatusEvent;

#[derive(Default)]
struct Log(Mutex<Vec<(Instant, String)>>);
impl Sink for Log {
    fn deliver(&self, _m: &Inbound<'_>) -> Option<u64> {
        self.0.lock().unwrap().push((Instant::now(), "message".into()));
        Some(0)
    }
    fn consumed(&self) -> u64 {
        u64::MAX
    }
    fn status(&self, e: StatusEvent) {
        self.0.lock().unwrap().push((Instant::now(), format!("{:?}", e.status)));
    }
}

fn main() {
    let server_log = Arc::new(Log::default());
    let server =
        QuicProtocol::start(QuicConfig::new(Side::Listen, "127.0.0.1:0".parse().unwrap()), server_log.clone()).unwrap();
    for _ in 0..5 {
        let log = Arc::new(Log::default());
        let t = Instant::now();
        let c = QuicProtocol::start(
            QuicConfig::new(Side::Connect { server_name: "localhost".into() }, server.local_addr()),
            log.clone(),
        )
        .unwrap();
        c.publish(0, b"x").unwrap();
        if std::env::var("SPIN").is_ok() {
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(Duration::from_millis(30));
        }
        for (at, what) in log.0.lock().unwrap().iter() {
            print!("{what}@{:?} ", *at - t);
        }
        let l = server_log.0.lock().unwrap();
        if let Some((at, _)) = l.iter().rev().find(|(_, w)| w == "message") {
            print!("server message@{:?}", *at - t);
        }
        println!();
        drop(l);
        c.close();
    }
}
