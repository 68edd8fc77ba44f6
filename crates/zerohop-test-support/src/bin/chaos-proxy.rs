//! The chaos proxy as a process, for tests in other languages (the ava suite):
//! `chaos-proxy <upstream host:port> <spec> [seed]` forwards datagrams from its own
//! port to `upstream` and back with the faults of `spec` (`loss:0.3,reorder:0.05,…`,
//! see `zerohop_proto::chaos::ChaosSpec`). It prints `{"address":"127.0.0.1:port"}`
//! once listening, and when its standard input closes it prints what it did
//! (`{"received":…,"dropped":…,"duplicated":…,"forwarded":…}`) and exits.

use std::io::Read;
use std::net::SocketAddr;

use zerohop_proto::chaos::ChaosSpec;
use zerohop_test_support::chaos::ChaosProxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(upstream), Some(spec)) = (args.first(), args.get(1)) else {
        eprintln!("usage: chaos-proxy <upstream host:port> <spec> [seed]");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().unwrap_or_else(|e| fail(&format!("upstream {upstream}: {e}")));
    let spec = ChaosSpec::parse(spec).unwrap_or_else(|e| fail(&format!("spec {spec}: {e:?}")));
    let seed = args.get(2).map_or(Ok(1), |s| s.parse()).unwrap_or_else(|e| fail(&format!("seed: {e}")));
    let listen = SocketAddr::new(upstream.ip(), 0);
    let proxy = ChaosProxy::start(listen, upstream, spec, seed).unwrap_or_else(|e| fail(&format!("{e}")));
    println!("{{\"address\":\"{}\"}}", proxy.local_addr());
    // Until whoever started it is done (or gone).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let s = proxy.stop();
    println!(
        "{{\"received\":{},\"dropped\":{},\"duplicated\":{},\"forwarded\":{}}}",
        s.received, s.dropped, s.duplicated, s.forwarded
    );
}

fn fail(why: &str) -> ! {
    eprintln!("chaos-proxy: {why}");
    std::process::exit(2);
}
