//! The envelope the core writes before each message in a receive ring: who sent it,
//! when, on which channel, in what order, until when it is worth reading, and where the
//! bytes are when they did not fit the slot. The same for every network transport, so
//! that one reader (Rust's [`crate::NetTransport`], or TypeScript through the offsets
//! the Node binding exports) reads them all. Little endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | receive timestamp, ns since the Unix epoch (0: none) |
//! | 8 | 8 | expiry, ns since the Unix epoch, after which it is stale (0: never) |
//! | 16 | 8 | sequence number, per sender and channel (0: not numbered) |
//! | 24 | 8 | requests: the key pairing a request, its answer and its cancellation |
//! | 32 | 8 | spilled: the key to take the bytes by; aside: the bytes' offset in the ring's memory |
//! | 40 | 4 | spilled or aside: the message's length |
//! | 44 | 4 | the peer's number on this hub (connection-oriented transports) |
//! | 48 | 16 | sender's address (IPv4 in the first 4 bytes), network order; Unix sockets: its pid, uid and gid; a subject: its number (4 bytes) |
//! | 64 | 2 | sender's port |
//! | 66 | 2 | channel |
//! | 68 | 1 | address family: 4 or 6, 1 for Unix credentials, 2 for a subject (0: no sender) |
//! | 69 | 1 | [`Placement`]: 0 in the slot, 1 spilled, 2 aside (larger than the slot) |
//! | 70 | 1 | [`Kind`]: 0 message, 1 request, 2 response, 3 failed request, 4 cancelled request |
//! | 71 | 1 | priority (0: normal) |
//!
//! ```
//! use zerohop_net::envelope::{Envelope, LEN};
//!
//! let mut slot = [0u8; LEN];
//! let env = Envelope { channel: 3, peer: 7, seq: 9, ..Envelope::from("10.0.0.1:9".parse().unwrap(), Some(5)) };
//! env.write(&mut slot);
//! assert_eq!(Envelope::read(&slot), Some(env));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerohop_transport::{Credentials, Kind, MessageInfo};

pub const LEN: usize = 72;
pub const TIMESTAMP: usize = 0;
pub const EXPIRY: usize = 8;
pub const SEQ: usize = 16;
pub const REQUEST: usize = 24;
pub const SPILL_KEY: usize = 32;
pub const SPILLED_LEN: usize = 40;
pub const PEER: usize = 44;
pub const ADDRESS: usize = 48;
pub const PORT: usize = 64;
pub const CHANNEL: usize = 66;
pub const FAMILY: usize = 68;
pub const PLACEMENT: usize = 69;
pub const KIND: usize = 70;
pub const PRIORITY: usize = 71;

/// Where a message's bytes are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// After the envelope, in the slot.
    #[default]
    Inline,
    /// Too large for the slot: held by the ring under `key`, `len` bytes long.
    Spilled { key: u64, len: u32 },
    /// Too large for the slot: `len` bytes at byte `offset` of the ring's memory, in
    /// its aside area (where they stay until the reader has moved past the slot).
    Aside { offset: u64, len: u32 },
}

/// One message's envelope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub from: Option<SocketAddr>,
    /// Unix sockets: the sender's credentials (written instead of an address).
    pub credentials: Option<Credentials>,
    /// Transports whose receivers subscribe by pattern: the number of the subject it
    /// was published on (written instead of an address; 0: none).
    pub subject: u32,
    pub timestamp_ns: Option<u64>,
    /// After this (ns since the Unix epoch) the message is stale.
    pub expiry_ns: Option<u64>,
    /// Its number in its sender's sequence on its channel.
    pub seq: u64,
    pub channel: u16,
    pub priority: u8,
    pub peer: u32,
    pub placement: Placement,
    pub kind: Kind,
    pub request: u64,
}

impl Envelope {
    /// A message from `from`, received at `timestamp_ns`; the rest zero.
    pub fn from(from: SocketAddr, timestamp_ns: Option<u64>) -> Self {
        Envelope { from: Some(from), timestamp_ns, ..Envelope::default() }
    }

    /// Writes it into `out` (at least [`LEN`] bytes).
    pub fn write(&self, out: &mut [u8]) {
        let sender = Sender::of(self.from, self.credentials, self.subject);
        let out = write_head(
            out,
            sender,
            Head {
                timestamp_ns: self.timestamp_ns.unwrap_or(0),
                expiry_ns: self.expiry_ns.unwrap_or(0),
                seq: self.seq,
                request: self.request,
                channel: self.channel,
                peer: self.peer,
                kind: self.kind,
            },
        );
        out[PRIORITY] = self.priority;
        set_placement(out, self.placement);
    }

    /// Reads an envelope; `None` if `bytes` is too short to hold one.
    pub fn read(bytes: &[u8]) -> Option<Envelope> {
        let b = bytes.get(..LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let nonzero = |v: u64| (v != 0).then_some(v);
        let ip = match b[FAMILY] {
            4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&b[ADDRESS..ADDRESS + 4]).expect("4")))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[ADDRESS..ADDRESS + 16]).expect("16")))),
            _ => None,
        };
        let credentials = (b[FAMILY] == 1).then(|| Credentials {
            pid: u32_at(ADDRESS),
            uid: u32_at(ADDRESS + 4),
            gid: u32_at(ADDRESS + 8),
        });
        Some(Envelope {
            from: ip.map(|ip| SocketAddr::new(ip, u16_at(PORT))),
            credentials,
            subject: if b[FAMILY] == 2 { u32_at(ADDRESS) } else { 0 },
            timestamp_ns: nonzero(u64_at(TIMESTAMP)),
            expiry_ns: nonzero(u64_at(EXPIRY)),
            seq: u64_at(SEQ),
            channel: u16_at(CHANNEL),
            priority: b[PRIORITY],
            peer: u32_at(PEER),
            placement: match b[PLACEMENT] {
                1 => Placement::Spilled { key: u64_at(SPILL_KEY), len: u32_at(SPILLED_LEN) },
                2 => Placement::Aside { offset: u64_at(SPILL_KEY), len: u32_at(SPILLED_LEN) },
                _ => Placement::Inline,
            },
            kind: Kind::from_u8(b[KIND]),
            request: u64_at(REQUEST),
        })
    }

    /// What a reader is told of the message.
    pub fn info(&self) -> MessageInfo {
        MessageInfo {
            from: self.from,
            credentials: self.credentials,
            subject: self.subject,
            timestamp_ns: self.timestamp_ns,
            channel: self.channel,
            peer: self.peer,
            kind: self.kind,
            request: self.request,
            expiry_ns: None,
        }
    }
}

/// The numbers of an envelope's head (see [`write_head`]).
#[derive(Clone, Copy, Debug)]
pub struct Head {
    pub timestamp_ns: u64,
    /// When it stops being worth reading (ns since the Unix epoch; 0: never).
    pub expiry_ns: u64,
    pub seq: u64,
    pub request: u64,
    pub channel: u16,
    pub peer: u32,
    pub kind: Kind,
}

/// Who sent a message, as its envelope says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    None,
    Addr(SocketAddr),
    /// Unix sockets: the sending process.
    Credentials(Credentials),
    /// Transports whose receivers subscribe by pattern: the number of the subject it was
    /// published on, in the receiving hub's table of subjects.
    Subject(u32),
}

impl Sender {
    /// The sender from an envelope's fields: credentials, else a subject, else the address.
    pub fn of(from: Option<SocketAddr>, credentials: Option<Credentials>, subject: u32) -> Sender {
        match (credentials, subject, from) {
            (Some(c), _, _) => Sender::Credentials(c),
            (None, s, _) if s != 0 => Sender::Subject(s),
            (None, _, Some(a)) => Sender::Addr(a),
            (None, _, None) => Sender::None,
        }
    }
}

/// Now, in ns since the Unix epoch: what an [`Envelope::expiry_ns`] is compared with.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Writes an envelope into `out` (at least [`LEN`] bytes) with normal priority, the bytes in the slot (see [`set_placement`] otherwise); returns its
/// [`LEN`] bytes. A receive ring writes each message's envelope this way, from fields
/// where they are: building an [`Envelope`] first costs a copy of it per message, read
/// back wider than it was written (a store-forwarding stall, 2026-12-05).
#[inline]
pub fn write_head(out: &mut [u8], sender: Sender, head: Head) -> &mut [u8] {
    // Made whole here, then copied: the slot's memory is written once, in wide stores.
    let mut env = [0u8; LEN];
    fill_head(&mut env, sender, head);
    let out = &mut out[..LEN];
    out.copy_from_slice(&env);
    out
}

#[inline(always)]
fn fill_head(out: &mut [u8; LEN], sender: Sender, head: Head) {
    out[TIMESTAMP..TIMESTAMP + 8].copy_from_slice(&head.timestamp_ns.to_le_bytes());
    out[EXPIRY..EXPIRY + 8].copy_from_slice(&head.expiry_ns.to_le_bytes());
    out[SEQ..SEQ + 8].copy_from_slice(&head.seq.to_le_bytes());
    out[REQUEST..REQUEST + 8].copy_from_slice(&head.request.to_le_bytes());
    match sender {
        Sender::None => {}
        Sender::Credentials(c) => {
            out[FAMILY] = 1;
            for (i, v) in [c.pid, c.uid, c.gid].into_iter().enumerate() {
                out[ADDRESS + 4 * i..ADDRESS + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        Sender::Subject(s) => {
            out[FAMILY] = 2;
            out[ADDRESS..ADDRESS + 4].copy_from_slice(&s.to_le_bytes());
        }
        Sender::Addr(from) => {
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
    }
    out[CHANNEL..CHANNEL + 2].copy_from_slice(&head.channel.to_le_bytes());
    out[PEER..PEER + 4].copy_from_slice(&head.peer.to_le_bytes());
    out[KIND] = head.kind as u8;
}

/// Says in the envelope in `out` where the message's bytes are.
pub fn set_placement(out: &mut [u8], placement: Placement) {
    let (placement, key, len) = match placement {
        Placement::Inline => (0, 0, 0),
        Placement::Spilled { key, len } => (1, key, len),
        Placement::Aside { offset, len } => (2, offset, len),
    };
    out[PLACEMENT] = placement;
    out[SPILLED_LEN..SPILLED_LEN + 4].copy_from_slice(&len.to_le_bytes());
    out[SPILL_KEY..SPILL_KEY + 8].copy_from_slice(&key.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_both_families_and_spills() {
        let mut buf = [0xAAu8; LEN];
        for (from, ts) in [("10.1.2.3:9", Some(42)), ("[fe80::1:2]:65535", None)] {
            let env = Envelope::from(from.parse().unwrap(), ts);
            env.write(&mut buf);
            assert_eq!(Envelope::read(&buf), Some(env));
        }
        let spilled = Envelope {
            channel: 65535,
            priority: 255,
            peer: u32::MAX,
            seq: u64::MAX,
            expiry_ns: Some(1 << 62),
            placement: Placement::Spilled { key: u64::MAX - 1, len: 16 << 20 },
            kind: Kind::Failed,
            request: 1 << 60,
            ..Envelope::from("[::1]:1".parse().unwrap(), None)
        };
        spilled.write(&mut buf);
        assert_eq!(Envelope::read(&buf), Some(spilled));
        let aside = Envelope { placement: Placement::Aside { offset: 1 << 40, len: 4096 }, ..spilled };
        aside.write(&mut buf);
        assert_eq!(Envelope::read(&buf), Some(aside));
        let unix =
            Envelope { credentials: Some(Credentials { pid: 7, uid: 1000, gid: u32::MAX }), ..Envelope::default() };
        unix.write(&mut buf);
        assert_eq!(Envelope::read(&buf), Some(unix));
        assert_eq!(Envelope::read(&buf[..5]), None);
    }

    #[test]
    fn fields_do_not_overlap() {
        let fields = [
            (TIMESTAMP, 8),
            (EXPIRY, 8),
            (SEQ, 8),
            (REQUEST, 8),
            (SPILL_KEY, 8),
            (SPILLED_LEN, 4),
            (PEER, 4),
            (ADDRESS, 16),
            (PORT, 2),
            (CHANNEL, 2),
            (FAMILY, 1),
            (PLACEMENT, 1),
            (KIND, 1),
            (PRIORITY, 1),
        ];
        let mut used = [false; LEN];
        for (at, len) in fields {
            for b in &mut used[at..at + len] {
                assert!(!*b, "byte of the field at {at} is used twice");
                *b = true;
            }
        }
        assert!(used.iter().all(|b| *b), "every byte has a field");
    }
}
