//! Password hashing and checking with argon2id (PHC strings), always on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Longest password accepted, in bytes; bounds the hashing work a client can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Empty or too long.
    #[error("password must be 1 to {MAX_PASSWORD_BYTES} bytes")]
    BadLength,
    /// The hasher failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking task died.
    #[error("password task failed: {0}")]
    Task(String),
}

/// Hashes `password` with argon2id and a random salt (default parameters: 19 MiB, t=2, p=1).
pub async fn hash(password: String) -> Result<String, PasswordError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::BadLength);
    }
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))?
}

/// A valid PHC string whose check always fails; verified against for unknown users so
/// that "no such user" takes as long as "wrong password".
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

/// True if `password` matches `phc`. Any malformed hash counts as a mismatch.
pub async fn verify(password: String, phc: String) -> bool {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    tokio::task::spawn_blocking(move || match PasswordHash::new(&phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), h.clone()).await);
        assert!(!verify("wrong".into(), h).await);
        assert!(!verify("x".into(), DUMMY_HASH.into()).await);
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(hash(String::new()).await.is_err());
        assert!(hash("a".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
        assert!(hash("a".repeat(MAX_PASSWORD_BYTES)).await.is_ok());
    }
}
