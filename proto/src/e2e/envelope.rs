//! Envelopes: one per message, the same bytes for every recipient.
//!
//! ```text
//! header (= AEAD associated data)
//!   u8 version=1 | u8 kind=0x45 'E' | [16] message id | u16+ sender user | [32] sender device fp
//!   | u16+ conversation | [16] chain id | u32 chain index | u64 timestamp ms
//! u32+ ciphertext      ChaCha20-Poly1305(msg_key, nonce = chain id[0..8] || index, aad = header)
//! u16+ signature       RSA-PSS-SHA256 by the sender device over every byte before this field
//! ```
//!
//! All integers big-endian; `u16+`/`u32+` are byte strings with that length prefix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use super::chain::MessageKey;
use super::wire::{Reader, Writer};
use super::{
    DeviceKey, DevicePublicKey, E2E_VERSION, E2eError, ReceiverChain, SenderChain, random_bytes,
};
use crate::Fingerprint;

/// Kind byte of an envelope (ASCII `E`).
pub const KIND_ENVELOPE: u8 = 0x45;
/// Largest ciphertext accepted (plaintext + 16-byte tag).
pub const MAX_CIPHERTEXT_BYTES: usize = 65536;
/// Largest signature accepted (RSA-4096).
pub const MAX_SIGNATURE_BYTES: usize = 512;

/// The largest envelope carrying `text_bytes` of plaintext: longest user name (32 bytes) and
/// whisper conversation (65), RSA-4096 signature.
pub const fn max_envelope_bytes(text_bytes: usize) -> usize {
    let header = 2 + 16 + (2 + 32) + 32 + (2 + 65) + 16 + 4 + 8;
    header + (4 + text_bytes + 16) + (2 + MAX_SIGNATURE_BYTES)
}

/// The signed, authenticated, unencrypted part of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Random per message.
    pub message_id: [u8; 16],
    /// The sending user, as the sender claims it (compare with who the server names).
    pub sender_user: String,
    /// Fingerprint of the signing device key.
    pub sender_device: Fingerprint,
    /// `"all"`, a sorted pair or a room name.
    pub conversation: String,
    /// Which sender chain the key comes from.
    pub chain_id: [u8; 16],
    /// Which index of that chain.
    pub chain_index: u32,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl EnvelopeHeader {
    fn write(&self, w: &mut Writer) -> Result<(), E2eError> {
        w.u8(E2E_VERSION);
        w.u8(KIND_ENVELOPE);
        w.raw(&self.message_id);
        w.bytes16(self.sender_user.as_bytes(), "sender user")?;
        w.raw(self.sender_device.as_bytes());
        w.bytes16(self.conversation.as_bytes(), "conversation")?;
        w.raw(&self.chain_id);
        w.u32(self.chain_index);
        w.u64(self.timestamp_ms);
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, E2eError> {
        let version = r.u8("version")?;
        if version != E2E_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        if r.u8("kind")? != KIND_ENVELOPE {
            return Err(E2eError::Malformed("not an envelope"));
        }
        Ok(EnvelopeHeader {
            message_id: r.array("message id")?,
            sender_user: r.string("sender user")?,
            sender_device: Fingerprint::from_bytes(r.array("sender device")?),
            conversation: r.string("conversation")?,
            chain_id: r.array("chain id")?,
            chain_index: r.u32("chain index")?,
            timestamp_ms: r.u64("timestamp")?,
        })
    }

    /// The canonical header bytes: the AEAD associated data.
    pub fn to_bytes(&self) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::default();
        self.write(&mut w)?;
        Ok(w.into_vec())
    }

    /// The AEAD nonce: the first 8 bytes of the chain id, then the index big-endian.
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.chain_id[..8]);
        n[8..].copy_from_slice(&self.chain_index.to_be_bytes());
        n
    }
}

/// A sealed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    header: EnvelopeHeader,
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
}

/// What [`open`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The verified header.
    pub header: EnvelopeHeader,
    /// The decrypted text.
    pub text: String,
}

impl Envelope {
    /// The header.
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }

    /// The AEAD output (ciphertext and 16-byte tag).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The RSA-PSS signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Header and ciphertext as encoded: the bytes the signature covers.
    fn signed_bytes(header: &EnvelopeHeader, ciphertext: &[u8]) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::default();
        header.write(&mut w)?;
        w.bytes32(ciphertext, "ciphertext")?;
        Ok(w.into_vec())
    }

    /// The canonical binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>, E2eError> {
        let mut out = Self::signed_bytes(&self.header, &self.ciphertext)?;
        let mut w = Writer::default();
        w.bytes16(&self.signature, "signature")?;
        out.extend_from_slice(&w.into_vec());
        Ok(out)
    }

    /// Parses the canonical encoding; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        let header = EnvelopeHeader::read(&mut r)?;
        let ciphertext = r.bytes32(MAX_CIPHERTEXT_BYTES, "ciphertext")?.to_vec();
        if ciphertext.len() < 16 {
            return Err(E2eError::Malformed("ciphertext shorter than the tag"));
        }
        let signature = r.bytes16("signature")?.to_vec();
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
            return Err(E2eError::Malformed("signature length"));
        }
        r.finish()?;
        Ok(Envelope {
            header,
            ciphertext,
            signature,
        })
    }

    /// Standard base64 (with padding) of [`Envelope::encode`], for JSON frames.
    pub fn to_base64(&self) -> Result<String, E2eError> {
        Ok(BASE64.encode(self.encode()?))
    }

    /// Inverse of [`Envelope::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self, E2eError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| E2eError::Malformed("base64"))?;
        Self::decode(&bytes)
    }
}

fn aead_encrypt(
    key: &MessageKey,
    header: &EnvelopeHeader,
    text: &[u8],
) -> Result<Vec<u8>, E2eError> {
    let aad = header.to_bytes()?;
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    cipher
        .encrypt(
            &Nonce::from(header.nonce()),
            Payload {
                msg: text,
                aad: &aad,
            },
        )
        .map_err(|_| E2eError::TooLong("text"))
}

fn aead_decrypt(
    key: &MessageKey,
    header: &EnvelopeHeader,
    ciphertext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    let aad = header.to_bytes()?;
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    cipher
        .decrypt(
            &Nonce::from(header.nonce()),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| E2eError::Decrypt)
}

/// Encrypts `text` with the chain's next key and signs the result with `sender`.
pub fn seal(
    sender: &DeviceKey,
    sender_user: &str,
    conversation: &str,
    chain: &mut SenderChain,
    text: &str,
    now_ms: u64,
) -> Result<Envelope, E2eError> {
    seal_with_id(
        sender,
        sender_user,
        conversation,
        chain,
        text,
        now_ms,
        random_bytes()?,
    )
}

fn seal_with_id(
    sender: &DeviceKey,
    sender_user: &str,
    conversation: &str,
    chain: &mut SenderChain,
    text: &str,
    now_ms: u64,
    message_id: [u8; 16],
) -> Result<Envelope, E2eError> {
    if text.len() + 16 > MAX_CIPHERTEXT_BYTES {
        return Err(E2eError::TooLong("text"));
    }
    let chain_id = chain.chain_id();
    let (chain_index, key) = chain.next_message_key()?;
    let header = EnvelopeHeader {
        message_id,
        sender_user: sender_user.to_owned(),
        sender_device: sender.fingerprint(),
        conversation: conversation.to_owned(),
        chain_id,
        chain_index,
        timestamp_ms: now_ms,
    };
    let ciphertext = aead_encrypt(&key, &header, text.as_bytes())?;
    let signature = sender.sign(&Envelope::signed_bytes(&header, &ciphertext)?)?;
    Ok(Envelope {
        header,
        ciphertext,
        signature,
    })
}

/// Verifies and decrypts `envelope`.
///
/// Order: signature under `pinned_sender` (the key pinned for the user the server names), the
/// header's device fingerprint against that key, chain/sender/conversation against `chain`,
/// `|now_ms - timestamp| <= max_skew_ms`, replay (message id or chain index), then decryption.
/// `chain` changes only when every check passes.
pub fn open(
    envelope: &Envelope,
    pinned_sender: &DevicePublicKey,
    chain: &mut ReceiverChain,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<Opened, E2eError> {
    let window = now_ms.saturating_sub(max_skew_ms)..=now_ms.saturating_add(max_skew_ms);
    open_within(envelope, pinned_sender, chain, window)
}

/// [`open`] with the accepted timestamps given as a range (ms since the Unix epoch): a
/// message stored while the receiver was offline may be older than a live one.
pub fn open_within(
    envelope: &Envelope,
    pinned_sender: &DevicePublicKey,
    chain: &mut ReceiverChain,
    window: std::ops::RangeInclusive<u64>,
) -> Result<Opened, E2eError> {
    let h = &envelope.header;
    let signed = Envelope::signed_bytes(h, &envelope.ciphertext)?;
    pinned_sender.verify(&signed, &envelope.signature)?;
    if h.sender_device != pinned_sender.fingerprint() {
        return Err(E2eError::WrongSender);
    }
    if h.chain_id != chain.chain_id()
        || h.sender_device != chain.sender_device()
        || h.sender_user != chain.sender_user()
        || h.conversation != chain.conversation()
    {
        return Err(E2eError::UnknownChain);
    }
    if !window.contains(&h.timestamp_ms) {
        return Err(E2eError::StaleTimestamp);
    }
    if chain.seen_id(&h.message_id) {
        return Err(E2eError::Replay);
    }
    let key = chain.peek_key(h.chain_index)?;
    let plain = aead_decrypt(&key, h, &envelope.ciphertext)?;
    let text = String::from_utf8(plain).map_err(|_| E2eError::Malformed("text is not UTF-8"))?;
    chain.commit(h.chain_index);
    chain.remember_id(h.message_id);
    Ok(Opened {
        header: h.clone(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::ChainSnapshot;
    use crate::e2e::chain::hex;
    use crate::e2e::testkeys::{alice, bob};

    const NOW: u64 = 1_764_327_600_000;
    const SKEW: u64 = 5 * 60 * 1000;

    fn snapshot() -> ChainSnapshot {
        ChainSnapshot {
            chain_id: [7; 16],
            index: 0,
            chain_key: [0x42; 32],
        }
    }

    fn pair() -> (SenderChain, ReceiverChain) {
        let snap = snapshot();
        let rx = ReceiverChain::new("alice".into(), alice().fingerprint(), "all".into(), &snap);
        (SenderChain::from_snapshot(&snap), rx)
    }

    #[test]
    fn fixed_vector_header_and_ciphertext() {
        // Fixed inputs -> exact bytes; a change here is a wire-format break.
        let header = EnvelopeHeader {
            message_id: [1; 16],
            sender_user: "alice".into(),
            sender_device: Fingerprint::of(b""),
            conversation: "all".into(),
            chain_id: [7; 16],
            chain_index: 0,
            timestamp_ms: NOW,
        };
        let mut chain = SenderChain::from_snapshot(&snapshot());
        let (_, key) = chain.next_message_key().unwrap();
        let ct = aead_encrypt(&key, &header, b"hello, world").unwrap();
        let got = format!(
            "header={}\nnonce={}\nciphertext={}\n",
            hex(&header.to_bytes().unwrap()),
            hex(&header.nonce()),
            hex(&ct)
        );
        assert_eq!(got, include_str!("testdata/envelope_vector.txt"));
        assert_eq!(aead_decrypt(&key, &header, &ct).unwrap(), b"hello, world");
    }

    #[test]
    fn seal_open_round_trip_and_encoding() {
        let (mut tx, mut rx) = pair();
        let env = seal(alice(), "alice", "all", &mut tx, "hi bob", NOW).unwrap();
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        let b64 = env.to_base64().unwrap();
        assert_eq!(Envelope::from_base64(&b64).unwrap(), env);
        let opened = open(&env, &alice().public(), &mut rx, NOW + 1000, SKEW).unwrap();
        assert_eq!(opened.text, "hi bob");
        assert_eq!(opened.header, *env.header());
        assert_eq!(
            open(&env, &alice().public(), &mut rx, NOW, SKEW),
            Err(E2eError::Replay)
        );
    }

    #[test]
    fn open_within_takes_an_uneven_window() {
        let (mut tx, mut rx) = pair();
        let env = seal(alice(), "alice", "all", &mut tx, "x", NOW).unwrap();
        let week = 7 * 24 * 3600 * 1000;
        let later = NOW + week;
        assert_eq!(
            open_within(&env, &alice().public(), &mut rx, later - week + 1..=later),
            Err(E2eError::StaleTimestamp)
        );
        assert_eq!(rx.next_index(), 0, "a refused envelope changes nothing");
        let opened = open_within(&env, &alice().public(), &mut rx, later - week..=later).unwrap();
        assert_eq!(opened.text, "x");
    }

    #[test]
    fn every_check_has_its_own_error() {
        let (mut tx, mut rx) = pair();
        let env = seal(alice(), "alice", "all", &mut tx, "x", NOW).unwrap();

        assert_eq!(
            open(&env, &bob().public(), &mut rx, NOW, SKEW),
            Err(E2eError::BadSignature)
        );
        assert_eq!(
            open(&env, &alice().public(), &mut rx, NOW + SKEW + 1, SKEW),
            Err(E2eError::StaleTimestamp)
        );
        assert_eq!(
            open(&env, &alice().public(), &mut rx, NOW - SKEW - 1, SKEW),
            Err(E2eError::StaleTimestamp)
        );
        let mut other = ReceiverChain::new(
            "alice".into(),
            alice().fingerprint(),
            "room".into(),
            &snapshot(),
        );
        assert_eq!(
            open(&env, &alice().public(), &mut other, NOW, SKEW),
            Err(E2eError::UnknownChain)
        );
        assert_eq!(rx.next_index(), 0, "failed opens leave the chain alone");

        // Bob signs an envelope claiming Alice's device: signature ok, fingerprint not.
        let mut forged = SenderChain::from_snapshot(&snapshot());
        let mut env2 = seal(bob(), "alice", "all", &mut forged, "x", NOW).unwrap();
        env2.header.sender_device = alice().fingerprint();
        env2.signature = bob()
            .sign(&Envelope::signed_bytes(&env2.header, &env2.ciphertext).unwrap())
            .unwrap();
        assert_eq!(
            open(&env2, &bob().public(), &mut rx, NOW, SKEW),
            Err(E2eError::WrongSender)
        );

        // Correctly signed, but the ciphertext was made with another key.
        let mut wrong_key = SenderChain::from_snapshot(&ChainSnapshot {
            chain_id: [7; 16],
            index: 0,
            chain_key: [0x43; 32],
        });
        let env3 = seal(alice(), "alice", "all", &mut wrong_key, "x", NOW).unwrap();
        assert_eq!(
            open(&env3, &alice().public(), &mut rx, NOW, SKEW),
            Err(E2eError::Decrypt)
        );

        open(&env, &alice().public(), &mut rx, NOW, SKEW).unwrap();
        // Same message id, fresh index: still a replay.
        let mut env4 = seal(alice(), "alice", "all", &mut tx, "y", NOW).unwrap();
        env4.header.message_id = env.header.message_id;
        env4.signature = alice()
            .sign(&Envelope::signed_bytes(&env4.header, &env4.ciphertext).unwrap())
            .unwrap();
        assert_eq!(
            open(&env4, &alice().public(), &mut rx, NOW, SKEW),
            Err(E2eError::Replay)
        );
    }

    #[test]
    fn decode_rejects_bad_shapes() {
        assert_eq!(Envelope::decode(&[]), Err(E2eError::Malformed("version")));
        assert_eq!(
            Envelope::decode(&[2, KIND_ENVELOPE]),
            Err(E2eError::UnsupportedVersion(2))
        );
        assert_eq!(
            Envelope::decode(&[1, 0x57]),
            Err(E2eError::Malformed("not an envelope"))
        );
        assert_eq!(
            Envelope::from_base64("!!"),
            Err(E2eError::Malformed("base64"))
        );
        let (mut tx, _) = pair();
        let mut bytes = seal(alice(), "alice", "all", &mut tx, "x", NOW)
            .unwrap()
            .encode()
            .unwrap();
        bytes.push(0);
        assert_eq!(
            Envelope::decode(&bytes),
            Err(E2eError::Malformed("trailing bytes"))
        );
        let mut tx2 = SenderChain::from_snapshot(&snapshot());
        let big = "a".repeat(MAX_CIPHERTEXT_BYTES);
        assert_eq!(
            seal(alice(), "alice", "all", &mut tx2, &big, NOW),
            Err(E2eError::TooLong("text"))
        );
    }

    fn measure(key: &DeviceKey) {
        let snap = snapshot();
        let mut tx = SenderChain::from_snapshot(&snap);
        let mut rx = ReceiverChain::new("alice".into(), key.fingerprint(), "all".into(), &snap);
        let text = "x".repeat(100);
        let n = 10u32;
        let t = std::time::Instant::now();
        let envs: Vec<_> = (0..n)
            .map(|_| seal(key, "alice", "all", &mut tx, &text, NOW).unwrap())
            .collect();
        let seal_cost = t.elapsed() / n;
        let t = std::time::Instant::now();
        for env in &envs {
            open(env, &key.public(), &mut rx, NOW, SKEW).unwrap();
        }
        let open_cost = t.elapsed() / n;
        let len = envs[0].encode().unwrap().len();
        println!(
            "e2e cost, RSA-{}, 100-byte text: seal {seal_cost:?}, open {open_cost:?}, envelope {len} bytes",
            key.bits()
        );
    }

    #[test]
    fn cost_per_message() {
        // Run with --nocapture to see the numbers.
        measure(alice());
    }

    #[test]
    #[ignore = "generates an RSA-3072 key; run with --ignored --nocapture"]
    fn cost_per_message_3072() {
        measure(&DeviceKey::generate(3072).unwrap());
    }
}
