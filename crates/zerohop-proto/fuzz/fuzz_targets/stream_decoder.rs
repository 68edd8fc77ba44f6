//! Arbitrary bytes as a stream, cut into chunks whose sizes come from the input itself.
//! The decoder may refuse the stream, but it must not panic, must not deliver a message
//! above its limit, and must deliver no more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::stream::StreamDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    let mut decoder = StreamDecoder::new(1024);
    let mut delivered = 0;
    for piece in stream.chunks(chunk) {
        let ok = decoder.push(piece, |m| {
            assert!(m.len() <= 1024);
            delivered += m.len();
        });
        if ok.is_err() {
            break;
        }
    }
    assert!(delivered <= stream.len());
});
