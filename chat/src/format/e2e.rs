//! The end-to-end layer's notices, warnings and refusals in words.
//!
//! [`crate::secure`] reports what happened as typed values carrying the names as they came;
//! every name is sanitized here, on its way to the screen.

use chatd_proto::e2e::E2eError;

use crate::peers::KeyStatus;
use crate::secure::{NotSent, Notice, Refusal, Warning};
use crate::text::{escape, sanitize};

/// A notice's words (the line without its `-- `).
pub fn notice(n: &Notice) -> String {
    match n {
        Notice::Pinned { user, fingerprint } => {
            let user_s = sanitize(user);
            format!(
                "pinned {user_s}'s device key {fingerprint} (first seen; compare it with /verify {user_s})"
            )
        }
        Notice::OwnKey {
            me,
            fingerprint,
            bits,
        } => format!(
            "your device key: {fingerprint} (RSA {bits} bits); read it to your peers so they can /verify {}",
            sanitize(me)
        ),
        Notice::NonePinned { user } => {
            format!("no device key of {} is pinned yet", sanitize(user))
        }
        Notice::KeysOf { user } => {
            let user_s = sanitize(user);
            format!(
                "device keys of {user_s} (compare with what {user_s}'s /fingerprint shows, then /verify {user_s} FINGERPRINT):"
            )
        }
        Notice::Key {
            fingerprint,
            status,
            online,
        } => {
            let online = if *online { ", online" } else { "" };
            let status = match status {
                KeyStatus::Verified => "verified",
                KeyStatus::Trusted => "trusted on first use, not verified",
                KeyStatus::Pending => "NOT ACCEPTED",
            };
            format!("  {fingerprint} ({status}{online})")
        }
        Notice::Verified { user, fingerprint } => {
            format!(
                "{}'s device key {fingerprint} is now verified",
                sanitize(user)
            )
        }
        Notice::NonePending { user } => {
            format!(
                "{} has no device key waiting to be accepted",
                sanitize(user)
            )
        }
        Notice::Accepted { user, fingerprint } => {
            format!("accepted {}'s device key {fingerprint}", sanitize(user))
        }
        Notice::Switched { room } => format!("now talking in #{}", sanitize(room)),
        Notice::Joined { room, default_room } => format!(
            "now talking in #{} (plain text goes there; /join {} switches back)",
            sanitize(room),
            sanitize(default_room)
        ),
        Notice::JoinWaiting { room } => format!(
            "waiting for the answer to /join #{}: what you type now goes there once joined",
            sanitize(room)
        ),
    }
}

/// A warning's words (the line without its `!! `).
pub fn warning(w: &Warning) -> String {
    match w {
        Warning::KeyMismatch { user, fingerprint } => format!(
            "the server announced a device key for {} that does not match its fingerprint {fingerprint}; ignored",
            sanitize(user)
        ),
        Warning::StillPending { user, fingerprint } => {
            let user_s = sanitize(user);
            format!(
                "{user_s}'s device key {fingerprint} is still not accepted: nothing is encrypted to it \
                 or shown from it. Compare it with /verify {user_s}, then /trust {user_s}"
            )
        }
        Warning::NewKey { user, fingerprint } => {
            let user_s = sanitize(user);
            format!(
                "{user_s} has a NEW device key {fingerprint}. Nothing is encrypted to it or shown from it \
                 until you accept it: compare it with /verify {user_s}, then /trust {user_s}"
            )
        }
        Warning::PinsNotSaved { error } => {
            format!("cannot save the pinned keys: {}", sanitize(error))
        }
        Warning::NotEncryptedTo { user, fingerprint } => format!(
            "not encrypted to {}'s unaccepted device key {fingerprint} (/verify {0}, /trust {0})",
            sanitize(user)
        ),
        Warning::KeyRejected { from, why } => {
            let from_s = sanitize(from);
            format!("rejected a key from {from_s}: {}", refusal(why, &from_s))
        }
        Warning::Unreadable { from, error } => {
            let from = match from {
                Some(user) => format!(" from {}", sanitize(user)),
                None => String::new(),
            };
            let error = sanitize(&error.to_string());
            format!("dropped a message{from}: it cannot be read ({error})")
        }
        Warning::Dropped { from, why } => {
            let from_s = sanitize(from);
            format!("dropped a message from {from_s}: {}", refusal(why, &from_s))
        }
        Warning::NotAFingerprint => {
            "a fingerprint is written SHA256: followed by 64 hex digits".to_string()
        }
        Warning::NoSuchKey { user, fingerprint } => {
            let user_s = sanitize(user);
            format!(
                "{user_s} has no device key {fingerprint}: it does NOT match any key the server showed for {user_s}"
            )
        }
        Warning::BadName { frame, name } => format!(
            "ignored a {frame} frame from the server: it names \"{}\", which no user or room can be called \
             (an invisible or look-alike character?)",
            escape(name)
        ),
        Warning::RosterNotAsked { room } => format!(
            "ignored a member list that puts you in or out of #{} without your /join or /part",
            sanitize(room)
        ),
        Warning::UnannouncedMembers { room, users } => {
            let users: Vec<String> = users.iter().map(|u| sanitize(u)).collect();
            format!(
                "the server lists {} in #{} without announcing a join: not added, nothing is encrypted to them",
                users.join(", "),
                sanitize(room)
            )
        }
        Warning::JoinRefused { room, dropped } => {
            let lines = if *dropped == 1 { "line" } else { "lines" };
            format!(
                "not in #{}: {dropped} {lines} typed after /join not sent",
                sanitize(room)
            )
        }
    }
}

/// Why a chain or envelope from `from_s` (sanitized) was refused.
fn refusal(r: &Refusal, from_s: &str) -> String {
    match r {
        Refusal::Unreadable(e) => format!("it cannot be read ({})", sanitize(&e.to_string())),
        Refusal::SignedAs { signer } => format!(
            "it is signed as {} but the server says it is from {from_s}",
            sanitize(signer)
        ),
        Refusal::ChainNotForUs { conversation } => format!(
            "it is for conversation {:?}, which does not include you",
            sanitize(conversation)
        ),
        Refusal::NotForUs { conversation } => format!(
            "it was sent to {:?}, which does not include you",
            sanitize(conversation)
        ),
        Refusal::Unaccepted { user, device } => format!(
            "it comes from the unaccepted device key {device} (/verify {0}, /trust {0})",
            sanitize(user)
        ),
        Refusal::Unannounced { device } => {
            format!("its device key {device} is not one the server announced for them")
        }
        Refusal::NotSentHere => {
            "it claims to be from this device, which did not send it (a replay?)".to_string()
        }
        Refusal::NoChain => "this device has no key for it (not encrypted to this device, or replayed from an earlier session)"
            .to_string(),
        Refusal::Check { error, max_skew_ms } => why(error, *max_skew_ms),
        Refusal::NotAMessage => "its content is not a message this client understands".to_string(),
    }
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
        other => format!("it cannot be read ({})", sanitize(&other.to_string())),
    }
}

/// Why [`crate::secure::Secure::seal`] sent nothing, for the user.
pub fn not_sent(e: &NotSent) -> String {
    match e {
        NotSent::Body(e) => format!("cannot encode: {e}"),
        NotSent::TooLong { bytes, max } => format!(
            "message not sent: it is {bytes} bytes encoded, the server accepts at most {max}"
        ),
        NotSent::NotInRoom { room } => {
            format!("message not sent: you are not in #{}", sanitize(room))
        }
        NotSent::NoAcceptedKey { user } => format!(
            "message not sent: {} has no accepted device key (/verify {0})",
            sanitize(user)
        ),
        NotSent::NoKey { user } => format!(
            "message not sent: {} has no device key (no such user, or never logged in)",
            sanitize(user)
        ),
        NotSent::Chain(e) => format!("cannot start a chain: {e}"),
        NotSent::NoChain => "internal error: no sending chain".to_string(),
        NotSent::Wrap { user, error } => {
            let error = sanitize(&error.to_string());
            format!("cannot wrap a key for {}: {error}", sanitize(user))
        }
        NotSent::Seal(e) => format!("cannot seal: {e}"),
        NotSent::Encode(e) => format!("cannot encode: {e}"),
    }
}

#[cfg(test)]
mod tests {
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
                Notice::Pinned {
                    user: bob(),
                    fingerprint: fp,
                },
                format!("pinned bob's device key {fp} (first seen; compare it with /verify bob)"),
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
                Warning::StillPending {
                    user: bob(),
                    fingerprint: fp,
                },
                format!(
                    "bob's device key {fp} is still not accepted: nothing is encrypted to it or shown from it. Compare it with /verify bob, then /trust bob"
                ),
            ),
            (
                Warning::NewKey {
                    user: bob(),
                    fingerprint: fp,
                },
                format!(
                    "bob has a NEW device key {fp}. Nothing is encrypted to it or shown from it until you accept it: compare it with /verify bob, then /trust bob"
                ),
            ),
            (
                Warning::PinsNotSaved {
                    error: "writing peers.json: disk full".into(),
                },
                "cannot save the pinned keys: writing peers.json: disk full".into(),
            ),
            (
                Warning::NotEncryptedTo {
                    user: bob(),
                    fingerprint: fp,
                },
                format!(
                    "not encrypted to bob's unaccepted device key {fp} (/verify bob, /trust bob)"
                ),
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
                "a fingerprint is written SHA256: followed by 64 hex digits".into(),
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
}
