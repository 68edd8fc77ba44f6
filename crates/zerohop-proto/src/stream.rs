//! Messages on a byte stream (a QUIC stream, later TCP and Unix sockets): each message
//! is a length prefix and the payload.
//!
//! The prefix is a LEB128 varint (1 byte up to 127, 2 up to 16383, at most 5 for a
//! `u32`), because streams are already ordered and checksummed by the layer below and a
//! 64-byte message should not pay a 40-byte [`crate::FrameHeader`]. The decoder takes
//! bytes in chunks of any size, as a socket hands them out, and refuses a length above
//! its limit before buffering anything of that message, so a hostile peer cannot make
//! it allocate.
//!
//! ```
//! use zerohop_proto::stream::{StreamDecoder, encode_prefix};
//!
//! let mut wire = Vec::new();
//! for m in [&b"hi"[..], &[7u8; 300][..]] {
//!     encode_prefix(m.len(), &mut wire);
//!     wire.extend_from_slice(m);
//! }
//! let mut decoder = StreamDecoder::new(1 << 20);
//! let mut got = Vec::new();
//! for chunk in wire.chunks(3) {
//!     decoder.push(chunk, |m| got.push(m.to_vec())).unwrap();
//! }
//! assert_eq!(got, vec![b"hi".to_vec(), vec![7u8; 300]]);
//! ```

/// The longest prefix: a `u32` in LEB128.
pub const MAX_PREFIX_LEN: usize = 5;

/// Appends the length prefix of a `len`-byte message to `out`.
pub fn encode_prefix(len: usize, out: &mut Vec<u8>) {
    put_varint(len as u64, out);
}

/// The longest LEB128 varint of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as a LEB128 varint (the prefix's encoding, also used for
/// acknowledgements and stream headers).
pub fn put_varint(v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_VARINT_LEN];
    let n = write_varint(v, &mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Writes `v` as a LEB128 varint into `out`; returns its length.
///
/// ```
/// let mut out = [0u8; zerohop_proto::stream::MAX_VARINT_LEN];
/// assert_eq!(zerohop_proto::stream::write_varint(300, &mut out), 2);
/// assert_eq!(out[..2], [0xac, 0x02]);
/// ```
pub fn write_varint(mut v: u64, out: &mut [u8; MAX_VARINT_LEN]) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Writes the length prefix of a `len`-byte message into `out`; returns its length.
pub fn write_prefix(len: usize, out: &mut [u8; MAX_PREFIX_LEN]) -> usize {
    let mut v = len as u64;
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 || i == MAX_PREFIX_LEN - 1 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Why a stream cannot be decoded further. The stream is then unusable: close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// A message announced more bytes than the limit.
    TooLarge { len: u64, max: usize },
    /// A prefix longer than [`MAX_PREFIX_LEN`] bytes, or one that overflows a `u32`.
    BadPrefix,
    /// A record this stream does not carry, or a compressed message that does not
    /// decompress (see [`StreamDecoder::push_messages`]).
    Malformed(&'static str),
}

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "a message of {len} bytes exceeds the limit of {max}"),
            Self::BadPrefix => f.write_str("malformed length prefix"),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StreamError {}

/// The length prefix of a record on a *tagged* stream (one that carries control records
/// beside messages, as TCP and Unix sockets do: see [`crate::records`]): the length
/// shifted left by one, the low bit set for a control record.
pub fn write_tagged_prefix(len: usize, control: bool, out: &mut [u8; MAX_PREFIX_LEN]) -> usize {
    write_prefix((len << 1) | usize::from(control), out)
}

/// What a tagged stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// An application message.
    Message(&'a [u8]),
    /// A control record's body (see [`crate::records::Control`]).
    Control(&'a [u8]),
}

/// Splits a byte stream back into messages.
#[derive(Debug)]
pub struct StreamDecoder {
    max_message: usize,
    /// Tagged streams (see [`write_tagged_prefix`]): the largest control record.
    max_control: Option<usize>,
    /// The prefix being read: value so far and bytes seen.
    prefix: (u64, usize),
    /// The record being read, when its prefix is complete: its length and whether it is
    /// a control record.
    want: Option<(usize, bool)>,
    buf: Vec<u8>,
    failed: Option<StreamError>,
}

impl StreamDecoder {
    /// A decoder that refuses messages above `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self { max_message, max_control: None, prefix: (0, 0), want: None, buf: Vec::new(), failed: None }
    }

    /// A decoder of a tagged stream (messages and control records: see
    /// [`write_tagged_prefix`]), refusing messages above `max_message` bytes and control
    /// records above `max_control`.
    pub fn tagged(max_message: usize, max_control: usize) -> Self {
        Self { max_control: Some(max_control), ..Self::new(max_message) }
    }

    /// Whether the stream ended cleanly here (no message half-read).
    pub fn at_boundary(&self) -> bool {
        self.want.is_none() && self.prefix.1 == 0
    }

    /// The length of the message whose first bytes came and whose rest has not (a
    /// control record's: `None`): what the next bytes will finish.
    pub fn awaiting(&self) -> Option<usize> {
        self.want.filter(|&(_, control)| !control).map(|(len, _)| len)
    }

    /// Feeds the next bytes; calls `deliver` with each complete message, in order. A
    /// message that arrives whole within `bytes` is delivered without being copied.
    pub fn push(&mut self, bytes: &[u8], mut deliver: impl FnMut(&[u8])) -> Result<(), StreamError> {
        self.push_pieces(bytes, |piece| {
            if let Piece::Message(m) = piece {
                deliver(m)
            }
        })
    }

    /// [`push`](Self::push) for a tagged stream that carries messages only, some of them
    /// in control records (compressed, or with an expiry: see
    /// [`crate::records::carried_message`]): each is handed to `deliver` as it was sent,
    /// decompressed into `scratch` (at most `max_message` bytes), with its expiry. Any
    /// other control record is an error.
    pub fn push_messages(
        &mut self,
        bytes: &[u8],
        scratch: &mut Vec<u8>,
        mut deliver: impl FnMut(&[u8], Option<u64>),
    ) -> Result<(), StreamError> {
        let max = self.max_message;
        let mut failed = None;
        self.push_pieces(bytes, |piece| match piece {
            _ if failed.is_some() => {}
            Piece::Message(m) => deliver(m, None),
            Piece::Control(record) => match crate::records::carried_message(record, max, scratch) {
                Some(Ok((m, expiry))) => deliver(m, expiry),
                Some(Err(why)) => failed = Some(StreamError::Malformed(why)),
                None => failed = Some(StreamError::Malformed("a control record on a stream of messages")),
            },
        })?;
        match failed {
            Some(e) => Err(*self.failed.insert(e)),
            None => Ok(()),
        }
    }

    /// [`push`](Self::push) for a tagged stream: calls `each` with every message and
    /// control record, in order.
    pub fn push_pieces(&mut self, mut bytes: &[u8], mut each: impl FnMut(Piece<'_>)) -> Result<(), StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        fn piece(control: bool, b: &[u8]) -> Piece<'_> {
            if control { Piece::Control(b) } else { Piece::Message(b) }
        }
        while !bytes.is_empty() {
            let Some((want, control)) = self.want else {
                let b = bytes[0];
                bytes = &bytes[1..];
                let (value, seen) = self.prefix;
                let value = value | (u64::from(b & 0x7f) << (7 * seen));
                if b & 0x80 != 0 {
                    if seen + 1 >= MAX_PREFIX_LEN {
                        return Err(*self.failed.insert(StreamError::BadPrefix));
                    }
                    self.prefix = (value, seen + 1);
                    continue;
                }
                self.prefix = (0, 0);
                let (len, control, max) = match self.max_control {
                    None => (value, false, self.max_message),
                    Some(_) if value & 1 == 0 => (value >> 1, false, self.max_message),
                    Some(max_control) => (value >> 1, true, max_control),
                };
                if len > u64::from(u32::MAX) {
                    return Err(*self.failed.insert(StreamError::BadPrefix));
                }
                if len > max as u64 {
                    return Err(*self.failed.insert(StreamError::TooLarge { len, max }));
                }
                let len = len as usize;
                if self.buf.is_empty() && bytes.len() >= len {
                    each(piece(control, &bytes[..len]));
                    bytes = &bytes[len..];
                } else {
                    self.want = Some((len, control));
                }
                continue;
            };
            let take = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == want {
                each(piece(control, &self.buf));
                self.buf.clear();
                self.want = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wire(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut w = Vec::new();
        for m in messages {
            encode_prefix(m.len(), &mut w);
            w.extend_from_slice(m);
        }
        w
    }

    #[test]
    fn prefixes_are_leb128_and_both_writers_agree() {
        for (len, bytes) in
            [(0usize, vec![0u8]), (127, vec![0x7f]), (128, vec![0x80, 1]), (16_384, vec![0x80, 0x80, 1])]
        {
            let mut v = Vec::new();
            encode_prefix(len, &mut v);
            assert_eq!(v, bytes, "{len}");
            let mut a = [0u8; MAX_PREFIX_LEN];
            let n = write_prefix(len, &mut a);
            assert_eq!(&a[..n], &bytes[..]);
        }
        let mut a = [0u8; MAX_PREFIX_LEN];
        assert_eq!(write_prefix(u32::MAX as usize, &mut a), 5);
    }

    #[test]
    fn oversize_and_malformed_prefixes_are_refused_before_buffering() {
        let mut d = StreamDecoder::new(100);
        let mut w = Vec::new();
        encode_prefix(101, &mut w);
        assert_eq!(d.push(&w, |_| panic!("nothing to deliver")), Err(StreamError::TooLarge { len: 101, max: 100 }));
        // Once failed, it stays failed.
        assert!(d.push(&[0], |_| panic!()).is_err());
        let mut d = StreamDecoder::new(usize::MAX);
        assert_eq!(d.push(&[0xff; 6], |_| panic!()), Err(StreamError::BadPrefix));
        let mut d = StreamDecoder::new(usize::MAX);
        assert_eq!(d.push(&[0xff, 0xff, 0xff, 0xff, 0x7f], |_| panic!()), Err(StreamError::BadPrefix));
    }

    #[test]
    fn a_stream_cut_mid_message_is_not_at_a_boundary() {
        let mut d = StreamDecoder::new(1000);
        let w = wire(&[vec![1; 10]]);
        d.push(&w[..5], |_| {}).unwrap();
        assert!(!d.at_boundary());
        assert_eq!(d.awaiting(), Some(10), "the message begun");
        d.push(&w[5..], |_| {}).unwrap();
        assert!(d.at_boundary());
        assert_eq!(d.awaiting(), None);
        // Cut inside the prefix: its length is not known yet.
        let w = wire(&[vec![1; 300]]);
        d.push(&w[..1], |_| {}).unwrap();
        assert_eq!((d.at_boundary(), d.awaiting()), (false, None));
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_messages_in_order(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let w = wire(&messages);
            let mut d = StreamDecoder::new(400);
            let mut got = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < w.len() {
                let n = cuts[i % cuts.len()].min(w.len() - at);
                d.push(&w[at..at + n], |m| got.push(m.to_vec())).unwrap();
                at += n;
                i += 1;
            }
            prop_assert_eq!(got, messages);
            prop_assert!(d.at_boundary());
        }

        #[test]
        fn garbage_never_panics_nor_delivers_more_than_it_was_given(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = StreamDecoder::new(1000);
            let mut total = 0;
            let _ = d.push(&bytes, |m| total += m.len());
            prop_assert!(total <= bytes.len());
        }
    }
}
