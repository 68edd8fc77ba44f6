//! Several small messages in one datagram.
//!
//! A packed frame has [`FrameFlags::PACKED`] set and a payload of records, each a
//! big-endian `u32` length and that many bytes. [`Packer`] builds such frames in one
//! reusable buffer (the header is written in place at the end, so nothing is copied
//! twice); [`unpack`] walks a received payload and refuses any record that does not fit.
//!
//! ```
//! use zerohop_proto::{FrameHeader, FrameFlags, pack::{Packer, unpack}};
//!
//! let mut packer = Packer::new(1200);
//! packer.push(b"tick 1").unwrap();
//! packer.push(b"tick 2").unwrap();
//! let frame = packer.finish(FrameHeader { seq: 9, ..FrameHeader::new(0) }).to_vec();
//! let (header, payload) = FrameHeader::decode_frame(&frame).unwrap();
//! assert!(header.flags.contains(FrameFlags::PACKED));
//! let messages: Vec<&[u8]> = unpack(payload).map(Result::unwrap).collect();
//! assert_eq!(messages, [&b"tick 1"[..], &b"tick 2"[..]]);
//! ```

use crate::header::{DecodeError, FRAME_HEADER_LEN, FrameFlags, FrameHeader};

/// Bytes in front of every packed record.
pub const RECORD_HEADER_LEN: usize = 4;

/// Why a message cannot be packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackError {
    /// Not even alone in a datagram: it must be fragmented instead.
    TooLarge { len: usize, max: usize },
    /// The current datagram is full: `finish` it first.
    Full,
}

impl core::fmt::Display for PackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the {max} bytes a datagram can pack")
            }
            Self::Full => write!(f, "datagram is full"),
        }
    }
}

impl std::error::Error for PackError {}

/// Builds packed frames of at most `max_datagram` bytes.
#[derive(Debug, Clone)]
pub struct Packer {
    buf: Vec<u8>,
    max_datagram: usize,
    count: usize,
    /// `finish` returned the frame in `buf`; the next `push` starts over.
    finished: bool,
}

impl Packer {
    /// A packer for datagrams of at most `max_datagram` bytes, header included.
    ///
    /// # Panics
    /// If `max_datagram` cannot hold a header and one empty record.
    pub fn new(max_datagram: usize) -> Self {
        assert!(max_datagram >= FRAME_HEADER_LEN + RECORD_HEADER_LEN, "datagram of {max_datagram} bytes is too small");
        let mut buf = Vec::with_capacity(max_datagram);
        buf.resize(FRAME_HEADER_LEN, 0);
        Self { buf, max_datagram, count: 0, finished: false }
    }

    /// The largest message that fits in a datagram by itself.
    pub fn max_message(&self) -> usize {
        self.max_datagram - FRAME_HEADER_LEN - RECORD_HEADER_LEN
    }

    fn used(&self) -> usize {
        if self.finished { FRAME_HEADER_LEN } else { self.buf.len() }
    }

    /// Whether a message of `len` bytes still fits in the current datagram.
    pub fn fits(&self, len: usize) -> bool {
        self.used() + RECORD_HEADER_LEN + len <= self.max_datagram
    }

    /// Appends a message to the current datagram.
    pub fn push(&mut self, message: &[u8]) -> Result<(), PackError> {
        if message.len() > self.max_message() {
            return Err(PackError::TooLarge { len: message.len(), max: self.max_message() });
        }
        if !self.fits(message.len()) {
            return Err(PackError::Full);
        }
        if self.finished {
            self.buf.truncate(FRAME_HEADER_LEN);
            self.finished = false;
        }
        self.buf.extend_from_slice(&(message.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(message);
        self.count += 1;
        Ok(())
    }

    /// Messages in the current datagram.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the current datagram has no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Finishes the datagram with `header` (its length, `PACKED` flag and fragment
    /// fields are set here) and returns the frame, valid until the next `push`.
    pub fn finish(&mut self, header: FrameHeader) -> &[u8] {
        if self.finished {
            self.buf.truncate(FRAME_HEADER_LEN);
        }
        let header = FrameHeader {
            flags: FrameFlags(header.flags.0 | FrameFlags::PACKED),
            frag_index: 0,
            frag_count: 1,
            payload_len: (self.buf.len() - FRAME_HEADER_LEN) as u32,
            ..header
        };
        header.encode_in_place(&mut self.buf).expect("a packed frame is consistent by construction");
        self.count = 0;
        self.finished = true;
        &self.buf
    }
}

/// The records of a packed payload, in order. A record whose length runs past the end
/// yields one `Truncated` error and ends the iteration.
pub fn unpack(payload: &[u8]) -> Unpack<'_> {
    Unpack { rest: payload }
}

/// Iterator returned by [`unpack`].
#[derive(Debug, Clone)]
pub struct Unpack<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Unpack<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < RECORD_HEADER_LEN {
            let available = self.rest.len();
            self.rest = &[];
            return Some(Err(DecodeError::Truncated { needed: RECORD_HEADER_LEN, available }));
        }
        let len = u32::from_be_bytes(self.rest[..RECORD_HEADER_LEN].try_into().expect("4 bytes")) as usize;
        let body = &self.rest[RECORD_HEADER_LEN..];
        if body.len() < len {
            let available = body.len();
            self.rest = &[];
            return Some(Err(DecodeError::Truncated { needed: len, available }));
        }
        let (message, rest) = body.split_at(len);
        self.rest = rest;
        Some(Ok(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_message_comes_back_in_order(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..60),
            max in 64usize..1500,
        ) {
            let mut packer = Packer::new(max);
            let mut frames = Vec::new();
            let mut too_large = Vec::new();
            for m in &messages {
                match packer.push(m) {
                    Ok(()) => {}
                    Err(PackError::Full) => {
                        frames.push(packer.finish(FrameHeader::new(0)).to_vec());
                        packer.push(m).unwrap();
                    }
                    Err(PackError::TooLarge { .. }) => too_large.push(m.clone()),
                }
            }
            if !packer.is_empty() {
                frames.push(packer.finish(FrameHeader::new(0)).to_vec());
            }
            let mut out = Vec::new();
            for f in &frames {
                prop_assert!(f.len() <= max);
                let (h, payload) = FrameHeader::decode_frame(f).unwrap();
                prop_assert!(h.flags.contains(FrameFlags::PACKED));
                for m in unpack(payload) {
                    out.push(m.unwrap().to_vec());
                }
            }
            let expected: Vec<Vec<u8>> = messages.iter().filter(|m| m.len() <= max - FRAME_HEADER_LEN - RECORD_HEADER_LEN).cloned().collect();
            prop_assert_eq!(out, expected);
            prop_assert!(too_large.iter().all(|m| m.len() > packer.max_message()));
        }

        #[test]
        fn hostile_payloads_never_panic_and_never_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let total: usize = unpack(&bytes).flatten().map(|m| RECORD_HEADER_LEN + m.len()).sum();
            prop_assert!(total <= bytes.len());
        }
    }

    #[test]
    fn truncated_records_are_reported_once() {
        let mut p = Packer::new(100);
        p.push(b"abc").unwrap();
        let frame = p.finish(FrameHeader::new(0)).to_vec();
        let payload = &frame[FRAME_HEADER_LEN..];
        let cut: Vec<_> = unpack(&payload[..payload.len() - 1]).collect();
        assert_eq!(cut, vec![Err(DecodeError::Truncated { needed: 3, available: 2 })]);
        assert_eq!(unpack(&[0, 0]).collect::<Vec<_>>(), vec![Err(DecodeError::Truncated { needed: 4, available: 2 })]);
        assert_eq!(p.push(&[0; 100]), Err(PackError::TooLarge { len: 100, max: 56 }));
    }
}
