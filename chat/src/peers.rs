//! Pinned device keys of the users met on one server (one's own other devices included).
//!
//! Trust on first use, per user: the keys a user shows the first time we meet them are pinned
//! as trusted. A key that appears later for a user we already know is pinned as *pending*:
//! nothing is encrypted to it and nothing from it is shown until the user accepts it with
//! `/trust USER` or checks it with `/verify USER FINGERPRINT`. Stored as JSON, mode 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chatd_proto::Fingerprint;
use serde::{Deserialize, Serialize};

/// How far a pinned key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Pinned on first use.
    Trusted,
    /// The user compared the fingerprint out of band (`/verify`).
    Verified,
    /// New key for a known user: not used until accepted.
    Pending,
}

impl KeyStatus {
    /// True when messages may be encrypted to and accepted from this key.
    pub fn usable(self) -> bool {
        matches!(self, KeyStatus::Trusted | KeyStatus::Verified)
    }
}

/// One pinned key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedKey {
    /// SHA-256 of the SPKI DER.
    pub fingerprint: Fingerprint,
    /// Base64 SPKI DER.
    pub key: String,
    /// Trust level.
    pub status: KeyStatus,
    /// When first seen, seconds since the Unix epoch.
    pub first_seen: u64,
}

/// What [`Peers::observe`] made of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first key seen for this user: pinned as trusted.
    FirstForUser,
    /// Already pinned, with this status.
    Known(KeyStatus),
    /// A new key for a user we already know: pinned as pending.
    NewForKnownUser,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PeersFile {
    version: u32,
    users: BTreeMap<String, Vec<PinnedKey>>,
}

/// The pin store for one server.
#[derive(Debug)]
pub struct Peers {
    path: Option<PathBuf>,
    users: BTreeMap<String, Vec<PinnedKey>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Peers {
    /// Reads `path` (missing means empty); a damaged file is an error, never silently reset.
    pub fn load(path: &Path) -> Result<Self> {
        let users = match crate::files::read_private(path)? {
            None => BTreeMap::new(),
            Some(text) => {
                let file: PeersFile = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is damaged; move it away to start over (every peer key is then pinned anew)",
                        path.display()
                    )
                })?;
                file.users
            }
        };
        Ok(Peers {
            path: Some(path.to_path_buf()),
            users,
        })
    }

    /// A store that is never written (tests).
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Peers {
            path: None,
            users: BTreeMap::new(),
        }
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = PeersFile {
            version: 1,
            users: self.users.clone(),
        };
        let text = serde_json::to_string_pretty(&file).context("encoding the peers file")?;
        crate::files::write_private(path, text.as_bytes())
    }

    /// Records that `user` presented key `fingerprint` (`key`: base64 SPKI DER, already
    /// checked to hash to `fingerprint`), pinning it if new.
    pub fn observe(&mut self, user: &str, fingerprint: Fingerprint, key: &str) -> Result<Seen> {
        let keys = self.users.entry(user.to_string()).or_default();
        if let Some(k) = keys.iter().find(|k| k.fingerprint == fingerprint) {
            return Ok(Seen::Known(k.status));
        }
        let first = keys.is_empty();
        keys.push(PinnedKey {
            fingerprint,
            key: key.to_string(),
            status: if first {
                KeyStatus::Trusted
            } else {
                KeyStatus::Pending
            },
            first_seen: now_secs(),
        });
        self.save()?;
        Ok(if first {
            Seen::FirstForUser
        } else {
            Seen::NewForKnownUser
        })
    }

    /// The status of `user`'s key `fingerprint`, if pinned.
    pub fn status(&self, user: &str, fingerprint: &Fingerprint) -> Option<KeyStatus> {
        self.keys(user)
            .iter()
            .find(|k| &k.fingerprint == fingerprint)
            .map(|k| k.status)
    }

    /// Every key pinned for `user`, oldest first.
    pub fn keys(&self, user: &str) -> &[PinnedKey] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Accepts every pending key of `user`; returns the keys accepted.
    pub fn trust_pending(&mut self, user: &str) -> Result<Vec<Fingerprint>> {
        let mut accepted = Vec::new();
        if let Some(keys) = self.users.get_mut(user) {
            for k in keys.iter_mut().filter(|k| k.status == KeyStatus::Pending) {
                k.status = KeyStatus::Trusted;
                accepted.push(k.fingerprint);
            }
        }
        if !accepted.is_empty() {
            self.save()?;
        }
        Ok(accepted)
    }

    /// Marks `user`'s key `fingerprint` as verified; false if no such key is pinned.
    pub fn verify(&mut self, user: &str, fingerprint: &Fingerprint) -> Result<bool> {
        let Some(k) = self
            .users
            .get_mut(user)
            .and_then(|keys| keys.iter_mut().find(|k| &k.fingerprint == fingerprint))
        else {
            return Ok(false);
        };
        k.status = KeyStatus::Verified;
        self.save()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    #[test]
    fn first_keys_are_trusted_later_ones_pending_until_accepted() {
        let mut p = Peers::in_memory();
        assert_eq!(p.observe("bob", fp(1), "k1").unwrap(), Seen::FirstForUser);
        assert_eq!(
            p.observe("bob", fp(1), "k1").unwrap(),
            Seen::Known(KeyStatus::Trusted)
        );
        assert_eq!(
            p.observe("bob", fp(2), "k2").unwrap(),
            Seen::NewForKnownUser
        );
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Pending));
        assert!(!KeyStatus::Pending.usable());
        assert_eq!(p.trust_pending("bob").unwrap(), vec![fp(2)]);
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Trusted));
        assert!(p.verify("bob", &fp(1)).unwrap());
        assert!(!p.verify("bob", &fp(9)).unwrap());
        assert!(!p.verify("carol", &fp(1)).unwrap());
        assert_eq!(p.status("bob", &fp(1)), Some(KeyStatus::Verified));
        assert_eq!(p.keys("bob").len(), 2);
        assert!(p.keys("carol").is_empty());
    }

    #[test]
    fn survives_a_restart_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers").join("srv.json");
        let mut p = Peers::load(&path).unwrap();
        p.observe("bob", fp(1), "k1").unwrap();
        p.observe("bob", fp(2), "k2").unwrap();
        let p = Peers::load(&path).unwrap();
        assert_eq!(p.status("bob", &fp(1)), Some(KeyStatus::Trusted));
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Pending));
        crate::files::write_private(&path, b"{not json").unwrap();
        let err = format!("{:#}", Peers::load(&path).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
    }
}
