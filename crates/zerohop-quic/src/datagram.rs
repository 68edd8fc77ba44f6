//! The head of a QUIC datagram: its channel with a flag saying whether an expiry
//! follows, its sequence number (LEB128 each), then the expiry if there is one (ns
//! since the Unix epoch, 8 bytes little-endian: `ttlMs`).

use zerohop_proto::session::get_varint;
use zerohop_proto::stream::{MAX_PREFIX_LEN, write_prefix};

/// The longest head: two varints and an expiry.
pub(crate) const MAX_HEAD: usize = 2 * MAX_PREFIX_LEN + 8;

/// Writes the head into `out`; its length.
pub(crate) fn encode_datagram_head(channel: u16, seq: u32, expiry_ns: Option<u64>, out: &mut [u8; MAX_HEAD]) -> usize {
    let mut field = [0u8; MAX_PREFIX_LEN];
    let a = write_prefix((usize::from(channel) << 1) | usize::from(expiry_ns.is_some()), &mut field);
    out[..a].copy_from_slice(&field[..a]);
    let b = write_prefix(seq as usize, &mut field);
    out[a..a + b].copy_from_slice(&field[..b]);
    let mut n = a + b;
    if let Some(at) = expiry_ns {
        out[n..n + 8].copy_from_slice(&at.to_le_bytes());
        n += 8;
    }
    n
}

/// A datagram's head, as read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub channel: u16,
    pub seq: u32,
    pub expiry_ns: Option<u64>,
    /// Where the message starts.
    pub len: usize,
}

/// The head of `bytes`; `None` if malformed.
pub(crate) fn decode_datagram_head(bytes: &[u8]) -> Option<Head> {
    let (flagged, a) = get_varint(bytes).ok()??;
    let (seq, b) = get_varint(&bytes[a..]).ok()??;
    let mut len = a + b;
    let expiry_ns = if flagged & 1 == 1 {
        let at = u64::from_le_bytes(bytes.get(len..len + 8)?.try_into().ok()?);
        len += 8;
        Some(at)
    } else {
        None
    };
    Some(Head { channel: u16::try_from(flagged >> 1).ok()?, seq: u32::try_from(seq).ok()?, expiry_ns, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut out = [0u8; MAX_HEAD];
        for (channel, seq) in [(0, 0), (65535, u32::MAX), (300, 1 << 20)] {
            for expiry_ns in [None, Some(0), Some(u64::MAX), Some(1_780_000_000_000_000_000)] {
                let len = encode_datagram_head(channel, seq, expiry_ns, &mut out);
                assert_eq!(decode_datagram_head(&out[..len]), Some(Head { channel, seq, expiry_ns, len }));
                // Cut short anywhere: malformed, never misread.
                for cut in 0..len {
                    assert_eq!(decode_datagram_head(&out[..cut]), None, "{channel} {seq} {expiry_ns:?} cut at {cut}");
                }
            }
        }
        assert_eq!(decode_datagram_head(&[0xff]), None);
        // A channel past u16 is malformed.
        assert_eq!(decode_datagram_head(&[0x80, 0x80, 0x08, 0]), None);
    }
}
