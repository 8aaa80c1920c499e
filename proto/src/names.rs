//! The rules for user names, shared so chatctl refuses what chatd would refuse.

/// Longest allowed user name, in bytes.
pub const MAX_USERNAME_LEN: usize = 32;

/// Why a user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("user name is empty")]
    Empty,
    /// The name is longer than [`MAX_USERNAME_LEN`].
    #[error("user name is longer than {MAX_USERNAME_LEN} characters")]
    TooLong,
    /// The name does not start with a lowercase ASCII letter.
    #[error("user name must start with a lowercase letter a-z")]
    BadStart,
    /// The name contains a character outside `a-z 0-9 _ . -`.
    #[error("user name may contain only a-z, 0-9, '_', '.' and '-' (found {0:?})")]
    BadChar(char),
}

/// Checks a user name: 1 to 32 characters, `[a-z][a-z0-9_.-]*`.
///
/// Lowercase only so that "Alice" and "alice" can never be two people.
pub fn validate_username(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    if name.len() > MAX_USERNAME_LEN {
        return Err(NameError::TooLong);
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart);
    }
    match chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(*c))) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(validate_username("alice"), Ok(()));
        assert_eq!(validate_username("bob.smith-2_x"), Ok(()));
        assert_eq!(validate_username(&"a".repeat(32)), Ok(()));
        assert_eq!(validate_username(&"a".repeat(33)), Err(NameError::TooLong));
        assert_eq!(validate_username(""), Err(NameError::Empty));
        assert_eq!(validate_username("Alice"), Err(NameError::BadStart));
        assert_eq!(validate_username("1bob"), Err(NameError::BadStart));
        assert_eq!(validate_username("bo b"), Err(NameError::BadChar(' ')));
        assert_eq!(validate_username("bö"), Err(NameError::BadChar('ö')));
    }
}

/// Longest allowed room name (without the `#`), in bytes.
pub const MAX_ROOM_LEN: usize = 32;

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "room names are 1-{MAX_ROOM_LEN} of a-z, 0-9, '_' and '-', starting with a letter or digit"
)]
pub struct BadRoomName;

/// Checks a room name (without the `#`): `[a-z0-9][a-z0-9_-]*`, at most 32 bytes.
pub fn validate_room(name: &str) -> Result<(), BadRoomName> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(BadRoomName)?;
    let ok = name.len() <= MAX_ROOM_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(BadRoomName) }
}
