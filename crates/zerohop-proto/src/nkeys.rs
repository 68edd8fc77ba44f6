//! NATS keys (nkeys) and credentials files, as text: what a NATS client reads to sign
//! the server's nonce. Pure: the signing itself (Ed25519) is the caller's.
//!
//! An nkey is base32 (RFC 4648, no padding) of a prefix, the 32 key bytes and a CRC-16
//! (XMODEM, little-endian) of what precedes it. A public key's prefix is one byte, its
//! kind (`U` user, `A` account, `O` operator…: the letter it starts with); a seed's is
//! two, `S` then the kind, so a user seed starts `SU`. A credentials file (`.creds`)
//! holds a user's JWT and seed, each between `-----BEGIN …-----` / `------END …------`
//! lines.

use core::fmt;

/// What an nkey is the key of (its prefix byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    User,
    Account,
    Operator,
    Server,
    Cluster,
}

impl KeyKind {
    /// The prefix byte (the kind's letter's base32 value, shifted into the top 5 bits).
    fn prefix(self) -> u8 {
        match self {
            KeyKind::User => 20 << 3,
            KeyKind::Account => 0,
            KeyKind::Operator => 14 << 3,
            KeyKind::Server => 13 << 3,
            KeyKind::Cluster => 2 << 3,
        }
    }

    fn of_prefix(prefix: u8) -> Option<Self> {
        [KeyKind::User, KeyKind::Account, KeyKind::Operator, KeyKind::Server, KeyKind::Cluster]
            .into_iter()
            .find(|k| k.prefix() == prefix)
    }
}

/// A seed's first prefix byte (`S`).
const SEED: u8 = 18 << 3;

/// Why an nkey or a credentials file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NkeyError {
    /// Not base32, or not the length of a key.
    Malformed,
    /// The checksum does not match: a character is wrong.
    Checksum,
    /// A public key where a seed was wanted, or a kind not known.
    NotASeed,
    /// A credentials file without its JWT or its seed.
    MissingSection(&'static str),
}

impl fmt::Display for NkeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NkeyError::Malformed => f.write_str("not an nkey (base32 of 34 or 35 bytes)"),
            NkeyError::Checksum => f.write_str("the nkey's checksum does not match (a character is wrong)"),
            NkeyError::NotASeed => f.write_str("not an nkey seed (a seed starts with S)"),
            NkeyError::MissingSection(what) => write!(f, "the credentials file holds no {what}"),
        }
    }
}

impl std::error::Error for NkeyError {}

/// A seed's kind and 32 bytes (the Ed25519 private key's seed).
pub fn decode_seed(text: &str) -> Result<(KeyKind, [u8; 32]), NkeyError> {
    let raw = decode_checked(text.trim())?;
    if raw.len() != 2 + 32 || raw[0] & 0xf8 != SEED {
        return Err(NkeyError::NotASeed);
    }
    let kind = KeyKind::of_prefix(((raw[0] & 7) << 5) | (raw[1] >> 3)).ok_or(NkeyError::NotASeed)?;
    Ok((kind, raw[2..].try_into().expect("34 bytes: 2 of prefix, 32 of seed")))
}

/// A seed as text (`S` and its kind's letter first).
pub fn encode_seed(kind: KeyKind, seed: &[u8; 32]) -> String {
    let p = kind.prefix();
    let mut raw = vec![SEED | (p >> 5), (p & 31) << 3];
    raw.extend_from_slice(seed);
    encode_checked(raw)
}

/// A public key as text (its kind's letter first).
pub fn encode_public(kind: KeyKind, key: &[u8; 32]) -> String {
    let mut raw = vec![kind.prefix()];
    raw.extend_from_slice(key);
    encode_checked(raw)
}

/// A public key's kind and 32 bytes.
pub fn decode_public(text: &str) -> Result<(KeyKind, [u8; 32]), NkeyError> {
    let raw = decode_checked(text.trim())?;
    let kind = KeyKind::of_prefix(raw[0]).filter(|_| raw.len() == 1 + 32).ok_or(NkeyError::Malformed)?;
    Ok((kind, raw[1..].try_into().expect("33 bytes: 1 of prefix, 32 of key")))
}

/// A credentials file's user JWT and seed.
pub fn parse_creds(text: &str) -> Result<(String, String), NkeyError> {
    // The first non-empty line after the section's BEGIN line.
    let section = |name: &str| {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("-----BEGIN") && l.contains(name))?;
        lines.find(|l| !l.is_empty()).filter(|l| !l.starts_with("---")).map(str::to_owned)
    };
    let jwt = section("JWT").ok_or(NkeyError::MissingSection("JWT"))?;
    let seed = section("SEED").ok_or(NkeyError::MissingSection("nkey seed"))?;
    Ok((jwt, seed))
}

/// Base64url without padding: how NATS sends a signature (`sig`).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// CRC-16/XMODEM (polynomial 0x1021, from 0), as nkeys check themselves.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
        crc
    })
}

fn encode_checked(mut raw: Vec<u8>) -> String {
    let crc = crc16(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    base32(&raw)
}

fn decode_checked(text: &str) -> Result<Vec<u8>, NkeyError> {
    let raw = unbase32(text).ok_or(NkeyError::Malformed)?;
    if raw.len() < 3 {
        return Err(NkeyError::Malformed);
    }
    let (body, crc) = raw.split_at(raw.len() - 2);
    if crc16(body).to_le_bytes() != crc {
        return Err(NkeyError::Checksum);
    }
    Ok(body.to_vec())
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u32, 0);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[(acc >> bits & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[(acc << (5 - bits) & 31) as usize] as char);
    }
    out
}

/// Base32 without padding; `None` for a character out of the alphabet, or bits left
/// over that are not zero.
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = BASE32.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_user_seed_and_its_public_key_start_with_their_letters() {
        let seed = encode_seed(KeyKind::User, &[7; 32]);
        assert!(seed.starts_with("SU"), "{seed}");
        assert_eq!(seed.len(), 58);
        assert_eq!(decode_seed(&seed), Ok((KeyKind::User, [7; 32])));
        let public = encode_public(KeyKind::User, &[9; 32]);
        assert!(public.starts_with('U') && public.len() == 56, "{public}");
        assert_eq!(decode_public(&public), Ok((KeyKind::User, [9; 32])));
        assert_eq!(decode_seed(&public), Err(NkeyError::NotASeed), "a public key is no seed");
        assert!(encode_seed(KeyKind::Account, &[0; 32]).starts_with("SA"));
        assert!(encode_public(KeyKind::Operator, &[0; 32]).starts_with('O'));
    }

    #[test]
    fn a_wrong_character_fails_the_checksum_and_a_foreign_one_is_malformed() {
        let seed = encode_seed(KeyKind::User, &[1; 32]);
        let mut wrong = seed.clone().into_bytes();
        wrong[20] = if wrong[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(decode_seed(std::str::from_utf8(&wrong).unwrap()), Err(NkeyError::Checksum));
        assert_eq!(decode_seed(&seed.to_lowercase()), Err(NkeyError::Malformed));
        assert_eq!(decode_seed("SU"), Err(NkeyError::Malformed));
    }

    #[test]
    fn base64url_has_no_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_credentials_file_gives_its_jwt_and_seed() {
        let seed = encode_seed(KeyKind::User, &[3; 32]);
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0.eyJq.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        assert_eq!(parse_creds(&creds), Ok(("eyJ0.eyJq.c2ln".to_owned(), seed)));
        assert_eq!(parse_creds("-----BEGIN NATS USER JWT-----\nx\n"), Err(NkeyError::MissingSection("nkey seed")));
        assert_eq!(parse_creds(""), Err(NkeyError::MissingSection("JWT")));
    }

    proptest! {
        #[test]
        fn seeds_and_public_keys_come_back_as_they_went(key in any::<[u8; 32]>(), k in 0usize..5) {
            let kind = [KeyKind::User, KeyKind::Account, KeyKind::Operator, KeyKind::Server, KeyKind::Cluster][k];
            prop_assert_eq!(decode_seed(&encode_seed(kind, &key)), Ok((kind, key)));
            prop_assert_eq!(decode_public(&encode_public(kind, &key)), Ok((kind, key)));
        }

        #[test]
        fn any_text_is_a_key_or_an_error_never_a_panic(text in ".{0,80}") {
            let _ = decode_seed(&text);
            let _ = decode_public(&text);
            let _ = parse_creds(&text);
        }
    }
}
