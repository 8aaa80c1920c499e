//! This device's private key: one per user and server, made at the first login and written
//! only once that login succeeded (a mistyped server, user or password leaves no key).
//!
//! PKCS#8 PEM under `$XDG_DATA_HOME/chat/keys/USER@SERVER-ID.pem` (see [`crate::identity`]), mode 0600 in a 0700
//! directory; a key file that other users can read is refused. With a passphrase the file is
//! an encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, scrypt + AES-256-CBC).

use std::path::Path;

use anyhow::{Context, Result, bail};
use chatd_proto::e2e::DeviceKey;
use zeroize::Zeroizing;

/// PEM label of a passphrase-protected PKCS#8 key.
const ENCRYPTED_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// Why a passphrase is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// To open the existing, encrypted key file.
    Unlock,
    /// To protect a key being created (an empty answer means no protection).
    Protect,
}

/// Loads the key at `path`; `None` when there is no file.
///
/// `passphrase` is asked only for an encrypted file; `None` from it is an error.
pub fn load(
    path: &Path,
    passphrase: &mut dyn FnMut(Need) -> Result<Option<Zeroizing<String>>>,
) -> Result<Option<DeviceKey>> {
    let Some(pem) = crate::files::read_private(path)? else {
        return Ok(None);
    };
    let pem = Zeroizing::new(pem);
    let key = if pem.trim_start().starts_with(ENCRYPTED_LABEL) {
        let Some(pass) = passphrase(Need::Unlock)? else {
            bail!(
                "the device key {} is protected by a passphrase; give it with --key-passphrase-stdin",
                path.display()
            );
        };
        DeviceKey::from_encrypted_pkcs8_pem(&pem, pass.as_bytes()).map_err(|_| {
            anyhow::anyhow!(
                "cannot unlock the device key {}: wrong passphrase or damaged file",
                path.display()
            )
        })?
    } else {
        DeviceKey::from_pkcs8_pem(&pem)
            .with_context(|| format!("cannot read the device key {}", path.display()))?
    };
    Ok(Some(key))
}

/// A new key of `bits`, in memory only: [`save`] writes it once the login succeeded.
pub fn generate(bits: usize) -> Result<DeviceKey> {
    DeviceKey::generate(bits).context("cannot generate a device key")
}

/// Writes `key` to `path`, protected by the passphrase `passphrase` gives for
/// [`Need::Protect`] (`None` or empty: unprotected). Never replaces an existing file.
pub fn save(
    path: &Path,
    key: &DeviceKey,
    passphrase: &mut dyn FnMut(Need) -> Result<Option<Zeroizing<String>>>,
) -> Result<()> {
    if path.exists() {
        bail!("{} appeared meanwhile; not replacing it", path.display());
    }
    let pass = passphrase(Need::Protect)?.filter(|p| !p.is_empty());
    let pem = match &pass {
        Some(p) => key.to_encrypted_pkcs8_pem(p.as_bytes()),
        None => key.to_pkcs8_pem(),
    }
    .context("cannot encode the device key")?;
    crate::files::write_private(path, pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn none(_: Need) -> Result<Option<Zeroizing<String>>> {
        Ok(None)
    }

    #[test]
    fn saved_once_then_loaded_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("alice@h:1.pem");
        assert!(load(&path, &mut none).unwrap().is_none());
        let a = generate(2048).unwrap();
        assert_eq!(a.bits(), 2048);
        // Nothing on disk until it is saved.
        assert!(!path.exists());
        save(&path, &a, &mut none).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load(&path, &mut none).unwrap().unwrap();
        assert_eq!(b.fingerprint(), a.fingerprint());
        assert!(save(&path, &generate(2048).unwrap(), &mut none).is_err());
        assert_eq!(
            load(&path, &mut none).unwrap().unwrap().fingerprint(),
            a.fingerprint()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path, &mut none).is_err());
    }

    #[test]
    fn passphrase_protects_and_unlocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let mut give = |_: Need| Ok(Some(Zeroizing::new("correct horse".to_string())));
        let a = generate(2048).unwrap();
        save(&path, &a, &mut give).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(ENCRYPTED_LABEL));
        let b = load(&path, &mut give).unwrap().unwrap();
        assert_eq!(b.fingerprint(), a.fingerprint());
        let err = load(&path, &mut none).unwrap_err().to_string();
        assert!(err.contains("--key-passphrase-stdin"), "{err}");
        let mut wrong = |_: Need| Ok(Some(Zeroizing::new("wrong".to_string())));
        let err = load(&path, &mut wrong).unwrap_err().to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
    }
}
