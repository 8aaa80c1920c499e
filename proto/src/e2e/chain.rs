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
use rsa::sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

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

    pub(crate) fn seen_id(&self, id: &[u8; 16]) -> bool {
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
