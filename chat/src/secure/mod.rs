//! The end-to-end layer of one session: pins keys, seals what we send, opens what we get.
//!
//! Pure state over frames (no I/O besides the pin file), so every rule is unit-tested:
//!
//! - Every device key the server announces is checked against its fingerprint and pinned
//!   ([`crate::peers`]); a new key for a known user stays *pending* (not used) until accepted.
//! - We keep one [`SenderChain`] per conversation, wrap it once for each trusted member
//!   device that does not have it yet, and start a new chain when a device that had it goes
//!   offline, so a departed device cannot read what follows.
//! - A received envelope is shown only if the server-named sender matches the signed header,
//!   the signature verifies under that sender's pinned (usable) key, the conversation includes
//!   us, and it is neither a replay nor outside the clock-skew window. Anything else becomes
//!   a warning, never a message.
//!
//! What it has to tell the user comes back as typed values (`event.rs`: [`Notice`],
//! [`Warning`], [`NotSent`]) carrying the names and keys involved as they came; the renderer
//! words and sanitizes them, so this state builds no text for the screen.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{
    DeviceKey, DevicePublicKey, E2eError, Envelope, ReceiverChain, SenderChain, WrappedChain, seal,
    unwrap_chain, wrap_chain,
};
use chatd_proto::frame::{DeviceInfo, RoomState};
use chatd_proto::{ClientFrame, Fingerprint};
use serde::{Deserialize, Serialize};

use crate::peers::{KeyStatus, Peers, Seen};

mod event;

pub use event::{ChatMessage, Event, NotSent, Notice, Refusal, Warning};

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
        }
    }

    /// A binary `envelope` frame: the bytes as they came off the wire.
    pub fn binary(ts: u64, data: Bytes) -> Self {
        Delivered {
            sent_by: SentBy::Header,
            data: Ok(data),
            ts,
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
    senders: HashMap<String, Outgoing>,
    receivers: HashMap<(Fingerprint, [u8; 16]), ReceiverChain>,
    receiver_order: VecDeque<(Fingerprint, [u8; 16])>,
    pending_own: HashMap<[u8; 16], PendingOwn>,
    pending_order: VecDeque<[u8; 16]>,
    max_skew_ms: u64,
    max_text_bytes: usize,
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
            senders: HashMap::new(),
            receivers: HashMap::new(),
            receiver_order: VecDeque::new(),
            pending_own: HashMap::new(),
            pending_order: VecDeque::new(),
            max_skew_ms,
            max_text_bytes,
        }
    }

    /// The logged-in user.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The devices registered at login, online or not: messages are encrypted to all of
    /// them (the server stores them for the offline ones); the rooms this user is in.
    pub fn on_login(
        &mut self,
        devices: &[DeviceInfo],
        default_room: &str,
        rooms: &[RoomState],
    ) -> Vec<Event> {
        self.default_room = default_room.to_string();
        self.rooms = rooms
            .iter()
            .map(|r| (r.name.clone(), r.members.iter().cloned().collect()))
            .collect();
        // Back in the room we were talking in, if we are still in it.
        if !self.rooms.contains_key(&self.current_room) {
            self.current_room = default_room.to_string();
        }
        devices
            .iter()
            .flat_map(|d| self.device_known(&d.user, d.fingerprint, &d.key, d.online))
            .collect()
    }

    /// The room every user is in.
    pub fn default_room(&self) -> &str {
        &self.default_room
    }

    /// Where plain text goes now (a room name without `#`).
    pub fn current_room(&self) -> &str {
        &self.current_room
    }

    /// Makes `room` (one this user is in) the current room; false if not in it.
    pub fn switch_room(&mut self, room: &str) -> bool {
        if self.rooms.contains_key(room) {
            self.current_room = room.to_string();
            true
        } else {
            false
        }
    }

    /// A room's full state (after joining it, or `/members`): its members from now on.
    /// Returns true when this user just joined it (it becomes the current room).
    pub fn room_state(&mut self, room: &RoomState) -> bool {
        if !room.members.contains(&self.me) {
            return false;
        }
        let members: BTreeSet<String> = room.members.iter().cloned().collect();
        let joined = self.rooms.insert(room.name.clone(), members).is_none();
        if joined {
            self.current_room = room.name.clone();
        }
        joined
    }

    /// Someone joined or left a room this user is in. A member who leaves makes our chain
    /// for the room stale, so the next message goes out under a new one they never get.
    pub fn room_event(&mut self, room: &str, user: &str, joined: bool) {
        if user == self.me && !joined {
            self.rooms.remove(room);
            self.senders.remove(&format!("#{room}"));
            if self.current_room == room {
                self.current_room = self.default_room.clone();
            }
            return;
        }
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if joined {
            members.insert(user.to_string());
        } else if members.remove(user) {
            if let Some(out) = self.senders.get_mut(&format!("#{room}")) {
                out.stale = true;
            }
        }
    }

    /// Everyone is in the default room (the server joins each user at login), so its
    /// members are all users with a device key; other rooms have the members announced.
    fn member(&self, room: &str, user: &str) -> bool {
        room == self.default_room || self.rooms.get(room).is_some_and(|m| m.contains(user))
    }

    /// A device came online (or was registered): check its key against its fingerprint and
    /// pin it.
    pub fn device_online(&mut self, user: &str, fingerprint: Fingerprint, key: &str) -> Vec<Event> {
        self.device_known(user, fingerprint, key, true)
    }

    fn device_known(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
        online: bool,
    ) -> Vec<Event> {
        if fingerprint == self.device {
            return Vec::new();
        }
        let parsed = BASE64
            .decode(key.trim())
            .ok()
            .and_then(|der| DevicePublicKey::from_spki_der(&der).ok());
        let Some(public) = parsed.filter(|k| k.fingerprint() == fingerprint) else {
            return vec![Event::Warning(Warning::KeyMismatch {
                user: user.to_string(),
                fingerprint,
            })];
        };
        let mut events = Vec::new();
        match self.peers.observe(user, fingerprint, key.trim()) {
            Ok(Seen::FirstForUser) => events.push(Event::Notice(Notice::Pinned {
                user: user.to_string(),
                fingerprint,
            })),
            Ok(Seen::Known(KeyStatus::Pending)) => {
                events.push(Event::Warning(Warning::StillPending {
                    user: user.to_string(),
                    fingerprint,
                }));
            }
            Ok(Seen::Known(_)) => {}
            Ok(Seen::NewForKnownUser) => events.push(Event::Warning(Warning::NewKey {
                user: user.to_string(),
                fingerprint,
            })),
            Err(e) => events.push(Event::Warning(pins_not_saved(&e))),
        }
        self.devices.insert(
            fingerprint,
            KnownDevice {
                user: user.to_string(),
                key: public,
                online,
            },
        );
        events
    }

    /// The connection is gone: the next login lists the devices again, and every
    /// conversation gets a fresh chain after it (the members may have changed meanwhile).
    pub fn disconnected(&mut self) {
        self.devices.clear();
        self.senders.clear();
        self.pending_own.clear();
        self.pending_order.clear();
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

    /// A device went offline: it still gets every message, stored by the server.
    pub fn device_offline(&mut self, fingerprint: &Fingerprint) {
        if let Some(d) = self.devices.get_mut(fingerprint) {
            d.online = false;
        }
    }

    /// A device was revoked (or its account deleted): nothing more is encrypted to it, and
    /// chains it held are replaced before the next message.
    pub fn device_removed(&mut self, fingerprint: &Fingerprint) {
        self.devices.remove(fingerprint);
        for out in self.senders.values_mut() {
            if out.given.contains(fingerprint) {
                out.stale = true;
            }
        }
    }

    fn usable(&self, user: &str, fingerprint: &Fingerprint) -> Option<KeyStatus> {
        self.peers.status(user, fingerprint).filter(|s| s.usable())
    }

    /// Seals `body` for `conversation`: wrapped chains for members that lack ours, then the
    /// envelope. Err is a reason for the user; nothing was sent.
    pub fn seal(&mut self, conversation: &Conversation, body: Body) -> Result<Sealed, NotSent> {
        let plain = serde_json::to_string(&body).map_err(|e| NotSent::Body(e.to_string()))?;
        if plain.len() > self.max_text_bytes {
            return Err(NotSent::TooLong {
                bytes: plain.len(),
                max: self.max_text_bytes,
            });
        }
        let mut events = Vec::new();
        if let Some(room) = conversation.room() {
            if !self.rooms.contains_key(room) {
                return Err(NotSent::NotInRoom {
                    room: room.to_string(),
                });
            }
        }
        let mut recipients: Vec<(Fingerprint, &KnownDevice)> = Vec::new();
        for (fp, d) in &self.devices {
            if !conversation.includes(&d.user, |r| self.member(r, &d.user)) {
                continue;
            }
            if self.usable(&d.user, fp).is_some() {
                recipients.push((*fp, d));
            } else {
                events.push(Event::Warning(Warning::NotEncryptedTo {
                    user: d.user.clone(),
                    fingerprint: *fp,
                }));
            }
        }
        if let Some(peer) = conversation.peer_of(&self.me) {
            if peer != self.me && !recipients.iter().any(|(_, d)| d.user == peer) {
                let known = self.devices.values().any(|d| d.user == peer);
                let user = peer.to_string();
                return Err(if known {
                    NotSent::NoAcceptedKey { user }
                } else {
                    NotSent::NoKey { user }
                });
            }
        }
        let name = conversation.name();
        let rotate = self
            .senders
            .get(&name)
            .is_none_or(|o| o.stale || o.chain.index() >= ROTATE_AT_INDEX);
        if rotate {
            let chain = SenderChain::new().map_err(NotSent::Chain)?;
            self.senders.insert(
                name.clone(),
                Outgoing {
                    chain,
                    given: HashSet::new(),
                    stale: false,
                },
            );
        }
        let Some(out) = self.senders.get_mut(&name) else {
            return Err(NotSent::NoChain);
        };
        let mut chains = Vec::new();
        for (fp, d) in recipients {
            if out.given.contains(&fp) {
                continue;
            }
            let wrapped = wrap_chain(&out.chain, &self.key, &self.me, &name, &d.key)
                .and_then(|w| w.to_base64())
                .map_err(|error| NotSent::Wrap {
                    user: d.user.clone(),
                    error,
                })?;
            chains.push(ClientFrame::Chain { data: wrapped });
            out.given.insert(fp);
        }
        let envelope = seal(&self.key, &self.me, &name, &mut out.chain, &plain, now_ms())
            .map_err(NotSent::Seal)?;
        let id = envelope.header().message_id;
        let envelope = Bytes::from(envelope.encode().map_err(NotSent::Encode)?);
        if self.pending_order.len() >= MAX_PENDING_OWN {
            if let Some(old) = self.pending_order.pop_front() {
                self.pending_own.remove(&old);
            }
        }
        self.pending_order.push_back(id);
        self.pending_own.insert(
            id,
            PendingOwn {
                conversation: conversation.clone(),
                body,
            },
        );
        Ok(Sealed {
            chains,
            envelope,
            events,
        })
    }

    /// A wrapped chain from `from`'s device `device`; quiet on success.
    pub fn on_chain(&mut self, from: &str, device: Fingerprint, data: &str) -> Vec<Event> {
        let warn = |why: Refusal| {
            vec![Event::Warning(Warning::KeyRejected {
                from: from.to_string(),
                why,
            })]
        };
        let wrapped = match WrappedChain::from_base64(data) {
            Ok(w) => w,
            Err(e) => return warn(Refusal::Unreadable(e)),
        };
        let h = wrapped.header();
        if h.sender_user != from || h.sender_device != device {
            return warn(Refusal::SignedAs {
                signer: h.sender_user.clone(),
            });
        }
        match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => {}
            _ => {
                return warn(Refusal::ChainNotForUs {
                    conversation: h.conversation.clone(),
                });
            }
        }
        let Some(sender) = self.sender_key(from, &device) else {
            return warn(self.unusable_reason(from, &device));
        };
        match unwrap_chain(&wrapped, sender, &self.key) {
            Ok(chain) => {
                let slot = (device, chain.chain_id());
                if self.receivers.insert(slot, chain).is_none() {
                    self.receiver_order.push_back(slot);
                    self.trim_receivers(device);
                }
                Vec::new()
            }
            Err(error) => warn(Refusal::Check {
                error,
                max_skew_ms: self.max_skew_ms,
            }),
        }
    }

    fn trim_receivers(&mut self, device: Fingerprint) {
        let of_device = self
            .receiver_order
            .iter()
            .filter(|(d, _)| *d == device)
            .count();
        if of_device > CHAINS_PER_DEVICE {
            if let Some(pos) = self.receiver_order.iter().position(|(d, _)| *d == device) {
                if let Some(old) = self.receiver_order.remove(pos) {
                    self.receivers.remove(&old);
                }
            }
        }
    }

    /// The pinned, accepted key of `user`'s device `device`.
    fn sender_key(&self, user: &str, device: &Fingerprint) -> Option<&DevicePublicKey> {
        self.usable(user, device)?;
        self.devices
            .get(device)
            .filter(|d| d.user == user)
            .map(|d| &d.key)
    }

    fn unusable_reason(&self, user: &str, device: &Fingerprint) -> Refusal {
        match self.peers.status(user, device) {
            Some(KeyStatus::Pending) => Refusal::Unaccepted {
                user: user.to_string(),
                device: *device,
            },
            _ => Refusal::Unannounced { device: *device },
        }
    }

    /// An envelope, from the sender the server names (JSON) or the header's (binary).
    pub fn on_envelope(&mut self, delivered: &Delivered) -> Event {
        let envelope = match &delivered.data {
            Ok(bytes) => Envelope::decode(bytes),
            Err(e) => Err(e.clone()),
        };
        let envelope = match envelope {
            Ok(e) => e,
            Err(error) => {
                let from = match &delivered.sent_by {
                    SentBy::Named { user, .. } => Some(user.clone()),
                    SentBy::Header => None,
                };
                return Event::Warning(Warning::Unreadable { from, error });
            }
        };
        let h = envelope.header();
        let (from, device) = match &delivered.sent_by {
            SentBy::Named { user, device } => (user.as_str(), *device),
            SentBy::Header => (h.sender_user.as_str(), h.sender_device),
        };
        let ts = delivered.ts;
        let warn = |why: Refusal| {
            Event::Warning(Warning::Dropped {
                from: from.to_string(),
                why,
            })
        };
        // Only a JSON frame can disagree: a binary one's sender is the header's.
        if h.sender_user != from || h.sender_device != device {
            return warn(Refusal::SignedAs {
                signer: h.sender_user.clone(),
            });
        }
        if device == self.device {
            // Our own message, echoed: show it only if this client sealed it just now.
            return match self.pending_own.remove(&h.message_id) {
                Some(p) => Event::Message(ChatMessage {
                    from: self.me.clone(),
                    to: p.conversation.peer_of(&self.me).map(str::to_string),
                    room: self.shown_room(&p.conversation),
                    text: p.body.text,
                    action: p.body.action,
                    ts,
                    verified: true,
                }),
                None => warn(Refusal::NotSentHere),
            };
        }
        let conversation = match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => c,
            _ => {
                return warn(Refusal::NotForUs {
                    conversation: h.conversation.clone(),
                });
            }
        };
        let Some(status) = self.usable(from, &device) else {
            return warn(self.unusable_reason(from, &device));
        };
        let Some(sender) = self.sender_key(from, &device).cloned() else {
            return warn(self.unusable_reason(from, &device));
        };
        let Some(chain) = self.receivers.get_mut(&(device, h.chain_id)) else {
            return warn(Refusal::NoChain);
        };
        let opened =
            match chatd_proto::e2e::open(&envelope, &sender, chain, now_ms(), self.max_skew_ms) {
                Ok(o) => o,
                Err(error) => {
                    return warn(Refusal::Check {
                        error,
                        max_skew_ms: self.max_skew_ms,
                    });
                }
            };
        let body: Body = match serde_json::from_str(&opened.text) {
            Ok(b) => b,
            Err(_) => return warn(Refusal::NotAMessage),
        };
        Event::Message(ChatMessage {
            from: from.to_string(),
            to: conversation.peer_of(from).map(str::to_string),
            room: self.shown_room(&conversation),
            text: body.text,
            action: body.action,
            ts,
            verified: status == KeyStatus::Verified,
        })
    }

    /// The room name to show with a message: None for the default room and non-rooms.
    fn shown_room(&self, conversation: &Conversation) -> Option<String> {
        conversation
            .room()
            .filter(|r| *r != self.default_room)
            .map(str::to_string)
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
        let Ok(fp) = fp.parse::<Fingerprint>() else {
            return vec![Event::Warning(Warning::NotAFingerprint)];
        };
        match self.peers.verify(user, &fp) {
            Ok(true) => vec![Event::Notice(Notice::Verified {
                user: user.to_string(),
                fingerprint: fp,
            })],
            Ok(false) => vec![Event::Warning(Warning::NoSuchKey {
                user: user.to_string(),
                fingerprint: fp,
            })],
            Err(e) => vec![Event::Warning(pins_not_saved(&e))],
        }
    }

    /// `/trust USER`: accepts `user`'s pending keys.
    pub fn trust(&mut self, user: &str) -> Vec<Event> {
        match self.peers.trust_pending(user) {
            Ok(keys) if keys.is_empty() => {
                vec![Event::Notice(Notice::NonePending {
                    user: user.to_string(),
                })]
            }
            Ok(keys) => keys
                .iter()
                .map(|fp| {
                    Event::Notice(Notice::Accepted {
                        user: user.to_string(),
                        fingerprint: *fp,
                    })
                })
                .collect(),
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
mod tests;
