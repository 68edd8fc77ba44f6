//! The zerohop wire format, free of I/O.
//!
//! Every network transport (UDP, KCP, TCP, Unix sockets) frames a message with the
//! same fixed [`FrameHeader`]: version, channel, session, sequence, cumulative ack,
//! fragment fields, payload length and a CRC-32C checksum over header and payload.
//! This crate only turns bytes into headers and back, so it can be unit-, property-
//! and fuzz-tested without sockets (the quinn-proto model).
//!
//! - [`pack`]: several small messages in one datagram.
//! - [`frag`]: messages larger than a datagram, split and reassembled with bounded memory.
//! - [`datagram`]: the sender's [`datagram::Outbox`] and the receiver's [`datagram::Inbox`],
//!   which count what was lost, late or duplicated.
//! - [`compress`]: LZ4 compression of one payload, flagged so mixed peers work.
//! - [`chaos`]: seeded fault decisions (loss, reordering, duplication, delay) for the
//!   chaos proxy.
//! - [`kcp`]: KCP's reliable delivery over datagrams, wire-compatible with `ikcp.c`.
//! - [`multicast`]: reliable multicast repaired by NAKs (one sender, members that fall
//!   behind told so, nobody held back).
//! - [`lifecycle`]: a connection's status (connecting, connected, reconnecting,
//!   disconnected, closed) and its retry schedule (exponential backoff with jitter).
//! - [`stream`]: messages on an ordered byte stream (QUIC streams, TCP, Unix sockets),
//!   length-prefixed, decoded from chunks of any size.
//! - [`session`]: reliable delivery across reconnects on those streams (sequence
//!   numbers, acknowledgements of what the application read, replay, duplicate filter).
//! - [`schedule`]: one timer for many sessions (the earliest of their deadlines).
//! - [`qos`]: a token bucket for rate limits, and priority classes none of which starves.
//! - [`reliable`]: at-least-once delivery over datagrams, the sender's resend window
//!   (the receiver's half is in [`datagram::Inbox`]).
//! - [`records`]: everything of a connection on one byte stream (TCP, Unix sockets):
//!   channels' messages and control records taking turns, written with `writev`.
//! - [`workgroup`]: a listener's work groups, and which member a message goes to.
//! - [`nats`]: the NATS client protocol: server operations parsed in place, client
//!   operations written, headers, subjects and wildcards.
//! - [`nkeys`]: NATS keys and credentials files as text (signing is the caller's).
//!
//! ```
//! use zerohop_proto::{FrameHeader, FRAME_HEADER_LEN};
//!
//! let payload = b"hello";
//! let header = FrameHeader { channel: 3, seq: 42, ..FrameHeader::new(payload.len() as u32) };
//! let mut frame = [0u8; FRAME_HEADER_LEN + 5];
//! let n = header.encode_frame(payload, &mut frame).unwrap();
//! let (decoded, body) = FrameHeader::decode_frame(&frame[..n]).unwrap();
//! assert_eq!(decoded, header);
//! assert_eq!(body, payload);
//! ```

pub mod chaos;
pub mod compress;
mod crc32c;
pub mod datagram;
pub mod flow;
pub mod frag;
mod header;
pub mod kcp;
pub mod lifecycle;
pub mod multicast;
pub mod nats;
pub mod nkeys;
pub mod pack;
pub mod qos;
pub mod records;
pub mod reliable;
mod rng;
pub mod schedule;
pub mod session;
pub mod stream;
pub mod workgroup;

pub use crc32c::crc32c;
pub use header::{DecodeError, EncodeError, FRAME_HEADER_LEN, FrameFlags, FrameHeader, PROTOCOL_VERSION, peek_session};
