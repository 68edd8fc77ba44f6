//! CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and SCTP.
//!
//! Every datagram is checksummed once when sent and once when received, so this is on
//! the hot path: on x86-64 with SSE4.2 (every x86-64 CPU since 2008) the `crc32`
//! instruction does 8 bytes at a time, about ten times faster than the table-driven
//! version that remains as the portable fallback.

const POLY: u32 = 0x82F6_3B78; // reversed 0x1EDC6F41

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Continues a CRC-32C over `bytes`; start with `crc = 0`.
pub fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2, checked just above (the result is cached).
        return !unsafe { hardware(!crc, bytes) };
    }
    !software(!crc, bytes)
}

fn software(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// Bytes each of three interleaved `crc32` chains covers in a block of [`hardware`].
const LANE: usize = 512;

/// The `crc32` instruction, 8 bytes at a time. Callers must check for SSE4.2.
///
/// One chain of `crc32` instructions waits for each result (3 cycles) before the next:
/// a third of what the CPU can do. So in blocks of three lanes, three chains run at once,
/// the second and third from 0, and their CRCs are joined by shifting the first over
/// the two lanes after it and the second over one ([`SHIFT`], by linearity): a
/// datagram of 64 KiB costs a third of the time (the checksum was a sixth of a 4 KiB
/// UDP stream's receiver, 2026-12-07).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn hardware(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut crc = crc;
    let mut blocks = bytes.chunks_exact(3 * LANE);
    for block in &mut blocks {
        let (a, rest) = block.split_at(LANE);
        let (b, c) = rest.split_at(LANE);
        let (mut ca, mut cb, mut cc) = (crc as u64, 0u64, 0u64);
        for i in (0..LANE).step_by(8) {
            ca = _mm_crc32_u64(ca, word(a, i));
            cb = _mm_crc32_u64(cb, word(b, i));
            cc = _mm_crc32_u64(cc, word(c, i));
        }
        crc = shift(&SHIFT[1], ca as u32) ^ shift(&SHIFT[0], cb as u32) ^ cc as u32;
    }
    let mut crc = crc as u64;
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        let word = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
        crc = _mm_crc32_u64(crc, word);
    }
    let mut crc = crc as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// The CRC register `crc` (as [`hardware`] keeps it) after `n` more zero bytes, as
/// `SHIFT`'s tables give it: a sum of one entry per byte of `crc`.
fn shift(tables: &[[u32; 256]; 4], crc: u32) -> u32 {
    let t = |k: usize| tables[k][((crc >> (8 * k)) & 0xFF) as usize];
    t(0) ^ t(1) ^ t(2) ^ t(3)
}

/// Tables that shift a CRC register over [`LANE`] zero bytes (`SHIFT[0]`) and over
/// twice that (`SHIFT[1]`); see [`shift`].
static SHIFT: [[[u32; 256]; 4]; 2] = [shift_tables(LANE), shift_tables(2 * LANE)];

/// A CRC register's bits are a vector over GF(2), and feeding it zero bytes is a linear
/// map: a 32×32 matrix, one column (a `u32`) per bit. `m` applied to `v`.
const fn gf2_apply(m: &[u32; 32], v: u32) -> u32 {
    let (mut sum, mut i) = (0, 0);
    while i < 32 {
        if v & (1 << i) != 0 {
            sum ^= m[i];
        }
        i += 1;
    }
    sum
}

/// `a` after `b` (the map that applies `b`, then `a`).
const fn gf2_compose(a: &[u32; 32], b: &[u32; 32]) -> [u32; 32] {
    let (mut m, mut i) = ([0u32; 32], 0);
    while i < 32 {
        m[i] = gf2_apply(a, b[i]);
        i += 1;
    }
    m
}

/// The map of `n` zero bytes fed to the register.
const fn zeros(n: usize) -> [u32; 32] {
    // One zero byte: the table-driven step with a zero input byte.
    let (mut one, mut i) = ([0u32; 32], 0);
    while i < 32 {
        let v = 1u32 << i;
        one[i] = TABLE[(v & 0xFF) as usize] ^ (v >> 8);
        i += 1;
    }
    // Identity, then square-and-multiply.
    let (mut m, mut i) = ([0u32; 32], 0);
    while i < 32 {
        m[i] = 1 << i;
        i += 1;
    }
    let (mut power, mut n) = (one, n);
    while n > 0 {
        if n & 1 != 0 {
            m = gf2_compose(&power, &m);
        }
        power = gf2_compose(&power, &power);
        n >>= 1;
    }
    m
}

/// `shift`'s tables for `n` zero bytes: entry `[k][v]` is byte `k` of the register
/// holding `v`, shifted. (A byte `v` at position `k` reaches the low byte after `k`
/// zero bytes with nothing fed back, so it is `v` shifted over `n - k`.)
const fn shift_tables(n: usize) -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let m = zeros(n - k);
        let mut v = 0;
        while v < 256 {
            t[k][v] = gf2_apply(&m, v as u32);
            v += 1;
        }
        k += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 and the common "123456789" check value.
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, &[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn hardware_and_software_agree_on_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                let bytes = &data[start..end];
                assert_eq!(crc32c(0, bytes), !super::software(!0, bytes), "{start}..{end}");
            }
        }
    }

    #[test]
    fn three_lanes_at_once_agree_with_one_on_long_inputs() {
        // Several blocks of three lanes, at every alignment, with tails of every kind.
        let data: Vec<u8> =
            (0..5 * 3 * super::LANE as u32 + 300).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in [0, 1, 7, 8, 13] {
            for len in [
                3 * super::LANE - 1,
                3 * super::LANE,
                3 * super::LANE + 9,
                2 * 3 * super::LANE + 77,
                data.len() - start,
            ] {
                let bytes = &data[start..start + len];
                assert_eq!(crc32c(0, bytes), !super::software(!0, bytes), "{start}+{len}");
                assert_eq!(crc32c(0x1234_5678, bytes), !super::software(!0x1234_5678, bytes), "{start}+{len}, seeded");
            }
        }
    }

    #[test]
    fn shifting_over_zeros_is_feeding_zeros() {
        for crc in [0u32, 1, 0x8000_0000, 0xDEAD_BEEF, u32::MAX] {
            let fed = super::software(crc, &[0u8; super::LANE]);
            assert_eq!(super::shift(&super::SHIFT[0], crc), fed);
            let fed = super::software(crc, &[0u8; 2 * super::LANE]);
            assert_eq!(super::shift(&super::SHIFT[1], crc), fed);
        }
    }

    #[test]
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..200u8).collect();
        let whole = crc32c(0, &data);
        let split = crc32c(crc32c(0, &data[..77]), &data[77..]);
        assert_eq!(whole, split);
    }
}
