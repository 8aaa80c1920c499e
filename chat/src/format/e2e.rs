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
        Notice::Pong { micros } => format!(
            "pong from server in {}",
            crate::pinging::show(std::time::Duration::from_micros(*micros))
        ),
        Notice::Ignoring { users } if users.is_empty() => {
            "nobody is ignored (/ignore USER hides someone's lines)".to_string()
        }
        Notice::Ignoring { users } => {
            let users: Vec<String> = users.iter().map(|u| sanitize(u)).collect();
            format!("ignoring: {}", users.join(", "))
        }
        Notice::IgnoreChanged {
            user,
            ignored,
            changed,
        } => {
            let user = sanitize(user);
            match (ignored, changed) {
                (true, true) => format!(
                    "ignoring {user}: their messages, whispers and presence lines are not shown here (/unignore {user} to undo)"
                ),
                (true, false) => format!("{user} was already ignored"),
                (false, true) => format!("no longer ignoring {user}"),
                (false, false) => format!("{user} was not ignored"),
            }
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
        Notice::HistoryStart { lines, since } => format!(
            "history: the last {} kept on this device, since {}",
            if *lines == 1 {
                "line".to_string()
            } else {
                format!("{lines} lines")
            },
            super::local_date_stamp(Some(*since))
        ),
        Notice::HistoryEnd => "end of history".to_string(),
        Notice::HistoryStatus {
            enabled: true,
            path,
            lines,
        } => format!(
            "history is on: {lines} lines kept in {} (encrypted); /history clear deletes it",
            sanitize(path)
        ),
        Notice::HistoryStatus {
            enabled: false,
            path,
            ..
        } => format!(
            "history is off (set [history] enabled = true in config.toml to keep it); its file would be {}",
            sanitize(path)
        ),
        Notice::HistoryCleared { path } => format!("history deleted ({})", sanitize(path)),
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
        Warning::HistoryUnusable { path, error } => format!(
            "the history file {} is not used: {}; it is neither read nor written now (/history clear deletes it)",
            sanitize(path),
            sanitize(error)
        ),
        Warning::HistoryDamaged { path, records } => format!(
            "the history file {} was damaged: {records} unreadable record(s) dropped, the rest is kept",
            sanitize(path)
        ),
        Warning::HistoryNotSaved { error } => {
            format!("cannot keep history: {}", sanitize(error))
        }
        Warning::HistoryNotCleared { error } => {
            format!("history not deleted: {}", sanitize(error))
        }
        Warning::StateNotSaved { error } => format!(
            "cannot save the state file: {}; messages shown since may be shown again after a restart",
            sanitize(error)
        ),
        Warning::NotAFingerprint => {
            "a fingerprint is written SHA256: followed by 64 hex digits (at least the first 16 will do)".to_string()
        }
        Warning::Ignore { why } => why.clone(),
        Warning::BadPrefix { given, whose, why } => format!(
            "fingerprint {} for {}: {why}",
            sanitize(given),
            sanitize(whose)
        ),
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
                "not in #{}: {dropped} {lines} typed after /join not sent (text is not sent until you /join a room you are in)",
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
mod tests;
