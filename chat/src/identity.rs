//! Which server this is, whatever it was called: the name under which this device's key, pins
//! and state are kept.
//!
//! A server reached through a pinned certificate is known by the fingerprint it was first
//! pinned with ([`ServerId::Pinned`]): a rotation the user accepts keeps that id, and another
//! host string whose certificate matches a pin becomes an alias of the same server (see
//! [`crate::trust::KnownServers`]). A server whose certificate a CA vouched for is known by the
//! verified DNS name and port ([`ServerId::Named`]). Several hosts can serve one deployment by
//! sharing one id in the known-servers file.
//!
//! Files are laid out by id (`$XDG_DATA_HOME/chat/`):
//!
//! ```text
//! keys/USER@ID.pem                this device's private key
//! keys/USER@ID.history            the local history, if enabled (beside the key it is sealed by)
//! state/USER@ID                   encrypted receiver state
//! state/USER@ID.pending.json      what is held from keys not accepted yet
//! state/USER@ID.ignored           the /ignore list
//! peers/ID.json                   other users' pinned device keys
//! ```
//!
//! Files of earlier versions, named by the host string as typed (`USER@HOST:PORT`), are moved
//! to their id names the first time that server is reached through that host string.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chatd_proto::Fingerprint;

use crate::conn::ServerAddr;

/// A server's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerId {
    /// Reached through a pinned certificate: the fingerprint it was first pinned with.
    Pinned(Fingerprint),
    /// A CA verified its certificate for this DNS name and port.
    Named(ServerAddr),
}

impl fmt::Display for ServerId {
    /// `SHA256:HEX` or `HOST:PORT`: the form in file names and the known-servers file. The two
    /// never collide: a port is a number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerId::Pinned(fp) => fp.fmt(f),
            ServerId::Named(addr) => addr.fmt(f),
        }
    }
}

/// Where one user's files on one server live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `$XDG_DATA_HOME/chat`.
    root: PathBuf,
    user: String,
    id: String,
}

impl Layout {
    /// The layout under `$XDG_DATA_HOME/chat` for `user` on the server `id`.
    pub fn new(user: &str, id: &ServerId) -> Result<Layout> {
        let dir = dirs::data_dir().context(
            "cannot find a data directory for the device key (set HOME or XDG_DATA_HOME)",
        )?;
        Ok(Layout::under(&dir.join("chat"), user, &id.to_string()))
    }

    /// The layout under `root` (tests; migration from the old names).
    pub fn under(root: &Path, user: &str, id: &str) -> Layout {
        Layout {
            root: root.to_path_buf(),
            user: user.to_string(),
            id: id.to_string(),
        }
    }

    /// The per-user, per-server file stem: `state/USER@ID`. The state file is the stem itself;
    /// every other private per-device file appends an extension (`.pending.json`, `.history`).
    pub fn stem(&self) -> PathBuf {
        self.root
            .join("state")
            .join(format!("{}@{}", self.user, self.id))
    }

    /// `keys/USER@ID.pem`.
    pub fn key(&self) -> PathBuf {
        self.root
            .join("keys")
            .join(format!("{}@{}.pem", self.user, self.id))
    }

    /// `state/USER@ID`.
    pub fn state(&self) -> PathBuf {
        self.stem()
    }

    /// `state/USER@ID.pending.json`.
    pub fn pending(&self) -> PathBuf {
        with_suffix(&self.stem(), ".pending.json")
    }

    /// `peers/ID.json` (shared by every user of this device on that server).
    pub fn peers(&self) -> PathBuf {
        self.root.join("peers").join(format!("{}.json", self.id))
    }

    /// Moves the files an earlier version kept under the host string `old` (as typed) to
    /// this layout's names. A file already at its new name wins and the old one stays where it
    /// is; nothing is ever overwritten. Returns the files moved, as `(from, to)`.
    pub fn migrate_from(&self, old: &Layout) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut moved = Vec::new();
        if old.id == self.id {
            return Ok(moved);
        }
        for (from, to) in [
            (old.key(), self.key()),
            (old.state(), self.state()),
            (old.pending(), self.pending()),
            (old.peers(), self.peers()),
        ] {
            if !from.exists() || to.exists() {
                continue;
            }
            if let Some(dir) = to.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            // A rename keeps the file whole (and its mode); both names are in one directory.
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
            moved.push((from, to));
        }
        Ok(moved)
    }
}

/// `path` with `suffix` appended to its last component.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_id() {
        let fp = Fingerprint::of(b"cert");
        let id = ServerId::Pinned(fp);
        let l = Layout::under(Path::new("/d/chat"), "alice", &id.to_string());
        assert_eq!(
            l.key(),
            PathBuf::from(format!("/d/chat/keys/alice@{fp}.pem"))
        );
        assert_eq!(
            l.state(),
            PathBuf::from(format!("/d/chat/state/alice@{fp}"))
        );
        assert_eq!(
            l.pending(),
            PathBuf::from(format!("/d/chat/state/alice@{fp}.pending.json"))
        );
        assert_eq!(l.peers(), PathBuf::from(format!("/d/chat/peers/{fp}.json")));
        let named = ServerId::Named(ServerAddr::parse("Chat.Example.org").unwrap());
        assert_eq!(named.to_string(), "chat.example.org:8443");
        let v6 = ServerId::Named(ServerAddr::parse("[::1]:9").unwrap());
        assert_eq!(v6.to_string(), "[::1]:9");
    }

    #[test]
    fn old_files_move_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chat");
        let old = Layout::under(&root, "alice", "localhost:8443");
        let new = Layout::under(&root, "alice", &Fingerprint::of(b"x").to_string());
        for (p, body) in [
            (old.key(), "key"),
            (old.state(), "state"),
            (old.pending(), "pending"),
            (old.peers(), "peers"),
        ] {
            crate::files::write_private(&p, body.as_bytes()).unwrap();
        }
        // Someone else's files on the same server are not touched.
        let bob = Layout::under(&root, "bob", "localhost:8443");
        crate::files::write_private(&bob.key(), b"bob").unwrap();
        let moved = new.migrate_from(&old).unwrap();
        assert_eq!(moved.len(), 4);
        assert_eq!(std::fs::read_to_string(new.key()).unwrap(), "key");
        assert_eq!(std::fs::read_to_string(new.state()).unwrap(), "state");
        assert_eq!(std::fs::read_to_string(new.pending()).unwrap(), "pending");
        assert_eq!(std::fs::read_to_string(new.peers()).unwrap(), "peers");
        assert!(!old.key().exists() && !old.peers().exists());
        assert!(bob.key().exists());
        // A second host string for the same server: its files stay, the id's files win.
        let other = Layout::under(&root, "alice", "127.0.0.1:8443");
        crate::files::write_private(&other.key(), b"second key").unwrap();
        assert!(new.migrate_from(&other).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(new.key()).unwrap(), "key");
        assert!(other.key().exists());
        // Same name: nothing to do.
        assert!(new.migrate_from(&new).unwrap().is_empty());
    }
}
