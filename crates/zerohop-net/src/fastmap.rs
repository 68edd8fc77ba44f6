//! A hash map for small integer keys that this process hands out or bounds (connection
//! handles, stream ids, channels), hashed with one multiplication instead of SipHash:
//! these maps are looked up several times per message. Not for keys an attacker
//! chooses without bound (SipHash's resistance to collisions matters there).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-and-fold of the integers written (Fibonacci hashing); bytes fold in 8 at a time.
#[derive(Clone, Copy, Default)]
pub struct IntHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        // The high bits are the well-mixed ones; hashbrown takes its control byte from
        // the top and its bucket from the bottom, so fold them together.
        self.0 ^ (self.0 >> 32)
    }
}

/// A `HashMap` with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_keys_spread_over_the_buckets() {
        let mut m: IntMap<u64, u64> = IntMap::default();
        for k in 0..10_000u64 {
            m.insert(k * 4, k);
        }
        assert!((0..10_000u64).all(|k| m[&(k * 4)] == k));
        // Low bits differ for consecutive keys (what the bucket index uses).
        let h = |k: u64| {
            let mut s = IntHasher::default();
            s.write_u64(k);
            s.finish() & 1023
        };
        let buckets: std::collections::HashSet<u64> = (0..1024).map(|k| h(k * 4)).collect();
        assert!(buckets.len() > 600, "{} of 1024 buckets", buckets.len());
    }
}
