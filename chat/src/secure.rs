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
use crate::text::sanitize;

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

/// Something to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message that verified and decrypted (or our own, confirmed by the server's echo).
    Message(ChatMessage),
    /// Information (`-- ...`).
    Notice(String),
    /// Something is wrong or needs the user's attention (`!! ...`).
    Warning(String),
}

/// A verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender.
    pub from: String,
    /// For a whisper, the other member (from the sender's point of view: its peer).
    pub to: Option<String>,
    /// For a room other than the default one, its name (without `#`).
    pub room: Option<String>,
    /// Text.
    pub text: String,
    /// `/me` action.
    pub action: bool,
    /// Server time, ms since the Unix epoch.
    pub ts: u64,
    /// The sender's key was verified with `/verify`.
    pub verified: bool,
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

/// Words for a failed check, for the warning line.
fn why(e: &E2eError, skew_ms: u64) -> String {
    match e {
        E2eError::BadSignature => "its signature does not verify (forged or altered)".into(),
        E2eError::WrongSender => "it is signed by a different device than it claims".into(),
        E2eError::WrongRecipient => "it is addressed to another device".into(),
        E2eError::UnknownChain => "it does not belong to the key it claims".into(),
        E2eError::StaleTimestamp => format!(
            "its timestamp is more than {} s away from this computer's clock",
            skew_ms / 1000
        ),
        E2eError::Replay => "it is a replay of a message already shown".into(),
        E2eError::TooFarAhead { .. } => "it skips too far ahead in its chain".into(),
        E2eError::Decrypt => "it does not decrypt (altered in transit)".into(),
        other => format!("it cannot be read ({other})"),
    }
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
        let user_s = sanitize(user);
        let parsed = BASE64
            .decode(key.trim())
            .ok()
            .and_then(|der| DevicePublicKey::from_spki_der(&der).ok());
        let Some(public) = parsed.filter(|k| k.fingerprint() == fingerprint) else {
            return vec![Event::Warning(format!(
                "the server announced a device key for {user_s} that does not match its fingerprint {fingerprint}; ignored"
            ))];
        };
        let mut events = Vec::new();
        match self.peers.observe(user, fingerprint, key.trim()) {
            Ok(Seen::FirstForUser) => events.push(Event::Notice(format!(
                "pinned {user_s}'s device key {fingerprint} (first seen; compare it with /verify {user_s})"
            ))),
            Ok(Seen::Known(KeyStatus::Pending)) => events.push(Event::Warning(format!(
                "{user_s}'s device key {fingerprint} is still not accepted: nothing is encrypted to it \
                 or shown from it. Compare it with /verify {user_s}, then /trust {user_s}"
            ))),
            Ok(Seen::Known(_)) => {}
            Ok(Seen::NewForKnownUser) => events.push(Event::Warning(format!(
                "{user_s} has a NEW device key {fingerprint}. Nothing is encrypted to it or shown from it \
                 until you accept it: compare it with /verify {user_s}, then /trust {user_s}"
            ))),
            Err(e) => events.push(Event::Warning(format!("cannot save the pinned keys: {e:#}"))),
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
    pub fn seal(&mut self, conversation: &Conversation, body: Body) -> Result<Sealed, String> {
        let plain = serde_json::to_string(&body).map_err(|e| format!("cannot encode: {e}"))?;
        if plain.len() > self.max_text_bytes {
            return Err(format!(
                "message not sent: it is {} bytes encoded, the server accepts at most {}",
                plain.len(),
                self.max_text_bytes
            ));
        }
        let mut events = Vec::new();
        if let Some(room) = conversation.room() {
            if !self.rooms.contains_key(room) {
                return Err(format!("message not sent: you are not in #{room}"));
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
                events.push(Event::Warning(format!(
                    "not encrypted to {}'s unaccepted device key {fp} (/verify {0}, /trust {0})",
                    sanitize(&d.user)
                )));
            }
        }
        if let Some(peer) = conversation.peer_of(&self.me) {
            if peer != self.me && !recipients.iter().any(|(_, d)| d.user == peer) {
                let known = self.devices.values().any(|d| d.user == peer);
                return Err(if known {
                    format!(
                        "message not sent: {} has no accepted device key (/verify {0})",
                        sanitize(peer)
                    )
                } else {
                    format!(
                        "message not sent: {} has no device key (no such user, or never logged in)",
                        sanitize(peer)
                    )
                });
            }
        }
        let name = conversation.name();
        let rotate = self
            .senders
            .get(&name)
            .is_none_or(|o| o.stale || o.chain.index() >= ROTATE_AT_INDEX);
        if rotate {
            let chain = SenderChain::new().map_err(|e| format!("cannot start a chain: {e}"))?;
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
            return Err("internal error: no sending chain".into());
        };
        let mut chains = Vec::new();
        for (fp, d) in recipients {
            if out.given.contains(&fp) {
                continue;
            }
            let wrapped = wrap_chain(&out.chain, &self.key, &self.me, &name, &d.key)
                .and_then(|w| w.to_base64())
                .map_err(|e| format!("cannot wrap a key for {}: {e}", sanitize(&d.user)))?;
            chains.push(ClientFrame::Chain { data: wrapped });
            out.given.insert(fp);
        }
        let envelope = seal(&self.key, &self.me, &name, &mut out.chain, &plain, now_ms())
            .map_err(|e| format!("cannot seal: {e}"))?;
        let id = envelope.header().message_id;
        let envelope = Bytes::from(
            envelope
                .encode()
                .map_err(|e| format!("cannot encode: {e}"))?,
        );
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
        let from_s = sanitize(from);
        let warn = |what: String| {
            vec![Event::Warning(format!(
                "rejected a key from {from_s}: {what}"
            ))]
        };
        let wrapped = match WrappedChain::from_base64(data) {
            Ok(w) => w,
            Err(e) => return warn(format!("it cannot be read ({e})")),
        };
        let h = wrapped.header();
        if h.sender_user != from || h.sender_device != device {
            return warn(format!(
                "it is signed as {} but the server says it is from {from_s}",
                sanitize(&h.sender_user)
            ));
        }
        match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => {}
            _ => {
                return warn(format!(
                    "it is for conversation {:?}, which does not include you",
                    sanitize(&h.conversation)
                ));
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
            Err(e) => warn(why(&e, self.max_skew_ms)),
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

    fn unusable_reason(&self, user: &str, device: &Fingerprint) -> String {
        match self.peers.status(user, device) {
            Some(KeyStatus::Pending) => format!(
                "it comes from the unaccepted device key {device} (/verify {0}, /trust {0})",
                sanitize(user)
            ),
            _ => format!("its device key {device} is not one the server announced for them"),
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
            Err(e) => {
                let from = match &delivered.sent_by {
                    SentBy::Named { user, .. } => format!(" from {}", sanitize(user)),
                    SentBy::Header => String::new(),
                };
                return Event::Warning(format!("dropped a message{from}: it cannot be read ({e})"));
            }
        };
        let h = envelope.header();
        let (from, device) = match &delivered.sent_by {
            SentBy::Named { user, device } => (user.as_str(), *device),
            SentBy::Header => (h.sender_user.as_str(), h.sender_device),
        };
        let ts = delivered.ts;
        let from_s = sanitize(from);
        let warn =
            |what: String| Event::Warning(format!("dropped a message from {from_s}: {what}"));
        // Only a JSON frame can disagree: a binary one's sender is the header's.
        if h.sender_user != from || h.sender_device != device {
            return warn(format!(
                "it is signed as {} but the server says it is from {from_s}",
                sanitize(&h.sender_user)
            ));
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
                None => warn(
                    "it claims to be from this device, which did not send it (a replay?)".into(),
                ),
            };
        }
        let conversation = match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => c,
            _ => {
                return warn(format!(
                    "it was sent to {:?}, which does not include you",
                    sanitize(&h.conversation)
                ));
            }
        };
        let Some(status) = self.usable(from, &device) else {
            return warn(self.unusable_reason(from, &device));
        };
        let Some(sender) = self.sender_key(from, &device).cloned() else {
            return warn(self.unusable_reason(from, &device));
        };
        let Some(chain) = self.receivers.get_mut(&(device, h.chain_id)) else {
            return warn(
                "this device has no key for it (not encrypted to this device, or replayed from an earlier session)"
                    .into(),
            );
        };
        let opened =
            match chatd_proto::e2e::open(&envelope, &sender, chain, now_ms(), self.max_skew_ms) {
                Ok(o) => o,
                Err(e) => return warn(why(&e, self.max_skew_ms)),
            };
        let body: Body = match serde_json::from_str(&opened.text) {
            Ok(b) => b,
            Err(_) => return warn("its content is not a message this client understands".into()),
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
        vec![Event::Notice(format!(
            "your device key: {} (RSA {} bits); read it to your peers so they can /verify {}",
            self.device,
            self.key.bits(),
            sanitize(&self.me)
        ))]
    }

    /// `/verify USER [FINGERPRINT]`: lists `user`'s pinned keys, or marks one verified.
    pub fn verify(&mut self, user: &str, fingerprint: Option<&str>) -> Vec<Event> {
        let user_s = sanitize(user);
        let Some(fp) = fingerprint else {
            let keys = self.peers.keys(user);
            if keys.is_empty() {
                return vec![Event::Notice(format!(
                    "no device key of {user_s} is pinned yet"
                ))];
            }
            let mut out = vec![Event::Notice(format!(
                "device keys of {user_s} (compare with what {user_s}'s /fingerprint shows, then /verify {user_s} FINGERPRINT):"
            ))];
            for k in keys {
                let online = if self.devices.get(&k.fingerprint).is_some_and(|d| d.online) {
                    ", online"
                } else {
                    ""
                };
                let status = match k.status {
                    KeyStatus::Verified => "verified",
                    KeyStatus::Trusted => "trusted on first use, not verified",
                    KeyStatus::Pending => "NOT ACCEPTED",
                };
                out.push(Event::Notice(format!(
                    "  {} ({status}{online})",
                    k.fingerprint
                )));
            }
            return out;
        };
        let Ok(fp) = fp.parse::<Fingerprint>() else {
            return vec![Event::Warning(
                "a fingerprint is written SHA256: followed by 64 hex digits".into(),
            )];
        };
        match self.peers.verify(user, &fp) {
            Ok(true) => vec![Event::Notice(format!(
                "{user_s}'s device key {fp} is now verified"
            ))],
            Ok(false) => vec![Event::Warning(format!(
                "{user_s} has no device key {fp}: it does NOT match any key the server showed for {user_s}"
            ))],
            Err(e) => vec![Event::Warning(format!(
                "cannot save the pinned keys: {e:#}"
            ))],
        }
    }

    /// `/trust USER`: accepts `user`'s pending keys.
    pub fn trust(&mut self, user: &str) -> Vec<Event> {
        let user_s = sanitize(user);
        match self.peers.trust_pending(user) {
            Ok(keys) if keys.is_empty() => {
                vec![Event::Notice(format!(
                    "{user_s} has no device key waiting to be accepted"
                ))]
            }
            Ok(keys) => keys
                .iter()
                .map(|fp| Event::Notice(format!("accepted {user_s}'s device key {fp}")))
                .collect(),
            Err(e) => vec![Event::Warning(format!(
                "cannot save the pinned keys: {e:#}"
            ))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::frame::DeviceInfo;

    const PEMS: [&str; 3] = [
        include_str!("../../proto/src/e2e/testdata/alice.pem"),
        include_str!("../../proto/src/e2e/testdata/bob.pem"),
        include_str!("../../proto/src/e2e/testdata/carol.pem"),
    ];
    const NAMES: [&str; 3] = ["alice", "bob", "carol"];

    fn key(i: usize) -> DeviceKey {
        DeviceKey::from_pkcs8_pem(PEMS[i]).unwrap()
    }

    fn info(i: usize) -> DeviceInfo {
        let k = key(i);
        DeviceInfo {
            user: NAMES[i].into(),
            fingerprint: k.fingerprint(),
            key: BASE64.encode(k.public().to_spki_der()),
            online: true,
        }
    }

    /// The default room with all three in it.
    fn lobby() -> RoomState {
        RoomState {
            name: "lobby".into(),
            topic: String::new(),
            members: NAMES.iter().map(|n| n.to_string()).collect(),
            invite_only: false,
            owner: None,
        }
    }

    /// Three logged-in clients that have seen each other come online.
    fn trio() -> Vec<Secure> {
        let all: Vec<DeviceInfo> = (0..3).map(info).collect();
        (0..3)
            .map(|i| {
                let mut s = Secure::new(NAMES[i], key(i), Peers::in_memory(), 60_000, 4096);
                let events = s.on_login(&all, "lobby", &[lobby()]);
                assert_eq!(events.len(), 2, "two first-seen notices: {events:?}");
                s
            })
            .collect()
    }

    /// Acts as an honest server: chains to the device they name, the envelope to each member.
    fn route(from: usize, sealed: &Sealed, clients: &mut [Secure]) -> Vec<Vec<Event>> {
        let fp = key(from).fingerprint();
        let mut seen = vec![Vec::new(); clients.len()];
        for frame in &sealed.chains {
            match frame {
                ClientFrame::Chain { data } => {
                    let to = WrappedChain::from_base64(data)
                        .unwrap()
                        .header()
                        .recipient_device;
                    let i = (0..3).find(|i| key(*i).fingerprint() == to).unwrap();
                    seen[i].extend(clients[i].on_chain(NAMES[from], fp, data));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let conv = Envelope::decode(&sealed.envelope)
            .unwrap()
            .header()
            .conversation
            .clone();
        let conv = Conversation::parse(&conv).unwrap();
        for (i, c) in clients.iter_mut().enumerate() {
            if conv.includes(NAMES[i], |_| true) {
                seen[i].push(c.on_envelope(&json(NAMES[from], fp, &sealed.envelope)));
            }
        }
        seen
    }

    /// A JSON `envelope` frame naming `from`'s device `device`, as chatd sends it.
    fn json(from: &str, device: Fingerprint, data: &Bytes) -> Delivered {
        Delivered {
            sent_by: SentBy::Named {
                user: from.into(),
                device,
            },
            data: Ok(data.clone()),
            ts: 7,
        }
    }

    fn text_of(e: &Event) -> Option<&str> {
        match e {
            Event::Message(m) => Some(&m.text),
            _ => None,
        }
    }

    fn say(text: &str) -> Body {
        Body {
            text: text.into(),
            action: false,
        }
    }

    fn envelope_of(sealed: &Sealed) -> Bytes {
        sealed.envelope.clone()
    }

    fn assert_warning(e: &Event, needle: &str) {
        match e {
            Event::Warning(w) => assert!(w.contains(needle), "{w:?} lacks {needle:?}"),
            other => panic!("expected a warning about {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn broadcast_reaches_everyone_once_wrapped_then_ratchets() {
        let mut c = trio();
        let sealed = c[0].seal(&Conversation::All, say("hello all")).unwrap();
        assert_eq!(sealed.chains.len(), 2, "one chain each for bob and carol");
        let seen = route(0, &sealed, &mut c);
        for s in &seen {
            assert_eq!(s.len(), 1, "{s:?}");
            assert_eq!(text_of(&s[0]), Some("hello all"));
        }
        // The next message reuses the chain: no RSA work, one frame.
        let sealed = c[0].seal(&Conversation::All, say("again")).unwrap();
        assert!(sealed.chains.is_empty());
        let seen = route(0, &sealed, &mut c);
        assert!(seen.iter().all(|s| text_of(&s[0]) == Some("again")));
    }

    #[test]
    fn whispers_are_for_the_pair_only() {
        let mut c = trio();
        let conv = Conversation::pair("alice", "bob");
        let sealed = c[0].seal(&conv, say("psst")).unwrap();
        assert_eq!(sealed.chains.len(), 1, "only bob's device gets the chain");
        let seen = route(0, &sealed, &mut c);
        assert_eq!(text_of(&seen[1][0]), Some("psst"));
        let Event::Message(m) = &seen[1][0] else {
            panic!()
        };
        assert_eq!((m.from.as_str(), m.to.as_deref()), ("alice", Some("bob")));
        assert!(seen[2].is_empty());
        // A server that also hands the whisper to carol gets a warning there, not text.
        let data = envelope_of(&sealed);
        let e = c[2].on_envelope(&json("alice", key(0).fingerprint(), &data));
        assert_warning(&e, "does not include you");
        // Whispering to someone offline works: the server stores it for bob's device.
        c[0].device_offline(&key(1).fingerprint());
        let sealed = c[0].seal(&conv, say("later")).unwrap();
        assert_eq!(text_of(&route(0, &sealed, &mut c)[1][0]), Some("later"));
        // Once bob's only key is removed there is nobody to encrypt to.
        c[0].device_removed(&key(1).fingerprint());
        let err = c[0].seal(&conv, say("never")).unwrap_err();
        assert!(err.contains("bob has no device key"), "{err}");
    }

    #[test]
    fn forged_altered_replayed_and_misattributed_messages_are_dropped() {
        let mut c = trio();
        let sealed = c[0].seal(&Conversation::All, say("genuine")).unwrap();
        let data = envelope_of(&sealed);
        let genuine = data.clone();
        let seen = route(0, &sealed, &mut c);
        assert_eq!(text_of(&seen[1][0]), Some("genuine"));
        let alice = key(0).fingerprint();
        // Replayed.
        assert_warning(&c[1].on_envelope(&json("alice", alice, &data)), "replay");
        // Altered: flip one bit in the ciphertext of a fresh message.
        let sealed = c[0].seal(&Conversation::All, say("second")).unwrap();
        let mut bytes = envelope_of(&sealed).to_vec();
        let n = bytes.len();
        bytes[n - 260] ^= 1; // in the AEAD tag, just before the 2048-bit signature
        let altered = Bytes::from(bytes);
        assert_warning(
            &c[1].on_envelope(&json("alice", alice, &altered)),
            "signature",
        );
        // The untouched one still opens afterwards: a failed check changes nothing.
        assert_eq!(
            text_of(&c[1].on_envelope(&json("alice", alice, &envelope_of(&sealed)))),
            Some("second")
        );
        // The server names another sender.
        let sealed = c[0].seal(&Conversation::All, say("third")).unwrap();
        let data = envelope_of(&sealed);
        assert_warning(
            &c[1].on_envelope(&json("carol", alice, &data)),
            "signed as alice",
        );
        assert_warning(
            &c[1].on_envelope(&json("carol", key(2).fingerprint(), &data)),
            "signed as alice",
        );
        // Our own device, echoing something we never sent.
        assert_warning(
            &c[0].on_envelope(&json("alice", alice, &genuine)),
            "did not send it",
        );
    }

    #[test]
    fn a_binary_envelope_is_from_the_sender_its_signed_header_names() {
        let mut c = trio();
        route(
            0,
            &c[0].seal(&Conversation::All, say("first")).unwrap(),
            &mut c,
        );
        let sealed = c[0].seal(&Conversation::All, say("second")).unwrap();
        assert!(sealed.chains.is_empty());
        let binary = Delivered::binary(9, sealed.envelope.clone());
        match c[1].on_envelope(&binary) {
            Event::Message(m) => {
                assert_eq!(
                    (m.from.as_str(), m.text.as_str(), m.ts),
                    ("alice", "second", 9)
                );
            }
            other => panic!("{other:?}"),
        }
        // Our own echo as a binary frame is ours; a second copy is a replay.
        assert!(matches!(c[0].on_envelope(&binary), Event::Message(m) if m.text == "second"));
        assert_warning(&c[0].on_envelope(&binary), "did not send it");
        assert_warning(&c[1].on_envelope(&binary), "replay");
        // Unreadable bytes: a warning naming nobody (there is no sender to name), as a JSON
        // frame with bad base64 gets one naming the server's sender.
        let junk = Delivered::binary(9, Bytes::from_static(b"\x01E not an envelope"));
        assert_warning(
            &c[1].on_envelope(&junk),
            "dropped a message: it cannot be read",
        );
        let bad = Delivered::json("alice".into(), key(0).fingerprint(), "no base64!", 9);
        assert_warning(
            &c[1].on_envelope(&bad),
            "dropped a message from alice: it cannot be read (malformed e2e data: base64)",
        );
        // A header cannot borrow a name: carol's device signing as alice is no key of alice's.
        let mut mallory = Secure::new("alice", key(2), Peers::in_memory(), 60_000, 4096);
        mallory.on_login(&[info(1)], "lobby", &[lobby()]);
        let forged = mallory.seal(&Conversation::All, say("it's me")).unwrap();
        let e = c[1].on_envelope(&Delivered::binary(9, forged.envelope));
        assert_warning(&e, "is not one the server announced");
        // None of that disturbed the chain: the next message still opens.
        let sealed = c[0].seal(&Conversation::All, say("third")).unwrap();
        let e = c[1].on_envelope(&Delivered::binary(9, sealed.envelope));
        assert_eq!(text_of(&e), Some("third"));
    }

    #[test]
    fn a_swapped_key_is_announced_and_never_used() {
        let mut c = trio();
        // The server claims bob has a new key (really carol's key).
        let fake = DeviceInfo {
            user: "bob".into(),
            ..info(2)
        };
        let events = c[0].device_online("bob", fake.fingerprint, &fake.key);
        assert_warning(&events[0], "NEW device key");
        // Without bob's real key, alice's whisper has no accepted key to go to.
        c[0].device_removed(&key(1).fingerprint());
        let err = c[0]
            .seal(&Conversation::pair("alice", "bob"), say("x"))
            .unwrap_err();
        assert!(err.contains("no accepted device key"), "{err}");
        // An impostor holding the new key, calling itself bob: its chain and message are
        // both refused, because that key is not accepted.
        let mut impostor = Secure::new("bob", key(2), Peers::in_memory(), 60_000, 4096);
        impostor.on_login(&[info(0)], "lobby", &[lobby()]);
        let sealed = impostor
            .seal(&Conversation::All, say("from the impostor"))
            .unwrap();
        let ClientFrame::Chain { data: chain } = &sealed.chains[0] else {
            panic!()
        };
        assert_warning(
            &c[0].on_chain("bob", fake.fingerprint, chain)[0],
            "unaccepted",
        );
        let e = c[0].on_envelope(&json("bob", fake.fingerprint, &envelope_of(&sealed)));
        assert_warning(&e, "unaccepted");
        // A key that does not hash to the announced fingerprint is ignored outright.
        let events = c[0].device_online("bob", Fingerprint::from_bytes([9; 32]), &info(1).key);
        assert_warning(&events[0], "does not match its fingerprint");
        // Accepting it makes it usable.
        let accepted = c[0].trust("bob");
        assert!(matches!(&accepted[0], Event::Notice(n) if n.contains("accepted")));
        assert!(
            c[0].seal(&Conversation::pair("alice", "bob"), say("x"))
                .is_ok()
        );
    }

    #[test]
    fn a_removed_device_cannot_read_after_rotation() {
        let mut c = trio();
        let sealed = c[0].seal(&Conversation::All, say("before")).unwrap();
        route(0, &sealed, &mut c);
        // Carol going offline changes nothing: the server stores for her.
        c[0].device_offline(&key(2).fingerprint());
        let sealed = c[0].seal(&Conversation::All, say("while away")).unwrap();
        assert!(sealed.chains.is_empty(), "same chain, just the envelope");
        let seen = route(0, &sealed, &mut c);
        assert_eq!(text_of(&seen[2][0]), Some("while away"));
        // Carol's key is revoked; alice's next broadcast starts a new chain for bob only.
        c[0].device_removed(&key(2).fingerprint());
        let sealed = c[0].seal(&Conversation::All, say("after")).unwrap();
        assert_eq!(sealed.chains.len(), 1, "a new chain, for bob only");
        let data = envelope_of(&sealed);
        let seen = route(0, &sealed, &mut c);
        assert_eq!(text_of(&seen[1][0]), Some("after"));
        // Carol still holds the old chain, but a copy of the new message does not open.
        let e = c[2].on_envelope(&json("alice", key(0).fingerprint(), &data));
        assert_warning(&e, "no key for it");
    }

    #[test]
    fn verify_and_limits() {
        let mut c = trio();
        let listed = c[0].verify("bob", None);
        assert!(matches!(&listed[1], Event::Notice(n) if n.contains("not verified")));
        let fp = key(1).fingerprint().to_string();
        assert!(
            matches!(&c[0].verify("bob", Some(&fp))[0], Event::Notice(n) if n.contains("verified"))
        );
        let wrong = key(2).fingerprint().to_string();
        assert_warning(&c[0].verify("bob", Some(&wrong))[0], "does NOT match");
        assert_warning(&c[0].verify("bob", Some("nope"))[0], "SHA256:");
        // Messages from a verified key say so.
        let sealed = c[1].seal(&Conversation::All, say("hi")).unwrap();
        let seen = route(1, &sealed, &mut c);
        assert!(matches!(&seen[0][0], Event::Message(m) if m.verified));
        assert!(matches!(&seen[2][0], Event::Message(m) if !m.verified));
        // Encoded body over the server's limit: refused locally.
        let err = c[0]
            .seal(&Conversation::All, say(&"x".repeat(4096)))
            .unwrap_err();
        assert!(err.contains("at most 4096"), "{err}");
        assert!(
            c[0].seal(&Conversation::All, say(&"x".repeat(4096 - 11)))
                .is_ok()
        );
    }
}
