//! ChaCha20-Poly1305 under a key derived from the device key: the one sealing door for the
//! private files that must be exactly as protected as the key file (state, history).
//!
//! ```text
//! key    = HKDF-SHA256(salt = none, ikm = device key PKCS#8 DER, info = per file kind, L = 32)
//! sealed = [12] random nonce | ChaCha20-Poly1305(key, nonce, aad, plaintext)
//! ```

use anyhow::{Context, Result, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chatd_proto::e2e::DeviceKey;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Bytes of the random nonce in front of every sealed piece.
pub const NONCE_BYTES: usize = 12;
/// Bytes the authentication tag adds.
pub const TAG_BYTES: usize = 16;

/// A file key; the info string keeps the keys of different files apart.
pub struct FileKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// The key for the file kind `info`, derived from `device_key`.
    pub fn derive(device_key: &DeviceKey, info: &[u8]) -> Result<FileKey> {
        let der = device_key
            .to_pkcs8_der()
            .context("cannot encode the device key to derive a file key")?;
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &der)
            .expand(info, &mut *key)
            .map_err(|_| anyhow::anyhow!("cannot derive a file key"))?;
        Ok(FileKey(key))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&(*self.0).into())
    }

    /// `plain` sealed with a fresh random nonce, appended to `out` (nonce first).
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|e| anyhow::anyhow!("random number generator failed: {e}"))?;
        let ciphertext = self
            .cipher()
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| anyhow::anyhow!("cannot encrypt"))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(())
    }

    /// Opens what [`FileKey::seal_into`] made; an error when it does not authenticate.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            bail!("too short");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("short nonce"))?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("it does not authenticate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infos_give_different_keys_and_tampering_is_caught() {
        let pem = include_str!("../../proto/src/e2e/testdata/alice.pem");
        let device = DeviceKey::from_pkcs8_pem(pem).unwrap();
        let a = FileKey::derive(&device, b"one").unwrap();
        let b = FileKey::derive(&device, b"two").unwrap();
        let mut sealed = Vec::new();
        a.seal_into(b"aad", b"secret", &mut sealed).unwrap();
        assert_eq!(&*a.open(b"aad", &sealed).unwrap(), b"secret");
        assert!(
            b.open(b"aad", &sealed).is_err(),
            "another info, another key"
        );
        assert!(a.open(b"other", &sealed).is_err(), "the aad is bound");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(a.open(b"aad", &sealed).is_err());
        assert!(a.open(b"aad", &[0; 20]).is_err());
    }
}
