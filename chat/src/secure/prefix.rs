//! A fingerprint as people type it: a unique prefix of at least [`MIN_HEX`] hex digits, with or
//! without `SHA256:` and `:` separators, matched against the keys one could mean.
//!
//! 16 hex digits (64 bits) is what the status bar and approval codes show twice over; a
//! second key agreeing on them would take ~2^32 tries for a birthday pair and ~2^64 to match a
//! given key, so a prefix that long still names one key. Ambiguity is refused, never guessed.

use chatd_proto::Fingerprint;

/// Fewest hex digits a typed fingerprint may have.
pub const MIN_HEX: usize = 16;

/// Why a typed fingerprint names no single key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// Not hex digits (after `SHA256:` and separators are taken away).
    NotHex,
    /// Fewer than [`MIN_HEX`] digits (the count given).
    TooShort(usize),
    /// More than 64 digits.
    TooLong,
    /// No candidate starts with it.
    NoMatch,
    /// Several candidates start with it (how many).
    Ambiguous(usize),
}

impl std::fmt::Display for PrefixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefixError::NotHex => write!(
                f,
                "not a fingerprint: write hex digits, with or without SHA256: and ':'"
            ),
            PrefixError::TooShort(n) => write!(
                f,
                "too short: {n} hex digits given, at least {MIN_HEX} are needed"
            ),
            PrefixError::TooLong => write!(f, "too long: a fingerprint has 64 hex digits"),
            PrefixError::NoMatch => write!(f, "no key starts with it"),
            PrefixError::Ambiguous(n) => {
                write!(f, "ambiguous: {n} keys start with it; give more digits")
            }
        }
    }
}

/// The lowercase hex digits of `typed`, checked for form (not yet matched).
pub fn digits(typed: &str) -> Result<String, PrefixError> {
    let typed = typed.trim();
    let typed = typed
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("SHA256:"))
        .map_or(typed, |_| &typed[7..]);
    let digits: String = typed.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PrefixError::NotHex);
    }
    if digits.len() < MIN_HEX {
        return Err(PrefixError::TooShort(digits.len()));
    }
    if digits.len() > 64 {
        return Err(PrefixError::TooLong);
    }
    Ok(digits.to_ascii_lowercase())
}

/// The 64 hex digits of a fingerprint.
pub fn hex_of(fp: &Fingerprint) -> String {
    fp.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The one candidate `typed` names.
pub fn resolve(
    typed: &str,
    candidates: impl IntoIterator<Item = Fingerprint>,
) -> Result<Fingerprint, PrefixError> {
    let digits = digits(typed)?;
    let mut found: Vec<Fingerprint> = candidates
        .into_iter()
        .filter(|fp| hex_of(fp).starts_with(&digits))
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(PrefixError::NoMatch),
        many => Err(PrefixError::Ambiguous(many.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(hex: &str) -> Fingerprint {
        format!("SHA256:{hex}").parse().unwrap()
    }

    fn keys() -> Vec<Fingerprint> {
        vec![
            fp(&format!("{}{}", "0123456789abcdef", "0".repeat(48))),
            fp(&format!("{}{}", "0123456789abcdef", "1".repeat(48))),
            fp(&format!("{}{}", "fedcba9876543210", "2".repeat(48))),
        ]
    }

    #[test]
    fn a_unique_prefix_of_sixteen_digits_names_one_key() {
        let k = keys();
        assert_eq!(resolve("fedcba9876543210", k.clone()), Ok(k[2]));
        assert_eq!(resolve("SHA256:FEDCBA9876543210", k.clone()), Ok(k[2]));
        assert_eq!(
            resolve("sha256:fe:dc:ba:98:76:54:32:10", k.clone()),
            Ok(k[2])
        );
        assert_eq!(resolve(" 0123456789abcdef1 ", k.clone()), Ok(k[1]));
        // The whole fingerprint, as printed, still works.
        assert_eq!(resolve(&k[0].to_string(), k.clone()), Ok(k[0]));
    }

    #[test]
    fn ambiguous_short_and_foreign_prefixes_say_why() {
        let k = keys();
        assert_eq!(
            resolve("0123456789abcdef", k.clone()),
            Err(PrefixError::Ambiguous(2))
        );
        assert_eq!(
            resolve("fedcba987654321", k.clone()),
            Err(PrefixError::TooShort(15))
        );
        assert_eq!(resolve("SHA256:", k.clone()), Err(PrefixError::TooShort(0)));
        assert_eq!(
            resolve("aaaaaaaaaaaaaaaa", k.clone()),
            Err(PrefixError::NoMatch)
        );
        assert_eq!(
            resolve("fedcba98765432zz", k.clone()),
            Err(PrefixError::NotHex)
        );
        assert_eq!(
            resolve(&"a".repeat(65), k.clone()),
            Err(PrefixError::TooLong)
        );
        assert_eq!(resolve("+edcba9876543210", k), Err(PrefixError::NotHex));
        // Multi-byte text is refused, not sliced inside a character.
        assert_eq!(resolve("ééééééééééé", keys()), Err(PrefixError::NotHex));
        assert!(PrefixError::TooShort(8).to_string().contains("at least 16"));
    }
}
