//! LZ4 compression of one payload (`compression: 'lz4'`): the LZ4 block, after the
//! original length as a varint. A payload is sent compressed only when that is smaller,
//! and its frame says so, so a peer that does not compress reads it all the same.
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
    fn a_claimed_length_above_the_limit_is_refused_before_any_work() {
        let mut c = Vec::new();
        assert!(compress(&[0u8; 10_000], &mut c));
        let mut out = Vec::new();
        assert_eq!(decompress(&c, 9_999, &mut out), Err(DecompressError::TooLarge));
    }
}
