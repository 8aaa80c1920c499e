//! Login proofs: a device signs the server's one-time `hello` challenge, so a login from a device
//! key the account already registered can skip the per-account login wait.
//!
//! ```text
//! u8 version=1 | u8 kind=0x4C 'L' | [32] challenge | u16+ user | [32] server certificate fp
//! | [32] device fp                       (the signed bytes; nothing else travels but the signature)
//! ```
//!
//! The challenge is fresh per connection, so a proof cannot be replayed on another connection;
//! the server's certificate fingerprint (the one the client pinned) keeps a proof made for one
//! server from being relayed to another.

use super::wire::Writer;
use super::{DeviceKey, DevicePublicKey, E2E_VERSION, E2eError};
use crate::Fingerprint;

/// Kind byte of a login proof (ASCII `L`).
pub const KIND_LOGIN: u8 = 0x4C;
/// Length of the server's challenge in bytes.
pub const CHALLENGE_BYTES: usize = 32;
/// Largest RSA signature accepted (RSA-4096).
const MAX_SIGNATURE_BYTES: usize = 512;

/// What a login proof signs.
#[derive(Debug, Clone, Copy)]
pub struct LoginChallenge<'a> {
    /// The random bytes of the server's `hello`.
    pub challenge: &'a [u8; CHALLENGE_BYTES],
    /// The account logging in, as sent in `login`.
    pub user: &'a str,
    /// Fingerprint of the server's TLS certificate (leaf, DER).
    pub server: &'a Fingerprint,
}

impl LoginChallenge<'_> {
    /// The signed bytes for `device` (see the module docs).
    pub fn signed_bytes(&self, device: &Fingerprint) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::with_capacity(2 + CHALLENGE_BYTES + 2 + self.user.len() + 64);
        w.u8(E2E_VERSION);
        w.u8(KIND_LOGIN);
        w.raw(self.challenge);
        w.bytes16(self.user.as_bytes(), "user")?;
        w.raw(self.server.as_bytes());
        w.raw(device.as_bytes());
        Ok(w.into_vec())
    }

    /// RSA-PSS-SHA256 signature by `key` over [`LoginChallenge::signed_bytes`].
    pub fn sign(&self, key: &DeviceKey) -> Result<Vec<u8>, E2eError> {
        key.sign(&self.signed_bytes(&key.fingerprint())?)
    }

    /// Checks `signature` under `key`.
    pub fn verify(&self, key: &DevicePublicKey, signature: &[u8]) -> Result<(), E2eError> {
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
            return Err(E2eError::Malformed("RSA field length"));
        }
        key.verify(&self.signed_bytes(&key.fingerprint())?, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::testkeys::{alice, bob};

    const CHALLENGE: [u8; CHALLENGE_BYTES] = [0x11; CHALLENGE_BYTES];

    fn server() -> Fingerprint {
        Fingerprint::from_bytes([0x03; 32])
    }

    #[test]
    fn signed_bytes_vector() {
        let server = server();
        let c = LoginChallenge {
            challenge: &CHALLENGE,
            user: "bob",
            server: &server,
        };
        let bytes = c
            .signed_bytes(&Fingerprint::from_bytes([0x02; 32]))
            .unwrap();
        let mut expected = vec![0x01, 0x4C];
        expected.extend([0x11; 32]);
        expected.extend([0x00, 0x03, b'b', b'o', b'b']);
        expected.extend([0x03; 32]);
        expected.extend([0x02; 32]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_proof_verifies_only_for_its_challenge_user_server_and_key() {
        let server = server();
        let c = LoginChallenge {
            challenge: &CHALLENGE,
            user: "alice",
            server: &server,
        };
        let sig = c.sign(alice()).unwrap();
        c.verify(&alice().public(), &sig).unwrap();
        assert_eq!(c.verify(&bob().public(), &sig), Err(E2eError::BadSignature));
        let other = [0x12; CHALLENGE_BYTES];
        let replayed = LoginChallenge {
            challenge: &other,
            ..c
        };
        assert!(replayed.verify(&alice().public(), &sig).is_err());
        let as_bob = LoginChallenge { user: "bob", ..c };
        assert!(as_bob.verify(&alice().public(), &sig).is_err());
        let elsewhere_fp = Fingerprint::from_bytes([0x04; 32]);
        let elsewhere = LoginChallenge {
            server: &elsewhere_fp,
            ..c
        };
        assert!(elsewhere.verify(&alice().public(), &sig).is_err());
        assert!(c.verify(&alice().public(), &[]).is_err());
        assert!(c.verify(&alice().public(), &[0; 513]).is_err());
    }
}
