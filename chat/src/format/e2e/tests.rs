//! Tests of the end-to-end wording: every event rendered, names and error text sanitized.

use super::*;
use chatd_proto::Fingerprint;

fn fp() -> Fingerprint {
    Fingerprint::from_bytes([0xab; 32])
}

fn bob() -> String {
    "bob".into()
}

#[test]
fn notices() {
    let fp = fp();
    let cases = [
        (
            Notice::NewUser {
                user: bob(),
                fingerprints: vec![fp],
                room: "lobby".into(),
            },
            format!(
                "pinned bob's device key {fp} (first seen; compare it with /verify bob): bob is new here, and #lobby is now also encrypted to them"
            ),
        ),
        (
            Notice::NewUser {
                user: bob(),
                fingerprints: vec![fp, fp],
                room: "lobby".into(),
            },
            format!(
                "pinned bob's device keys {fp}, {fp} (first seen; compare them with /verify bob): bob is new here, and #lobby is now also encrypted to them"
            ),
        ),
        (
            Notice::KeyVouched {
                user: bob(),
                fingerprint: fp,
                by: fp,
            },
            format!("bob's new device key {fp} was approved by bob's device {fp}"),
        ),
        (
            Notice::NotApproved {
                code: "0123456789abcdef-ABCDEFGHJK".into(),
            },
            "this device is not approved yet: on one of your other devices type /devices approve 0123456789abcdef-ABCDEFGHJK (or run chat --approve-device 0123456789abcdef-ABCDEFGHJK)".into(),
        ),
        (
            Notice::Approved { by: fp },
            format!("this device was approved by your device {fp}"),
        ),
        (
            Notice::OwnDevice {
                fingerprint: fp,
                status: KeyStatus::Pending,
                online: true,
                this: false,
            },
            format!("  {fp} (NOT APPROVED (/devices approve or /devices revoke), online)"),
        ),
        (
            Notice::OwnDevice {
                fingerprint: fp,
                status: KeyStatus::Verified,
                online: true,
                this: true,
            },
            format!("  {fp} (approved) <- this device"),
        ),
        (
            Notice::OwnKey {
                me: "alice".into(),
                fingerprint: fp,
                bits: 2048,
            },
            format!(
                "your device key: {fp} (RSA 2048 bits); read it to your peers so they can /verify alice"
            ),
        ),
        (
            Notice::NonePinned { user: bob() },
            "no device key of bob is pinned yet".into(),
        ),
        (
            Notice::KeysOf { user: bob() },
            "device keys of bob (compare with what bob's /fingerprint shows, then /verify bob FINGERPRINT):".into(),
        ),
        (
            Notice::Key {
                fingerprint: fp,
                status: KeyStatus::Trusted,
                online: true,
            },
            format!("  {fp} (trusted on first use, not verified, online)"),
        ),
        (
            Notice::Key {
                fingerprint: fp,
                status: KeyStatus::Verified,
                online: false,
            },
            format!("  {fp} (verified)"),
        ),
        (
            Notice::Key {
                fingerprint: fp,
                status: KeyStatus::Pending,
                online: false,
            },
            format!("  {fp} (NOT ACCEPTED)"),
        ),
        (
            Notice::Verified {
                user: bob(),
                fingerprint: fp,
            },
            format!("bob's device key {fp} is now verified"),
        ),
        (
            Notice::NonePending { user: bob() },
            "bob has no device key waiting to be accepted".into(),
        ),
        (
            Notice::Accepted {
                user: bob(),
                fingerprint: fp,
            },
            format!("accepted bob's device key {fp}"),
        ),
        (
            Notice::Switched { room: "dev".into() },
            "now talking in #dev".into(),
        ),
        (
            Notice::Joined {
                room: "dev".into(),
                default_room: "lobby".into(),
            },
            "now talking in #dev (plain text goes there; /join lobby switches back)".into(),
        ),
    ];
    for (n, text) in cases {
        assert_eq!(notice(&n), text);
    }
}

#[test]
fn warnings() {
    let fp = fp();
    let cases = [
        (
            Warning::KeyMismatch {
                user: bob(),
                fingerprint: fp,
            },
            format!(
                "the server announced a device key for bob that does not match its fingerprint {fp}; ignored"
            ),
        ),
        (
            Warning::PendingKey {
                user: bob(),
                fingerprint: fp,
            },
            format!(
                "bob has a NEW device key {fp} that none of bob's devices you trust approved. Nothing is encrypted to it, and what it sends is held unread until you accept it: compare it with /verify bob, then /trust bob"
            ),
        ),
        (
            Warning::UnapprovedOwnDevice { fingerprint: fp },
            format!(
                "a device that none of your devices approved logged in to your account: {fp}. Nothing is encrypted to it. If it is yours, /devices approve {fp}; if not, change your password and /devices revoke {fp}"
            ),
        ),
        (
            Warning::VouchRefused {
                user: bob(),
                why: VouchRefusal::WrongCode,
            },
            "refused a device approval for bob: it carries a code that is not the one this device shows".into(),
        ),
        (
            Warning::PinsNotSaved {
                error: "writing peers.json: disk full".into(),
            },
            "cannot save the pinned keys: writing peers.json: disk full".into(),
        ),
        (
            Warning::Unreadable {
                from: None,
                error: E2eError::Malformed("version"),
            },
            "dropped a message: it cannot be read (malformed e2e data: version)".into(),
        ),
        (
            Warning::Unreadable {
                from: Some("alice".into()),
                error: E2eError::Malformed("base64"),
            },
            "dropped a message from alice: it cannot be read (malformed e2e data: base64)"
                .into(),
        ),
        (
            Warning::NotAFingerprint,
            "a fingerprint is written SHA256: followed by 64 hex digits (at least the first 16 will do)".into(),
        ),
        (
            Warning::NoSuchKey {
                user: bob(),
                fingerprint: fp,
            },
            format!(
                "bob has no device key {fp}: it does NOT match any key the server showed for bob"
            ),
        ),
    ];
    for (w, text) in cases {
        assert_eq!(warning(&w), text);
    }
}

#[test]
fn refusals_of_chains_and_envelopes() {
    let fp = fp();
    let check = |error| Refusal::Check {
        error,
        max_skew_ms: 90_500,
    };
    let cases = [
        (
            Refusal::Unreadable(E2eError::Malformed("base64")),
            "it cannot be read (malformed e2e data: base64)".to_string(),
        ),
        (
            Refusal::SignedAs {
                signer: "alice".into(),
            },
            "it is signed as alice but the server says it is from carol".into(),
        ),
        (
            Refusal::ChainNotForUs {
                conversation: "@alice,bob".into(),
            },
            "it is for conversation \"@alice,bob\", which does not include you".into(),
        ),
        (
            Refusal::NotForUs {
                conversation: "@alice,bob".into(),
            },
            "it was sent to \"@alice,bob\", which does not include you".into(),
        ),
        (
            Refusal::Unaccepted {
                user: "carol".into(),
                device: fp,
            },
            format!("it comes from the unaccepted device key {fp} (/verify carol, /trust carol)"),
        ),
        (
            Refusal::Unannounced { device: fp },
            format!("its device key {fp} is not one the server announced for them"),
        ),
        (
            Refusal::NotSentHere,
            "it claims to be from this device, which did not send it (a replay?)".into(),
        ),
        (
            Refusal::NoChain,
            "this device has no key for it (not encrypted to this device, or replayed from an earlier session)".into(),
        ),
        (
            Refusal::NotAMessage,
            "its content is not a message this client understands".into(),
        ),
        (
            check(E2eError::BadSignature),
            "its signature does not verify (forged or altered)".into(),
        ),
        (
            check(E2eError::WrongSender),
            "it is signed by a different device than it claims".into(),
        ),
        (
            check(E2eError::WrongRecipient),
            "it is addressed to another device".into(),
        ),
        (
            check(E2eError::UnknownChain),
            "it does not belong to the key it claims".into(),
        ),
        (
            check(E2eError::StaleTimestamp),
            "its timestamp is more than 90 s away from this computer's clock".into(),
        ),
        (
            check(E2eError::Replay),
            "it is a replay of a message already shown".into(),
        ),
        (
            check(E2eError::TooFarAhead {
                index: 9,
                next: 1,
                max_skip: 2,
            }),
            "it skips too far ahead in its chain".into(),
        ),
        (
            check(E2eError::Decrypt),
            "it does not decrypt (altered in transit)".into(),
        ),
        (
            check(E2eError::Unwrap),
            "it cannot be read (chain key unwrap failed)".into(),
        ),
    ];
    for (why, text) in cases {
        let dropped = Warning::Dropped {
            from: "carol".into(),
            why: why.clone(),
        };
        assert_eq!(
            warning(&dropped),
            format!("dropped a message from carol: {text}")
        );
        let rejected = Warning::KeyRejected {
            from: "carol".into(),
            why,
        };
        assert_eq!(
            warning(&rejected),
            format!("rejected a key from carol: {text}")
        );
    }
}

#[test]
fn refusals_to_send() {
    let cases = [
        (
            NotSent::Body("key must be a string".into()),
            "cannot encode: key must be a string",
        ),
        (
            NotSent::TooLong {
                bytes: 5000,
                max: 4096,
            },
            "message not sent: it is 5000 bytes encoded, the server accepts at most 4096",
        ),
        (
            NotSent::NotInRoom { room: "dev".into() },
            "message not sent: you are not in #dev",
        ),
        (
            NotSent::NoAcceptedKey { user: bob() },
            "message not sent: bob has no accepted device key (/verify bob)",
        ),
        (
            NotSent::NoKey { user: bob() },
            "message not sent: bob has no device key (no such user, or never logged in)",
        ),
        (
            NotSent::Chain(E2eError::Random),
            "cannot start a chain: random number generator failed",
        ),
        (NotSent::NoChain, "internal error: no sending chain"),
        (
            NotSent::Wrap {
                user: bob(),
                error: E2eError::Rsa("bad".into()),
            },
            "cannot wrap a key for bob: rsa: bad",
        ),
        (
            NotSent::Seal(E2eError::ChainExhausted),
            "cannot seal: sender chain exhausted; rotate it",
        ),
        (
            NotSent::Encode(E2eError::TooLong("user")),
            "cannot encode: field too long: user",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(not_sent(&e), text);
    }
}

#[test]
fn names_from_the_network_are_sanitized() {
    let evil = "b\u{1b}[2Jo\nb".to_string();
    assert_eq!(
        notice(&Notice::NonePending { user: evil.clone() }),
        "b\u{fffd}[2Jo\u{fffd}b has no device key waiting to be accepted"
    );
    let w = Warning::Dropped {
        from: evil.clone(),
        why: Refusal::SignedAs {
            signer: "\u{202e}alice".into(),
        },
    };
    assert_eq!(
        warning(&w),
        "dropped a message from b\u{fffd}[2Jo\u{fffd}b: it is signed as \u{fffd}alice but the server says it is from b\u{fffd}[2Jo\u{fffd}b"
    );
    assert_eq!(
        not_sent(&NotSent::NoKey { user: evil }),
        "message not sent: b\u{fffd}[2Jo\u{fffd}b has no device key (no such user, or never logged in)"
    );
}

#[test]
fn replay_loss_and_time_in_words() {
    let missing = |conversation: &str, count| Warning::Missing {
        from: "b\x1b[2Jb".into(),
        conversation: conversation.into(),
        count,
    };
    assert_eq!(
        warning(&missing("#ops", 1)),
        "1 message from b\u{fffd}[2Jb in #ops is missing (a later one arrived first)"
    );
    assert_eq!(
        warning(&missing("alice,bob", 3)),
        "3 messages from b\u{fffd}[2Jb (whispers) are missing (a later one arrived first)"
    );
    assert_eq!(
        warning(&missing("all", 2)),
        "2 messages from b\u{fffd}[2Jb are missing (a later one arrived first)"
    );
    assert!(
        warning(&Warning::ChainConflict { from: bob() })
            .starts_with("ignored a chain from bob that reuses the id")
    );
    let w = warning(&Warning::StateNotSaved {
        error: "cannot write \n/x".into(),
    });
    assert!(!w.contains('\n'), "{w}");
    assert_eq!(
        notice(&Notice::AlreadyShown { count: 2 }),
        "skipped 2 messages delivered again by the server: already shown here before"
    );
    let mut m = ChatMessage {
        from: bob(),
        to: None,
        room: None,
        text: "hi".into(),
        action: false,
        ts: 1_764_300_000_000,
        verified: false,
        late: false,
        server_ts: None,
    };
    assert_eq!(message_marks(&m), "");
    m.late = true;
    assert_eq!(message_marks(&m), " (late)");
    m.server_ts = Some(1_764_300_000_000 - 19 * 3600 * 1000);
    let marks = message_marks(&m);
    assert!(
        marks.starts_with(" (late) (sent 2025-11-")
            && marks.contains(", the server says 2025-11-2"),
        "{marks}"
    );
}
