//! End-to-end encryption primitives: device keys, sender chains, chain wrapping and envelopes.
//!
//! Pure functions over bytes; no I/O. docs/E2E-ENVELOPE.md is the normative byte layout.
//!
//! ```text
//! sender device                                   each recipient device
//! SenderChain ──wrap_chain (RSA-OAEP + PSS)──▶  WrappedChain ──unwrap_chain──▶ ReceiverChain
//! SenderChain ──seal (ChaCha20-Poly1305 + PSS)─▶ Envelope (same bytes for all) ──open──▶ text
//! ```
//!
//! A sender keeps one [`SenderChain`] per conversation, wraps its current state once per member
//! device, then seals every message with the next key of the chain (HKDF ratchet).

mod chain;
mod envelope;
mod error;
mod keys;
mod login;
#[cfg(test)]
mod proptests;
mod vouch;
mod wire;
mod wrap;

pub use chain::{
    ChainSnapshot, DEFAULT_MAX_SKIP, DEFAULT_MAX_STORED_SKIPPED, MessageKey, ReceiverChain,
    SenderChain,
};
pub use envelope::{
    Envelope, EnvelopeHeader, KIND_ENVELOPE, MAX_CIPHERTEXT_BYTES, MAX_SIGNATURE_BYTES, Opened,
    max_envelope_bytes, open, open_within, seal,
};
pub use error::E2eError;
pub use keys::{ALLOWED_KEY_BITS, DEFAULT_KEY_BITS, DeviceKey, DevicePublicKey};
pub use login::{CHALLENGE_BYTES, KIND_LOGIN, LoginChallenge};
pub use vouch::{KIND_VOUCH, Vouch, VouchBody, code_mac};
pub use wrap::{KIND_WRAPPED_CHAIN, WrappedChain, WrappedHeader, unwrap_chain, wrap_chain};

/// Version byte that starts every envelope and wrapped chain.
pub const E2E_VERSION: u8 = 1;

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], E2eError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| E2eError::Random)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testkeys {
    //! Fixed 2048-bit PKCS#8 test keys, parsed once per test binary.
    use std::sync::OnceLock;

    use super::DeviceKey;

    const PEMS: [&str; 3] = [
        include_str!("testdata/alice.pem"),
        include_str!("testdata/bob.pem"),
        include_str!("testdata/carol.pem"),
    ];

    fn keys() -> &'static [DeviceKey; 3] {
        static KEYS: OnceLock<[DeviceKey; 3]> = OnceLock::new();
        KEYS.get_or_init(|| PEMS.map(|pem| DeviceKey::from_pkcs8_pem(pem).expect("test key")))
    }

    /// Alice's device key.
    pub fn alice() -> &'static DeviceKey {
        &keys()[0]
    }
    /// Bob's device key.
    pub fn bob() -> &'static DeviceKey {
        &keys()[1]
    }
    /// Carol's device key.
    pub fn carol() -> &'static DeviceKey {
        &keys()[2]
    }
}
