//! Arbitrary bytes as datagrams to a multicast sender (as NAKs) and a member (as data,
//! tails and gones), the first byte cutting the input; every datagram gets the group's
//! id so that it is parsed past it. Nothing may panic; a member delivers no message
//! twice and never more than the sender published or the input held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::multicast::{Member, MemberEvent, Sender, SenderLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let size = usize::from(cut % 64).max(1);
    let mut sender = Sender::new(9, SenderLimits { window_messages: 16, window_bytes: 4096, repair_gap_ms: 1 });
    let mut member = Member::new(9, 8);
    let mut delivered = 0u64;
    for (now, piece) in rest.chunks(size).enumerate() {
        let now = now as u64;
        let mut d = piece.to_vec();
        if d.len() >= 5 {
            d[1..5].copy_from_slice(&9u32.to_le_bytes());
        }
        if now % 3 == 0 {
            let published = sender.publish(&d).to_vec();
            member.receive(now, &published, &mut |e| if let MemberEvent::Message(_) = e { delivered += 1 });
        }
        sender.on_nak(now, &d, &mut |_| {}, &mut |_| {});
        member.receive(now, &d, &mut |e| if let MemberEvent::Message(_) = e { delivered += 1 });
        let _ = member.poll_nak(now);
        assert!(delivered <= rest.len() as u64 + sender.next_seq());
    }
});
