//! The head of a QUIC datagram: its channel and sequence number (LEB128 each).

use zerohop_proto::session::get_varint;
use zerohop_proto::stream::{MAX_PREFIX_LEN, write_prefix};

/// Writes the head into `out`; its length.
pub(crate) fn encode_datagram_head(channel: u16, seq: u32, out: &mut [u8; 16]) -> usize {
    let mut field = [0u8; MAX_PREFIX_LEN];
    let a = write_prefix(usize::from(channel), &mut field);
    out[..a].copy_from_slice(&field[..a]);
    let b = write_prefix(seq as usize, &mut field);
    out[a..a + b].copy_from_slice(&field[..b]);
    a + b
}

/// The channel, sequence number and head length of a datagram; `None` if malformed.
pub(crate) fn decode_datagram_head(bytes: &[u8]) -> Option<(u16, u32, usize)> {
    let (channel, a) = get_varint(bytes).ok()??;
    let (seq, b) = get_varint(&bytes[a..]).ok()??;
    Some((u16::try_from(channel).ok()?, u32::try_from(seq).ok()?, a + b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut out = [0u8; 16];
        for (channel, seq) in [(0, 0), (65535, u32::MAX), (300, 1 << 20)] {
            let n = encode_datagram_head(channel, seq, &mut out);
            assert_eq!(decode_datagram_head(&out[..n]), Some((channel, seq, n)));
        }
        assert_eq!(decode_datagram_head(&[0xff]), None);
    }
}
