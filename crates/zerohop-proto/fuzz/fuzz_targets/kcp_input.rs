//! Arbitrary bytes as datagrams into a KCP conversation (the first byte cuts the input
//! into datagrams; every other datagram gets the conversation's id, so that its
//! segments are parsed past the id check), with updates between them. Nothing may
//! panic; what it receives is never more than it was given; it keeps answering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::kcp::Kcp;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let size = usize::from(cut).max(1) * 4;
    let mut k = Kcp::new(0x5eed);
    k.set_nodelay(1, 10, 2, true);
    let mut given = 0;
    let mut taken = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (i, piece) in rest.chunks(size).enumerate() {
        let mut d = piece.to_vec();
        if i % 2 == 0 && d.len() >= 4 {
            d[..4].copy_from_slice(&0x5eedu32.to_le_bytes());
        }
        given += d.len();
        let _ = k.input(&d);
        k.update(i as u32 * 10, &mut |out: &[u8]| assert!(!out.is_empty()));
        while let Ok(n) = k.recv(&mut buf) {
            taken += n;
        }
        assert!(taken <= given);
    }
    assert!(k.send(b"still answering").is_ok());
});
