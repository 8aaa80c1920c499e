//! `/ignore USER`: users whose messages, whispers and presence lines this client does not
//! show. Client-side only (the server is not told, and the messages are still decrypted so
//! chains stay whole); kept across restarts in a private file beside the client state, one
//! name per line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::files;

/// Default for `[ui] ignore_max`.
pub const DEFAULT_MAX: usize = 100;

/// Why `/ignore USER` did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreError {
    /// Not a user name.
    BadName(String),
    /// That is us.
    Me,
    /// The list holds `ignore_max` names already.
    Full(usize),
    /// The file could not be written (the change holds for this session only).
    NotSaved(String),
}

impl std::fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgnoreError::BadName(why) => write!(f, "not ignored: {why}"),
            IgnoreError::Me => write!(f, "not ignored: that is you"),
            IgnoreError::Full(max) => write!(
                f,
                "not ignored: the list is full ({max} names, [ui] ignore_max); /unignore someone first"
            ),
            IgnoreError::NotSaved(e) => {
                write!(
                    f,
                    "the ignore list holds until you quit but was not saved: {e}"
                )
            }
        }
    }
}

/// The ignored users of one account on one server.
#[derive(Debug, Clone)]
pub struct Ignored {
    names: BTreeSet<String>,
    max: usize,
    /// Where the list is kept (None: this session only).
    path: Option<PathBuf>,
}

impl Default for Ignored {
    fn default() -> Self {
        Ignored::in_memory(DEFAULT_MAX)
    }
}

impl Ignored {
    /// An empty list, not saved.
    pub fn in_memory(max: usize) -> Ignored {
        Ignored {
            names: BTreeSet::new(),
            max,
            path: None,
        }
    }

    /// The list in `path` (none yet: empty). Lines that are not user names are skipped; a
    /// file with more than `max` names (the limit was lowered) keeps them all but takes no more.
    pub fn load(path: &Path, max: usize) -> Result<Ignored> {
        let text = files::read_private(path)?.unwrap_or_default();
        let names = text
            .lines()
            .map(str::trim)
            .filter(|l| chatd_proto::names::validate_username(l).is_ok())
            .map(str::to_string)
            .collect();
        Ok(Ignored {
            names,
            max,
            path: Some(path.to_path_buf()),
        })
    }

    /// Whether `user`'s lines are hidden.
    pub fn contains(&self, user: &str) -> bool {
        self.names.contains(user)
    }

    /// The names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    /// Ignores `user` (`me` is the logged-in user); false if already ignored.
    pub fn add(&mut self, user: &str, me: &str) -> Result<bool, IgnoreError> {
        chatd_proto::names::validate_username(user)
            .map_err(|e| IgnoreError::BadName(e.to_string()))?;
        if user == me {
            return Err(IgnoreError::Me);
        }
        if self.names.contains(user) {
            return Ok(false);
        }
        if self.names.len() >= self.max {
            return Err(IgnoreError::Full(self.max));
        }
        self.names.insert(user.to_string());
        self.save().map(|()| true)
    }

    /// Stops ignoring `user`; false if they were not ignored.
    pub fn remove(&mut self, user: &str) -> Result<bool, IgnoreError> {
        if !self.names.remove(user) {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    fn save(&self) -> Result<(), IgnoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = String::new();
        for name in &self.names {
            text.push_str(name);
            text.push('\n');
        }
        files::write_private(path, text.as_bytes())
            .map_err(|e| IgnoreError::NotSaved(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_removes_and_refuses_with_reasons() {
        let mut l = Ignored::in_memory(2);
        assert_eq!(l.add("bob", "alice"), Ok(true));
        assert_eq!(l.add("bob", "alice"), Ok(false));
        assert!(l.contains("bob") && !l.contains("carol"));
        assert_eq!(l.add("alice", "alice"), Err(IgnoreError::Me));
        assert!(matches!(
            l.add("Bob!", "alice"),
            Err(IgnoreError::BadName(_))
        ));
        assert_eq!(l.add("carol", "alice"), Ok(true));
        // At the limit: refused; after one is removed there is room again.
        assert_eq!(l.add("dave", "alice"), Err(IgnoreError::Full(2)));
        assert!(IgnoreError::Full(2).to_string().contains("ignore_max"));
        assert_eq!(l.remove("bob"), Ok(true));
        assert_eq!(l.remove("bob"), Ok(false));
        assert_eq!(l.add("dave", "alice"), Ok(true));
        assert_eq!(l.list(), ["carol", "dave"]);
    }

    #[test]
    fn kept_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("alice@h:1.ignored");
        let mut l = Ignored::load(&path, 10).unwrap();
        assert!(l.list().is_empty());
        l.add("bob", "alice").unwrap();
        l.add("carol", "alice").unwrap();
        l.remove("carol").unwrap();
        let again = Ignored::load(&path, 10).unwrap();
        assert_eq!(again.list(), ["bob"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Junk lines are skipped, not fatal.
        files::write_private(&path, b"bob\n\n  carol  \nBad Name\n").unwrap();
        assert_eq!(Ignored::load(&path, 10).unwrap().list(), ["bob", "carol"]);
    }
}
