//! Optional local history (`[history] enabled = true`): the verified conversation lines as
//! shown, kept on this device so a restart shows the recent conversation again.
//!
//! One file per device key, beside it ([`path_for`]), mode 0600 in the 0700 data directory,
//! sealed under a key derived from the device key ([`crate::sealed`]), so it is exactly as
//! protected as the key file. Each line is sealed on its own and appended, so keeping a line
//! never rewrites the file:
//!
//! ```text
//! file   = "CHATHIST" | u8 version = 1 | check | record*
//! check  = [12] nonce | ChaCha20-Poly1305(key, nonce, aad = the 9 bytes before, "")
//! record = u32 big-endian length of what follows | [12] nonce |
//!          ChaCha20-Poly1305(key, nonce, aad = the 9 header bytes, JSON of a line)
//! key    = HKDF-SHA256(ikm = device key PKCS#8 DER, info = "chat history file v1")
//! ```
//!
//! The check tells "another device key" apart from damage: a file that fails it is neither
//! read nor written this session (never overwritten). A record that does not open, or a
//! truncated tail, loses only those records, said once; the file is then rewritten without
//! them. The file is rewritten (atomically) to the bounds when a conversation passes
//! `lines` by a quarter, and at start for lines older than `days`.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chatd_proto::e2e::DeviceKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::HistoryConfig;
use crate::sealed::{FileKey, NONCE_BYTES, TAG_BYTES};
use crate::secure::{ChatMessage, Event, Notice, Warning};

const MAGIC: &[u8; 8] = b"CHATHIST";
const VERSION: u8 = 1;
const KEY_INFO: &[u8] = b"chat history file v1";
const HEADER_BYTES: usize = MAGIC.len() + 1;
const CHECK_BYTES: usize = NONCE_BYTES + TAG_BYTES;
/// A record claiming more is damage (a line is far smaller: the server caps messages).
const MAX_RECORD: usize = 1 << 20;

/// The history file of the device whose key is at `key_path`: `NAME.history` for
/// `NAME.pem`, else the key file's name with `.history` appended.
pub fn path_for(key_path: &Path) -> PathBuf {
    if key_path.extension().is_some_and(|e| e == "pem") {
        return key_path.with_extension("history");
    }
    let mut name = key_path.as_os_str().to_os_string();
    name.push(".history");
    PathBuf::from(name)
}

/// One kept line: a [`ChatMessage`] without what only matters live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    action: bool,
    ts: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    verified: bool,
}

impl Line {
    fn of(m: &ChatMessage) -> Line {
        Line {
            from: m.from.clone(),
            to: m.to.clone(),
            room: m.room.clone(),
            text: m.text.clone(),
            action: m.action,
            ts: m.ts,
            verified: m.verified,
        }
    }

    fn message(&self) -> ChatMessage {
        ChatMessage {
            from: self.from.clone(),
            to: self.to.clone(),
            room: self.room.clone(),
            text: self.text.clone(),
            action: self.action,
            ts: self.ts,
            verified: self.verified,
            late: false,
            server_ts: None,
        }
    }

    /// The conversation it belongs to, for the per-conversation bound.
    fn conversation(&self) -> String {
        match (&self.to, &self.room) {
            (Some(to), _) => {
                let (a, b) = if self.from <= *to {
                    (&self.from, to)
                } else {
                    (to, &self.from)
                };
                format!("{a},{b}")
            }
            (None, Some(room)) => format!("#{room}"),
            (None, None) => "#".to_string(),
        }
    }

    /// What makes a line the same one when the server delivers it again.
    fn identity(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (
            &self.from,
            &self.to,
            &self.room,
            &self.text,
            self.action,
            self.ts,
        )
            .hash(&mut h);
        h.finish()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.text.zeroize();
    }
}

/// What reading a file gave.
struct Read {
    lines: Vec<Line>,
    /// Records that did not open or decode, or a cut-off tail.
    damaged: usize,
}

/// The history of one device on one server.
pub struct History {
    path: PathBuf,
    key: FileKey,
    limits: HistoryConfig,
    /// The file could not be read this session: it is not written either.
    unusable: bool,
    /// Lines in the file per conversation, to know when to compact.
    counts: HashMap<String, usize>,
    /// Lines read at start: the same line delivered again is shown once.
    known: HashSet<u64>,
    /// What to show at start, handed out once.
    intro: Vec<Event>,
    /// A failed write was said and none has succeeded since.
    warned: bool,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl History {
    /// The history at `path` under a key derived from `device_key`. When enabled it is read
    /// now; what went wrong is said in [`History::intro`], never an error that stops chat.
    pub fn open(path: &Path, device_key: &DeviceKey, limits: HistoryConfig) -> Result<History> {
        let mut history = History {
            path: path.to_path_buf(),
            key: FileKey::derive(device_key, KEY_INFO)?,
            limits,
            unusable: false,
            counts: HashMap::new(),
            known: HashSet::new(),
            intro: Vec::new(),
            warned: false,
        };
        if history.limits.enabled {
            history.load();
        }
        Ok(history)
    }

    fn load(&mut self) {
        let read = match self.read() {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(e) => {
                self.unusable = true;
                self.intro.push(Event::Warning(Warning::HistoryUnusable {
                    path: self.path.display().to_string(),
                    error: format!("{e:#}"),
                }));
                return;
            }
        };
        let before = read.lines.len();
        let lines = self.bounded(read.lines);
        if read.damaged > 0 {
            self.intro.push(Event::Warning(Warning::HistoryDamaged {
                path: self.path.display().to_string(),
                records: read.damaged,
            }));
        }
        // Rewritten without the damage (so appends line up again) or without what is
        // past the bounds.
        if read.damaged > 0 || lines.len() < before {
            if let Err(e) = self.rewrite(&lines) {
                self.unusable = true;
                self.intro.push(Event::Warning(Warning::HistoryNotSaved {
                    error: format!("{e:#}"),
                }));
            }
        }
        self.count(&lines);
        self.known = lines.iter().map(Line::identity).collect();
        let shown = &lines[lines.len().saturating_sub(self.limits.show)..];
        if let Some(first) = shown.first() {
            self.intro.push(Event::Notice(Notice::HistoryStart {
                lines: shown.len(),
                since: first.ts,
            }));
            self.intro
                .extend(shown.iter().map(|l| Event::Message(l.message())));
            self.intro.push(Event::Notice(Notice::HistoryEnd));
        }
    }

    /// What to show first, once: the recent lines between two marks, or why there are none.
    pub fn intro(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.intro)
    }

    /// Events on their way to the screen: a message already shown from the history is
    /// dropped, every other message is kept.
    pub fn pass(&mut self, events: Vec<Event>) -> Vec<Event> {
        if !self.limits.enabled {
            return events;
        }
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            if let Event::Message(m) = &event {
                let line = Line::of(m);
                if self.known.contains(&line.identity()) {
                    continue;
                }
                out.extend(self.keep(&line));
            }
            out.push(event);
        }
        out
    }

    /// Appends `line` (compacting past the bound); a failure is said once until a write
    /// succeeds again.
    fn keep(&mut self, line: &Line) -> Option<Event> {
        if self.unusable {
            return None;
        }
        match self.append(line) {
            Ok(()) => {
                self.warned = false;
                None
            }
            Err(_) if self.warned => None,
            Err(e) => {
                self.warned = true;
                Some(Event::Warning(Warning::HistoryNotSaved {
                    error: format!("{e:#}"),
                }))
            }
        }
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut record = Vec::new();
        self.seal_line(line, &mut record)?;
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&self.path);
        match opened {
            // One write per record: a crash cuts at most this record short.
            Ok(mut file) => file
                .write_all(&record)
                .with_context(|| format!("cannot write {}", self.path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut whole = self.header()?;
                whole.extend_from_slice(&record);
                crate::files::write_private(&self.path, &whole)?;
                self.counts.clear();
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot write {}", self.path.display()));
            }
        }
        let conversation = line.conversation();
        let count = self.counts.entry(conversation).or_insert(0);
        *count += 1;
        if *count > self.limits.lines + self.limits.lines / 4 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file to the bounds.
    fn compact(&mut self) -> Result<()> {
        let lines = match self.read()? {
            Some(read) => self.bounded(read.lines),
            None => Vec::new(),
        };
        self.rewrite(&lines)?;
        self.count(&lines);
        Ok(())
    }

    fn count(&mut self, lines: &[Line]) {
        self.counts.clear();
        for l in lines {
            *self.counts.entry(l.conversation()).or_insert(0) += 1;
        }
    }

    /// `lines` without those older than `days` and beyond `lines` per conversation.
    fn bounded(&self, lines: Vec<Line>) -> Vec<Line> {
        let oldest = match self.limits.days {
            0 => 0,
            days => now_ms().saturating_sub(u64::from(days) * 86_400_000),
        };
        let mut left: HashMap<String, usize> = HashMap::new();
        let mut keep: Vec<Line> = lines
            .into_iter()
            .rev()
            .filter(|l| {
                let n = left.entry(l.conversation()).or_insert(0);
                *n += 1;
                l.ts >= oldest && *n <= self.limits.lines
            })
            .collect();
        keep.reverse();
        keep
    }

    fn header(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_BYTES + CHECK_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let aad = out.clone();
        self.key
            .seal_into(&aad, b"", &mut out)
            .context("cannot encrypt the history file")?;
        Ok(out)
    }

    fn seal_line(&self, line: &Line, out: &mut Vec<u8>) -> Result<()> {
        let plain = Zeroizing::new(serde_json::to_vec(line).context("encoding a history line")?);
        let mut sealed = Vec::with_capacity(NONCE_BYTES + plain.len() + TAG_BYTES);
        self.key
            .seal_into(&header_aad(), &plain, &mut sealed)
            .context("cannot encrypt the history file")?;
        let len = u32::try_from(sealed.len()).context("history line too long")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&sealed);
        Ok(())
    }

    fn rewrite(&self, lines: &[Line]) -> Result<()> {
        let mut out = self.header()?;
        for l in lines {
            self.seal_line(l, &mut out)?;
        }
        crate::files::write_private(&self.path, &out)
    }

    /// The file's lines; None when there is no file. An error when it is not ours to read.
    fn read(&self) -> Result<Option<Read>> {
        let Some(bytes) = crate::files::read_private_bytes(&self.path)? else {
            return Ok(None);
        };
        if bytes.len() < HEADER_BYTES + CHECK_BYTES || &bytes[..MAGIC.len()] != MAGIC {
            anyhow::bail!("it is not a chat history file");
        }
        if bytes[MAGIC.len()] != VERSION {
            anyhow::bail!(
                "history file version {} is not known to this chat",
                bytes[MAGIC.len()]
            );
        }
        let aad = header_aad();
        if self
            .key
            .open(&aad, &bytes[HEADER_BYTES..HEADER_BYTES + CHECK_BYTES])
            .is_err()
        {
            anyhow::bail!("it was made with another device key (or its start is damaged)");
        }
        let mut rest = &bytes[HEADER_BYTES + CHECK_BYTES..];
        let mut read = Read {
            lines: Vec::new(),
            damaged: 0,
        };
        while !rest.is_empty() {
            let len = rest
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as usize);
            let Some(record) = len
                .filter(|len| *len <= MAX_RECORD)
                .and_then(|len| rest.get(4..4 + len))
            else {
                // Cut short or framing lost: nothing after it can be found again.
                read.damaged += 1;
                break;
            };
            rest = &rest[4 + record.len()..];
            let line = self
                .key
                .open(&aad, record)
                .ok()
                .and_then(|plain| serde_json::from_slice::<Line>(&plain).ok());
            match line {
                Some(line) => read.lines.push(line),
                None => read.damaged += 1,
            }
        }
        Ok(Some(read))
    }

    /// `/history`: whether lines are kept, where, and how many.
    pub fn status(&self) -> Vec<Event> {
        vec![Event::Notice(Notice::HistoryStatus {
            enabled: self.limits.enabled && !self.unusable,
            path: self.path.display().to_string(),
            lines: self.counts.values().sum(),
        })]
    }

    /// `/history clear`: deletes the file (also when history is off now); lines shown from
    /// now on are kept again in a new file if history is on.
    pub fn clear(&mut self) -> Vec<Event> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return vec![Event::Warning(Warning::HistoryNotCleared {
                    error: format!("cannot delete {}: {e}", self.path.display()),
                })];
            }
        }
        self.counts.clear();
        self.unusable = false;
        self.warned = false;
        vec![Event::Notice(Notice::HistoryCleared {
            path: self.path.display().to_string(),
        })]
    }
}

fn header_aad() -> [u8; HEADER_BYTES] {
    let mut aad = [0u8; HEADER_BYTES];
    aad[..MAGIC.len()].copy_from_slice(MAGIC);
    aad[MAGIC.len()] = VERSION;
    aad
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
