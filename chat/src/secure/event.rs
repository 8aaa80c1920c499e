//! What the end-to-end layer has to show the user, as typed values: verified messages,
//! notices and warnings about keys and rooms, and why something was refused.
//!
//! Names are kept as they came from the network; whoever renders these sanitizes them.

use chatd_proto::Fingerprint;
use chatd_proto::e2e::E2eError;

use crate::peers::KeyStatus;

/// Something to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message that verified and decrypted (or our own, confirmed by the server's echo).
    Message(ChatMessage),
    /// Information (`-- ...`).
    Notice(Notice),
    /// Something is wrong or needs the user's attention (`!! ...`).
    Warning(Warning),
}

/// Information about keys and rooms. Names are as they came (unsanitized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The first key seen for `user` was pinned (trust on first use).
    Pinned {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// `/fingerprint`: this device's key.
    OwnKey {
        /// The logged-in user.
        me: String,
        /// This device's key.
        fingerprint: Fingerprint,
        /// Its RSA size.
        bits: usize,
    },
    /// `/verify USER`: no key of theirs is pinned.
    NonePinned {
        /// Who was asked about.
        user: String,
    },
    /// `/verify USER`: the heading of the list of their keys.
    KeysOf {
        /// Whose keys follow.
        user: String,
    },
    /// `/verify USER`: one of their pinned keys.
    Key {
        /// The key.
        fingerprint: Fingerprint,
        /// How far it is trusted.
        status: KeyStatus,
        /// A session with it is logged in now.
        online: bool,
    },
    /// `/verify USER FINGERPRINT` matched one of their keys: it is now verified.
    Verified {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// `/trust USER` with no key of theirs pending.
    NonePending {
        /// Who was asked about.
        user: String,
    },
    /// `/trust USER` accepted this key.
    Accepted {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// `/join` of a room this user is already in: plain text goes there now.
    Switched {
        /// The room (without `#`).
        room: String,
    },
    /// This user joined `room`, which became the current room.
    Joined {
        /// The room (without `#`).
        room: String,
        /// Where `/join` goes back to.
        default_room: String,
    },
    /// Lines typed after `/join` wait for its answer (said once per join).
    JoinWaiting {
        /// The room asked for (without `#`).
        room: String,
    },
}

/// Something wrong, or a key that needs the user's decision. Names are as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The server announced a key that does not hash to its fingerprint; it was ignored.
    KeyMismatch {
        /// Whose it was said to be.
        user: String,
        /// The fingerprint announced with it.
        fingerprint: Fingerprint,
    },
    /// A key pinned as pending earlier is still not accepted.
    StillPending {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// A new key for a user we already know: pinned as pending.
    NewKey {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// The pin file could not be written.
    PinsNotSaved {
        /// The error with its causes (`{:#}`), as text so that events stay comparable.
        error: String,
    },
    /// A message went out without being encrypted to this pending key.
    NotEncryptedTo {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// A wrapped chain was refused.
    KeyRejected {
        /// The sender the server named.
        from: String,
        /// Why.
        why: Refusal,
    },
    /// An envelope that does not even parse.
    Unreadable {
        /// The sender the server named; None for a binary frame, which names nobody.
        from: Option<String>,
        /// What is wrong with the bytes.
        error: E2eError,
    },
    /// An envelope was refused.
    Dropped {
        /// The sender (the server's, or for a binary frame the header's).
        from: String,
        /// Why.
        why: Refusal,
    },
    /// `/verify USER FINGERPRINT` with something that is not a fingerprint.
    NotAFingerprint,
    /// `/verify USER FINGERPRINT` matched none of their keys.
    NoSuchKey {
        /// Who was asked about.
        user: String,
        /// The fingerprint given.
        fingerprint: Fingerprint,
    },
    /// A server frame names a user or room with a name no account or room can have (an
    /// invisible or look-alike character, say): the whole frame was ignored.
    BadName {
        /// The frame's type.
        frame: &'static str,
        /// The name as it came.
        name: String,
    },
    /// A `members` frame says we are in (or no longer in) a room without our asking: ignored.
    RosterNotAsked {
        /// The room (without `#`).
        room: String,
    },
    /// A `members` frame lists members of a room we are in that no `room` join announced:
    /// they were not added, and nothing is encrypted to them.
    UnannouncedMembers {
        /// The room (without `#`).
        room: String,
        /// Who (sorted).
        users: Vec<String>,
    },
    /// The server did not let us into `room`: the lines typed after `/join` were not sent.
    JoinRefused {
        /// The room asked for (without `#`).
        room: String,
        /// How many lines were dropped.
        dropped: usize,
    },
}

/// Why a received chain or envelope was not used; its sender is named beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The chain does not parse.
    Unreadable(E2eError),
    /// The signed header names `signer`, not the sender the server named.
    SignedAs {
        /// The header's user.
        signer: String,
    },
    /// A chain for a conversation that does not include this user.
    ChainNotForUs {
        /// The header's conversation.
        conversation: String,
    },
    /// An envelope sent to a conversation that does not include this user.
    NotForUs {
        /// The header's conversation.
        conversation: String,
    },
    /// From a pinned key the user has not accepted.
    Unaccepted {
        /// The sender.
        user: String,
        /// The key.
        device: Fingerprint,
    },
    /// From a key the server did not announce for the sender.
    Unannounced {
        /// The key.
        device: Fingerprint,
    },
    /// It claims to come from this device, which did not send it.
    NotSentHere,
    /// This device holds no receiver chain for it.
    NoChain,
    /// A cryptographic check failed.
    Check {
        /// Which.
        error: E2eError,
        /// The clock-skew window, for a stale timestamp.
        max_skew_ms: u64,
    },
    /// It opened, but its content is not a message body this client understands.
    NotAMessage,
}

/// Why sealing a message sent nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The body does not encode as JSON (the error's text).
    Body(String),
    /// Encoded, the body is over the server's limit.
    TooLong {
        /// Its encoded size.
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
    /// A room this user is not in.
    NotInRoom {
        /// The room (without `#`).
        room: String,
    },
    /// The whisper's peer has keys, but none accepted.
    NoAcceptedKey {
        /// The peer.
        user: String,
    },
    /// The whisper's peer has no key at all.
    NoKey {
        /// The peer.
        user: String,
    },
    /// A new sender chain could not be made.
    Chain(E2eError),
    /// The sender chain just made is missing (cannot happen).
    NoChain,
    /// Our chain could not be wrapped for one of `user`'s devices.
    Wrap {
        /// The member.
        user: String,
        /// What failed.
        error: E2eError,
    },
    /// The envelope could not be sealed.
    Seal(E2eError),
    /// The envelope could not be encoded.
    Encode(E2eError),
}

/// A verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender.
    pub from: String,
    /// For a whisper, the other member (from the sender's point of view: its peer).
    pub to: Option<String>,
    /// For a room other than the default one, its name (without `#`).
    pub room: Option<String>,
    /// Text.
    pub text: String,
    /// `/me` action.
    pub action: bool,
    /// Server time, ms since the Unix epoch.
    pub ts: u64,
    /// The sender's key was verified with `/verify`.
    pub verified: bool,
}
