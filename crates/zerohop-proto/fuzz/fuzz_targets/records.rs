//! Arbitrary bytes as a TCP or Unix socket connection's stream, from its first byte (the
//! hello) on, cut into chunks whose sizes come from the input itself. The reader may
//! refuse the connection, but it must not panic, must report nothing before a hello,
//! must keep messages and control records within their limits and channels within
//! range, and must hand out no more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::records::{CONTROL_OVERHEAD, Control, Record, RecordReader};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    let mut reader = RecordReader::new(1024, 4);
    let mut first = true;
    let mut delivered = 0;
    for piece in stream.chunks(chunk) {
        let ok = reader.push(piece, |rec| {
            if first {
                assert!(matches!(rec, Record::Control(Control::Hello { .. })), "the hello first");
                first = false;
            }
            match rec {
                Record::Message { channel, payload, .. } => {
                    assert!(channel < 4);
                    assert!(payload.len() <= 1024);
                    delivered += payload.len();
                }
                Record::Control(Control::Request { body, .. } | Control::Reply { body, .. }) => {
                    assert!(body.len() <= 1024 + CONTROL_OVERHEAD);
                    delivered += body.len();
                }
                Record::Control(Control::Start { channel, .. }) => assert!(channel < 4),
                _ => {}
            }
        });
        if ok.is_err() {
            break;
        }
    }
    assert!(delivered <= stream.len());
});
