//! Asking for a chain again, and answering such a request, so an honest device that could
//! not open a message (its chain never came, or our key for it was pending) gets it later
//! without the sender reconnecting.
//!
//! Sender side: each sending chain's first state is kept while the chain is in use, and for
//! [`RETIRED`] chains after it is replaced, so a `rekey` can be answered by wrapping the chain
//! again from the index asked for, for a device we trust that is in the conversation. A request
//! from a device we do not trust yet is held until we do (or dropped if we never do). That
//! costs some forward secrecy within a chain: a theft of this client's memory reveals the
//! kept chains from their start, not only from their current index (docs/SECURITY.md).
//!
//! Receiver side: an envelope whose chain we lack is held (sealed, bounded) and the sending
//! device is asked once per chain; when the chain arrives the held envelopes are opened.

use std::collections::{HashMap, HashSet, VecDeque};

use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{ChainSnapshot, SenderChain, wrap_chain};
use chatd_proto::{ClientFrame, Fingerprint};

use super::{Delivered, Event, Notice, Secure};

/// Replaced sending chains kept to answer requests for them.
const RETIRED: usize = 32;
/// Requests from devices not trusted yet, kept until they are.
const MAX_HELD_REQUESTS: usize = 256;
/// Envelopes held while their chain is asked for, in all.
const MAX_WAITING: usize = 1024;
/// Requests answered or chains asked for, remembered so each is done once.
const MAX_DONE: usize = 4096;

/// (sending device, chain id): one chain.
type Slot = (Fingerprint, [u8; 16]);

/// A `rekey` as it came from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The asking user.
    pub from: String,
    /// The asking device.
    pub device: Fingerprint,
    /// The conversation of the message it could not open.
    pub conversation: String,
    /// The chain id, as hex from the wire.
    pub chain: String,
    /// The first index it could not open.
    pub index: u32,
}

/// A sending chain's first state, for one conversation.
struct Start {
    conversation: String,
    snapshot: ChainSnapshot,
}

/// Everything about asking for and giving chains again.
#[derive(Default)]
pub(super) struct Rekeys {
    /// The server routes `rekey` (its hello said so).
    pub(super) enabled: bool,
    /// First states of the chains in use, by conversation name.
    current: HashMap<String, ChainSnapshot>,
    /// First states of replaced chains, newest last.
    retired: VecDeque<Start>,
    /// Requests from devices not usable yet.
    held: Vec<Request>,
    /// Frames owed to the server.
    outbox: Vec<ClientFrame>,
    /// (asking device, chain, index) answered, and chains told about: said once each.
    answered: Bounded<(Fingerprint, [u8; 16], u32)>,
    told: Bounded<Slot>,
    /// Chains we asked for, and the envelopes waiting for them.
    asked: Bounded<Slot>,
    waiting: HashMap<Slot, Vec<Delivered>>,
    waiting_count: usize,
}

/// A set that forgets its oldest entries past [`MAX_DONE`].
struct Bounded<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Bounded<T> {
    /// Adds `item`; false if it was there already.
    fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item.clone()) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > MAX_DONE {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl Rekeys {
    /// A new sending chain for `conversation`; the one it replaces (if any) is retired.
    pub(super) fn started(&mut self, conversation: &str, chain: &SenderChain) {
        if let Some(old) = self
            .current
            .insert(conversation.to_string(), chain.snapshot())
        {
            self.retire(conversation.to_string(), old);
        }
    }

    /// Every sending chain is dropped (the connection is gone); they can still be asked for.
    pub(super) fn retire_all(&mut self) {
        let current = std::mem::take(&mut self.current);
        for (conversation, snapshot) in current {
            self.retire(conversation, snapshot);
        }
    }

    fn retire(&mut self, conversation: String, snapshot: ChainSnapshot) {
        self.retired.push_back(Start {
            conversation,
            snapshot,
        });
        if self.retired.len() > RETIRED {
            self.retired.pop_front();
        }
    }

    /// The first state of our chain `id` in `conversation`, if kept.
    fn start_of(&self, conversation: &str, id: &[u8; 16]) -> Option<&ChainSnapshot> {
        self.current
            .get(conversation)
            .filter(|s| &s.chain_id == id)
            .or_else(|| {
                self.retired
                    .iter()
                    .rev()
                    .find(|s| s.conversation == conversation && &s.snapshot.chain_id == id)
                    .map(|s| &s.snapshot)
            })
    }

    /// Frames owed to the server, in order.
    pub(super) fn take_frames(&mut self) -> Vec<ClientFrame> {
        std::mem::take(&mut self.outbox)
    }

    /// Holds `delivered` until chain `slot` arrives; true the first time that chain is
    /// missed (ask for it then). Past the bound it is not held.
    pub(super) fn wait_for(&mut self, slot: Slot, delivered: &Delivered) -> bool {
        if self.waiting_count < MAX_WAITING {
            self.waiting
                .entry(slot)
                .or_default()
                .push(delivered.clone());
            self.waiting_count += 1;
        }
        self.asked.insert(slot)
    }

    /// The envelopes that waited for chain `slot`, in arrival order.
    pub(super) fn arrived(&mut self, slot: &Slot) -> Vec<Delivered> {
        let got = self.waiting.remove(slot).unwrap_or_default();
        self.waiting_count = self.waiting_count.saturating_sub(got.len());
        got
    }
}

/// `hex` as a 16-byte chain id.
fn chain_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// `id` as the wire's 32 lowercase hex digits.
pub(super) fn chain_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Secure {
    /// The server routes `rekey` (from its `hello`).
    pub fn enable_rekey(&mut self, enabled: bool) {
        self.rekeys.enabled = enabled;
    }

    /// Frames the end-to-end layer owes the server (chains given again, chains asked for);
    /// the caller sends them after handling the frame that caused them.
    pub fn take_frames(&mut self) -> Vec<ClientFrame> {
        self.rekeys.take_frames()
    }

    /// Asks `device` once for chain `slot` of `conversation` from `index` on.
    pub(super) fn ask_for_chain(
        &mut self,
        slot: (Fingerprint, [u8; 16]),
        conversation: &str,
        index: u32,
    ) {
        if self.rekeys.enabled {
            self.rekeys.outbox.push(ClientFrame::Rekey {
                device: slot.0,
                conversation: conversation.to_string(),
                chain: chain_hex(&slot.1),
                index,
            });
        }
    }

    /// Someone's device could not open a message of ours and asks for the chain again.
    pub fn on_rekey(&mut self, request: Request) -> Vec<Event> {
        let Some(id) = chain_id(&request.chain) else {
            return Vec::new();
        };
        if request.device == self.device {
            return Vec::new();
        }
        let known = self
            .devices
            .get(&request.device)
            .is_some_and(|d| d.user == request.from);
        if !known || self.usable(&request.from, &request.device).is_none() {
            // Answered if and when we trust that device; never before.
            if known && self.held_rekeys_room() {
                self.rekeys.held.push(request);
            }
            return Vec::new();
        }
        let member = Conversation::parse(&request.conversation)
            .is_ok_and(|c| c.includes(&request.from, |r| self.member(r, &request.from)));
        if !member {
            return Vec::new();
        }
        let slot = (request.device, id);
        let Some(start) = self.rekeys.start_of(&request.conversation, &id).cloned() else {
            if self.rekeys.told.insert(slot) {
                return vec![Event::Notice(Notice::KeyGone {
                    user: request.from,
                    fingerprint: request.device,
                    conversation: request.conversation,
                })];
            }
            return Vec::new();
        };
        if !self
            .rekeys
            .answered
            .insert((request.device, id, request.index))
        {
            return Vec::new();
        }
        // From the index asked for, but never before the chain's start nor past what we sent.
        let sent_up_to = self
            .senders
            .get(&request.conversation)
            .filter(|o| o.chain.chain_id() == id)
            .map(|o| o.chain.index());
        let mut chain = SenderChain::from_snapshot(&start);
        let target = request.index.max(start.index);
        let target = sent_up_to.map_or(target, |n| target.min(n));
        while chain.index() < target {
            if chain.next_message_key().is_err() {
                return Vec::new();
            }
        }
        let Some(recipient) = self.devices.get(&request.device).map(|d| d.key.clone()) else {
            return Vec::new();
        };
        let wrapped = wrap_chain(
            &chain,
            &self.key,
            &self.me,
            &request.conversation,
            &recipient,
        )
        .and_then(|w| w.to_base64());
        let Ok(data) = wrapped else {
            return Vec::new();
        };
        self.rekeys.outbox.push(ClientFrame::Chain { data });
        if let Some(out) = self.senders.get_mut(&request.conversation) {
            if out.chain.chain_id() == id {
                out.given.insert(request.device);
            }
        }
        if self.rekeys.told.insert(slot) {
            return vec![Event::Notice(Notice::KeyGivenAgain {
                user: request.from,
                fingerprint: request.device,
                conversation: request.conversation,
            })];
        }
        Vec::new()
    }

    fn held_rekeys_room(&self) -> bool {
        self.rekeys.held.len() < MAX_HELD_REQUESTS
    }

    /// Requests held from devices that are usable now are answered.
    pub(super) fn answer_held_rekeys(&mut self) -> Vec<Event> {
        let held = std::mem::take(&mut self.rekeys.held);
        let mut events = Vec::new();
        for request in held {
            if self.usable(&request.from, &request.device).is_some() {
                events.extend(self.on_rekey(request));
            } else {
                self.rekeys.held.push(request);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_round_trip_and_bad_hex_is_refused() {
        let id = [0xab; 16];
        assert_eq!(chain_id(&chain_hex(&id)), Some(id));
        assert_eq!(chain_id("ab"), None);
        assert_eq!(chain_id(&"zz".repeat(16)), None);
        assert_eq!(chain_id(&"é".repeat(16)), None);
    }

    #[test]
    fn bounded_sets_say_once_and_forget_the_oldest() {
        let mut b = Bounded::default();
        assert!(b.insert(1u32));
        assert!(!b.insert(1));
        for i in 2..=(MAX_DONE as u32 + 1) {
            assert!(b.insert(i));
        }
        assert!(b.insert(1), "the oldest is forgotten past the bound");
    }
}
