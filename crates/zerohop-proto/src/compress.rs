//! LZ4 compression of one payload (`compression: 'lz4'`): the LZ4 block, after the
//! original length as a varint. A payload is sent compressed only when that is smaller,
//! and its frame says so, so a peer that does not compress reads it all the same.
//! A [`Compressor`] also stops trying for a while after what did not shrink, so that a
//! stream of payloads LZ4 cannot shrink (already compressed, encrypted) costs little.
//!
//! ```
//! use zerohop_proto::compress::{compress, decompress};
//!
//! let json = br#"{"sym":"BTC","px":50000,"sym2":"BTC","px2":50000,"sym3":"BTC"}"#.repeat(8);
//! let mut small = Vec::new();
//! assert!(compress(&json, &mut small)); // it shrank
//! let mut back = Vec::new();
//! decompress(&small, 1 << 20, &mut back).unwrap();
//! assert_eq!(back, json);
//! assert!(!compress(&[7, 1, 250, 3], &mut small)); // too short to shrink: sent as it is
//! ```

use crate::session::get_varint;
use crate::stream::{MAX_VARINT_LEN, write_varint};

/// Messages shorter than this are sent as they are: LZ4 saves nothing on a few bytes,
/// and trying costs every publish.
pub const WORTH_FROM: usize = 64;

/// After a payload that did not shrink, a [`Compressor`] sends this many as they are
/// before it tries again (1 at first, doubling after each that does not shrink).
pub const SKIP_MAX: u32 = 64;

/// Compresses one payload after another: what shrinks, and (backing off after what did
/// not) only what is worth trying.
///
/// ```
/// use zerohop_proto::compress::Compressor;
///
/// let mut c = Compressor::default();
/// let mut x = 0x9e37_79b9_7f4a_7c15u64; // (xorshift: bytes LZ4 cannot shrink)
/// let noise: Vec<u8> = (0..1000).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
/// assert!(c.compress(&noise).is_none()); // tried: it does not shrink
/// assert!(c.compress(&[b'a'; 1000]).is_none()); // not tried: the next one after noise goes as it is
/// assert!(c.compress(&[b'a'; 1000]).is_some());
/// assert_eq!((c.tried(), c.skipped()), (2, 1));
/// ```
#[derive(Debug, Default)]
pub struct Compressor {
    out: Vec<u8>,
    /// Payloads to send as they are before the next try, and how many after the next
    /// that does not shrink.
    skip: u32,
    backoff: u32,
    tried: u64,
    skipped: u64,
}

impl Compressor {
    /// `input` compressed, if that was worth trying and it shrank.
    pub fn compress(&mut self, input: &[u8]) -> Option<&[u8]> {
        if input.len() < WORTH_FROM {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            self.skipped += 1;
            return None;
        }
        self.tried += 1;
        if compress(input, &mut self.out) {
            self.backoff = 0;
            return Some(&self.out);
        }
        self.backoff = (self.backoff * 2).clamp(1, SKIP_MAX);
        self.skip = self.backoff;
        None
    }

    /// Payloads it tried to compress.
    pub fn tried(&self) -> u64 {
        self.tried
    }

    /// Payloads it sent as they are without trying, backing off.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Why a compressed payload could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// Its length is missing or above the limit, or the block is not valid LZ4.
    Malformed,
    /// It says it is longer than `max` bytes.
    TooLarge,
}

/// Compresses `input` into `out` (replacing what it held): whether that is smaller
/// than `input`.
pub fn compress(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let bound = MAX_VARINT_LEN + lz4_flex::block::get_maximum_output_size(input.len());
    out.resize(bound, 0);
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let n = write_varint(input.len() as u64, &mut prefix);
    out[..n].copy_from_slice(&prefix[..n]);
    match lz4_flex::block::compress_into(input, &mut out[n..]) {
        Ok(len) if n + len < input.len() => {
            out.truncate(n + len);
            true
        }
        _ => {
            out.clear();
            false
        }
    }
}

/// Decompresses `input` into `out` (replacing what it held), refusing anything that
/// would be longer than `max` bytes.
pub fn decompress(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let (len, at) = get_varint(input).ok().flatten().ok_or(DecompressError::Malformed)?;
    if len > max as u64 {
        return Err(DecompressError::TooLarge);
    }
    out.clear();
    out.resize(len as usize, 0);
    match lz4_flex::block::decompress_into(&input[at..], out) {
        Ok(n) if n == len as usize => Ok(()),
        _ => Err(DecompressError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is compressed comes back the same; whatever does not shrink is not.
        #[test]
        fn round_trips(input in proptest::collection::vec(0u8..4, 0..5000)) {
            let mut c = Vec::new();
            if compress(&input, &mut c) {
                prop_assert!(c.len() < input.len());
                let mut back = Vec::new();
                decompress(&c, input.len(), &mut back).unwrap();
                prop_assert_eq!(back, input);
            } else {
                prop_assert!(c.is_empty());
            }
        }

        /// Bytes from the network never panic, and never make more than `max`.
        #[test]
        fn garbage_is_refused(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            if decompress(&input, 1000, &mut out).is_ok() {
                prop_assert!(out.len() <= 1000);
            }
        }
    }

    #[test]
    fn a_compressor_backs_off_from_noise_and_finds_what_shrinks_again_soon() {
        let mut c = Compressor::default();
        let mut seed = 1u64;
        let mut noise = || -> Vec<u8> {
            (0..1024)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect()
        };
        for _ in 0..10_000 {
            assert!(c.compress(&noise()).is_none());
        }
        assert!(c.tried() <= 10_000 / u64::from(SKIP_MAX) + 8, "tried {} of 10,000", c.tried());
        assert_eq!(c.tried() + c.skipped(), 10_000);
        // Compressible again: found within one backoff, and each one after is compressed.
        let json = br#"{"sym":"BTC","px":50000,"qty":3}"#.repeat(32);
        let first = (0..=SKIP_MAX).position(|_| c.compress(&json).is_some()).expect("tried again within the backoff");
        assert!(first <= SKIP_MAX as usize);
        for _ in 0..100 {
            let small = c.compress(&json).expect("compressed").to_vec();
            let mut back = Vec::new();
            decompress(&small, json.len(), &mut back).unwrap();
            assert_eq!(back, json);
        }
        assert!(c.compress(&[1; WORTH_FROM - 1]).is_none(), "too short to try");
    }

    #[test]
    fn a_claimed_length_above_the_limit_is_refused_before_any_work() {
        let mut c = Vec::new();
        assert!(compress(&[0u8; 10_000], &mut c));
        let mut out = Vec::new();
        assert_eq!(decompress(&c, 9_999, &mut out), Err(DecompressError::TooLarge));
    }
}
