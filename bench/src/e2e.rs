//! The bench's end-to-end side: device keys, envelopes sealed before the timed phase, and the
//! cheap header read every receiver does per delivery.
//!
//! Sealing costs one RSA-PSS signature per message (1-3 ms at 2048 bits, far slower than the
//! fan-out it feeds), so every envelope is sealed up front, on all cores, straight into the
//! `send` frame `--wire` asks for. Receivers never open envelopes: they read the sender user
//! and the chain index (docs/E2E-ENVELOPE.md), which identify the message, from the clear
//! header: straight from a binary `envelope` frame, or, in an `envelope` line, from the few
//! base64 4-character groups of the `"data":"` field that hold them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::codec::binary_send;
use chatd_proto::e2e::{ChainSnapshot, DeviceKey, E2E_VERSION, KIND_ENVELOPE, SenderChain, seal};
use chatd_proto::frame::ClientFrame;
use chatd_proto::names::MAX_USERNAME_LEN;
use memchr::memmem;

use crate::cli::WireMode;
use crate::control;

/// The room every benchmark user is in: the server's default room.
const ROOM: &str = "#lobby";

/// Fixed 2048-bit keys from proto's test data (public, throwaway). The default key size then
/// needs no key generation, and the fingerprints stay the same from run to run, so a `--target`
/// server does not register new device keys on every run (chatd allows 16 per user by default).
const FIXED_2048: [&str; 3] = [
    include_str!("../../proto/src/e2e/testdata/alice.pem"),
    include_str!("../../proto/src/e2e/testdata/bob.pem"),
    include_str!("../../proto/src/e2e/testdata/carol.pem"),
];

/// Messages sealed per work unit: small enough to spread S senders over every core.
const SEAL_CHUNK: usize = 32;

/// A device key and its `login` form.
struct BenchKey {
    key: DeviceKey,
    /// Base64 of the SPKI DER, as `login` carries it.
    b64: Arc<str>,
}

impl BenchKey {
    fn new(key: DeviceKey) -> BenchKey {
        let b64 = BASE64.encode(key.public().to_spki_der()).into();
        BenchKey { key, b64 }
    }
}

/// The bench's device keys: one shared by every receiver-only client, and two that senders use
/// alternately. chatd accepts one key for several users; what it does per envelope does not
/// depend on how many distinct keys there are, and few keys keep setup quick.
pub struct Keys {
    receiver: BenchKey,
    senders: [BenchKey; 2],
    /// Modulus size.
    pub bits: usize,
    /// False for the fixed 2048-bit keys.
    pub generated: bool,
    /// Seconds spent loading or generating them.
    pub secs: f64,
}

impl Keys {
    /// The fixed keys for 2048 bits; three fresh keys (in parallel) for 3072 or 4096.
    pub fn load(bits: usize) -> anyhow::Result<Keys> {
        let started = Instant::now();
        let generated = bits != 2048;
        let [a, b, c] = if generated {
            std::thread::scope(|s| {
                let handles = [(); 3].map(|()| s.spawn(move || DeviceKey::generate(bits)));
                handles.map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("key generation thread panicked"))?
                        .with_context(|| format!("cannot generate an RSA-{bits} key"))
                })
            })
        } else {
            FIXED_2048.map(|pem| DeviceKey::from_pkcs8_pem(pem).context("fixed test key"))
        };
        Ok(Keys {
            receiver: BenchKey::new(a?),
            senders: [BenchKey::new(b?), BenchKey::new(c?)],
            bits,
            generated,
            secs: started.elapsed().as_secs_f64(),
        })
    }

    fn sender(&self, id: usize) -> &BenchKey {
        &self.senders[id % 2]
    }

    /// The `device_key` client `i` logs in with (`senders` is how many of the first clients send).
    pub fn login_key(&self, i: usize, senders: usize) -> Arc<str> {
        let k = if i < senders {
            self.sender(i)
        } else {
            &self.receiver
        };
        Arc::clone(&k.b64)
    }
}

/// Every sender's `send` frames, sealed before the run.
pub struct Sealed {
    /// Per sender, one complete `send` frame per chain index 0, 1, ...: a binary frame, or a
    /// JSON line with its newline.
    pub frames: Vec<Vec<Vec<u8>>>,
    /// Mean envelope size in bytes, binary (before base64).
    pub envelope_bytes: f64,
    /// Wall-clock seconds the sealing took.
    pub secs: f64,
}

/// One work unit: `len` messages of `sender` starting at the chain state `snapshot`.
struct Unit {
    sender: usize,
    len: usize,
    snapshot: ChainSnapshot,
}

/// A unit's `send` frames and the sum of their envelope sizes.
struct UnitOutput {
    unit: usize,
    frames: Vec<Vec<u8>>,
    envelope_bytes: usize,
}

/// Seals `messages` envelopes of `text_bytes` bytes of text for each of `senders` senders
/// (bench users `0..senders`, the default room) into `send` frames for `wire`, spread over
/// every core.
pub fn seal_all(
    keys: &Keys,
    senders: usize,
    messages: u64,
    text_bytes: usize,
    wire: WireMode,
) -> anyhow::Result<Sealed> {
    let started = Instant::now();
    let m = usize::try_from(messages).context("too many messages")?;
    anyhow::ensure!(
        u32::try_from(messages).is_ok(),
        "more messages than a sender chain has indexes"
    );
    // A chain is sequential, but its HKDF ratchet is cheap: advance it here and hand each
    // unit a snapshot, so the RSA signatures of one sender can run on several cores.
    let mut units = Vec::new();
    for sender in 0..senders {
        let mut chain = SenderChain::new().context("cannot create a sender chain")?;
        for start in (0..m).step_by(SEAL_CHUNK) {
            let len = SEAL_CHUNK.min(m - start);
            units.push(Unit {
                sender,
                len,
                snapshot: chain.snapshot(),
            });
            for _ in 0..len {
                chain.next_message_key()?;
            }
        }
    }
    let text = "x".repeat(text_bytes);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(units.len())
        .max(1);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<UnitOutput>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(i) else {
                            return Ok(done);
                        };
                        let (frames, envelope_bytes) = seal_unit(keys, unit, &text, now_ms, wire)?;
                        done.push(UnitOutput {
                            unit: i,
                            frames,
                            envelope_bytes,
                        });
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("sealing thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut by_unit: Vec<Option<Vec<Vec<u8>>>> = (0..units.len()).map(|_| None).collect();
    let mut total_bytes = 0usize;
    for out in results.into_iter().flatten() {
        total_bytes += out.envelope_bytes;
        if let Some(slot) = by_unit.get_mut(out.unit) {
            *slot = Some(out.frames);
        }
    }
    let mut frames: Vec<Vec<Vec<u8>>> = (0..senders).map(|_| Vec::with_capacity(m)).collect();
    for (unit, sealed) in units.iter().zip(by_unit) {
        let sealed = sealed.context("a sealing unit produced nothing")?;
        if let Some(f) = frames.get_mut(unit.sender) {
            f.extend(sealed);
        }
    }
    let count = senders * m;
    Ok(Sealed {
        frames,
        envelope_bytes: if count > 0 {
            total_bytes as f64 / count as f64
        } else {
            0.0
        },
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Seals one unit; returns its `send` frames and the sum of their envelope sizes.
fn seal_unit(
    keys: &Keys,
    unit: &Unit,
    text: &str,
    now_ms: u64,
    wire: WireMode,
) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
    let key = &keys.sender(unit.sender).key;
    let user = control::user_name(unit.sender);
    let mut chain = SenderChain::from_snapshot(&unit.snapshot);
    let mut frames = Vec::with_capacity(unit.len);
    let mut bytes = 0;
    for _ in 0..unit.len {
        let envelope = seal(key, &user, ROOM, &mut chain, text, now_ms)
            .with_context(|| format!("cannot seal a message of {user}"))?;
        let binary = envelope.encode()?;
        bytes += binary.len();
        let frame = match wire {
            WireMode::Binary => binary_send(&binary).to_vec(),
            WireMode::Json => {
                let mut line = serde_json::to_vec(&ClientFrame::Send {
                    data: BASE64.encode(&binary),
                })?;
                line.push(b'\n');
                line
            }
        };
        frames.push(frame);
    }
    Ok((frames, bytes))
}

/// Which message an `envelope` frame carries: its sender's index and its chain index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Bench user index of the sender.
    pub sender: usize,
    /// Chain index: 0 for a sender's first message, then 1, 2, ...
    pub index: u32,
}

/// Reads `envelope` frames; build one per receiver (it holds a prepared substring search).
pub struct EnvelopeReader {
    data: memmem::Finder<'static>,
}

impl Default for EnvelopeReader {
    fn default() -> Self {
        EnvelopeReader {
            data: memmem::Finder::new(br#""data":""#),
        }
    }
}

impl EnvelopeReader {
    /// The sender and chain index of an `envelope` line from one of the bench's `senders`;
    /// None for a line that is cut short, not base64, not an envelope, or from someone else.
    pub fn read(&self, line: &[u8], senders: usize) -> Option<Delivered> {
        let start = self.data.find(line)? + br#""data":""#.len();
        let rest = line.get(start..)?;
        // The closing quote must be there: a line cut anywhere in the data is unreadable.
        let b64 = B64(rest.get(..memchr::memchr(b'"', rest)?)?);
        if b64.0.len() % 4 != 0 {
            return None;
        }
        delivered(&b64, senders)
    }

    /// The sender and chain index of the envelope bytes of a binary `envelope` frame from one
    /// of the bench's `senders`; None for bytes that are cut short, not an envelope, or from
    /// someone else.
    pub fn read_binary(&self, envelope: &[u8], senders: usize) -> Option<Delivered> {
        delivered(&Raw(envelope), senders)
    }
}

/// The sender and chain index in an envelope header, read field by field from `header`.
fn delivered(header: &impl HeaderBytes, senders: usize) -> Option<Delivered> {
    // Offsets from docs/E2E-ENVELOPE.md: version, kind, [16] message id, u16+ user,
    // [32] device, u16+ conversation, [16] chain id, u32 chain index.
    if header.array::<2>(0)? != [E2E_VERSION, KIND_ENVELOPE] {
        return None;
    }
    let user_len = usize::from(u16::from_be_bytes(header.array(18)?));
    if user_len > MAX_USERNAME_LEN {
        return None;
    }
    let mut user = [0u8; MAX_USERNAME_LEN];
    let user = user.get_mut(..user_len)?;
    header.read(20, user)?;
    let sender = control::user_index(user).filter(|s| *s < senders)?;
    let conversation_at = 20 + user_len + 32;
    let conversation_len = usize::from(u16::from_be_bytes(header.array(conversation_at)?));
    let index_at = conversation_at + 2 + conversation_len + 16;
    let index = u32::from_be_bytes(header.array(index_at)?);
    Some(Delivered { sender, index })
}

/// Envelope bytes a header field can be read from, in whatever form they arrived.
trait HeaderBytes {
    /// Copies bytes `at..at + out.len()`; None when there are not that many.
    fn read(&self, at: usize, out: &mut [u8]) -> Option<()>;

    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        self.read(at, &mut a)?;
        Some(a)
    }
}

/// The envelope bytes themselves, as a binary frame carries them.
struct Raw<'a>(&'a [u8]);

impl HeaderBytes for Raw<'_> {
    fn read(&self, at: usize, out: &mut [u8]) -> Option<()> {
        out.copy_from_slice(self.0.get(at..at.checked_add(out.len())?)?);
        Some(())
    }
}

/// Standard base64 text, decoded a few 4-character groups at a time.
struct B64<'a>(&'a [u8]);

impl HeaderBytes for B64<'_> {
    /// Decodes bytes `at..at + out.len()`; None when the text is too short or not base64.
    /// Padding counts as not base64: no header field of an envelope is in its last group.
    fn read(&self, at: usize, out: &mut [u8]) -> Option<()> {
        let first = at / 3;
        let end = (at + out.len()).div_ceil(3);
        let text = self.0.get(first * 4..end * 4)?;
        // A user name (at most 32 bytes) spans at most 13 groups.
        let mut buf = [0u8; 48];
        for (i, group) in text.chunks_exact(4).enumerate() {
            let mut v = 0u32;
            for &c in group {
                v = (v << 6) | u32::from(sextet(c)?);
            }
            buf.get_mut(i * 3..i * 3 + 3)?
                .copy_from_slice(&v.to_be_bytes()[1..]);
        }
        let skip = at - first * 3;
        out.copy_from_slice(buf.get(skip..skip + out.len())?);
        Some(())
    }
}

/// The 6-bit value of a standard base64 character.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::Fingerprint;
    use chatd_proto::e2e::Envelope;
    use chatd_proto::frame::{self, ServerFrame};
    use chatd_proto::{Wire, WireCodec};
    use tokio_util::bytes::BytesMut;
    use tokio_util::codec::Decoder;

    fn keys() -> Keys {
        Keys::load(2048).unwrap()
    }

    /// The line chatd sends for `data` from `user`.
    fn server_line(user: &str, device: Fingerprint, data: String) -> Vec<u8> {
        let mut line = frame::encode(&ServerFrame::Envelope {
            from: user.into(),
            device,
            data,
            ts: 1_764_327_600_000,
        })
        .unwrap()
        .to_vec();
        assert_eq!(line.pop(), Some(b'\n'));
        line
    }

    fn data_of(send_line: &[u8]) -> String {
        match frame::decode::<ClientFrame>(std::str::from_utf8(send_line).unwrap().trim_end()) {
            Ok(ClientFrame::Send { data }) => data,
            other => panic!("not a send frame: {other:?}"),
        }
    }

    #[test]
    fn sealed_frames_are_in_chain_order_and_read_back() {
        let keys = keys();
        let sealed = seal_all(&keys, 3, 70, 100, WireMode::Json).unwrap();
        assert_eq!(sealed.frames.len(), 3);
        let reader = EnvelopeReader::default();
        for (sender, frames) in sealed.frames.iter().enumerate() {
            assert_eq!(frames.len(), 70);
            for (index, f) in frames.iter().enumerate() {
                assert_eq!(f.last(), Some(&b'\n'));
                let data = data_of(f);
                let env = Envelope::from_base64(&data).unwrap();
                let h = env.header();
                assert_eq!(h.chain_index as usize, index);
                assert_eq!(h.sender_user, control::user_name(sender));
                assert_eq!(h.sender_device, keys.sender(sender).key.fingerprint());
                assert_eq!(h.conversation, ROOM);
                assert_eq!(env.ciphertext().len(), 100 + 16);
                let line = server_line(&h.sender_user, h.sender_device, data);
                assert_eq!(
                    reader.read(&line, 3),
                    Some(Delivered {
                        sender,
                        index: index as u32
                    })
                );
                // Not one of this run's senders.
                assert_eq!(reader.read(&line, sender), None);
            }
        }
        // 2 + 16 + (2 + 6) + 32 + (2 + 6) + 16 + 4 + 8 header ("#lobby"), 4 + 116 ciphertext, 2 + 256.
        assert_eq!(sealed.envelope_bytes, 472.0);
    }

    /// The envelope bytes of a binary `send` frame.
    fn payload_of(send_frame: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::from(send_frame);
        let item = WireCodec::default().decode(&mut buf).unwrap();
        assert!(buf.is_empty(), "one frame");
        match item {
            Some(Ok(Wire::Send(data))) => data.to_vec(),
            other => panic!("not a binary send frame: {other:?}"),
        }
    }

    #[test]
    fn binary_frames_carry_the_same_envelopes_and_read_back() {
        let keys = keys();
        let sealed = seal_all(&keys, 2, 40, 100, WireMode::Binary).unwrap();
        let reader = EnvelopeReader::default();
        for (sender, frames) in sealed.frames.iter().enumerate() {
            assert_eq!(frames.len(), 40);
            for (index, f) in frames.iter().enumerate() {
                let data = payload_of(f);
                // Marker, kind, u32 length: 6 bytes around the envelope.
                assert_eq!(f.len(), data.len() + 6);
                let env = Envelope::decode(&data).unwrap();
                assert_eq!(env.header().chain_index as usize, index);
                assert_eq!(env.header().sender_user, control::user_name(sender));
                let want = Delivered {
                    sender,
                    index: index as u32,
                };
                assert_eq!(reader.read_binary(&data, 2), Some(want));
                assert_eq!(reader.read_binary(&data, sender), None);
            }
        }
        assert_eq!(
            sealed.envelope_bytes, 472.0,
            "the same envelopes as in JSON"
        );
    }

    #[test]
    fn cut_or_odd_binary_envelopes_are_unreadable_not_a_panic() {
        let keys = keys();
        let sealed = seal_all(&keys, 1, 1, 10, WireMode::Binary).unwrap();
        let data = payload_of(&sealed.frames[0][0]);
        let reader = EnvelopeReader::default();
        // The chain index ends the header read: "#lobby", user "bench0".
        let index_end = 2 + 16 + (2 + 6) + 32 + (2 + 6) + 16 + 4;
        for cut in 0..data.len() {
            let got = reader.read_binary(&data[..cut], 1);
            assert_eq!(got.is_some(), cut >= index_end, "cut at {cut}");
        }
        for (at, byte) in [(0, 9), (1, 0x57), (18, 0xff), (20, b'x')] {
            let mut bad = data.clone();
            bad[at] = byte;
            assert_eq!(reader.read_binary(&bad, 1), None, "byte {at} = {byte}");
        }
        assert_eq!(reader.read_binary(&[], 1), None);
    }

    #[test]
    fn one_chain_per_sender_across_units() {
        let sealed = seal_all(&keys(), 1, 2 * SEAL_CHUNK as u64 + 1, 1, WireMode::Json).unwrap();
        let ids: Vec<_> = sealed.frames[0]
            .iter()
            .map(|f| {
                Envelope::from_base64(&data_of(f))
                    .unwrap()
                    .header()
                    .chain_id
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]));
    }

    #[test]
    fn cut_or_odd_lines_are_unreadable_not_a_panic() {
        let keys = keys();
        let sealed = seal_all(&keys, 1, 1, 10, WireMode::Json).unwrap();
        let data = data_of(&sealed.frames[0][0]);
        let line = server_line("bench0", keys.sender(0).key.fingerprint(), data.clone());
        let reader = EnvelopeReader::default();
        assert!(reader.read(&line, 1).is_some());
        let data_end = line.len() - br#"","ts":1764327600000}"#.len();
        for cut in 0..line.len() {
            let got = reader.read(&line[..cut], 1);
            assert_eq!(got.is_some(), cut > data_end, "cut at {cut}");
        }
        // Same line, wrong quote count or garbage in the data.
        let mut bad = line.clone();
        let at = line.len() - 40;
        bad[at] = b'!';
        assert!(reader.read(&bad, 1).is_some(), "the signature is not read");
        let mut bad = line.clone();
        let header = String::from_utf8_lossy(&line).find("\"data\":\"").unwrap() + 8;
        bad[header + 30] = b'!';
        assert_eq!(reader.read(&bad, 1), None);
        for odd in [
            &br#"{"type":"envelope","data":""}"#[..],
            br#"{"type":"envelope","data":"AUU="}"#,
            br#"{"type":"envelope","data":"AVcA"}"#,
            br#"{"type":"envelope","data":"====","ts":1}"#,
            br#"{"type":"envelope"}"#,
            b"",
        ] {
            assert_eq!(reader.read(odd, 1), None);
        }
        // A wrapped chain in the data field is not an envelope.
        let mut chain = line.clone();
        let v = BASE64.decode(&data).unwrap();
        let mut w = v.clone();
        w[1] = 0x57;
        let wd = BASE64.encode(&w);
        chain.splice(header..header + data.len(), wd.bytes());
        assert_eq!(reader.read(&chain, 1), None);
    }

    #[test]
    fn base64_groups_decode_like_the_crate() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let text = BASE64.encode(&bytes);
        let b = B64(text.as_bytes());
        for at in 0..250 {
            for len in [1, 2, 4, 32] {
                let mut out = vec![0; len];
                if at + len <= 255 {
                    b.read(at, &mut out).unwrap();
                    assert_eq!(out, bytes[at..at + len], "at {at} len {len}");
                }
            }
        }
        // The last group is padded: refused rather than misread.
        let mut out = [0u8; 1];
        assert_eq!(b.read(255, &mut out), None);
        assert_eq!(b.read(300, &mut out), None);
    }

    #[test]
    fn login_keys_senders_alternate_receivers_share() {
        let keys = keys();
        assert!(!keys.generated);
        assert_eq!(keys.bits, 2048);
        let k: Vec<_> = (0..5).map(|i| keys.login_key(i, 3)).collect();
        assert_eq!(k[0], k[2]);
        assert_ne!(k[0], k[1]);
        assert_eq!(k[3], k[4]);
        assert_ne!(k[3], k[0]);
        assert_ne!(k[3], k[1]);
        let der = BASE64.decode(k[3].as_bytes()).unwrap();
        assert_eq!(Fingerprint::of(&der), keys.receiver.key.fingerprint());
    }
}
