//! The end-to-end layer of one session: pins keys, seals what we send, opens what we get.
//!
//! Pure state over frames (no I/O besides the pin and state files), so every rule is
//! unit-tested:
//!
//! - Every device key the server announces is checked against its fingerprint and pinned
//!   ([`crate::peers`], rules in `devices.rs`); a new key for a known user, and any key on our
//!   own account, stays *pending* (not used; what it sends is held, `held.rs`) until a usable
//!   key of the same user vouches for it (`vouches.rs`) or we accept it.
//! - We keep one [`SenderChain`] per conversation, wrap it once for each trusted member
//!   device that does not have it yet, and start a new chain when a device that had it goes
//!   offline, so a departed device cannot read what follows.
//! - A received envelope is shown only if the server-named sender matches the signed header,
//!   the signature verifies under that sender's pinned (usable) key, the conversation includes
//!   us, and it is neither a replay nor outside the clock-skew window (the offline TTL for a
//!   stored one). Anything else becomes a warning, never a message.
//! - Receiver chains survive restarts in the state file (replay.rs): a chain already held is
//!   never replaced and a message is shown at most once.
//!
//! What it has to tell the user comes back as typed values (`event.rs`: [`Notice`],
//! [`Warning`], [`NotSent`]) carrying the names and keys involved as they came; the renderer
//! words and sanitizes them, so this state builds no text for the screen.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{DeviceKey, DevicePublicKey, E2eError, ReceiverChain, SenderChain, Vouch};
use chatd_proto::{ClientFrame, Fingerprint};
use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::peers::{KeyStatus, Peers};
use crate::state::StateFile;

mod devices;
mod event;
mod held;
mod local;
pub mod prefix;
mod receive;
mod rekey;
mod replay;
mod rooms;
mod send;
mod vouches;

pub use event::{ChatMessage, Event, NotSent, Notice, Refusal, VouchRefusal, Warning};
pub use rekey::Request as RekeyRequest;

/// Receiver chains kept per sending device (older ones are dropped first).
const CHAINS_PER_DEVICE: usize = 8;
/// Own messages awaiting the server's echo.
const MAX_PENDING_OWN: usize = 4096;
/// A sender chain is replaced well before its index runs out.
const ROTATE_AT_INDEX: u32 = 1 << 20;

/// What is sealed inside an envelope: JSON, so that it can grow without a format change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// The message text.
    pub text: String,
    /// True for `/me` actions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub action: bool,
}

/// Who the server says sent an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentBy {
    /// A JSON `envelope` frame's `from` and `device`; both must match the signed header.
    Named {
        /// Sending user.
        user: String,
        /// Sending device's key fingerprint.
        device: Fingerprint,
    },
    /// A binary frame names nobody: the sender is the header's, which the server checked
    /// against the sending session.
    Header,
}

/// An end-to-end envelope as it arrived, from a JSON `envelope` line or a binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Who the server says sent it.
    pub sent_by: SentBy,
    /// The envelope bytes; Err when a JSON frame's base64 does not decode.
    pub data: Result<Bytes, E2eError>,
    /// Server receive time, ms since the Unix epoch.
    pub ts: u64,
    /// It came while the server replayed what was stored for this device (between
    /// `login_ok` and the last `backlog` marker): its signed time may be as old as the
    /// server's `offline_ttl_secs`.
    pub stored: bool,
}

impl Delivered {
    /// A JSON `envelope` frame's fields; its base64 is decoded here, the only time.
    pub fn json(from: String, device: Fingerprint, data: &str, ts: u64) -> Self {
        Delivered {
            sent_by: SentBy::Named { user: from, device },
            data: BASE64
                .decode(data.trim())
                .map(Bytes::from)
                .map_err(|_| E2eError::Malformed("base64")),
            ts,
            stored: false,
        }
    }

    /// A binary `envelope` frame: the bytes as they came off the wire.
    pub fn binary(ts: u64, data: Bytes) -> Self {
        Delivered {
            sent_by: SentBy::Header,
            data: Ok(data),
            ts,
            stored: false,
        }
    }
}

/// A device key the server lists for a user (registered, not revoked).
struct KnownDevice {
    user: String,
    key: DevicePublicKey,
    /// A session with it is logged in now (messages for it are stored otherwise).
    online: bool,
}

struct Outgoing {
    chain: SenderChain,
    /// Devices that hold this chain.
    given: HashSet<Fingerprint>,
    /// A device that held it was removed: start a new chain before the next message.
    stale: bool,
}

struct PendingOwn {
    conversation: Conversation,
    body: Body,
}

/// The end-to-end state of a logged-in session.
pub struct Secure {
    me: String,
    key: DeviceKey,
    device: Fingerprint,
    peers: Peers,
    devices: HashMap<Fingerprint, KnownDevice>,
    /// Members of the rooms this user is in, as the server announced them.
    rooms: HashMap<String, BTreeSet<String>>,
    /// The room every user is in.
    default_room: String,
    /// Where plain text goes.
    current_room: String,
    /// Room requests not answered yet, and roster changes already reported.
    asked: rooms::Asked,
    senders: HashMap<String, Outgoing>,
    receivers: HashMap<(Fingerprint, [u8; 16]), ReceiverChain>,
    receiver_order: VecDeque<(Fingerprint, [u8; 16])>,
    pending_own: HashMap<[u8; 16], PendingOwn>,
    pending_order: VecDeque<[u8; 16]>,
    /// Chains asked for and given again.
    rekeys: rekey::Rekeys,
    max_skew_ms: u64,
    max_text_bytes: usize,
    /// Where receiver chains are kept across restarts (None: in memory only).
    state: Option<StateFile>,
    /// Receiver chains dropped for the bound, oldest first (replay.rs).
    retired: VecDeque<(Fingerprint, [u8; 16])>,
    /// Stored messages skipped since the last backlog because they were shown before.
    already_shown: u32,
    /// The server's `offline_ttl_secs`, in ms.
    offline_ttl_ms: u64,
    /// A failure to write the state file was told and no write has succeeded since.
    state_warned: bool,
    /// Device vouches seen, per user (checked when used: `vouches.rs`).
    vouches: HashMap<String, Vec<Vouch>>,
    /// Keys (and this device, for its approval code) already warned about in this session.
    warned: HashSet<Fingerprint>,
    /// The server takes device vouches (its `hello` listed the feature).
    vouch_supported: bool,
    /// Frames held from pending keys, and this device's link secret.
    pending: held::Pending,
    /// Users whose lines are not shown (`/ignore`).
    ignored: crate::ignore::Ignored,
    /// `/ping`s waiting for their `pong`.
    pings: crate::pinging::Pings,
    /// The local history file (`[history]`), if one was given.
    history: Option<History>,
}

/// What to send for one message, in order: the wrapped chains, then the envelope.
#[derive(Debug)]
pub struct Sealed {
    /// `chain` frames for the member devices that lack our chain.
    pub chains: Vec<ClientFrame>,
    /// The envelope bytes, for a `send` frame (binary or JSON, as the connection allows).
    pub envelope: Bytes,
    /// Things the user should know (keys skipped).
    pub events: Vec<Event>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Secure {
    /// State for `me` logged in with `key`; pins are read from and written to `peers`.
    pub fn new(
        me: &str,
        key: DeviceKey,
        peers: Peers,
        max_skew_ms: u64,
        max_text_bytes: usize,
    ) -> Self {
        Secure {
            me: me.to_string(),
            device: key.fingerprint(),
            key,
            peers,
            devices: HashMap::new(),
            rooms: HashMap::new(),
            default_room: String::new(),
            current_room: String::new(),
            asked: rooms::Asked::default(),
            senders: HashMap::new(),
            receivers: HashMap::new(),
            receiver_order: VecDeque::new(),
            pending_own: HashMap::new(),
            pending_order: VecDeque::new(),
            rekeys: rekey::Rekeys::default(),
            max_skew_ms,
            max_text_bytes,
            state: None,
            retired: VecDeque::new(),
            already_shown: 0,
            offline_ttl_ms: crate::conn::DEFAULT_OFFLINE_TTL_SECS.saturating_mul(1000),
            state_warned: false,
            vouches: HashMap::new(),
            warned: HashSet::new(),
            vouch_supported: false,
            pending: held::Pending::default(),
            ignored: crate::ignore::Ignored::default(),
            pings: crate::pinging::Pings::default(),
            history: None,
        }
    }

    /// Keeps the messages shown in `history` from now on; its recent lines are shown first,
    /// at the next [`Secure::on_login`].
    pub fn use_history(&mut self, history: History) {
        self.history = Some(history);
    }

    /// Events on their way to the screen: messages are kept in the history, and one shown
    /// from it already is not shown again.
    pub fn shown(&mut self, events: Vec<Event>) -> Vec<Event> {
        match self.history.as_mut() {
            Some(h) => h.pass(events),
            None => events,
        }
    }

    /// `/history` (`clear`: delete the file).
    pub fn history_command(&mut self, clear: bool) -> Vec<Event> {
        match (self.history.as_mut(), clear) {
            (Some(h), true) => h.clear(),
            (Some(h), false) => h.status(),
            (None, _) => vec![Event::Warning(Warning::HistoryNotCleared {
                error: "no history file for this session".into(),
            })],
        }
    }

    /// Whether the server takes device vouches (`/devices approve` needs it).
    pub fn set_vouch_supported(&mut self, supported: bool) {
        self.vouch_supported = supported;
    }

    /// The logged-in user.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The connection is gone: the next login lists the devices again, and every
    /// conversation gets a fresh chain after it (the members may have changed meanwhile).
    pub fn disconnected(&mut self) {
        self.devices.clear();
        self.senders.clear();
        self.rekeys.retire_all();
        self.pending_own.clear();
        self.pending_order.clear();
        self.pings.clear();
    }

    /// Whether every pinned key of `user` has been verified with `/verify`; None when no key
    /// of theirs is pinned yet.
    pub fn peer_verified(&self, user: &str) -> Option<bool> {
        let keys = self.peers.keys(user);
        if keys.is_empty() {
            return None;
        }
        Some(keys.iter().all(|k| k.status == KeyStatus::Verified))
    }

    /// The fingerprint of this device's key.
    pub fn device(&self) -> Fingerprint {
        self.device
    }

    /// `/fingerprint`.
    pub fn show_fingerprint(&self) -> Vec<Event> {
        vec![Event::Notice(Notice::OwnKey {
            me: self.me.clone(),
            fingerprint: self.device,
            bits: self.key.bits(),
        })]
    }

    /// `/verify USER [FINGERPRINT]`: lists `user`'s pinned keys, or marks one verified.
    pub fn verify(&mut self, user: &str, fingerprint: Option<&str>) -> Vec<Event> {
        let Some(fp) = fingerprint else {
            let keys = self.peers.keys(user);
            if keys.is_empty() {
                return vec![Event::Notice(Notice::NonePinned {
                    user: user.to_string(),
                })];
            }
            let mut out = vec![Event::Notice(Notice::KeysOf {
                user: user.to_string(),
            })];
            for k in keys {
                out.push(Event::Notice(Notice::Key {
                    fingerprint: k.fingerprint,
                    status: k.status,
                    online: self.devices.get(&k.fingerprint).is_some_and(|d| d.online),
                }));
            }
            return out;
        };
        let pinned = self.peers.keys(user).iter().map(|k| k.fingerprint);
        let fp = match prefix::resolve(fp, pinned) {
            Ok(found) => found,
            // A whole fingerprint that is not pinned is the warning that matters most.
            Err(prefix::PrefixError::NoMatch) if fp.parse::<Fingerprint>().is_ok() => {
                let Ok(full) = fp.parse::<Fingerprint>() else {
                    return vec![Event::Warning(Warning::NotAFingerprint)];
                };
                return vec![Event::Warning(Warning::NoSuchKey {
                    user: user.to_string(),
                    fingerprint: full,
                })];
            }
            Err(prefix::PrefixError::NotHex | prefix::PrefixError::TooLong) => {
                return vec![Event::Warning(Warning::NotAFingerprint)];
            }
            Err(why) => {
                return vec![Event::Warning(Warning::BadPrefix {
                    given: fp.to_string(),
                    whose: user.to_string(),
                    why,
                })];
            }
        };
        let was_pending = self.peers.status(user, &fp) == Some(KeyStatus::Pending);
        match self.peers.verify(user, &fp) {
            Ok(true) => {
                let mut out = vec![Event::Notice(Notice::Verified {
                    user: user.to_string(),
                    fingerprint: fp,
                })];
                if was_pending {
                    out.extend(self.release(user, fp));
                    out.extend(self.settle(user));
                }
                out
            }
            Ok(false) => vec![Event::Warning(Warning::NoSuchKey {
                user: user.to_string(),
                fingerprint: fp,
            })],
            Err(e) => vec![Event::Warning(pins_not_saved(&e))],
        }
    }

    /// `/trust USER`: accepts `user`'s pending keys (not our own: those take
    /// `/devices approve`), and shows what they sent while pending.
    pub fn trust(&mut self, user: &str) -> Vec<Event> {
        if user == self.me {
            return vec![Event::Warning(Warning::TrustOwn)];
        }
        match self.peers.trust_pending(user) {
            Ok(keys) if keys.is_empty() => {
                vec![Event::Notice(Notice::NonePending {
                    user: user.to_string(),
                })]
            }
            Ok(keys) => {
                let mut out = Vec::new();
                for fp in keys {
                    out.push(Event::Notice(Notice::Accepted {
                        user: user.to_string(),
                        fingerprint: fp,
                    }));
                    out.extend(self.release(user, fp));
                }
                out.extend(self.settle(user));
                out
            }
            Err(e) => vec![Event::Warning(pins_not_saved(&e))],
        }
    }
}

/// The pin file could not be written: the error and its causes, as `{:#}` shows them.
fn pins_not_saved(e: &anyhow::Error) -> Warning {
    Warning::PinsNotSaved {
        error: format!("{e:#}"),
    }
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;
