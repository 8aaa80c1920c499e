//! What arrives from a pending key is held, still sealed, until the key becomes usable (a
//! vouch, `/trust`, `/verify`, `/devices approve`), then opened as if it had just arrived; and
//! this device's link secret while it waits for approval. Both are kept in memory (bounded)
//! and in a private file (`state/USER@SERVER.pending.json`, 0600), so a restart loses neither.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::Envelope;
use serde::{Deserialize, Serialize};

use super::{Delivered, Event, Secure, SentBy, Warning, now_ms};
use crate::peers::KeyStatus;

/// Frames held at most, from all pending keys together.
const MAX_HELD: usize = 1000;
/// Bytes of held frames at most (base64), so a flood cannot fill the disk through the file,
/// which is rewritten at each change.
const MAX_HELD_BYTES: usize = 4 << 20;
/// The version of the file this client writes.
const VERSION: u32 = 1;

/// A held frame, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HeldKind {
    /// A `chain` frame's data.
    Chain { data: String },
    /// An envelope: named by a JSON frame (`from`/`device`) or by its header (binary).
    Envelope {
        named: bool,
        data: String,
        ts: u64,
        /// Delivered as stored for an offline device (judged by the offline window).
        #[serde(default)]
        stored: bool,
    },
}

/// One held frame and whose key it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    user: String,
    device: Fingerprint,
    #[serde(flatten)]
    kind: HeldKind,
    /// When it arrived (ms since the epoch): its timestamp is judged against that.
    held_at_ms: u64,
}

impl Held {
    /// Roughly what it takes in memory and in the file.
    fn size(&self) -> usize {
        match &self.kind {
            HeldKind::Chain { data } | HeldKind::Envelope { data, .. } => data.len(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PendingFile {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_secret: Option<String>,
    #[serde(default)]
    held: Vec<Held>,
}

/// Held frames and the link secret, with the file they are kept in.
#[derive(Debug, Default)]
pub(super) struct Pending {
    path: Option<PathBuf>,
    /// This device's link secret while it waits for approval.
    pub(super) link_secret: Option<String>,
    held: VecDeque<Held>,
}

impl Pending {
    /// Reads `path` (missing means empty); a damaged file is an error, never silently reset.
    pub(super) fn load(path: &Path) -> Result<Self> {
        let file = match crate::files::read_private(path)? {
            None => PendingFile::default(),
            Some(text) => serde_json::from_str::<PendingFile>(&text).with_context(|| {
                format!(
                    "{} is damaged; move it away to start over (held messages are then lost)",
                    path.display()
                )
            })?,
        };
        if file.version > VERSION {
            bail!("{} was written by a newer chat", path.display());
        }
        Ok(Pending {
            path: Some(path.to_path_buf()),
            link_secret: file.link_secret,
            held: file.held.into(),
        })
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = PendingFile {
            version: VERSION,
            link_secret: self.link_secret.clone(),
            held: self.held.iter().cloned().collect(),
        };
        let text = serde_json::to_string(&file).context("encoding the pending file")?;
        crate::files::write_private(path, text.as_bytes())
    }
}

impl Secure {
    /// Keeps held frames and the link secret in `path` (read now).
    pub fn with_pending_file(mut self, path: &Path) -> Result<Self> {
        self.pending = Pending::load(path)?;
        Ok(self)
    }

    /// Writes the pending file; a warning when it cannot be.
    fn save_pending(&self) -> Vec<Event> {
        match self.pending.save() {
            Ok(()) => Vec::new(),
            Err(e) => vec![Event::Warning(Warning::PendingNotSaved {
                error: format!("{e:#}"),
            })],
        }
    }

    /// Sets (or clears) this device's link secret.
    pub(super) fn set_link_secret(&mut self, secret: Option<String>) -> Vec<Event> {
        if self.pending.link_secret == secret {
            return Vec::new();
        }
        self.pending.link_secret = secret;
        self.save_pending()
    }

    /// A `chain` frame: held if its sender's key is pending, else opened.
    pub fn receive_chain(&mut self, from: &str, device: Fingerprint, data: &str) -> Vec<Event> {
        if self.peers.status(from, &device) != Some(KeyStatus::Pending) {
            return self.on_chain(from, device, data);
        }
        self.hold(Held {
            user: from.to_string(),
            device,
            kind: HeldKind::Chain {
                data: data.to_string(),
            },
            held_at_ms: now_ms(),
        })
    }

    /// An envelope: held if its sender's key is pending, else opened.
    pub fn receive_envelope(&mut self, delivered: &Delivered) -> Vec<Event> {
        let sender = match (&delivered.sent_by, &delivered.data) {
            (SentBy::Named { user, device }, _) => Some((user.clone(), *device)),
            (SentBy::Header, Ok(bytes)) => Envelope::decode(bytes)
                .ok()
                .map(|e| (e.header().sender_user.clone(), e.header().sender_device)),
            (SentBy::Header, Err(_)) => None,
        };
        let held = match (&sender, &delivered.data) {
            (Some((user, device)), Ok(bytes))
                if self.peers.status(user, device) == Some(KeyStatus::Pending) =>
            {
                Some(Held {
                    user: user.clone(),
                    device: *device,
                    kind: HeldKind::Envelope {
                        named: matches!(delivered.sent_by, SentBy::Named { .. }),
                        data: BASE64.encode(bytes),
                        ts: delivered.ts,
                        stored: delivered.stored,
                    },
                    held_at_ms: now_ms(),
                })
            }
            _ => None,
        };
        match held {
            Some(held) => self.hold(held),
            None => self.on_delivered(delivered),
        }
    }

    fn hold(&mut self, held: Held) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .warn_pending(&held.user, held.device)
            .into_iter()
            .collect();
        let bytes: usize = self.pending.held.iter().map(Held::size).sum();
        if self.pending.held.len() >= MAX_HELD || bytes.saturating_add(held.size()) > MAX_HELD_BYTES
        {
            events.push(Event::Warning(Warning::HeldFull { user: held.user }));
            return events;
        }
        self.pending.held.push_back(held);
        events.extend(self.save_pending());
        events
    }

    /// `user`'s key `device` became usable: answers its held requests for our chains, and
    /// opens what it sent while pending, in order, each timestamp judged against when it
    /// arrived.
    pub(super) fn release(&mut self, user: &str, device: Fingerprint) -> Vec<Event> {
        let (mine, rest): (Vec<Held>, Vec<Held>) = self
            .pending
            .held
            .drain(..)
            .partition(|h| h.user == user && h.device == device);
        self.pending.held = rest.into();
        // Its requests for our chains, held until now, are answered first.
        let mut events = self.answer_held_rekeys();
        if mine.is_empty() {
            return events;
        }
        events.extend(self.save_pending());
        for held in mine {
            match held.kind {
                HeldKind::Chain { data } => events.extend(self.on_chain(user, device, &data)),
                HeldKind::Envelope {
                    named,
                    data,
                    ts,
                    stored,
                } => {
                    let bytes = BASE64.decode(data.as_bytes()).map(Bytes::from);
                    let delivered = Delivered {
                        sent_by: if named {
                            SentBy::Named {
                                user: user.to_string(),
                                device,
                            }
                        } else {
                            SentBy::Header
                        },
                        data: bytes.map_err(|_| chatd_proto::e2e::E2eError::Malformed("base64")),
                        ts,
                        stored,
                    };
                    let skew = self.max_skew_ms;
                    self.max_skew_ms =
                        skew.saturating_add(now_ms().saturating_sub(held.held_at_ms));
                    events.extend(self.on_delivered(&delivered));
                    self.max_skew_ms = skew;
                }
            }
        }
        events
    }

    /// `device` was revoked: what it sent and we held is dropped unread.
    pub(super) fn discard_held(&mut self, device: &Fingerprint) -> Vec<Event> {
        let before = self.pending.held.len();
        self.pending.held.retain(|h| h.device != *device);
        if self.pending.held.len() == before {
            return Vec::new();
        }
        self.save_pending()
    }
}
