//! Arbitrary bytes as what a NATS server sent, parsed operation by operation as a
//! connection would: the parser may refuse them, but it must not panic, must not take
//! more bytes than there are, and must not hand out a message above its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::nats::{Limits, Parsed, ServerOp, parse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_line: 256, max_payload: 1024 };
    let mut at = 0;
    while let Ok(Parsed::Op(op, n)) = parse(&data[at..], &limits) {
        assert!(n > 0 && at + n <= data.len());
        if let ServerOp::Msg { payload, headers, .. } = op {
            assert!(payload.len() + headers.map_or(0, <[u8]>::len) <= limits.max_payload);
        }
        at += n;
    }
});
