//! This device's private state file: what must survive a restart but is as secret as the key.
//!
//! `$XDG_DATA_HOME/chat/state/USER@SERVER-ID` (see [`crate::identity`]), mode 0600 in a 0700 directory, written
//! atomically. It holds the receiver chains (chain state, skipped keys, seen message ids), so
//! that a message already shown is never shown again and a chain is never replaced, also after
//! a restart. Encrypted and authenticated with ChaCha20-Poly1305 under a key derived from the
//! device private key, so it is exactly as protected as the key file:
//!
//! ```text
//! key  = HKDF-SHA256(salt = none, ikm = device key PKCS#8 DER, info = "chat state file v1", L = 32)
//! file = "CHATSTATE" | u8 version = 1 | [12] random nonce | ChaCha20-Poly1305(key, nonce,
//!        aad = the 10 bytes before the nonce, plaintext = JSON of [`Saved`])
//! ```
//!
//! A file that does not open (damaged, or made with another key) is an error, never silently
//! replaced: replay protection would be lost without a word.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chatd_proto::e2e::DeviceKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::sealed::{FileKey, NONCE_BYTES, TAG_BYTES};

/// Start of every state file.
const MAGIC: &[u8; 9] = b"CHATSTATE";
/// Format version after the magic.
const VERSION: u8 = 1;
/// HKDF info for the file key.
const KEY_INFO: &[u8] = b"chat state file v1";
const HEADER_BYTES: usize = MAGIC.len() + 1;

/// What the file holds. Later fields must be `#[serde(default)]` so older files still read.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// Receiver chains as `ReceiverChain::export` bytes in base64, oldest first.
    #[serde(default)]
    pub chains: Vec<String>,
    /// Chains dropped to keep the bound (`SHA256:…/CHAIN-ID-HEX`), oldest first: one of them
    /// sent again is not taken as new.
    #[serde(default)]
    pub retired: Vec<String>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        self.chains.zeroize();
    }
}

/// The state file of one device on one server.
pub struct StateFile {
    path: PathBuf,
    key: FileKey,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateFile {
    /// The state file at `path`, sealed under a key derived from `device_key`.
    pub fn new(path: &Path, device_key: &DeviceKey) -> Result<Self> {
        Ok(StateFile {
            path: path.to_path_buf(),
            key: FileKey::derive(device_key, KEY_INFO)?,
        })
    }

    /// What the file holds (nothing when it does not exist yet); a damaged file is an error.
    pub fn load(&self) -> Result<Saved> {
        let path = &self.path;
        let Some(bytes) = crate::files::read_private_bytes(path)? else {
            return Ok(Saved::default());
        };
        self.open(&bytes).with_context(|| {
            format!(
                "the state file {} is damaged or was made with another device key; \
                 move it away to start afresh (messages received before may then be shown again)",
                path.display()
            )
        })
    }

    /// Writes `saved`, atomically.
    pub fn save(&self, saved: &Saved) -> Result<()> {
        let sealed = self.seal(saved)?;
        crate::files::write_private(&self.path, &sealed)
    }

    fn seal(&self, saved: &Saved) -> Result<Vec<u8>> {
        // Room for all of it up front: a growing buffer would leave copies behind.
        let estimate = 64
            + saved.chains.iter().map(|c| c.len() + 3).sum::<usize>()
            + saved.retired.iter().map(|r| r.len() + 3).sum::<usize>();
        let mut plain = Zeroizing::new(Vec::with_capacity(estimate));
        serde_json::to_writer(&mut *plain, saved).context("encoding the state file")?;
        let mut out = Vec::with_capacity(HEADER_BYTES + NONCE_BYTES + plain.len() + TAG_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let header: [u8; HEADER_BYTES] = out[..HEADER_BYTES]
            .try_into()
            .map_err(|_| anyhow::anyhow!("state file header"))?;
        self.key
            .seal_into(&header, &plain, &mut out)
            .context("cannot encrypt the state file")?;
        Ok(out)
    }

    fn open(&self, bytes: &[u8]) -> Result<Saved> {
        if bytes.len() < HEADER_BYTES + NONCE_BYTES || &bytes[..MAGIC.len()] != MAGIC {
            bail!("not a chat state file");
        }
        if bytes[MAGIC.len()] != VERSION {
            bail!(
                "state file version {} is not known to this chat",
                bytes[MAGIC.len()]
            );
        }
        let (header, sealed) = bytes.split_at(HEADER_BYTES);
        let plain = self.key.open(header, sealed)?;
        serde_json::from_slice(&plain).context("its content does not decode")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key(i: usize) -> DeviceKey {
        let pems = [
            include_str!("../../proto/src/e2e/testdata/alice.pem"),
            include_str!("../../proto/src/e2e/testdata/bob.pem"),
        ];
        DeviceKey::from_pkcs8_pem(pems[i]).unwrap()
    }

    fn sample() -> Saved {
        Saved {
            chains: vec!["c2VjcmV0IGNoYWluIHN0YXRl".into()],
            retired: vec!["r".into()],
        }
    }

    #[test]
    fn round_trip_private_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("bob@h:1");
        let file = StateFile::new(&path, &key(1)).unwrap();
        assert!(file.load().unwrap().chains.is_empty(), "missing is empty");
        file.save(&sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"CHATSTATE\x01"));
        let needle = b"c2VjcmV0IGNoYWluIHN0YXRl";
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the content is encrypted"
        );
        let back = StateFile::new(&path, &key(1)).unwrap().load().unwrap();
        assert_eq!(back.chains, sample().chains);
        assert_eq!(back.retired, sample().retired);
        file.save(&sample()).unwrap();
        assert_ne!(
            std::fs::read(&path).unwrap(),
            bytes,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob@h:1");
        StateFile::new(&path, &key(1))
            .unwrap()
            .save(&sample())
            .unwrap();
        let good = std::fs::read(&path).unwrap();
        let err = format!(
            "{:#}",
            StateFile::new(&path, &key(0)).unwrap().load().unwrap_err()
        );
        assert!(
            err.contains("damaged or was made with another device key")
                && err.contains("does not authenticate"),
            "{err}"
        );
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let file = StateFile::new(&path, &key(1)).unwrap();
        assert!(file.load().is_err());
        let mut version = good.clone();
        version[9] = 2;
        std::fs::write(&path, &version).unwrap();
        let err = format!("{:#}", file.load().unwrap_err());
        assert!(err.contains("version 2"), "{err}");
        std::fs::write(&path, b"{}").unwrap();
        assert!(file.load().is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{}",
            "a refused file is left as it was"
        );
        std::fs::write(&path, &good).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(format!("{:#}", file.load().unwrap_err()).contains("chmod 600"));
    }
}
