//! The fixed frame header shared by every network transport.
//!
//! Layout, network byte order, 40 bytes:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 2    | magic `0x5A48` ("ZH")                   |
//! | 2      | 1    | protocol version                        |
//! | 3      | 1    | flags ([`FrameFlags`])                  |
//! | 4      | 2    | channel                                 |
//! | 6      | 2    | fragment index                          |
//! | 8      | 2    | fragment count (1 = not fragmented)     |
//! | 10     | 2    | reserved, must be zero                  |
//! | 12     | 4    | session id (changes on reconnect)       |
//! | 16     | 8    | sequence number                         |
//! | 24     | 8    | cumulative ack                          |
//! | 32     | 4    | payload length                          |
//! | 36     | 4    | CRC-32C of bytes 0..36 and the payload  |
//!
//! Decoding never panics and never trusts a length: a frame from the network is
//! either a valid header plus exactly its payload, or a [`DecodeError`] that the
//! transport counts and drops.

use crate::crc32c::crc32c;

/// Size of an encoded [`FrameHeader`].
pub const FRAME_HEADER_LEN: usize = 40;
/// The protocol version this crate writes and accepts.
pub const PROTOCOL_VERSION: u8 = 1;
const MAGIC: u16 = 0x5A48;
const CHECKSUM_OFFSET: usize = 36;

/// Flag bits of a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameFlags(pub u8);

impl FrameFlags {
    /// The frame carries an acknowledgement in `ack`.
    pub const ACK: u8 = 0b0000_0001;
    /// The payload is LZ4-compressed.
    pub const COMPRESSED: u8 = 0b0000_0010;
    /// The sender wants this frame acknowledged (at-least-once delivery).
    pub const RELIABLE: u8 = 0b0000_0100;
    /// The payload packs several length-prefixed messages.
    pub const PACKED: u8 = 0b0000_1000;
    /// Each message of the frame (each packed one, or the one its fragments make)
    /// starts with its expiry (`ttlMs`): 8 bytes, ns since the Unix epoch, little endian.
    pub const EXPIRING: u8 = 0b0001_0000;
    /// On a frame: the sender is flow controlled, and wants to hear how far the receiver
    /// read. With [`ACK`](Self::ACK): that report (`ack`: the next sequence number
    /// expected, `seq`: the window allowed, in bytes). See [`crate::flow`].
    pub const FLOW: u8 = 0b0010_0000;
    const KNOWN: u8 = Self::ACK | Self::COMPRESSED | Self::RELIABLE | Self::PACKED | Self::EXPIRING | Self::FLOW;

    /// Whether every bit in `bits` is set.
    pub fn contains(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
}

/// The header in front of every framed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Flag bits.
    pub flags: FrameFlags,
    /// Logical channel (priority and QoS are per channel).
    pub channel: u16,
    /// Index of this fragment, `0..frag_count`.
    pub frag_index: u16,
    /// Number of fragments of the message; 1 when it is not fragmented.
    pub frag_count: u16,
    /// Session id; a new one on every (re)connect.
    pub session: u32,
    /// Sequence number of the message within its session and channel.
    pub seq: u64,
    /// Cumulative acknowledgement (valid with [`FrameFlags::ACK`]).
    pub ack: u64,
    /// Length of the payload that follows the header.
    pub payload_len: u32,
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer cannot hold header and payload.
    BufferTooSmall { needed: usize, available: usize },
    /// `payload_len` does not match the payload given.
    LengthMismatch { header: u32, payload: usize },
    /// The fragment fields are inconsistent (`frag_count == 0` or `frag_index >= frag_count`).
    BadFragment,
}

/// Why bytes are not a valid frame. Transports count these and drop the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header, or fewer than the payload length says.
    Truncated { needed: usize, available: usize },
    /// More bytes than header plus payload length.
    TrailingBytes { extra: usize },
    /// The first two bytes are not the zerohop magic: not our datagram.
    BadMagic,
    /// A protocol version this build does not speak.
    UnsupportedVersion(u8),
    /// Unknown flag bits or a non-zero reserved field.
    BadFlags,
    /// Fragment fields out of range.
    BadFragment,
    /// The checksum does not match: the frame was corrupted.
    BadChecksum { expected: u32, actual: u32 },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall { needed, available } => {
                write!(f, "frame needs {needed} bytes, buffer has {available}")
            }
            Self::LengthMismatch { header, payload } => {
                write!(f, "header says {header} payload bytes, {payload} given")
            }
            Self::BadFragment => write!(f, "fragment index must be below a non-zero fragment count"),
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { needed, available } => {
                write!(f, "truncated frame: {available} of {needed} bytes")
            }
            Self::TrailingBytes { extra } => write!(f, "{extra} bytes after the payload"),
            Self::BadMagic => write!(f, "not a zerohop frame (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            Self::BadFlags => write!(f, "unknown flag bits or non-zero reserved field"),
            Self::BadFragment => write!(f, "fragment fields out of range"),
            Self::BadChecksum { expected, actual } => {
                write!(f, "checksum mismatch: frame says {expected:#010x}, computed {actual:#010x}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}
impl std::error::Error for DecodeError {}

/// The session of the frame at the start of `bytes`, if it starts with a frame's magic
/// (not checked further: for telling our own frames apart cheaply, not for trusting them).
///
/// ```
/// use zerohop_proto::{FrameHeader, peek_session};
///
/// let header = FrameHeader { session: 77, ..FrameHeader::new(0) };
/// let mut frame = [0u8; zerohop_proto::FRAME_HEADER_LEN];
/// header.encode_frame(&[], &mut frame).unwrap();
/// assert_eq!(peek_session(&frame), Some(77));
/// assert_eq!(peek_session(b"garbage"), None);
/// ```
pub fn peek_session(bytes: &[u8]) -> Option<u32> {
    let head = bytes.get(..16)?;
    if head[..2] != MAGIC.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes([head[12], head[13], head[14], head[15]]))
}

impl FrameHeader {
    /// A header for an unfragmented message of `payload_len` bytes on channel 0.
    pub fn new(payload_len: u32) -> Self {
        Self {
            flags: FrameFlags::default(),
            channel: 0,
            frag_index: 0,
            frag_count: 1,
            session: 0,
            seq: 0,
            ack: 0,
            payload_len,
        }
    }

    /// Writes the header and `payload` into `out`; returns the frame length.
    pub fn encode_frame(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
        let needed = FRAME_HEADER_LEN + payload.len();
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall { needed, available: out.len() });
        }
        out[FRAME_HEADER_LEN..needed].copy_from_slice(payload);
        self.encode_in_place(&mut out[..needed])?;
        Ok(needed)
    }

    /// Writes the header into the first [`FRAME_HEADER_LEN`] bytes of `frame`, whose
    /// remaining bytes are already the payload (so packers build datagrams without a
    /// second copy). `payload_len` must equal `frame.len() - FRAME_HEADER_LEN`.
    pub fn encode_in_place(&self, frame: &mut [u8]) -> Result<(), EncodeError> {
        if frame.len() < FRAME_HEADER_LEN {
            return Err(EncodeError::BufferTooSmall { needed: FRAME_HEADER_LEN, available: frame.len() });
        }
        let payload_len = frame.len() - FRAME_HEADER_LEN;
        if self.payload_len as usize != payload_len {
            return Err(EncodeError::LengthMismatch { header: self.payload_len, payload: payload_len });
        }
        if self.frag_count == 0 || self.frag_index >= self.frag_count {
            return Err(EncodeError::BadFragment);
        }
        let h = &mut frame[..FRAME_HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        h[2] = PROTOCOL_VERSION;
        h[3] = self.flags.0;
        h[4..6].copy_from_slice(&self.channel.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag_index.to_be_bytes());
        h[8..10].copy_from_slice(&self.frag_count.to_be_bytes());
        h[10..12].copy_from_slice(&0u16.to_be_bytes());
        h[12..16].copy_from_slice(&self.session.to_be_bytes());
        h[16..24].copy_from_slice(&self.seq.to_be_bytes());
        h[24..32].copy_from_slice(&self.ack.to_be_bytes());
        h[32..36].copy_from_slice(&self.payload_len.to_be_bytes());
        let (head, payload) = frame.split_at_mut(FRAME_HEADER_LEN);
        let sum = frame_checksum(&head[..CHECKSUM_OFFSET], payload);
        head[CHECKSUM_OFFSET..FRAME_HEADER_LEN].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }

    /// Parses one whole frame: the header and exactly `payload_len` bytes after it.
    pub fn decode_frame(frame: &[u8]) -> Result<(FrameHeader, &[u8]), DecodeError> {
        if frame.len() < FRAME_HEADER_LEN {
            return Err(DecodeError::Truncated { needed: FRAME_HEADER_LEN, available: frame.len() });
        }
        let be16 = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes(frame[o..o + 4].try_into().expect("4 bytes"));
        let be64 = |o: usize| u64::from_be_bytes(frame[o..o + 8].try_into().expect("8 bytes"));
        if be16(0) != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if frame[2] != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(frame[2]));
        }
        let flags = FrameFlags(frame[3]);
        if flags.0 & !FrameFlags::KNOWN != 0 || be16(10) != 0 {
            return Err(DecodeError::BadFlags);
        }
        let header = FrameHeader {
            flags,
            channel: be16(4),
            frag_index: be16(6),
            frag_count: be16(8),
            session: be32(12),
            seq: be64(16),
            ack: be64(24),
            payload_len: be32(32),
        };
        if header.frag_count == 0 || header.frag_index >= header.frag_count {
            return Err(DecodeError::BadFragment);
        }
        let needed = FRAME_HEADER_LEN + header.payload_len as usize;
        if frame.len() < needed {
            return Err(DecodeError::Truncated { needed, available: frame.len() });
        }
        if frame.len() > needed {
            return Err(DecodeError::TrailingBytes { extra: frame.len() - needed });
        }
        let payload = &frame[FRAME_HEADER_LEN..];
        let expected = be32(CHECKSUM_OFFSET);
        let actual = frame_checksum(&frame[..CHECKSUM_OFFSET], payload);
        if expected != actual {
            return Err(DecodeError::BadChecksum { expected, actual });
        }
        Ok((header, payload))
    }
}

fn frame_checksum(header_without_sum: &[u8], payload: &[u8]) -> u32 {
    crc32c(crc32c(0, header_without_sum), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_header() -> impl Strategy<Value = (FrameHeader, Vec<u8>)> {
        (
            any::<u8>().prop_map(|f| FrameFlags(f & FrameFlags::KNOWN)),
            any::<u16>(),
            (1u16..=u16::MAX).prop_flat_map(|count| (0..count, Just(count))),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(flags, channel, (frag_index, frag_count), session, seq, ack, payload)| {
                let header = FrameHeader {
                    flags,
                    channel,
                    frag_index,
                    frag_count,
                    session,
                    seq,
                    ack,
                    payload_len: payload.len() as u32,
                };
                (header, payload)
            })
    }

    proptest! {
        #[test]
        fn roundtrip((header, payload) in arb_header()) {
            let mut buf = vec![0u8; FRAME_HEADER_LEN + payload.len()];
            let n = header.encode_frame(&payload, &mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            let (decoded, body) = FrameHeader::decode_frame(&buf).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(body, &payload[..]);
        }

        #[test]
        fn any_single_bit_flip_is_rejected((header, payload) in arb_header(), bit in any::<prop::sample::Index>()) {
            let mut buf = vec![0u8; FRAME_HEADER_LEN + payload.len()];
            header.encode_frame(&payload, &mut buf).unwrap();
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(FrameHeader::decode_frame(&buf).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FrameHeader::decode_frame(&bytes);
        }

        #[test]
        fn truncation_is_reported((header, payload) in arb_header(), cut in any::<prop::sample::Index>()) {
            let mut buf = vec![0u8; FRAME_HEADER_LEN + payload.len()];
            header.encode_frame(&payload, &mut buf).unwrap();
            let cut = cut.index(buf.len());
            let is_truncated = matches!(FrameHeader::decode_frame(&buf[..cut]), Err(DecodeError::Truncated { .. }));
            prop_assert!(is_truncated);
        }
    }

    #[test]
    fn rejects_foreign_and_malformed() {
        assert_eq!(FrameHeader::decode_frame(&[0u8; 40]), Err(DecodeError::BadMagic));
        let mut buf = [0u8; FRAME_HEADER_LEN];
        FrameHeader::new(0).encode_frame(&[], &mut buf).unwrap();
        let mut v2 = buf;
        v2[2] = 9;
        assert_eq!(FrameHeader::decode_frame(&v2), Err(DecodeError::UnsupportedVersion(9)));
        let mut extra = buf.to_vec();
        extra.push(0);
        assert_eq!(FrameHeader::decode_frame(&extra), Err(DecodeError::TrailingBytes { extra: 1 }));
        let bad = FrameHeader { frag_index: 2, frag_count: 2, ..FrameHeader::new(0) };
        assert_eq!(bad.encode_frame(&[], &mut buf), Err(EncodeError::BadFragment));
        assert!(matches!(
            FrameHeader::new(5).encode_frame(b"hello", &mut buf[..10]),
            Err(EncodeError::BufferTooSmall { needed: 45, available: 10 })
        ));
    }
}
