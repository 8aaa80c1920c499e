//! Pinned device keys of the users met on one server (one's own other devices included).
//!
//! The rules that set a key's status are in `secure/devices.rs` (and docs/PROTOCOL.md, "End-to-end
//! messages"); this file only keeps them: per user, each key with its status and when it was
//! first seen, and per local account the key of this machine's device (its own-device pin).
//! Stored as JSON, mode 0600. Version 2; a version 1 file (no `vouched`, `revoked` or own pins)
//! is read as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chatd_proto::Fingerprint;
use serde::{Deserialize, Serialize};

/// The peers file version this client writes.
const VERSION: u32 = 2;

/// How far a pinned key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Pinned on first use.
    Trusted,
    /// The user compared the fingerprint out of band (`/verify`), or it is this device's own.
    Verified,
    /// Approved by a usable device of the same user (a device vouch), or by us.
    Vouched,
    /// Not used until accepted, vouched for or approved.
    Pending,
    /// Revoked (announced removed): never used again, whatever the server says later.
    Revoked,
}

impl KeyStatus {
    /// True when messages may be encrypted to and accepted from this key.
    pub fn usable(self) -> bool {
        matches!(
            self,
            KeyStatus::Trusted | KeyStatus::Verified | KeyStatus::Vouched
        )
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct PeersFile {
    version: u32,
    users: BTreeMap<String, Vec<PinnedKey>>,
    /// Per local account: this machine's device key for it (version 2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    own: BTreeMap<String, Fingerprint>,
}

/// The pin store for one server.
#[derive(Debug)]
pub struct Peers {
    path: Option<PathBuf>,
    users: BTreeMap<String, Vec<PinnedKey>>,
    own: BTreeMap<String, Fingerprint>,
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
        let file = match crate::files::read_private(path)? {
            None => PeersFile::default(),
            Some(text) => serde_json::from_str::<PeersFile>(&text).with_context(|| {
                format!(
                    "{} is damaged; move it away to start over (every peer key is then pinned anew)",
                    path.display()
                )
            })?,
        };
        if file.version > VERSION {
            bail!(
                "{} was written by a newer chat (version {}); this one reads up to {VERSION}",
                path.display(),
                file.version
            );
        }
        Ok(Peers {
            path: Some(path.to_path_buf()),
            users: file.users,
            own: file.own,
        })
    }

    /// A store that is never written (tests).
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Peers {
            path: None,
            users: BTreeMap::new(),
            own: BTreeMap::new(),
        }
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = PeersFile {
            version: VERSION,
            users: self.users.clone(),
            own: self.own.clone(),
        };
        let text = serde_json::to_string_pretty(&file).context("encoding the peers file")?;
        crate::files::write_private(path, text.as_bytes())
    }

    /// True when some key of `user` is pinned (we have met them).
    pub fn knows(&self, user: &str) -> bool {
        !self.keys(user).is_empty()
    }

    /// Pins `user`'s new key `fingerprint` (`key`: base64 SPKI DER, already checked to hash to
    /// it) with `status`; an already pinned key keeps its status.
    pub fn pin(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
        status: KeyStatus,
    ) -> Result<()> {
        let keys = self.users.entry(user.to_string()).or_default();
        if keys.iter().any(|k| k.fingerprint == fingerprint) {
            return Ok(());
        }
        keys.push(PinnedKey {
            fingerprint,
            key: key.to_string(),
            status,
            first_seen: now_secs(),
        });
        self.save()
    }

    /// The status of `user`'s key `fingerprint`, if pinned.
    pub fn status(&self, user: &str, fingerprint: &Fingerprint) -> Option<KeyStatus> {
        self.pinned(user, fingerprint).map(|k| k.status)
    }

    /// `user`'s pinned key `fingerprint`.
    pub fn pinned(&self, user: &str, fingerprint: &Fingerprint) -> Option<&PinnedKey> {
        self.keys(user)
            .iter()
            .find(|k| &k.fingerprint == fingerprint)
    }

    /// Every key pinned for `user`, oldest first.
    pub fn keys(&self, user: &str) -> &[PinnedKey] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Sets the status of `user`'s pinned key `fingerprint`; a revoked key stays revoked.
    /// False if no such key is pinned (or it is revoked and `status` is not).
    pub fn set_status(
        &mut self,
        user: &str,
        fingerprint: &Fingerprint,
        status: KeyStatus,
    ) -> Result<bool> {
        let Some(k) = self
            .users
            .get_mut(user)
            .and_then(|keys| keys.iter_mut().find(|k| &k.fingerprint == fingerprint))
        else {
            return Ok(false);
        };
        if k.status == KeyStatus::Revoked && status != KeyStatus::Revoked {
            return Ok(false);
        }
        if k.status != status {
            k.status = status;
            self.save()?;
        }
        Ok(true)
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

    /// Marks `user`'s key `fingerprint` as verified; false if no such key is pinned (or it
    /// is revoked).
    pub fn verify(&mut self, user: &str, fingerprint: &Fingerprint) -> Result<bool> {
        self.set_status(user, fingerprint, KeyStatus::Verified)
    }

    /// This machine's device key for the local account `user`, as last pinned.
    pub fn own(&self, user: &str) -> Option<Fingerprint> {
        self.own.get(user).copied()
    }

    /// Pins `fingerprint` (`key`) as this machine's device key for `user`. The first time (or
    /// with a new key file), keys of `user` that were only trusted on first use are demoted to
    /// pending: version 1 trusted whatever the server first listed for one's own account, and
    /// only a vouch or `/devices approve` may vouch for one's own devices now. Returns them.
    pub fn set_own(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
    ) -> Result<Vec<Fingerprint>> {
        if self.own(user) == Some(fingerprint) && self.status(user, &fingerprint).is_some() {
            return Ok(Vec::new());
        }
        let mut demoted = Vec::new();
        let keys = self.users.entry(user.to_string()).or_default();
        for k in keys.iter_mut() {
            if k.fingerprint == fingerprint {
                k.status = KeyStatus::Verified;
            } else if k.status == KeyStatus::Trusted {
                k.status = KeyStatus::Pending;
                demoted.push(k.fingerprint);
            }
        }
        if !keys.iter().any(|k| k.fingerprint == fingerprint) {
            keys.push(PinnedKey {
                fingerprint,
                key: key.to_string(),
                status: KeyStatus::Verified,
                first_seen: now_secs(),
            });
        }
        self.own.insert(user.to_string(), fingerprint);
        self.save()?;
        Ok(demoted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    #[test]
    fn statuses_change_but_revoked_is_for_good() {
        let mut p = Peers::in_memory();
        assert!(!p.knows("bob"));
        p.pin("bob", fp(1), "k1", KeyStatus::Trusted).unwrap();
        p.pin("bob", fp(2), "k2", KeyStatus::Pending).unwrap();
        // Pinning again keeps the status.
        p.pin("bob", fp(2), "k2", KeyStatus::Trusted).unwrap();
        assert!(p.knows("bob"));
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Pending));
        assert!(!KeyStatus::Pending.usable() && !KeyStatus::Revoked.usable());
        assert!(KeyStatus::Vouched.usable());
        assert_eq!(p.trust_pending("bob").unwrap(), vec![fp(2)]);
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Trusted));
        assert!(p.verify("bob", &fp(1)).unwrap());
        assert!(!p.verify("bob", &fp(9)).unwrap());
        assert!(!p.verify("carol", &fp(1)).unwrap());
        assert_eq!(p.status("bob", &fp(1)), Some(KeyStatus::Verified));
        assert!(p.set_status("bob", &fp(2), KeyStatus::Revoked).unwrap());
        assert!(!p.set_status("bob", &fp(2), KeyStatus::Trusted).unwrap());
        assert!(!p.verify("bob", &fp(2)).unwrap());
        p.pin("bob", fp(3), "k3", KeyStatus::Pending).unwrap();
        p.pin("bob", fp(4), "k4", KeyStatus::Revoked).unwrap();
        assert!(p.trust_pending("bob").unwrap() == vec![fp(3)]);
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Revoked));
        assert_eq!(p.status("bob", &fp(4)), Some(KeyStatus::Revoked));
        assert_eq!(p.keys("bob").len(), 4);
        assert!(p.keys("carol").is_empty());
    }

    #[test]
    fn own_pins_demote_what_version_1_trusted_on_first_use() {
        let mut p = Peers::in_memory();
        // Version 1 pinned a ghost on one's own account as trusted.
        p.pin("alice", fp(7), "ghost", KeyStatus::Trusted).unwrap();
        p.pin("alice", fp(8), "approved", KeyStatus::Vouched)
            .unwrap();
        assert_eq!(p.set_own("alice", fp(1), "mine").unwrap(), vec![fp(7)]);
        assert_eq!(p.own("alice"), Some(fp(1)));
        assert_eq!(p.status("alice", &fp(1)), Some(KeyStatus::Verified));
        assert_eq!(p.status("alice", &fp(7)), Some(KeyStatus::Pending));
        assert_eq!(p.status("alice", &fp(8)), Some(KeyStatus::Vouched));
        // Later sessions change nothing.
        p.set_status("alice", &fp(7), KeyStatus::Vouched).unwrap();
        assert!(p.set_own("alice", fp(1), "mine").unwrap().is_empty());
        assert_eq!(p.status("alice", &fp(7)), Some(KeyStatus::Vouched));
        assert_eq!(p.own("bob"), None);
    }

    #[test]
    fn reads_version_1_survives_a_restart_and_refuses_a_damaged_or_newer_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers").join("srv.json");
        let fpx = fp(1).to_string();
        let v1 = format!(
            r#"{{"version":1,"users":{{"bob":[{{"fingerprint":"{fpx}","key":"k1","status":"trusted","first_seen":5}}]}}}}"#
        );
        crate::files::write_private(&path, v1.as_bytes()).unwrap();
        let mut p = Peers::load(&path).unwrap();
        assert_eq!(p.status("bob", &fp(1)), Some(KeyStatus::Trusted));
        p.pin("bob", fp(2), "k2", KeyStatus::Pending).unwrap();
        p.set_own("alice", fp(3), "k3").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        let p = Peers::load(&path).unwrap();
        assert_eq!(p.status("bob", &fp(1)), Some(KeyStatus::Trusted));
        assert_eq!(p.status("bob", &fp(2)), Some(KeyStatus::Pending));
        assert_eq!(p.own("alice"), Some(fp(3)));
        crate::files::write_private(&path, br#"{"version":3,"users":{}}"#).unwrap();
        let err = format!("{:#}", Peers::load(&path).unwrap_err());
        assert!(err.contains("newer"), "{err}");
        crate::files::write_private(&path, b"{not json").unwrap();
        let err = format!("{:#}", Peers::load(&path).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
    }
}
