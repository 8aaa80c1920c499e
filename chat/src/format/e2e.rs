//! The end-to-end layer's notices, warnings and refusals in words.
//!
//! [`crate::secure`] reports what happened as typed values carrying the names as they came;
//! every name is sanitized here, on its way to the screen.

use chatd_proto::e2e::E2eError;

use chatd_proto::conversation::Conversation;

use crate::peers::KeyStatus;
use crate::secure::{ChatMessage, NotSent, Notice, Refusal, VouchRefusal, Warning};
use crate::text::{escape, sanitize};

/// What follows a message's text: ` (late)` when it came after a later one of its chain, and
/// both times when the signed one and the server's disagree beyond the allowed skew.
pub(super) fn message_marks(m: &ChatMessage) -> String {
    let mut out = String::new();
    if m.late {
        out.push_str(" (late)");
    }
    if let Some(server) = m.server_ts {
        out.push_str(&format!(
            " (sent {}, the server says {})",
            super::local_date_stamp(Some(m.ts)),
            super::local_date_stamp(Some(server))
        ));
    }
    out
}

fn messages(count: u32) -> String {
    if count == 1 {
        "1 message".to_string()
    } else {
        format!("{count} messages")
    }
}

/// A notice's words (the line without its `-- `).
pub fn notice(n: &Notice) -> String {
    match n {
        Notice::NewUser {
            user,
            fingerprints,
            room,
        } => {
            let user_s = sanitize(user);
            let keys: Vec<String> = fingerprints.iter().map(ToString::to_string).collect();
            let (noun, verb) = if keys.len() == 1 {
                ("key", "it")
            } else {
                ("keys", "them")
            };
            format!(
                "pinned {user_s}'s device {noun} {} (first seen; compare {verb} with /verify {user_s}): {user_s} is new here, and #{} is now also encrypted to them",
                keys.join(", "),
                sanitize(room)
            )
        }
        Notice::KeyVouched {
            user,
            fingerprint,
            by,
        } => {
            let user_s = sanitize(user);
            format!(
                "{user_s}'s new device key {fingerprint} was approved by {user_s}'s device {by}"
            )
        }
        Notice::NotApproved { code } => format!(
            "this device is not approved yet: on one of your other devices type /devices approve {code} (or run chat --approve-device {code})"
        ),
        Notice::Approved { by } => {
            format!("this device was approved by your device {by}")
        }
        Notice::DeviceApproved { fingerprint } => format!(
            "approved your device {fingerprint}: it is used from now on, and your other devices and contacts are told"
        ),
        Notice::RevokeAsked { fingerprint } => {
            format!("asking the server to revoke your device key {fingerprint}")
        }
        Notice::DevicesOf { me } => format!("device keys of your account {}:", sanitize(me)),
        Notice::OwnDevice {
            fingerprint,
            status,
            online,
            this,
        } => {
            let this = if *this { " <- this device" } else { "" };
            let online = if *online && this.is_empty() {
                ", online"
            } else {
                ""
            };
            let status = match status {
                KeyStatus::Verified | KeyStatus::Trusted | KeyStatus::Vouched => "approved",
                KeyStatus::Pending => "NOT APPROVED (/devices approve or /devices revoke)",
                KeyStatus::Revoked => "revoked",
            };
            format!("  {fingerprint} ({status}{online}){this}")
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
                KeyStatus::Vouched => "approved by another of their devices",
                KeyStatus::Pending => "NOT ACCEPTED",
                KeyStatus::Revoked => "REVOKED",
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
        Notice::KeyGivenAgain {
            user,
            fingerprint,
            conversation,
        } => format!(
            "{}'s device {fingerprint} could not open your messages in {}; it was sent your key again",
            sanitize(user),
            sanitize(conversation)
        ),
        Notice::KeyGone {
            user,
            fingerprint,
            conversation,
        } => format!(
            "{}'s device {fingerprint} could not open a message you sent in {} before this client restarted; it cannot be sent again",
            sanitize(user),
            sanitize(conversation)
        ),
        Notice::AskedForKey {
            user,
            fingerprint,
            conversation,
        } => format!(
            "a message from {} in {} came without its key; asked {}'s device {fingerprint} for it (it is shown when the key comes)",
            sanitize(user),
            sanitize(conversation),
            sanitize(user)
        ),
        Notice::JoinWaiting { room } => format!(
            "waiting for the answer to /join #{}: what you type now goes there once joined",
            sanitize(room)
        ),
        Notice::AlreadyShown { count } => format!(
            "skipped {} delivered again by the server: already shown here before",
            messages(*count)
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
        Warning::PendingKey { user, fingerprint } => {
            let user_s = sanitize(user);
            format!(
                "{user_s} has a NEW device key {fingerprint} that none of {user_s}'s devices you trust approved. \
                 Nothing is encrypted to it, and what it sends is held unread until you accept it: \
                 compare it with /verify {user_s}, then /trust {user_s}"
            )
        }
        Warning::UnapprovedOwnDevice { fingerprint } => format!(
            "a device that none of your devices approved logged in to your account: {fingerprint}. \
             Nothing is encrypted to it. If it is yours, /devices approve {fingerprint}; if not, \
             change your password and /devices revoke {fingerprint}"
        ),
        Warning::OtherOwnDevice { fingerprint } => format!(
            "your account has another device key, {fingerprint}, that has not approved this device. \
             Nothing is encrypted to it. If it is your other device, approve this one there (the code \
             above); if you have no other device, it is not yours: change your password and \
             /devices revoke {fingerprint}"
        ),
        Warning::RevokedKeyAnnounced { user, fingerprint } => format!(
            "the server announced {}'s device key {fingerprint} again, which was revoked: it stays revoked and unused",
            sanitize(user)
        ),
        Warning::VouchRefused { user, why } => {
            let why = match why {
                VouchRefusal::Unreadable(e) => format!("it cannot be read ({e})"),
                VouchRefusal::OtherUser { signed_user } => {
                    format!("it is signed for {}", sanitize(signed_user))
                }
                VouchRefusal::BadSignature(e) => format!(
                    "its signature does not verify under the key pinned for its signer ({e})"
                ),
                VouchRefusal::WrongCode => {
                    "it carries a code that is not the one this device shows".to_string()
                }
            };
            format!("refused a device approval for {}: {why}", sanitize(user))
        }
        Warning::HeldFull { user } => format!(
            "dropped a message from {}: too much is held from device keys not accepted yet",
            sanitize(user)
        ),
        Warning::PendingNotSaved { error } => {
            format!("cannot save the held messages and the approval code: {error}")
        }
        Warning::NoSuchDevice { given, ambiguous } => {
            let given = sanitize(given);
            if *ambiguous {
                format!(
                    "{given} matches more than one of your devices: give more of its fingerprint (/devices)"
                )
            } else {
                format!(
                    "{given} is not one of your devices (/devices lists them; give a code or at least 16 hex digits of a fingerprint)"
                )
            }
        }
        Warning::ThisDevice => "that is this device".to_string(),
        Warning::TrustOwn => {
            "your own devices are approved with /devices approve CODE (see /devices)".to_string()
        }
        Warning::ServerTooOld => {
            "this server is too old to approve devices (it does not take device vouches)"
                .to_string()
        }
        Warning::VouchNotMade { error } => format!("cannot sign the approval: {error}"),
        Warning::PinsNotSaved { error } => format!("cannot save the pinned keys: {error}"),
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
        Warning::Missing {
            from,
            conversation,
            count,
        } => {
            let place = match Conversation::parse(conversation) {
                Ok(Conversation::Room(room)) => format!(" in #{}", sanitize(&room)),
                Ok(Conversation::Pair(..)) => " (whispers)".to_string(),
                _ => String::new(),
            };
            let verb = if *count == 1 { "is" } else { "are" };
            format!(
                "{} from {}{place} {verb} missing (a later one arrived first)",
                messages(*count),
                sanitize(from)
            )
        }
        Warning::ChainConflict { from } => format!(
            "ignored a chain from {} that reuses the id of one already received (the server may be replaying or forging it)",
            sanitize(from)
        ),
        Warning::StateNotSaved { error } => format!(
            "cannot save the state file: {}; messages shown since may be shown again after a restart",
            sanitize(error)
        ),
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
        Refusal::Revoked { device } => format!("its device key {device} was revoked"),
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
}
