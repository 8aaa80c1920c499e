//! Sender chains: an HKDF-SHA256 hash ratchet giving one message key per index.
//!
//! ```text
//! msg_key[i]     = HKDF-SHA256(salt = none, ikm = chain_key[i], info = "chatd e2e v1 message key", L = 32)
//! chain_key[i+1] = HKDF-SHA256(salt = none, ikm = chain_key[i], info = "chatd e2e v1 chain key",   L = 32)
//! ```
//!
//! The old chain key is overwritten as the chain advances, so a stolen chain state at index n
//! yields the keys for n, n+1, ... but none before n.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use hkdf::Hkdf;
use rsa::sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::wire::{Reader, Writer};
use super::{E2eError, random_bytes};
use crate::Fingerprint;

/// HKDF info for a message key.
pub(crate) const INFO_MESSAGE_KEY: &[u8] = b"chatd e2e v1 message key";
/// HKDF info for the next chain key.
pub(crate) const INFO_CHAIN_KEY: &[u8] = b"chatd e2e v1 chain key";

/// How far ahead of the next expected index a receiver ratchets by default.
pub const DEFAULT_MAX_SKIP: u32 = 1000;
/// How many skipped message keys a receiver keeps by default (oldest dropped first).
pub const DEFAULT_MAX_STORED_SKIPPED: usize = 1000;
/// How many message ids a receiver chain remembers for replay detection.
const SEEN_IDS: usize = 4096;
/// Version byte of an exported receiver chain ([`ReceiverChain::export`]).
const EXPORT_VERSION: u8 = 1;
/// Domain separation for a chain's origin digest.
const ORIGIN_INFO: &[u8] = b"chatd e2e v1 chain origin";

/// SHA-256 over the state a chain was received with: tells a re-sent copy of the same chain
/// from a different one without keeping the old chain key.
fn origin_digest(snapshot: &ChainSnapshot) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ORIGIN_INFO);
    h.update(snapshot.chain_id);
    h.update(snapshot.index.to_be_bytes());
    h.update(snapshot.chain_key);
    h.finalize().into()
}

fn hkdf32(ikm: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 * 32 limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, ikm).expand(info, &mut out);
    out
}

/// Advances `chain_key` in place and returns the message key for the index it held.
fn ratchet(chain_key: &mut [u8; 32]) -> MessageKey {
    let msg = MessageKey(hkdf32(chain_key, INFO_MESSAGE_KEY));
    let mut next = hkdf32(chain_key, INFO_CHAIN_KEY);
    chain_key.copy_from_slice(&next);
    next.zeroize();
    msg
}

/// A 32-byte ChaCha20-Poly1305 key for one message; zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct MessageKey(pub(crate) [u8; 32]);

impl MessageKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey(..)")
    }
}

/// A chain's state at one index: what gets wrapped to recipients. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ChainSnapshot {
    /// Random chain id.
    pub chain_id: [u8; 16],
    /// Index whose message key `chain_key` yields next.
    pub index: u32,
    /// Current chain key.
    pub chain_key: [u8; 32],
}

impl fmt::Debug for ChainSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainSnapshot")
            .field("chain_id", &hex(&self.chain_id))
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sending side of a chain: one per (device, conversation), rotated on membership change.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SenderChain {
    chain_id: [u8; 16],
    index: u32,
    chain_key: [u8; 32],
}

impl SenderChain {
    /// A fresh chain: random id, random key, index 0.
    pub fn new() -> Result<Self, E2eError> {
        Ok(SenderChain {
            chain_id: random_bytes()?,
            index: 0,
            chain_key: random_bytes()?,
        })
    }

    /// Resumes a chain from a stored snapshot.
    pub fn from_snapshot(snapshot: &ChainSnapshot) -> Self {
        SenderChain {
            chain_id: snapshot.chain_id,
            index: snapshot.index,
            chain_key: snapshot.chain_key,
        }
    }

    /// The current state (for wrapping to recipients or persisting).
    pub fn snapshot(&self) -> ChainSnapshot {
        ChainSnapshot {
            chain_id: self.chain_id,
            index: self.index,
            chain_key: self.chain_key,
        }
    }

    /// The chain id.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// The index the next message will use.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Returns (index, key) for the next message and ratchets forward, overwriting the old
    /// chain key.
    pub fn next_message_key(&mut self) -> Result<(u32, MessageKey), E2eError> {
        let index = self.index;
        let next = index.checked_add(1).ok_or(E2eError::ChainExhausted)?;
        let key = ratchet(&mut self.chain_key);
        self.index = next;
        Ok((index, key))
    }
}

impl fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderChain")
            .field("chain_id", &hex(&self.chain_id))
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A receiver's copy of someone's sender chain, bound to who sends on it and where.
///
/// Keys for indexes skipped over (out-of-order delivery) are kept in a bounded map; an index
/// that was used, or whose key was dropped, is refused as a replay.
pub struct ReceiverChain {
    sender_user: String,
    sender_device: Fingerprint,
    conversation: String,
    chain_id: [u8; 16],
    /// Digest of the state it was received with ([`origin_digest`]).
    origin: [u8; 32],
    next_index: u32,
    chain_key: Zeroizing<[u8; 32]>,
    skipped: BTreeMap<u32, MessageKey>,
    seen_ids: HashSet<[u8; 16]>,
    seen_order: VecDeque<[u8; 16]>,
    max_skip: u32,
    max_stored: usize,
}

impl ReceiverChain {
    /// A receiver chain starting at `snapshot.index`, with default limits.
    pub fn new(
        sender_user: String,
        sender_device: Fingerprint,
        conversation: String,
        snapshot: &ChainSnapshot,
    ) -> Self {
        ReceiverChain {
            sender_user,
            sender_device,
            conversation,
            chain_id: snapshot.chain_id,
            origin: origin_digest(snapshot),
            next_index: snapshot.index,
            chain_key: Zeroizing::new(snapshot.chain_key),
            skipped: BTreeMap::new(),
            seen_ids: HashSet::new(),
            seen_order: VecDeque::new(),
            max_skip: DEFAULT_MAX_SKIP,
            max_stored: DEFAULT_MAX_STORED_SKIPPED,
        }
    }

    /// Sets how far ahead it ratchets and how many skipped keys it keeps.
    pub fn with_limits(mut self, max_skip: u32, max_stored: usize) -> Self {
        self.max_skip = max_skip;
        self.max_stored = max_stored;
        self
    }

    /// Who sends on this chain.
    pub fn sender_user(&self) -> &str {
        &self.sender_user
    }

    /// The sending device's fingerprint.
    pub fn sender_device(&self) -> Fingerprint {
        self.sender_device
    }

    /// The conversation the chain belongs to.
    pub fn conversation(&self) -> &str {
        &self.conversation
    }

    /// The chain id.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// The lowest index not yet derived.
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// How many skipped keys are held.
    pub fn skipped_len(&self) -> usize {
        self.skipped.len()
    }

    /// The key for `index` without changing any state.
    pub(crate) fn peek_key(&self, index: u32) -> Result<MessageKey, E2eError> {
        if index < self.next_index {
            return self.skipped.get(&index).cloned().ok_or(E2eError::Replay);
        }
        let ahead = index - self.next_index;
        if ahead > self.max_skip {
            return Err(E2eError::TooFarAhead {
                index,
                next: self.next_index,
                max_skip: self.max_skip,
            });
        }
        let mut ck = Zeroizing::new(*self.chain_key);
        for _ in 0..ahead {
            drop(ratchet(&mut ck));
        }
        Ok(ratchet(&mut ck))
    }

    /// Marks `index` used: removes its skipped key, or ratchets past it keeping skipped keys.
    pub(crate) fn commit(&mut self, index: u32) {
        if index < self.next_index {
            self.skipped.remove(&index);
            return;
        }
        while self.next_index < index {
            let key = ratchet(&mut self.chain_key);
            self.skipped.insert(self.next_index, key);
            self.next_index += 1;
        }
        drop(ratchet(&mut self.chain_key));
        self.next_index = index.saturating_add(1);
        while self.skipped.len() > self.max_stored {
            self.skipped.pop_first();
        }
    }

    /// Derives and consumes the key for `index` (replays and too-far skips are refused).
    pub fn message_key(&mut self, index: u32) -> Result<MessageKey, E2eError> {
        let key = self.peek_key(index)?;
        self.commit(index);
        Ok(key)
    }

    /// Whether the skipped key for `index` is held: a message at that index would be a late
    /// one (it arrived after a later index of the chain).
    pub fn is_skipped(&self, index: u32) -> bool {
        self.skipped.contains_key(&index)
    }

    /// True when `other` (just unwrapped) is this same chain sent again: the same sender,
    /// conversation and id, and either the very state this one started from or a later state
    /// of it (its key is this chain's current key ratcheted forward).
    pub fn same_chain(&self, other: &ReceiverChain) -> bool {
        if self.sender_user != other.sender_user
            || self.sender_device != other.sender_device
            || self.conversation != other.conversation
            || self.chain_id != other.chain_id
        {
            return false;
        }
        if self.origin == other.origin {
            return true;
        }
        let Some(ahead) = other.next_index.checked_sub(self.next_index) else {
            return false;
        };
        if ahead > self.max_skip {
            return false;
        }
        let mut ck = Zeroizing::new(*self.chain_key);
        for _ in 0..ahead {
            drop(ratchet(&mut ck));
        }
        *ck == *other.chain_key
    }

    /// The whole state as bytes, to be kept (encrypted) across restarts: who sends on it, its
    /// id, origin digest, next index, chain key, limits, skipped keys and seen message ids.
    ///
    /// ```text
    /// u8 version = 1 | u16+ sender user | [32] sender device | u16+ conversation | [16] chain id
    /// | [32] origin | u32 next index | [32] chain key | u32 max skip | u32 max stored
    /// | u32 n, n × (u32 index, [32] message key), ascending | u32 m, m × [16] message id, oldest first
    /// ```
    pub fn export(&self) -> Result<Zeroizing<Vec<u8>>, E2eError> {
        let len = 1
            + 2
            + self.sender_user.len()
            + 32
            + 2
            + self.conversation.len()
            + 16
            + 32
            + 4
            + 32
            + 8
            + 4
            + self.skipped.len() * 36
            + 4
            + self.seen_order.len() * 16;
        let mut w = Writer::with_capacity(len);
        w.u8(EXPORT_VERSION);
        w.bytes16(self.sender_user.as_bytes(), "sender user")?;
        w.raw(self.sender_device.as_bytes());
        w.bytes16(self.conversation.as_bytes(), "conversation")?;
        w.raw(&self.chain_id);
        w.raw(&self.origin);
        w.u32(self.next_index);
        w.raw(&*self.chain_key);
        w.u32(self.max_skip);
        w.u32(u32::try_from(self.max_stored).unwrap_or(u32::MAX));
        w.u32(u32::try_from(self.skipped.len()).map_err(|_| E2eError::TooLong("skipped keys"))?);
        for (index, key) in &self.skipped {
            w.u32(*index);
            w.raw(&key.0);
        }
        w.u32(u32::try_from(self.seen_order.len()).map_err(|_| E2eError::TooLong("seen ids"))?);
        for id in &self.seen_order {
            w.raw(id);
        }
        Ok(Zeroizing::new(w.into_vec()))
    }

    /// Reads what [`ReceiverChain::export`] wrote. Strict: anything out of place (unknown
    /// version, trailing bytes, a skipped index not below the next index or out of order,
    /// more seen ids than are kept, a repeated id) is [`E2eError::Malformed`].
    pub fn import(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("chain state version")?;
        if version != EXPORT_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        let sender_user = r.string("sender user")?;
        let sender_device = Fingerprint::from_bytes(r.array("sender device")?);
        let conversation = r.string("conversation")?;
        let chain_id = r.array("chain id")?;
        let origin = r.array("origin")?;
        let next_index = r.u32("next index")?;
        let chain_key = Zeroizing::new(r.array::<32>("chain key")?);
        let max_skip = r.u32("max skip")?;
        let max_stored = r.u32("max stored")? as usize;
        let n = r.u32("skipped count")?;
        let mut skipped = BTreeMap::new();
        for _ in 0..n {
            let index = r.u32("skipped index")?;
            let key = MessageKey(r.array("skipped key")?);
            if index >= next_index || skipped.last_key_value().is_some_and(|(i, _)| *i >= index) {
                return Err(E2eError::Malformed("skipped index out of order"));
            }
            skipped.insert(index, key);
        }
        if skipped.len() > max_stored {
            return Err(E2eError::Malformed("more skipped keys than kept"));
        }
        let m = r.u32("seen count")? as usize;
        if m > SEEN_IDS {
            return Err(E2eError::Malformed("more seen ids than kept"));
        }
        let mut seen_ids = HashSet::with_capacity(m);
        let mut seen_order = VecDeque::with_capacity(m);
        for _ in 0..m {
            let id: [u8; 16] = r.array("seen id")?;
            if !seen_ids.insert(id) {
                return Err(E2eError::Malformed("seen id repeated"));
            }
            seen_order.push_back(id);
        }
        r.finish()?;
        Ok(ReceiverChain {
            sender_user,
            sender_device,
            conversation,
            chain_id,
            origin,
            next_index,
            chain_key,
            skipped,
            seen_ids,
            seen_order,
            max_skip,
            max_stored,
        })
    }

    /// Whether a message with this id was opened on this chain.
    pub fn seen_id(&self, id: &[u8; 16]) -> bool {
        self.seen_ids.contains(id)
    }

    pub(crate) fn remember_id(&mut self, id: [u8; 16]) {
        if self.seen_ids.insert(id) {
            self.seen_order.push_back(id);
            if self.seen_order.len() > SEEN_IDS {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen_ids.remove(&old);
                }
            }
        }
    }
}

impl fmt::Debug for ReceiverChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverChain")
            .field("sender_user", &self.sender_user)
            .field("sender_device", &self.sender_device)
            .field("conversation", &self.conversation)
            .field("chain_id", &hex(&self.chain_id))
            .field("next_index", &self.next_index)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const VECTOR_CHAIN_KEY: [u8; 32] = [0x42; 32];

    fn snapshot() -> ChainSnapshot {
        ChainSnapshot {
            chain_id: [7; 16],
            index: 0,
            chain_key: VECTOR_CHAIN_KEY,
        }
    }

    fn receiver() -> ReceiverChain {
        ReceiverChain::new(
            "alice".into(),
            Fingerprint::of(b"x"),
            "all".into(),
            &snapshot(),
        )
    }

    #[test]
    fn hkdf_vectors_indexes_0_to_3() {
        // Fixed vectors: a change here is a wire-format break.
        let expected = include_str!("testdata/chain_vectors.txt");
        let mut chain = SenderChain::from_snapshot(&snapshot());
        let mut got = String::new();
        for _ in 0..4 {
            let ck = hex(&chain.chain_key);
            let (i, mk) = chain.next_message_key().unwrap();
            got.push_str(&format!("{i} chain_key={ck} message_key={}\n", hex(&mk.0)));
        }
        assert_eq!(got, expected);
        assert_eq!(chain.index(), 4);
    }

    #[test]
    fn receiver_matches_sender_in_and_out_of_order() {
        let mut sender = SenderChain::from_snapshot(&snapshot());
        let keys: Vec<_> = (0..6)
            .map(|_| sender.next_message_key().unwrap().1)
            .collect();
        let mut rx = receiver();
        assert_eq!(rx.message_key(0).unwrap(), keys[0]);
        assert_eq!(rx.message_key(3).unwrap(), keys[3]);
        assert_eq!(rx.skipped_len(), 2);
        assert_eq!(rx.message_key(1).unwrap(), keys[1]);
        assert_eq!(rx.message_key(5).unwrap(), keys[5]);
        assert_eq!(rx.message_key(2).unwrap(), keys[2]);
        assert_eq!(rx.message_key(4).unwrap(), keys[4]);
        assert_eq!(rx.skipped_len(), 0);
        for i in 0..6 {
            assert_eq!(rx.message_key(i), Err(E2eError::Replay));
        }
    }

    #[test]
    fn receiver_limits() {
        let mut rx = receiver().with_limits(10, 3);
        assert_eq!(
            rx.message_key(11),
            Err(E2eError::TooFarAhead {
                index: 11,
                next: 0,
                max_skip: 10
            })
        );
        assert_eq!(rx.next_index(), 0, "a refused index changes nothing");
        rx.message_key(10).unwrap();
        assert_eq!(rx.skipped_len(), 3, "oldest skipped keys dropped");
        assert_eq!(rx.message_key(0), Err(E2eError::Replay));
        rx.message_key(7).unwrap();
        let rx = receiver();
        assert!(rx.peek_key(2).is_ok());
        assert_eq!(rx.next_index(), 0, "peek does not advance");
    }

    #[test]
    fn sender_chain_starts_fresh_and_exhausts() {
        let a = SenderChain::new().unwrap();
        let b = SenderChain::new().unwrap();
        assert_ne!(a.chain_id(), b.chain_id());
        assert_ne!(a.snapshot().chain_key, b.snapshot().chain_key);
        let mut end = SenderChain::from_snapshot(&ChainSnapshot {
            index: u32::MAX,
            ..snapshot()
        });
        assert_eq!(
            end.next_message_key().unwrap_err(),
            E2eError::ChainExhausted
        );
        assert!(!format!("{a:?}").contains(&hex(&a.snapshot().chain_key)));
    }

    #[test]
    fn export_import_keeps_every_part_of_the_state() {
        let mut sender = SenderChain::from_snapshot(&snapshot());
        let keys: Vec<_> = (0..8)
            .map(|_| sender.next_message_key().unwrap().1)
            .collect();
        let mut rx = receiver().with_limits(50, 20);
        rx.message_key(0).unwrap();
        rx.message_key(4).unwrap();
        rx.remember_id([1; 16]);
        rx.remember_id([2; 16]);
        let bytes = rx.export().unwrap();
        let mut back = ReceiverChain::import(&bytes).unwrap();
        assert_eq!(back.export().unwrap(), bytes, "a round trip is exact");
        assert_eq!(back.sender_user(), "alice");
        assert_eq!(back.sender_device(), Fingerprint::of(b"x"));
        assert_eq!(back.conversation(), "all");
        assert_eq!(back.chain_id(), [7; 16]);
        assert_eq!(back.next_index(), 5);
        assert_eq!(back.skipped_len(), 3);
        assert!(back.is_skipped(2) && !back.is_skipped(0) && !back.is_skipped(4));
        assert!(back.seen_id(&[1; 16]) && back.seen_id(&[2; 16]) && !back.seen_id(&[3; 16]));
        assert_eq!(back.max_skip, 50);
        assert_eq!(back.max_stored, 20);
        assert!(back.same_chain(&receiver()), "the origin survives");
        // Used indexes stay used, skipped and later keys still open.
        assert_eq!(back.message_key(0), Err(E2eError::Replay));
        assert_eq!(back.message_key(4), Err(E2eError::Replay));
        assert_eq!(back.message_key(2).unwrap(), keys[2]);
        assert_eq!(back.message_key(7).unwrap(), keys[7]);
    }

    #[test]
    fn import_is_strict() {
        let mut rx = receiver();
        rx.message_key(3).unwrap();
        rx.remember_id([9; 16]);
        let good = rx.export().unwrap().to_vec();
        assert!(ReceiverChain::import(&good).is_ok());
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            ReceiverChain::import(&long).unwrap_err(),
            E2eError::Malformed("trailing bytes")
        );
        for cut in 0..good.len() {
            assert!(ReceiverChain::import(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut version = good.clone();
        version[0] = 2;
        assert_eq!(
            ReceiverChain::import(&version).unwrap_err(),
            E2eError::UnsupportedVersion(2)
        );
        // The seen id written twice.
        let mut twice = good[..good.len() - 20].to_vec();
        twice.extend_from_slice(&2u32.to_be_bytes());
        twice.extend_from_slice(&[9; 16]);
        twice.extend_from_slice(&[9; 16]);
        assert_eq!(
            ReceiverChain::import(&twice).unwrap_err(),
            E2eError::Malformed("seen id repeated")
        );
        // A skipped index at or past the next index.
        let skipped_at = good.len() - 20 - 3 * 36;
        let mut ahead = good.clone();
        ahead[skipped_at..skipped_at + 4].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            ReceiverChain::import(&ahead).unwrap_err(),
            E2eError::Malformed("skipped index out of order")
        );
        assert!(
            !format!("{:?}", ReceiverChain::import(&good).unwrap()).contains(&hex(&[0x42; 32]))
        );
    }

    #[test]
    fn a_resent_chain_is_told_from_a_different_one() {
        let mut rx = receiver();
        rx.message_key(2).unwrap();
        assert!(rx.same_chain(&receiver()), "the same wrap again");
        let mut sender = SenderChain::from_snapshot(&snapshot());
        for _ in 0..5 {
            sender.next_message_key().unwrap();
        }
        let later = ReceiverChain::new(
            "alice".into(),
            Fingerprint::of(b"x"),
            "all".into(),
            &sender.snapshot(),
        );
        assert!(rx.same_chain(&later), "a later state of the same chain");
        let other_key = ReceiverChain::new(
            "alice".into(),
            Fingerprint::of(b"x"),
            "all".into(),
            &ChainSnapshot {
                chain_key: [0x43; 32],
                ..snapshot()
            },
        );
        assert!(!rx.same_chain(&other_key), "another key under the same id");
        let elsewhere = ReceiverChain::new(
            "alice".into(),
            Fingerprint::of(b"x"),
            "bob:carol".into(),
            &snapshot(),
        );
        assert!(!rx.same_chain(&elsewhere), "another conversation");
    }

    #[test]
    fn seen_ids_are_bounded() {
        let mut rx = receiver();
        for i in 0..(SEEN_IDS as u32 + 1) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            rx.remember_id(id);
        }
        assert!(!rx.seen_id(&[0; 16]));
        assert!(rx.seen_id(&{
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&1u32.to_be_bytes());
            id
        }));
        assert_eq!(rx.seen_ids.len(), SEEN_IDS);
    }
}
