//! The envelope a network transport writes before each message in its receive ring:
//! who sent it, when, on which channel, and where the bytes are when they did not fit
//! the slot. Little endian; the Node binding exports these offsets so that TypeScript
//! reads the same layout.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | receive timestamp, ns since the Unix epoch (0: none) |
//! | 8 | 2 | sender's port |
//! | 10 | 1 | address family: 4 or 6 |
//! | 11 | 1 | [`Placement`]: 0 in the slot, 1 spilled (larger than the slot) |
//! | 12 | 2 | channel |
//! | 14 | 1 | kind: 0 message, 1 request, 2 response, 3 failed request, 4 cancelled request |
//! | 16 | 16 | sender's address (IPv4 in the first 4 bytes), network order |
//! | 32 | 4 | the peer's number on this hub (connection-oriented transports) |
//! | 36 | 4 | spilled: the message's length |
//! | 40 | 8 | spilled: the key to take it by |
//! | 48 | 8 | requests: the key pairing a request, its reply and its cancellation |
//!
//! ```
//! use zerohop::envelope::{Envelope, LEN};
//!
//! let mut slot = [0u8; LEN];
//! let env = Envelope { channel: 3, peer: 7, ..Envelope::datagram("10.0.0.1:9".parse().unwrap(), Some(5)) };
//! env.write(&mut slot);
//! assert_eq!(Envelope::read(&slot), Some(env));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const LEN: usize = 56;
pub const TIMESTAMP: usize = 0;
pub const PORT: usize = 8;
pub const FAMILY: usize = 10;
pub const PLACEMENT: usize = 11;
pub const CHANNEL: usize = 12;
pub const KIND: usize = 14;
pub const ADDRESS: usize = 16;
pub const PEER: usize = 32;
pub const SPILLED_LEN: usize = 36;
pub const SPILL_KEY: usize = 40;
pub const REQUEST: usize = 48;

/// Where a message's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// After the envelope, in the slot.
    Inline,
    /// Too large for the slot: held aside under `key`, `len` bytes long.
    Spilled { key: u64, len: u32 },
}

/// One message's envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: Option<SocketAddr>,
    pub timestamp_ns: Option<u64>,
    pub channel: u16,
    pub peer: u32,
    pub placement: Placement,
    /// What it is (see the table); 0 for a published message.
    pub kind: u8,
    pub request: u64,
}

impl Envelope {
    /// A datagram's: sender and receive time, channel 0, inline.
    pub fn datagram(from: SocketAddr, timestamp_ns: Option<u64>) -> Self {
        Envelope {
            from: Some(from),
            timestamp_ns,
            channel: 0,
            peer: 0,
            placement: Placement::Inline,
            kind: 0,
            request: 0,
        }
    }

    /// Writes it into `out` (at least [`LEN`] bytes).
    pub fn write(&self, out: &mut [u8]) {
        let out = &mut out[..LEN];
        out.fill(0);
        out[TIMESTAMP..TIMESTAMP + 8].copy_from_slice(&self.timestamp_ns.unwrap_or(0).to_le_bytes());
        if let Some(from) = self.from {
            out[PORT..PORT + 2].copy_from_slice(&from.port().to_le_bytes());
            match from.ip() {
                IpAddr::V4(a) => {
                    out[FAMILY] = 4;
                    out[ADDRESS..ADDRESS + 4].copy_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out[FAMILY] = 6;
                    out[ADDRESS..ADDRESS + 16].copy_from_slice(&a.octets());
                }
            }
        }
        out[CHANNEL..CHANNEL + 2].copy_from_slice(&self.channel.to_le_bytes());
        out[PEER..PEER + 4].copy_from_slice(&self.peer.to_le_bytes());
        out[KIND] = self.kind;
        out[REQUEST..REQUEST + 8].copy_from_slice(&self.request.to_le_bytes());
        if let Placement::Spilled { key, len } = self.placement {
            out[PLACEMENT] = 1;
            out[SPILLED_LEN..SPILLED_LEN + 4].copy_from_slice(&len.to_le_bytes());
            out[SPILL_KEY..SPILL_KEY + 8].copy_from_slice(&key.to_le_bytes());
        }
    }

    /// Reads an envelope; `None` if `bytes` is too short to hold one.
    pub fn read(bytes: &[u8]) -> Option<Envelope> {
        let b = bytes.get(..LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let ip = match b[FAMILY] {
            4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&b[ADDRESS..ADDRESS + 4]).expect("4")))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[ADDRESS..ADDRESS + 16]).expect("16")))),
            _ => None,
        };
        let ts = u64_at(TIMESTAMP);
        Some(Envelope {
            from: ip.map(|ip| SocketAddr::new(ip, u16_at(PORT))),
            timestamp_ns: (ts != 0).then_some(ts),
            channel: u16_at(CHANNEL),
            peer: u32_at(PEER),
            placement: match b[PLACEMENT] {
                1 => Placement::Spilled { key: u64_at(SPILL_KEY), len: u32_at(SPILLED_LEN) },
                _ => Placement::Inline,
            },
            kind: b[KIND],
            request: u64_at(REQUEST),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_both_families_and_spills() {
        let mut buf = [0xAAu8; LEN];
        for (from, ts) in [("10.1.2.3:9", Some(42)), ("[fe80::1:2]:65535", None)] {
            let env = Envelope::datagram(from.parse().unwrap(), ts);
            env.write(&mut buf);
            assert_eq!(Envelope::read(&buf), Some(env));
        }
        let spilled = Envelope {
            channel: 65535,
            peer: u32::MAX,
            placement: Placement::Spilled { key: u64::MAX - 1, len: 16 << 20 },
            kind: 3,
            request: 1 << 60,
            ..Envelope::datagram("[::1]:1".parse().unwrap(), None)
        };
        spilled.write(&mut buf);
        assert_eq!(Envelope::read(&buf), Some(spilled));
        assert_eq!(Envelope::read(&buf[..5]), None);
    }
}
