//! The one error type of the e2e module; every rejection reason is its own variant.

/// Why an e2e operation failed. Messages never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// The bytes are not a well-formed envelope or wrapped chain (or bad base64).
    #[error("malformed e2e data: {0}")]
    Malformed(&'static str),
    /// The version byte is not one this code understands.
    #[error("unsupported e2e version {0}")]
    UnsupportedVersion(u8),
    /// The RSA-PSS signature does not verify under the pinned sender key.
    #[error("signature does not verify against the pinned sender key")]
    BadSignature,
    /// The sender device fingerprint in the header is not the pinned key's.
    #[error("sender device fingerprint does not match the pinned key")]
    WrongSender,
    /// The wrapped chain names a different recipient device.
    #[error("wrapped chain is addressed to another device")]
    WrongRecipient,
    /// The envelope's chain (id, sender or conversation) is not the receiver chain given.
    #[error("envelope belongs to an unknown chain")]
    UnknownChain,
    /// The message id or chain index was already used (or its key already discarded).
    #[error("replayed message")]
    Replay,
    /// The chain index is further ahead than the receiver is willing to ratchet.
    #[error("chain index {index} is more than {max_skip} ahead of {next}")]
    TooFarAhead {
        /// Index in the envelope.
        index: u32,
        /// Next index the receiver expected.
        next: u32,
        /// Configured limit.
        max_skip: u32,
    },
    /// The sender chain has used every index.
    #[error("sender chain exhausted; rotate it")]
    ChainExhausted,
    /// The timestamp is outside the accepted window around now.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// AEAD decryption failed (wrong key or tampered ciphertext).
    #[error("message decryption failed")]
    Decrypt,
    /// RSA-OAEP unwrapping of a chain failed.
    #[error("chain key unwrap failed")]
    Unwrap,
    /// The key size is not one of 2048, 3072 or 4096 bits.
    #[error("unsupported RSA key size {0} bits")]
    BadKeySize(usize),
    /// A key could not be encoded or decoded (PEM, DER, PKCS#8, SPKI, passphrase).
    #[error("key encoding: {0}")]
    KeyEncoding(String),
    /// An RSA operation (generation, encryption, signing) failed.
    #[error("rsa: {0}")]
    Rsa(String),
    /// A field is too long to encode.
    #[error("field too long: {0}")]
    TooLong(&'static str),
    /// The operating system random source failed.
    #[error("random number generator failed")]
    Random,
}
