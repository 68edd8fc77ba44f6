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

/// The `crc32` instruction, 8 bytes at a time. Callers must check for SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn hardware(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut crc = crc as u64;
    let mut words = bytes.chunks_exact(8);
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
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..200u8).collect();
        let whole = crc32c(0, &data);
        let split = crc32c(crc32c(0, &data[..77]), &data[77..]);
        assert_eq!(whole, split);
    }
}
