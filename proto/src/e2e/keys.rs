//! Device keys: one RSA key pair per client device, OAEP-SHA256 and PSS-SHA256 only.
//!
//! Private keys travel as PKCS#8 PEM (optionally passphrase-encrypted: PBES2 with scrypt and
//! AES-256-CBC); public keys as SPKI DER/PEM. A device's fingerprint is SHA-256 over its SPKI
//! DER, written like every other [`Fingerprint`] in chatd.

use std::fmt;

use getrandom::SysRng;
use rsa::pkcs8::der::pem::PemLabel;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey,
    EncryptedPrivateKeyInfoRef, LineEnding, PrivateKeyInfoRef,
};
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use super::E2eError;
use crate::Fingerprint;

/// Key size `DeviceKey::generate` callers should use unless they have a reason not to.
pub const DEFAULT_KEY_BITS: usize = 3072;

/// The only RSA modulus sizes accepted, generated or imported.
pub const ALLOWED_KEY_BITS: [usize; 3] = [2048, 3072, 4096];

fn check_bits(bits: usize) -> Result<(), E2eError> {
    if ALLOWED_KEY_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(E2eError::BadKeySize(bits))
    }
}

fn enc_err(e: impl fmt::Display) -> E2eError {
    E2eError::KeyEncoding(e.to_string())
}

/// A device's private key. `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct DeviceKey {
    key: PrivateKey,
    public: DevicePublicKey,
}

impl DeviceKey {
    /// Generates a fresh key of `bits` (2048, 3072 or 4096) from the OS CSPRNG. Slow: ~0.3 s
    /// for 3072 bits in release; run it off the async reactor.
    pub fn generate(bits: usize) -> Result<Self, E2eError> {
        check_bits(bits)?;
        let key = PrivateKey::new(&mut SysRng, bits).map_err(|e| E2eError::Rsa(e.to_string()))?;
        Self::from_private(key)
    }

    fn from_private(key: PrivateKey) -> Result<Self, E2eError> {
        let bits = key.size() * 8;
        check_bits(bits)?;
        let public = DevicePublicKey::from_public(key.to_public_key())?;
        Ok(DeviceKey { key, public })
    }

    /// Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), LF line endings.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, E2eError> {
        self.key.to_pkcs8_pem(LineEnding::LF).map_err(enc_err)
    }

    /// Unencrypted PKCS#8 DER: secret, for deriving keys that are as protected as this one.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, E2eError> {
        let der = self.key.to_pkcs8_der().map_err(enc_err)?;
        Ok(Zeroizing::new(der.as_bytes().to_vec()))
    }

    /// Reads an unencrypted PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, E2eError> {
        Self::from_private(PrivateKey::from_pkcs8_pem(pem).map_err(enc_err)?)
    }

    /// Passphrase-encrypted PKCS#8 PEM (`-----BEGIN ENCRYPTED PRIVATE KEY-----`; PBES2, scrypt
    /// log2 N = 15, r = 8, p = 1, AES-256-CBC).
    pub fn to_encrypted_pkcs8_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, E2eError> {
        let der = self.key.to_pkcs8_der().map_err(enc_err)?;
        let info = PrivateKeyInfoRef::try_from(der.as_bytes()).map_err(enc_err)?;
        let encrypted = info
            .encrypt_with_rng(&mut SysRng, passphrase)
            .map_err(enc_err)?;
        encrypted
            .to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
            .map_err(enc_err)
    }

    /// Reads a passphrase-encrypted PKCS#8 PEM private key.
    pub fn from_encrypted_pkcs8_pem(pem: &str, passphrase: &[u8]) -> Result<Self, E2eError> {
        let key = PrivateKey::from_pkcs8_encrypted_pem(pem, passphrase).map_err(enc_err)?;
        Self::from_private(key)
    }

    /// The public half.
    pub fn public(&self) -> DevicePublicKey {
        self.public.clone()
    }

    /// SHA-256 over the public key's SPKI DER.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }

    /// RSA-PSS-SHA256 signature (salt length = 32) over `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.key
            .pss_sign::<Sha256>(msg)
            .map_err(|e| E2eError::Rsa(e.to_string()))
    }

    /// RSA-OAEP-SHA256 (MGF1-SHA256, empty label) decryption.
    pub(crate) fn oaep_decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, E2eError> {
        self.key
            .oaep_decrypt::<Sha256>(ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| E2eError::Unwrap)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("bits", &self.bits())
            .field("fingerprint", &self.public.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A device's public key, as the server stores and hands it out.
#[derive(Clone)]
pub struct DevicePublicKey {
    key: PublicKey,
    der: Vec<u8>,
    fingerprint: Fingerprint,
}

impl DevicePublicKey {
    fn from_public(key: PublicKey) -> Result<Self, E2eError> {
        check_bits(key.size() * 8)?;
        let der = key.to_public_key_der().map_err(enc_err)?.into_vec();
        let fingerprint = Fingerprint::of(&der);
        Ok(DevicePublicKey {
            key,
            der,
            fingerprint,
        })
    }

    /// Reads SPKI DER (`SubjectPublicKeyInfo`, rsaEncryption).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, E2eError> {
        Self::from_public(PublicKey::from_public_key_der(der).map_err(enc_err)?)
    }

    /// Reads SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_spki_pem(pem: &str) -> Result<Self, E2eError> {
        Self::from_public(PublicKey::from_public_key_pem(pem).map_err(enc_err)?)
    }

    /// SPKI DER; the bytes the fingerprint is taken over.
    pub fn to_spki_der(&self) -> &[u8] {
        &self.der
    }

    /// SPKI PEM, LF line endings.
    pub fn to_spki_pem(&self) -> Result<String, E2eError> {
        self.key.to_public_key_pem(LineEnding::LF).map_err(enc_err)
    }

    /// `SHA256:<64 hex>` over the SPKI DER.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }

    /// Verifies an RSA-PSS-SHA256 signature over `msg`.
    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), E2eError> {
        self.key
            .pss_verify::<Sha256>(msg, sig)
            .map_err(|_| E2eError::BadSignature)
    }

    /// RSA-OAEP-SHA256 (MGF1-SHA256, empty label) encryption.
    pub(crate) fn oaep_encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.key
            .oaep_encrypt::<Sha256>(plaintext)
            .map_err(|e| E2eError::Rsa(e.to_string()))
    }
}

impl PartialEq for DevicePublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for DevicePublicKey {}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePublicKey")
            .field("bits", &self.bits())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::testkeys::{alice, bob};

    #[test]
    fn pem_round_trips_and_fingerprint_is_spki_sha256() {
        let key = alice();
        assert_eq!(key.bits(), 2048);
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = DeviceKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.public(), key.public());

        let public = key.public();
        let spki_pem = public.to_spki_pem().unwrap();
        assert!(spki_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(DevicePublicKey::from_spki_pem(&spki_pem).unwrap(), public);
        let from_der = DevicePublicKey::from_spki_der(public.to_spki_der()).unwrap();
        assert_eq!(from_der, public);
        assert_eq!(public.fingerprint(), Fingerprint::of(public.to_spki_der()));
        assert_eq!(key.fingerprint(), public.fingerprint());
        assert_ne!(key.fingerprint(), bob().fingerprint());
        let text = public.fingerprint().to_string();
        assert!(text.starts_with("SHA256:") && text.len() == 7 + 64);
        assert!(!format!("{key:?}").contains("BEGIN"));
    }

    #[test]
    fn encrypted_pem_needs_the_passphrase() {
        let pem = alice().to_encrypted_pkcs8_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        let back = DeviceKey::from_encrypted_pkcs8_pem(&pem, b"correct horse").unwrap();
        assert_eq!(back.fingerprint(), alice().fingerprint());
        assert!(matches!(
            DeviceKey::from_encrypted_pkcs8_pem(&pem, b"wrong"),
            Err(E2eError::KeyEncoding(_))
        ));
        assert!(DeviceKey::from_pkcs8_pem(&pem).is_err());
    }

    #[test]
    fn rejects_bad_sizes_and_garbage() {
        assert_eq!(
            DeviceKey::generate(1024).unwrap_err(),
            E2eError::BadKeySize(1024)
        );
        assert!(matches!(
            DeviceKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(E2eError::KeyEncoding(_))
        ));
        assert!(DevicePublicKey::from_spki_der(b"junk").is_err());
    }

    #[test]
    fn sign_verify_encrypt_decrypt() {
        let sig = alice().sign(b"msg").unwrap();
        alice().public().verify(b"msg", &sig).unwrap();
        assert_eq!(
            alice().public().verify(b"msG", &sig),
            Err(E2eError::BadSignature)
        );
        assert_eq!(
            bob().public().verify(b"msg", &sig),
            Err(E2eError::BadSignature)
        );
        let ct = bob().public().oaep_encrypt(b"secret").unwrap();
        assert_eq!(bob().oaep_decrypt(&ct).unwrap().as_slice(), b"secret");
        assert_eq!(alice().oaep_decrypt(&ct).unwrap_err(), E2eError::Unwrap);
    }

    #[test]
    fn generates_2048() {
        let key = DeviceKey::generate(2048).unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.public().bits(), 2048);
        assert_ne!(key.fingerprint(), alice().fingerprint());
    }

    #[test]
    fn generates_default_size() {
        let key = DeviceKey::generate(DEFAULT_KEY_BITS).unwrap();
        assert_eq!(key.bits(), 3072);
    }
}
