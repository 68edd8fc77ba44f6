//! Arbitrary bytes as what a NATS server sent, parsed operation by operation as a
//! connection would: the parser may refuse them, but it must not panic, must not take
//! more bytes than there are, and must not hand out a message above its limit; an
//! `INFO`'s JSON is read without a panic, and a session takes the bytes the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::nats::{Limits, Parsed, ServerInfo, ServerOp, Session, parse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_line: 256, max_payload: 1024 };
    let mut at = 0;
    while let Ok(Parsed::Op(op, n)) = parse(&data[at..], &limits) {
        assert!(n > 0 && at + n <= data.len());
        match op {
            ServerOp::Msg { payload, headers, .. } => assert!(payload.len() + headers.map_or(0, <[u8]>::len) <= limits.max_payload),
            ServerOp::Info(json) => drop(ServerInfo::parse(json)),
            _ => {}
        }
        at += n;
    }
    // The same bytes into a session: it takes no more than there are, whatever they say.
    let mut session = Session::new("{}");
    let _ = session.subscribe("a.>", None);
    if let Ok(n) = session.read(data, |_| ()) {
        assert!(n <= data.len());
    }
});
