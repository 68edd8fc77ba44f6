//! CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and SCTP.
//!
//! A table-driven software version: frames are checked once per datagram, and a
//! 1 KiB table keeps the crate free of dependencies and `unsafe`.

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
    let mut crc = !crc;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
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
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..200u8).collect();
        let whole = crc32c(0, &data);
        let split = crc32c(crc32c(0, &data[..77]), &data[77..]);
        assert_eq!(whole, split);
    }
}
