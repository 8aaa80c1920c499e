//! The end-to-end decoders chatd runs on client bytes: `Envelope`, `WrappedChain` and `Vouch`
//! (binary and base64, as in `send`/`chain`/`vouch` frames), the conversation name in an envelope header, and the
//! device public key of a `login` (base64 SPKI DER, and PEM as the client stores it), and the
//! textual key fingerprint; and `chat`'s saved receiver chains (`ReceiverChain::import`).
//! Every input is tried with every decoder. Properties: no panic; the binary encodings are
//! canonical (encode(decode(b)) == b, base64 likewise); a parsed key re-parses to itself.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{ALLOWED_KEY_BITS, DevicePublicKey, Envelope, ReceiverChain, Vouch, WrappedChain};
use libfuzzer_sys::fuzz_target;

fn check_envelope(env: &Envelope) {
    // chatd routes by this name; a name it accepts must be the canonical spelling.
    let conv = &env.header().conversation;
    if let Ok(parsed) = Conversation::parse(conv) {
        assert_eq!(&parsed.name(), conv, "conversation not canonical");
    }
}

fn check_key(key: &DevicePublicKey) {
    assert!(
        ALLOWED_KEY_BITS.contains(&key.bits()),
        "{} bits",
        key.bits()
    );
    assert_eq!(key.fingerprint(), Fingerprint::of(key.to_spki_der()));
    match DevicePublicKey::from_spki_der(key.to_spki_der()) {
        Ok(again) => assert_eq!(&again, key, "SPKI DER does not round-trip"),
        Err(e) => panic!("re-parsing our own SPKI DER failed: {e}"),
    }
    match key
        .to_spki_pem()
        .map(|pem| DevicePublicKey::from_spki_pem(&pem))
    {
        Ok(Ok(again)) => assert_eq!(&again, key, "SPKI PEM does not round-trip"),
        other => panic!("SPKI PEM round trip failed: {other:?}"),
    }
}

fn binary(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(
            env.encode().ok().as_deref(),
            Some(data),
            "envelope not canonical"
        );
        check_envelope(&env);
    }
    if let Ok(chain) = WrappedChain::decode(data) {
        assert_eq!(
            chain.encode().ok().as_deref(),
            Some(data),
            "wrapped chain not canonical"
        );
    }
    if let Ok(chain) = ReceiverChain::import(data) {
        assert_eq!(
            chain.export().ok().as_deref().map(Vec::as_slice),
            Some(data),
            "receiver chain state not canonical"
        );
    }
    if let Ok(vouch) = Vouch::decode(data) {
        assert_eq!(
            vouch.encode().ok().as_deref(),
            Some(data),
            "vouch not canonical"
        );
    }
    if let Ok(key) = DevicePublicKey::from_spki_der(data) {
        check_key(&key);
    }
}

/// The `SHA256:<hex>` form accepted from people (pins, `--accept-fingerprint`, `key_revoke`):
/// whatever parses must be 64 hex digits, upper or lower case, with optional colons.
fn check_fingerprint(text: &str) {
    if let Ok(fp) = text.parse::<Fingerprint>() {
        let digits: String = text
            .trim()
            .strip_prefix("SHA256:")
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let canonical = fp.to_string();
        assert_eq!(
            digits.to_ascii_lowercase(),
            canonical["SHA256:".len()..],
            "{text:?} parsed as {canonical}"
        );
    }
}

fn text(text: &str) {
    check_fingerprint(text);
    if let Ok(env) = Envelope::from_base64(text) {
        assert_eq!(
            env.to_base64().ok().as_deref(),
            Some(text.trim()),
            "base64 not canonical"
        );
        check_envelope(&env);
    }
    if let Ok(chain) = WrappedChain::from_base64(text) {
        assert_eq!(
            chain.to_base64().ok().as_deref(),
            Some(text.trim()),
            "base64 not canonical"
        );
    }
    if let Ok(vouch) = Vouch::from_base64(text) {
        assert_eq!(
            vouch.to_base64().ok().as_deref(),
            Some(text.trim()),
            "base64 not canonical"
        );
    }
    // chatd's parse of a login's device_key (session/login.rs, parse_device_key).
    if let Ok(der) = BASE64.decode(text.trim()) {
        binary(&der);
    }
    if let Ok(key) = DevicePublicKey::from_spki_pem(text) {
        check_key(&key);
    }
}

fuzz_target!(|data: &[u8]| {
    binary(data);
    if let Ok(s) = std::str::from_utf8(data) {
        text(s);
    }
});
