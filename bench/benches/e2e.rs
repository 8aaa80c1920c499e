//! What end-to-end encryption costs a client, with the product's default key size (RSA-3072):
//!
//! - sender, per message, with 1, 10 and 100 recipient devices once the chain is distributed:
//!   one `seal` (the same envelope goes to every device, so N should not matter);
//! - sender, per membership change or rotation in an N-member room: a fresh chain wrapped to
//!   N devices (N x `wrap_chain`, each an RSA-OAEP encryption and an RSA-PSS signature);
//! - receiver: `open` per message, `unwrap_chain` per chain (both from base64, as received);
//! - key generation for 2048, 3072 and 4096 bits;
//!
//! and, printed before the timings, the wire sizes per key size (JSON lines and, for envelopes,
//! binary frames).
//!
//! ```sh
//! cargo bench -p chat-bench --bench e2e
//! ```
//!
//! Every recipient device uses the same public key: an OAEP encryption costs the same under any
//! key of one size, and generating 100 RSA-3072 keys would take minutes.
// Keys and inputs are made here; a failure is a broken benchmark, not input to recover from.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatd_proto::codec::{binary_envelope, binary_send};
use chatd_proto::e2e::{
    ALLOWED_KEY_BITS, DEFAULT_KEY_BITS, DeviceKey, Envelope, ReceiverChain, SenderChain,
    WrappedChain, open, seal, unwrap_chain, wrap_chain,
};
use chatd_proto::frame::{self, ClientFrame, ServerFrame};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode};

/// Plaintext size of the measured messages.
const TEXT_BYTES: usize = 100;
/// Room sizes, in recipient devices.
const DEVICES: [usize; 3] = [1, 10, 100];
/// Sender user and conversation of every envelope.
const USER: &str = "alice";
const CONVERSATION: &str = "all";
/// Timestamp window a receiver accepts (the chat client's default order of magnitude).
const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

fn text() -> String {
    "x".repeat(TEXT_BYTES)
}

/// A client's `send`/`chain` line carrying `data`, as it writes it (newline included).
fn line_len(frame: &ClientFrame) -> usize {
    frame::encode(frame).expect("frame serializes").len()
}

/// Envelope and wrapped-chain sizes for one key size (sender and recipient keys of that size).
fn print_wire_sizes(key: &DeviceKey) {
    let mut chain = SenderChain::new().expect("chain");
    let wrapped = wrap_chain(&chain, key, USER, CONVERSATION, &key.public()).expect("wrap");
    let envelope = seal(key, USER, CONVERSATION, &mut chain, &text(), now_ms()).expect("seal");
    let (env, env64) = (
        envelope.encode().expect("encode"),
        envelope.to_base64().expect("b64"),
    );
    let (wr, wr64) = (
        wrapped.encode().expect("encode"),
        wrapped.to_base64().expect("b64"),
    );
    // What each receiver gets: the server names the sender and its device next to the data.
    let delivered = ServerFrame::Envelope {
        from: USER.into(),
        device: key.fingerprint(),
        data: env64.clone(),
        ts: now_ms(),
    };
    println!(
        "RSA-{}: envelope {} bytes (base64 {}, send line {}); wrapped chain {} bytes (base64 {}, chain line {})",
        key.bits(),
        env.len(),
        env64.len(),
        line_len(&ClientFrame::Send { data: env64 }),
        wr.len(),
        wr64.len(),
        line_len(&ClientFrame::Chain { data: wr64 }),
    );
    println!(
        "          binary send frame {}; delivered as an envelope line of {} or a binary envelope frame of {}",
        binary_send(&env).len(),
        frame::encode(&delivered).expect("frame serializes").len(),
        binary_envelope(now_ms(), &env).len(),
    );
}

/// The sender's steady state and its membership-change cost.
fn sender(c: &mut Criterion, key: &DeviceKey, recipient: &DeviceKey) {
    let text = text();
    let recipient = recipient.public();
    let mut g = c.benchmark_group(format!("sender RSA-{}", key.bits()));
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in DEVICES {
        // The envelope is the same bytes for every device: N only says who receives it.
        let mut chain = SenderChain::new().expect("chain");
        g.bench_with_input(BenchmarkId::new("seal per message", n), &n, |b, _| {
            b.iter(|| {
                let env = seal(key, USER, CONVERSATION, &mut chain, &text, now_ms()).expect("seal");
                black_box(env.to_base64().expect("b64"))
            });
        });
    }
    // 100 wraps take ~0.5 s: ten flat samples of one iteration each need ~5 s.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(6));
    for n in DEVICES {
        g.bench_with_input(
            BenchmarkId::new("new chain to N devices", n),
            &n,
            |b, &n| {
                b.iter(|| {
                    let chain = SenderChain::new().expect("chain");
                    for _ in 0..n {
                        let w =
                            wrap_chain(&chain, key, USER, CONVERSATION, &recipient).expect("wrap");
                        black_box(w.to_base64().expect("b64"));
                    }
                });
            },
        );
    }
    g.finish();
}

/// What a receiving device pays per message and per chain.
fn receiver(c: &mut Criterion, key: &DeviceKey, me: &DeviceKey) {
    let sender_public = key.public();
    let mut chain = SenderChain::new().expect("chain");
    let snapshot = chain.snapshot();
    let envelope = seal(key, USER, CONVERSATION, &mut chain, &text(), now_ms())
        .expect("seal")
        .to_base64()
        .expect("b64");
    let wrapped = wrap_chain(&chain, key, USER, CONVERSATION, &me.public())
        .expect("wrap")
        .to_base64()
        .expect("b64");
    let mut g = c.benchmark_group(format!("receiver RSA-{}", key.bits()));
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("open per message", |b| {
        // A fresh receiver chain per iteration: the same envelope twice is a replay.
        b.iter_batched(
            || {
                ReceiverChain::new(
                    USER.into(),
                    key.fingerprint(),
                    CONVERSATION.into(),
                    &snapshot,
                )
            },
            |mut rx| {
                let env = Envelope::from_base64(&envelope).expect("decode");
                black_box(open(&env, &sender_public, &mut rx, now_ms(), MAX_SKEW_MS).expect("open"))
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("unwrap_chain per chain", |b| {
        b.iter(|| {
            let w = WrappedChain::from_base64(&wrapped).expect("decode");
            black_box(unwrap_chain(&w, &sender_public, me).expect("unwrap"))
        });
    });
    g.finish();
}

/// Key generation: slow and very variable (a random prime search), so few flat samples.
fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        // A 4096-bit key takes 0.3-1 s, so ten of them need up to ~10 s.
        .measurement_time(Duration::from_secs(10));
    for bits in ALLOWED_KEY_BITS {
        g.bench_with_input(BenchmarkId::from_parameter(bits), &bits, |b, &bits| {
            b.iter(|| black_box(DeviceKey::generate(bits).expect("keygen")));
        });
    }
    g.finish();
}

fn main() {
    // Outside every timed loop: one key per size for the sizes, two of the default size
    // (sender and recipient device) for the timings.
    let keys: Vec<DeviceKey> = ALLOWED_KEY_BITS
        .iter()
        .map(|bits| DeviceKey::generate(*bits).expect("keygen"))
        .collect();
    println!("wire sizes, {TEXT_BYTES}-byte text, user {USER:?}, conversation {CONVERSATION:?}:");
    for key in &keys {
        print_wire_sizes(key);
    }
    let sender_key = keys
        .iter()
        .find(|k| k.bits() == DEFAULT_KEY_BITS)
        .expect("the default size is allowed");
    let recipient_key = DeviceKey::generate(DEFAULT_KEY_BITS).expect("keygen");

    let mut c = Criterion::default().configure_from_args();
    sender(&mut c, sender_key, &recipient_key);
    receiver(&mut c, sender_key, &recipient_key);
    keygen(&mut c);
    c.final_summary();
}
