//! Property tests across the e2e module: round trips, and that no single-bit corruption of an
//! envelope or wrapped chain is ever accepted (or panics).

use proptest::prelude::*;

use super::testkeys::{alice, bob};
use super::*;
use crate::Fingerprint;

const NOW: u64 = 1_764_327_600_000;
const SKEW: u64 = 60_000;

fn fresh_pair() -> (SenderChain, ReceiverChain) {
    let tx = SenderChain::new().unwrap();
    let rx = ReceiverChain::new(
        "alice".into(),
        alice().fingerprint(),
        "all".into(),
        &tx.snapshot(),
    );
    (tx, rx)
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Every single-bit flip of an envelope is refused; checked exhaustively, not sampled.
#[test]
fn every_bit_flip_of_an_envelope_is_rejected() {
    let (mut tx, rx) = fresh_pair();
    let env = seal(alice(), "alice", "all", &mut tx, "flip me", NOW).unwrap();
    let bytes = env.encode().unwrap();
    let mut rx = rx;
    for bit in 0..bytes.len() * 8 {
        let flipped = flip(&bytes, bit);
        let result = Envelope::decode(&flipped)
            .and_then(|e| open(&e, &alice().public(), &mut rx, NOW, SKEW));
        assert!(result.is_err(), "bit {bit} accepted");
    }
    assert_eq!(
        open(&env, &alice().public(), &mut rx, NOW, SKEW)
            .unwrap()
            .text,
        "flip me"
    );
}

/// Every single-bit flip of a wrapped chain is refused; checked exhaustively.
#[test]
fn every_bit_flip_of_a_wrapped_chain_is_rejected() {
    let tx = SenderChain::new().unwrap();
    let w = wrap_chain(&tx, alice(), "alice", "all", &bob().public()).unwrap();
    let bytes = w.encode().unwrap();
    for bit in 0..bytes.len() * 8 {
        let flipped = flip(&bytes, bit);
        let result =
            WrappedChain::decode(&flipped).and_then(|w| unwrap_chain(&w, &alice().public(), bob()));
        assert!(result.is_err(), "bit {bit} accepted");
    }
    assert!(unwrap_chain(&w, &alice().public(), bob()).is_ok());
}

fn header_strategy() -> impl Strategy<Value = EnvelopeHeader> {
    (
        any::<[u8; 16]>(),
        ".{0,40}",
        any::<[u8; 32]>(),
        ".{0,40}",
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(id, user, fp, conv, chain, index, ts)| EnvelopeHeader {
            message_id: id,
            sender_user: user,
            sender_device: Fingerprint::from_bytes(fp),
            conversation: conv,
            chain_id: chain,
            chain_index: index,
            timestamp_ms: ts,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any text seals and opens back to itself, through bytes and base64.
    #[test]
    fn seal_open_round_trip(text in "\\PC{0,300}", conv in "[a-z#]{1,20}") {
        let mut tx = SenderChain::new().unwrap();
        let mut rx = ReceiverChain::new(
            "alice".into(), alice().fingerprint(), conv.clone(), &tx.snapshot());
        let env = seal(alice(), "alice", &conv, &mut tx, &text, NOW).unwrap();
        let back = Envelope::from_base64(&env.to_base64().unwrap()).unwrap();
        prop_assert_eq!(&back, &env);
        let opened = open(&back, &alice().public(), &mut rx, NOW, SKEW).unwrap();
        prop_assert_eq!(opened.text, text);
    }

    /// A random bit flip in a random message is refused (complements the exhaustive tests).
    #[test]
    fn random_bit_flip_rejected(text in ".{0,64}", bit in any::<prop::sample::Index>()) {
        let (mut tx, mut rx) = fresh_pair();
        let bytes = seal(alice(), "alice", "all", &mut tx, &text, NOW).unwrap().encode().unwrap();
        let flipped = flip(&bytes, bit.index(bytes.len() * 8));
        let result = Envelope::decode(&flipped)
            .and_then(|e| open(&e, &alice().public(), &mut rx, NOW, SKEW));
        prop_assert!(result.is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// encode/decode is a bijection on well-formed envelopes (no RSA involved).
    #[test]
    fn envelope_encode_decode_round_trip(
        header in header_strategy(),
        ct in prop::collection::vec(any::<u8>(), 16..200),
        sig in prop::collection::vec(any::<u8>(), 1..=512),
    ) {
        let mut w = super::wire::Writer::default();
        w.raw(&header.to_bytes().unwrap());
        w.bytes32(&ct, "ct").unwrap();
        w.bytes16(&sig, "sig").unwrap();
        let bytes = w.into_vec();
        let env = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(env.header(), &header);
        prop_assert_eq!(env.ciphertext(), &ct[..]);
        prop_assert_eq!(env.signature(), &sig[..]);
        prop_assert_eq!(env.encode().unwrap(), bytes);
    }

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = Envelope::decode(&bytes);
        let _ = WrappedChain::decode(&bytes);
    }

    /// Delivering a chain's messages in any order yields the sender's keys, each exactly once.
    #[test]
    fn receiver_handles_any_delivery_order(
        order in Just((0u32..40).collect::<Vec<_>>()).prop_shuffle()
    ) {
        let (mut tx, mut rx) = fresh_pair();
        let keys: Vec<_> = (0..40).map(|_| tx.next_message_key().unwrap().1).collect();
        for &i in &order {
            prop_assert_eq!(&rx.message_key(i).unwrap(), &keys[i as usize]);
        }
        for &i in &order {
            prop_assert_eq!(rx.message_key(i), Err(E2eError::Replay));
        }
    }

    /// A receiver chain exported and imported after every message (a restart each time)
    /// opens the same keys and refuses the same replays as one that never left memory.
    #[test]
    fn receiver_state_survives_export_import_in_any_order(
        order in Just((0u32..30).collect::<Vec<_>>()).prop_shuffle()
    ) {
        let (mut tx, mut rx) = fresh_pair();
        let keys: Vec<_> = (0..30).map(|_| tx.next_message_key().unwrap().1).collect();
        for &i in &order {
            rx = ReceiverChain::import(&rx.export().unwrap()).unwrap();
            prop_assert_eq!(&rx.message_key(i).unwrap(), &keys[i as usize]);
            rx.remember_id([i as u8; 16]);
        }
        let rx = ReceiverChain::import(&rx.export().unwrap()).unwrap();
        for &i in &order {
            prop_assert!(rx.seen_id(&[i as u8; 16]));
            prop_assert_eq!(rx.peek_key(i), Err(E2eError::Replay));
        }
    }
}
