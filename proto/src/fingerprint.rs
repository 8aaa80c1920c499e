//! SHA-256 fingerprints written as `SHA256:` followed by 64 lowercase hex digits.
//!
//! One form everywhere: chatd's log, `chatctl status`, the client's prompt and
//! `--accept-fingerprint`, and the client's pin file.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A SHA-256 digest of some DER bytes (a certificate, later a public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// The text could not be read as a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint must be written SHA256: followed by 64 hex digits")]
pub struct BadFingerprint;

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        let digest = Sha256::digest(der);
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        Fingerprint(out)
    }

    /// Wraps a raw 32-byte digest (as carried in e2e headers).
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Fingerprint(digest)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Accepts upper or lower case hex, with or without `:` between byte pairs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.trim().strip_prefix("SHA256:").ok_or(BadFingerprint)?;
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        // `from_str_radix` alone would also take a sign ("+b"), so check the digits first.
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| BadFingerprint)?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_known_digest() {
        let fp = Fingerprint::of(b"");
        let text = fp.to_string();
        assert_eq!(
            text,
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(
            format!("SHA256:{}", &text[7..].to_uppercase()).parse::<Fingerprint>(),
            Ok(fp)
        );
        assert_eq!("SHA256:abcd".parse::<Fingerprint>(), Err(BadFingerprint));
        assert_eq!("e3b0".parse::<Fingerprint>(), Err(BadFingerprint));
    }

    #[test]
    fn only_hex_digits_are_accepted() {
        // Found by fuzz/ (target envelope): `u8::from_str_radix` takes a leading `+`, so
        // "+b" passed as the byte 0x0b.
        let plus = "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca49599+b7852b855";
        assert_eq!(plus.parse::<Fingerprint>(), Err(BadFingerprint));
        let all_plus = format!("SHA256:{}", "+0".repeat(32));
        assert_eq!(all_plus.parse::<Fingerprint>(), Err(BadFingerprint));
        let minus = format!("SHA256:{}", "-0".repeat(32));
        assert_eq!(minus.parse::<Fingerprint>(), Err(BadFingerprint));
        let space = format!("SHA256:{} 0", "00".repeat(31));
        assert_eq!(space.parse::<Fingerprint>(), Err(BadFingerprint));
    }
}
