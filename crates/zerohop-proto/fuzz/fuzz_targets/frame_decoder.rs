//! Arbitrary bytes as received datagrams. Each one is decoded as a frame (and, if valid,
//! its packed records walked and its fragment reassembled); and since random bytes rarely
//! pass the checksum, each is also fed to the record walker and, with fields taken from
//! its first bytes, to the reassembler directly. Nothing may panic, and the reassembler's
//! memory must stay within its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::datagram::Inbox;
use zerohop_proto::frag::{MessageKey, Reassembler, ReassemblyLimits};
use zerohop_proto::pack::unpack;
use zerohop_proto::{FrameFlags, FrameHeader};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_fragment: 64,
        max_message: 4096,
        max_pending_bytes: 8192,
        max_pending_messages: 8,
        timeout_ms: 100,
    };
    let mut reassembler = Reassembler::new(limits);
    let mut inbox = Inbox::with_limits(limits);
    // The input may hold several datagrams: split on a 2-byte length prefix.
    let mut rest = data;
    let mut now = 0;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (datagram, tail) = rest[2..].split_at(len);
        rest = tail;
        now += 7;
        inbox.receive(datagram, now, |_, message| assert!(message.len() <= limits.max_message));
        let mut feed = |key: MessageKey, index: u16, count: u16, payload: &[u8]| {
            if let Ok(Some(message)) = reassembler.insert(key, index, count, payload, now) {
                assert!(message.len() <= limits.max_message);
            }
            assert!(reassembler.pending_bytes() <= limits.max_pending_bytes);
            assert!(reassembler.pending_messages() <= limits.max_pending_messages);
        };
        if let Ok((header, payload)) = FrameHeader::decode_frame(datagram) {
            if header.flags.contains(FrameFlags::PACKED) {
                let total: usize = unpack(payload).flatten().map(|m| 4 + m.len()).sum();
                assert!(total <= payload.len());
            }
            let key = MessageKey { session: header.session, channel: header.channel, seq: header.seq };
            feed(key, header.frag_index, header.frag_count, payload);
        }
        let total: usize = unpack(datagram).flatten().map(|m| 4 + m.len()).sum();
        assert!(total <= datagram.len());
        if datagram.len() >= 5 {
            let key = MessageKey { session: 0, channel: 0, seq: u64::from(datagram[0] % 4) };
            let index = u16::from(datagram[1] % 80);
            let count = u16::from(datagram[2] % 80);
            let len = (datagram[3] as usize).min(datagram.len() - 5);
            feed(key, index, count, &datagram[5..5 + len]);
        }
    }
});
