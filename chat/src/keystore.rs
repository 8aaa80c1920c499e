//! This device's private key: one per user and server, made on first login.
//!
//! PKCS#8 PEM under `$XDG_DATA_HOME/chat/keys/USER@HOST:PORT.pem`, mode 0600 in a 0700
//! directory; a key file that other users can read is refused. With a passphrase the file is
//! an encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, scrypt + AES-256-CBC).

use std::path::{Path, PathBuf};

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

/// The default key file for `user` on `server` (`host:port`).
pub fn default_path(user: &str, server: &str) -> Result<PathBuf> {
    let dir = dirs::data_dir()
        .context("cannot find a data directory for the device key (set HOME or XDG_DATA_HOME)")?;
    Ok(dir
        .join("chat")
        .join("keys")
        .join(format!("{user}@{server}.pem")))
}

/// What [`load_or_create`] did.
#[derive(Debug)]
pub struct Loaded {
    /// The key.
    pub key: DeviceKey,
    /// True when it was generated just now.
    pub created: bool,
}

/// Loads the key at `path`, or generates one of `bits` and saves it there.
///
/// `passphrase` is asked only when needed; `None` means none is available (for `Unlock`, an
/// error; for `Protect`, an unencrypted file).
pub fn load_or_create(
    path: &Path,
    bits: usize,
    passphrase: &mut dyn FnMut(Need) -> Result<Option<Zeroizing<String>>>,
) -> Result<Loaded> {
    if let Some(pem) = crate::files::read_private(path)? {
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
        return Ok(Loaded {
            key,
            created: false,
        });
    }
    let pass = passphrase(Need::Protect)?.filter(|p| !p.is_empty());
    let key = DeviceKey::generate(bits).context("cannot generate a device key")?;
    let pem = match &pass {
        Some(p) => key.to_encrypted_pkcs8_pem(p.as_bytes()),
        None => key.to_pkcs8_pem(),
    }
    .context("cannot encode the device key")?;
    crate::files::write_private(path, pem.as_bytes())?;
    Ok(Loaded { key, created: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn none(_: Need) -> Result<Option<Zeroizing<String>>> {
        Ok(None)
    }

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("alice@h:1.pem");
        let a = load_or_create(&path, 2048, &mut none).unwrap();
        assert!(a.created);
        assert_eq!(a.key.bits(), 2048);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path, 4096, &mut none).unwrap();
        assert!(!b.created);
        assert_eq!(b.key.fingerprint(), a.key.fingerprint());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path, 2048, &mut none).is_err());
    }

    #[test]
    fn passphrase_protects_and_unlocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let mut give = |_: Need| Ok(Some(Zeroizing::new("correct horse".to_string())));
        let a = load_or_create(&path, 2048, &mut give).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(ENCRYPTED_LABEL));
        let b = load_or_create(&path, 2048, &mut give).unwrap();
        assert_eq!(b.key.fingerprint(), a.key.fingerprint());
        let err = load_or_create(&path, 2048, &mut none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--key-passphrase-stdin"), "{err}");
        let mut wrong = |_: Need| Ok(Some(Zeroizing::new("wrong".to_string())));
        let err = load_or_create(&path, 2048, &mut wrong)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
    }
}
